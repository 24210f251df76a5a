"""The Dead letters page: events the engine could not process, with the reason.

The list (``dead_letters.list``: open ones by default, or those already retried or discarded)
refreshes every 5 s while visible. Select rows, then Retry (publish them to the stream again)
or Discard (mark them discarded); each first states its impact in a ``ConfirmImpactDialog``
opened with ``open()``, then the result is shown in the message area and the list refreshed.
The selected letter's payload is shown pretty-printed (JSON indented; binary as base64).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QButtonGroup,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from console.client import EngineClient
from console.operations import Operation, show_message
from console.pages.audit import Cell, Freshness, RecordTable, local_time, monospace, utc_time
from console.pages.polling import PollingPage
from widgets import theme
from widgets.confirm import ConfirmImpactDialog
from widgets.empty_state import EmptyState
from widgets.master_detail import MasterDetail

REFRESH_MS = 5000
LIST_LIMIT = 500
STATUSES = (("open", "Open"), ("retried", "Retried"), ("discarded", "Discarded"))
COLUMNS = ("Dead since", "Reason", "Subject", "Stream seq")


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def they(ids: list[str]) -> str:
    return "it is" if len(ids) == 1 else "they are"


def them(ids: list[str]) -> str:
    return "it" if len(ids) == 1 else "them"


def pretty_payload(row: dict[str, Any]) -> str:
    """The payload as people read it: indented JSON, else the text, else base64 of the bytes."""
    text = row.get("payload")
    if isinstance(text, str):
        try:
            return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        except ValueError:
            return text
    encoded = row.get("payload_b64")
    if isinstance(encoded, str):
        size = len(base64.b64decode(encoded))
        return f"(binary, {size:,} bytes, base64)\n{encoded}"
    return ""


def dead_letter_cells(row: dict[str, Any]) -> list[Cell]:
    ts = float(row.get("created_at") or 0.0)
    seq = row.get("stream_seq")
    reason = str(row.get("reason") or "")
    return [
        Cell(local_time(ts), f"{utc_time(ts)}\n(local time shown)"),
        Cell(reason, reason),
        Cell(str(row.get("subject") or "")),
        Cell(f"{seq:,}" if isinstance(seq, int) else "\u2014", numeric=True),
    ]


class DeadLettersPage(PollingPage):
    """The Dead letters page (see the module docstring). ``DeadLettersPage(client)``.

    Signals: none of its own.
    """

    refresh_ms = REFRESH_MS

    def __init__(self, client: EngineClient, parent: QWidget | None = None) -> None:
        super().__init__(client, parent)
        self.status = "open"
        self._action_op: Operation[Any] | None = None
        self.dialog: ConfirmImpactDialog | None = None

        title = QLabel("Dead letters")
        title.setFont(theme.scaled_font(self.font(), 1.5, bold=True))
        self.status_buttons = QButtonGroup(self)
        self.status_buttons.setExclusive(True)
        toggles = QHBoxLayout()
        toggles.setSpacing(0)
        for key, words in STATUSES:
            button = QPushButton(words)
            button.setCheckable(True)
            button.setChecked(key == self.status)
            button.setProperty("status_key", key)
            button.setStyleSheet(theme.toggle_button_qss(self.palette()))
            button.setToolTip(f"Show the dead letters that are {key}")
            self.status_buttons.addButton(button)
            toggles.addWidget(button)
        self.status_buttons.buttonClicked.connect(
            lambda button: self.set_status(str(button.property("status_key")))
        )
        self.retry_button = QPushButton(theme.icon("mdi6.replay", self._ink()), "Retry\u2026")
        self.retry_button.setToolTip("Publish the selected events to the stream again")
        self.retry_button.clicked.connect(self.ask_retry)
        self.discard_button = QPushButton(
            theme.icon("mdi6.delete-outline", self._ink()), "Discard\u2026"
        )
        self.discard_button.setToolTip("Mark the selected events discarded (kept for the record)")
        self.discard_button.clicked.connect(self.ask_discard)
        self.count = QLabel("")
        self.freshness = Freshness(3 * REFRESH_MS / 1000)
        header = QHBoxLayout()
        header.setSpacing(10)
        header.addWidget(title)
        header.addSpacing(8)
        header.addLayout(toggles)
        header.addSpacing(8)
        header.addWidget(self.retry_button)
        header.addWidget(self.discard_button)
        header.addStretch(1)
        header.addWidget(self.count)
        header.addSpacing(8)
        header.addWidget(self.freshness)

        self.table = RecordTable(
            COLUMNS,
            dead_letter_cells,
            widths=("2026-12-31 23:59:59", "", "events.identify", "99,999,999"),
            multi=True,
        )
        self.table.selection_changed.connect(self._on_selection)

        self.reason = QLabel("")
        self.reason.setWordWrap(True)
        self.reason.setFont(theme.scaled_font(self.font(), 1.1, bold=True))
        self.reason.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.fields: dict[str, QLabel] = {}
        form = QFormLayout()
        for name in ("Id", "Subject", "Stream seq", "Dead since", "Status"):
            label = QLabel("")
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            label.setWordWrap(True)
            self.fields[name] = label
            form.addRow(f"{name}:", label)
        self.payload = QPlainTextEdit()
        self.payload.setReadOnly(True)
        self.payload.setFont(monospace())
        detail = QWidget()
        column = QVBoxLayout(detail)
        column.setContentsMargins(8, 0, 0, 0)
        column.addWidget(self.reason)
        column.addLayout(form)
        column.addWidget(QLabel("Payload"))
        column.addWidget(self.payload, 1)
        self.pick = EmptyState(
            "mdi6.email-search-outline",
            "Select a dead letter to see its payload",
            detail="Select several (Shift or Ctrl) to retry or discard them together.",
        )
        self.empty = EmptyState(
            "mdi6.email-check-outline",
            "No dead letters \u2014 all events processed",
            detail="An event the engine cannot read or decide (malformed JSON, no user id, a"
            " workflow that fails on it) is set aside here with the reason, so the stream goes"
            " on. Retry publishes it again once the cause is fixed; Discard closes it.",
        )
        self.states = MasterDetail(self.table, detail, pick=self.pick, empty=self.empty)
        self.splitter, self.side = self.states.splitter, self.states.side

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 0)
        layout.setSpacing(8)
        layout.addLayout(header)
        layout.addWidget(self.states, 1)
        self._on_selection([])

    def _ink(self) -> Any:
        return theme.text_color(self.palette())

    # ---------------------------------------------------------------- page hooks

    def on_shown(self) -> None:
        self.freshness.start()

    def on_hidden(self) -> None:
        self.freshness.stop()

    # ---------------------------------------------------------------- list

    def set_status(self, status: str) -> None:
        """Show the dead letters with ``status`` (open, retried or discarded)."""
        self.status = status
        for button in self.status_buttons.buttons():
            button.setChecked(button.property("status_key") == status)
        self.table.set_rows([])
        self.refresh(force=True)

    def request_list(self) -> Operation[Any]:
        """Ask for the dead letters of the status shown (see ``PollingPage.refresh``)."""
        status = self.status
        return (
            Operation(
                self,
                lambda: self.client.request(
                    "dead_letters.list", {"status": status, "limit": LIST_LIMIT}
                ),
                label="Dead letters",
            )
            .success(lambda rows: self.set_rows(rows, status))
            .run()
        )

    def set_rows(self, rows: list[dict[str, Any]], status: str) -> None:
        """Show ``dead_letters.list`` rows of ``status`` (newest first)."""
        self.freshness.mark()
        if status != self.status:
            return
        rows = sorted(rows, key=lambda r: (r.get("created_at") or 0.0, r["id"]), reverse=True)
        self.count.setText(f"{plural(len(rows), 'dead letter')} {status}")
        if rows or status != "open":
            self.states.setCurrentWidget(self.splitter)
        else:
            self.states.setCurrentWidget(self.empty)
        self.table.set_rows(rows)

    def _on_selection(self, ids: list[str]) -> None:
        actionable = bool(ids) and self.status == "open"
        n = len(ids)
        why_not = (
            ""
            if actionable
            else "Select open dead letters first"
            if self.status == "open"
            else f"These are already {self.status}"
        )
        self.retry_button.setToolTip(why_not or "Publish the selected events to the stream again")
        self.discard_button.setToolTip(
            why_not or "Mark the selected events discarded (kept for the record)"
        )
        self.retry_button.setEnabled(actionable)
        self.discard_button.setEnabled(actionable)
        self.retry_button.setText(f"Retry {n}\u2026" if actionable and n > 1 else "Retry\u2026")
        self.discard_button.setText(
            f"Discard {n}\u2026" if actionable and n > 1 else "Discard\u2026"
        )
        rows = self.table.selected_rows()
        if not rows:
            self.side.setCurrentWidget(self.pick)
            return
        row = rows[0]
        ts = float(row.get("created_at") or 0.0)
        self.reason.setText(str(row.get("reason") or ""))
        self.fields["Id"].setText(str(row["id"]))
        self.fields["Subject"].setText(str(row.get("subject") or ""))
        seq = row.get("stream_seq")
        self.fields["Stream seq"].setText(f"{seq:,}" if isinstance(seq, int) else "\u2014")
        self.fields["Dead since"].setText(f"{local_time(ts)}  ({utc_time(ts)})")
        self.fields["Status"].setText(str(row.get("status") or ""))
        self.payload.setPlainText(pretty_payload(row))
        self.side.setCurrentIndex(1)

    # ---------------------------------------------------------------- actions

    def ask_retry(self) -> ConfirmImpactDialog | None:
        """Confirm, then publish the selected dead letters to the stream again."""
        ids = self.table.selected_ids()
        if not ids:
            return None
        return self._confirm(
            "retry",
            ids,
            title="Retry dead letters",
            impact=f"Retry {plural(len(ids), 'dead letter')}: {they(ids)} published to the"
            " stream again.",
            confirm_text=f"Retry {plural(len(ids), 'dead letter')}",
            details=[
                f"The decide stage processes {them(ids)} like new events, with a fresh message id.",
                "If the cause is not fixed, each comes back here as a new dead letter.",
                "The retry is recorded in the audit log under your name.",
            ],
        )

    def ask_discard(self) -> ConfirmImpactDialog | None:
        """Confirm, then mark the selected dead letters discarded."""
        ids = self.table.selected_ids()
        if not ids:
            return None
        return self._confirm(
            "discard",
            ids,
            title="Discard dead letters",
            impact=f"Discard {plural(len(ids), 'dead letter')}: {they(ids)} never processed.",
            confirm_text=f"Discard {plural(len(ids), 'dead letter')}",
            details=[
                "Discarded letters stay listed under \u201cDiscarded\u201d for the record.",
                "The discard is recorded in the audit log under your name.",
            ],
        )

    def _confirm(
        self,
        action: str,
        ids: list[str],
        *,
        title: str,
        impact: str,
        confirm_text: str,
        details: list[str],
    ) -> ConfirmImpactDialog:
        dialog = ConfirmImpactDialog(
            title, impact, confirm_text=confirm_text, details=details, parent=self
        )
        dialog.accepted_with.connect(lambda _reason: self._run(action, ids))
        dialog.finished.connect(dialog.deleteLater)
        dialog.finished.connect(lambda _code: setattr(self, "dialog", None))
        self.dialog = dialog
        dialog.open()
        return dialog

    def _run(self, action: str, ids: list[str]) -> None:
        verb = f"dead_letters.{action}"
        done_word = "retried" if action == "retry" else "discarded"

        def succeeded(result: Any) -> None:
            n = int(result.get(done_word, 0)) if isinstance(result, dict) else 0
            text = f"{plural(n, 'dead letter')} {done_word}."
            if n < len(ids):
                text += f" {len(ids) - n:,} were no longer open (already handled elsewhere)."
            show_message(self, text, "healthy" if n == len(ids) else "degraded")
            self.refresh(force=True)

        self._action_op = (
            Operation(
                self,
                lambda: self.client.request(verb, {"ids": ids}),
                label=f"{action.capitalize()} dead letters",
            )
            .success(succeeded)
            .run()
        )
