"""Dry run: a draft workflow or segment run over the recorded events, sending nothing.

``DryRunPanel(client, kind, definition)`` (``kind`` "workflow" with the workflow definition as
a dict, or "segment" with ``{"text": ...}``) and ``DryRunDialog`` around it. The person picks
a window (last 1 h, 6 h, 24 h or 7 d) and presses Run; the engine starts a job
(``workflows.dry_run`` / ``segments.dry_run``), the panel follows it (``dry_runs.status``) with
a progress bar and Cancel (``dry_runs.cancel``), then shows the totals, the mail per hour as a
bar chart, a table per recipient domain, where the frequency caps bind, and sample recipients.

The Segments page opens it with its draft (a "Dry run..." button); the Workflows page opens it
with a workflow draft the same way: ``DryRunDialog(client, "workflow", definition, parent)``.
"""

from __future__ import annotations

import html
from datetime import datetime
from typing import Any

import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from console.client import EngineClient
from console.errors import describe
from console.pages.requests import KeyedRequests
from widgets import theme
from widgets.empty_state import EmptyState
from widgets.format import format_count

WINDOWS = (("Last 1 h", "1h"), ("Last 6 h", "6h"), ("Last 24 h", "24h"), ("Last 7 d", "7d"))
DEFAULT_WINDOW = "24h"
POLL_MS = 400
HOUR = 3600.0


def _table(headers: list[str]) -> QTableWidget:
    table = QTableWidget(0, len(headers))
    table.setHorizontalHeaderLabels(headers)
    table.verticalHeader().setVisible(False)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    header = table.horizontalHeader()
    for column in range(len(headers) - 1):
        header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
    header.setStretchLastSection(True)
    return table


def _fill(table: QTableWidget, rows: list[list[str]], numeric: tuple[int, ...] = ()) -> None:
    table.setRowCount(len(rows))
    for r, row in enumerate(rows):
        for c, text in enumerate(row):
            item = QTableWidgetItem(text)
            item.setToolTip(text)
            if c in numeric:
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            table.setItem(r, c, item)


def _when(t: float | None) -> str:
    """Local time, as people read it."""
    if t is None:
        return "\u2014"
    return datetime.fromtimestamp(t).strftime("%a %d %b %H:%M")


class _Tile(QFrame):
    """A number with its caption (and a hint below)."""

    def __init__(self, caption: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.caption = QLabel(caption)
        self.value = QLabel("\u2014")
        self.value.setFont(theme.scaled_font(self.font(), 1.8, bold=True))
        self.hint = QLabel("")
        self.hint.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 6, 10, 6)
        layout.setSpacing(0)
        layout.addWidget(self.caption)
        layout.addWidget(self.value)
        layout.addWidget(self.hint)

    def show_value(self, value: int | None, hint: str = "") -> None:
        self.value.setText("\u2014" if value is None else format_count(value))
        self.hint.setText(hint)


class DryRunPanel(QWidget):
    """Runs one draft over the recorded events and shows what it would have sent.

    Signals:
        finished(dict): a dry run ended; its status (``state``, ``result`` or ``error``).
    """

    finished = Signal(dict)

    def __init__(
        self,
        client: EngineClient,
        kind: str,
        definition: dict[str, Any],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        if kind not in ("workflow", "segment"):
            raise ValueError(f"kind must be 'workflow' or 'segment', got {kind!r}")
        self.client = client
        self.kind = kind
        self.definition = dict(definition)
        self.requests = KeyedRequests(self, client)
        self.job: dict[str, Any] | None = None  # the latest status of the job
        self.result: dict[str, Any] | None = None

        # -- header: what runs, the window, run and cancel ---------------------------------
        title = QLabel(f"Dry run \u2014 {self._label()}")
        title.setTextFormat(Qt.TextFormat.PlainText)
        title.setFont(theme.scaled_font(self.font(), 1.3, bold=True))
        self.window = QComboBox()
        for text, value in WINDOWS:
            self.window.addItem(text, value)
        self.window.setCurrentIndex(self.window.findData(DEFAULT_WINDOW))
        self.window.setToolTip("Replay the events recorded in this window")
        self.run_button = QPushButton("Run")
        self.run_button.setStyleSheet(theme.primary_button_qss(self.palette()))
        self.run_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        header = QHBoxLayout()
        header.addWidget(title, 1)
        header.addWidget(QLabel("Events from"))
        header.addWidget(self.window)
        header.addWidget(self.run_button)
        header.addWidget(self.cancel_button)

        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.note = QLabel("Pick a window and press Run. Nothing is sent or saved.")
        self.note.setWordWrap(True)

        # -- totals --------------------------------------------------------------------------
        workflow = kind == "workflow"
        self.tiles = {
            "would_send": _Tile(
                "Emails that would go out" if workflow else "Contacts one could mail entering"
            ),
            "recipients": _Tile("Recipients"),
            "capped": _Tile("Stopped by frequency caps"),
            "suppressed": _Tile("Suppressed"),
            "skipped": _Tile("No consent / no address" if workflow else "No address"),
            "deferred": _Tile("Deferred by quiet hours"),
        }
        tiles = QGridLayout()
        tiles.setSpacing(8)
        shown = [k for k in self.tiles if workflow or k not in ("capped", "deferred", "recipients")]
        for i, key in enumerate(shown):
            tiles.addWidget(self.tiles[key], 0, i)
        for key in set(self.tiles) - set(shown):
            self.tiles[key].setVisible(False)

        # -- per hour ------------------------------------------------------------------------
        self.chart = pg.PlotWidget(axisItems={"bottom": pg.DateAxisItem(orientation="bottom")})
        self.chart.setMinimumHeight(180)
        self.chart.setLabel("left", "emails per hour" if kind == "workflow" else "entries per hour")
        self.chart.setMouseEnabled(x=False, y=False)
        self.chart.hideButtons()
        self.chart.showGrid(x=False, y=True, alpha=0.2)
        self._style_chart()
        colour = theme.series_color(0, self.palette())
        self.bars = pg.BarGraphItem(x=[], height=[], width=HOUR * 0.8, brush=colour, pen=colour)
        self.chart.addItem(self.bars)

        # -- tables --------------------------------------------------------------------------
        self.domains = _table(["Recipient domain", "Emails" if workflow else "Contacts", "Share"])
        self.domains.horizontalHeader().setStretchLastSection(False)
        self.domains.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.caps = _table(["Day / week", "Limit", "Sends stopped", "Contacts", "Example"])
        self.sample = _table(["When", "Recipient", "Step / template" if workflow else "What"])
        self.tabs = QTabWidget()
        self.tabs.addTab(self.domains, "Per domain")
        if workflow:
            self.tabs.addTab(self.caps, "Caps binding")
        self.tabs.addTab(self.sample, "Sample recipients")
        self.reasons = QLabel("")
        self.reasons.setWordWrap(True)

        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.chart)
        splitter.addWidget(self.tabs)
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 3)
        splitter.setChildrenCollapsible(False)

        self.results = QWidget()
        results = QVBoxLayout(self.results)
        results.setContentsMargins(0, 0, 0, 0)
        results.setSpacing(8)
        results.addLayout(tiles)
        results.addWidget(splitter, 1)
        results.addWidget(self.reasons)
        self.empty = EmptyState(
            "mdi6.flask-outline",
            "See what this draft would have sent, before it sends anything",
            "Run",
            detail="The events recorded in the window you pick are replayed through the "
            "engine's own decisions, caps and quiet hours. Nothing is sent or saved.",
        )
        self.empty.action_triggered.connect(self.start)
        self.pages = QStackedWidget()
        self.pages.addWidget(self.empty)
        self.pages.addWidget(self.results)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 10, 12, 10)
        layout.setSpacing(8)
        layout.addLayout(header)
        layout.addWidget(self.progress)
        layout.addWidget(self.note)
        layout.addWidget(self.pages, 1)

        self._poll = QTimer(self)
        self._poll.setInterval(POLL_MS)
        self._poll.timeout.connect(self._ask_status)

    # ---------------------------------------------------------------- running

    def _label(self) -> str:
        if self.kind == "workflow":
            name = self.definition.get("name") or self.definition.get("id") or "draft"
            return f"workflow {name}"
        text = " ".join(str(self.definition.get("text") or "").split())
        more = "\u2026" if len(text) > 70 else ""
        return f"segment {text[:70]}{more}"

    def set_window(self, value: str) -> None:
        """Choose the window by its value ("1h", "6h", "24h", "7d")."""
        index = self.window.findData(value)
        if index < 0:
            raise ValueError(f"no window {value!r}")
        self.window.setCurrentIndex(index)

    def running(self) -> bool:
        return self.job is not None and self.job.get("state") == "running"

    def busy(self) -> bool:
        """Whether anything is pending (tests wait for quiet)."""
        return self.requests.busy() or self._poll.isActive()

    def start(self) -> None:
        """Start a dry run over the chosen window."""
        if self.running():
            return
        since = str(self.window.currentData())
        if self.kind == "workflow":
            verb, args = "workflows.dry_run", {"definition": self.definition, "since": since}
        else:
            verb = "segments.dry_run"
            args = {"text": str(self.definition.get("text") or ""), "since": since}
        self.result = None
        self.run_button.setEnabled(False)
        self.empty.set_action("Run", enabled=False)
        self.progress.setVisible(True)
        self.progress.setRange(0, 0)  # busy until the engine says how many events
        self.note.setText(f"Starting a dry run over the {self.window.currentText().lower()}\u2026")
        asked = self.requests.ask("start", verb, args, self._show_job, self._failed, timeout=15)
        if not asked:
            self._failed(RuntimeError("Not connected to an engine."))

    def cancel(self) -> None:
        """Ask the engine to stop the running job."""
        if not self.running() or self.job is None:
            return
        self.cancel_button.setEnabled(False)
        self.note.setText("Cancelling\u2026")
        self.requests.ask(
            "cancel", "dry_runs.cancel", {"job": self.job["job"]}, self._show_job, self._failed
        )

    def _ask_status(self) -> None:
        if self.job is None:
            self._poll.stop()
            return
        self.requests.ask(
            "status", "dry_runs.status", {"job": self.job["job"]}, self._show_job, self._failed
        )

    def _show_job(self, job: dict[str, Any]) -> None:
        self.job = job
        if job["state"] == "running":
            self.cancel_button.setEnabled(True)
            total = int(job.get("total") or 0)
            if total:
                self.progress.setRange(0, total)
                self.progress.setValue(int(job.get("scanned") or 0))
                self.progress.setFormat("scanned %v of %m recorded events")
            if not self._poll.isActive():
                self._poll.start()
            return
        self._poll.stop()
        self.progress.setVisible(False)
        self.run_button.setEnabled(True)
        self.empty.set_action("Run again")
        self.cancel_button.setEnabled(False)
        if job["state"] == "done" and job.get("result") is not None:
            self.show_result(job["result"])
        else:
            self._problem(
                f"Dry run {job['state']}: {job.get('error') or 'no reason given'}",
                theme.Status.PAUSED if job["state"] == "cancelled" else theme.Status.FAILING,
            )
        self.finished.emit(job)

    def _failed(self, exc: BaseException) -> None:
        self._poll.stop()
        self.progress.setVisible(False)
        self.run_button.setEnabled(True)
        self.empty.set_action("Run again")
        self.cancel_button.setEnabled(False)
        self._problem(f"Dry run not started: {describe(exc)}", theme.Status.FAILING)
        self.finished.emit({"state": "failed", "error": describe(exc)})

    def _problem(self, text: str, status: theme.Status) -> None:
        colour = theme.status_color(status, self.palette()).name()
        icon = "\u2716" if status == theme.Status.FAILING else "\u23f8"
        self.note.setText(f"<span style='color:{colour}'>{icon} {html.escape(text)}</span>")

    # ---------------------------------------------------------------- the answer

    def show_result(self, result: dict[str, Any]) -> None:
        """Draw a dry run's result (the ``result`` of a finished job)."""
        self.result = result
        emails = result["emails"]
        events = result["events"]
        window = self.window.currentText().lower()
        scanned = format_count(events["scanned"])
        if not events["scanned"]:
            self.note.setText("")
            self.empty.set_sentence(f"No events were recorded in the {window}: nothing to replay")
            self.empty.set_detail(
                "Pick a longer window, or start demo traffic on the Live page and run again."
            )
            self.pages.setCurrentWidget(self.empty)
            return
        span = f"{_when(result.get('from'))} \u2013 {_when(result.get('until'))}"
        count = format_count(emails["would_send"])
        headline = (
            f"<b>{count} emails</b> would go out"
            if self.kind == "workflow"
            else f"<b>{count} contacts</b> one could mail would enter it"
        )
        note = f"Replayed {scanned} events recorded {span}: {headline}. Nothing was sent."
        if not result.get("complete", True):
            note += " (incomplete: events aged out of the stream while it ran)"
        colour = theme.status_color(theme.Status.DEGRADED, self.palette()).name()
        for warning in result.get("warnings") or []:
            note += f"<br><span style='color:{colour}'>\u26a0 {html.escape(warning)}</span>"
        self.note.setText(note)
        waiting = int(result.get("enrollments", {}).get("waiting", 0))
        self.pages.setCurrentWidget(self.results)
        self.tiles["would_send"].show_value(
            emails["would_send"],
            f"+ {format_count(waiting)} still waiting when the recording ends" if waiting else "",
        )
        self.tiles["recipients"].show_value(emails["recipients"])
        capped = emails.get("capped")
        self.tiles["capped"].show_value(
            capped, "" if self.kind == "workflow" else "caps apply to the workflow's sends"
        )
        self.tiles["suppressed"].show_value(emails["suppressed"], "unsubscribed or on the list")
        no_consent = int(result.get("skipped", {}).get("no_consent", 0))
        self.tiles["skipped"].show_value(
            no_consent + int(emails["no_email"]),
            f"{format_count(no_consent)} no consent, {format_count(emails['no_email'])} no address"
            if self.kind == "workflow"
            else "",
        )
        self.tiles["deferred"].show_value(emails.get("deferred_quiet_hours"))
        hours = result["per_hour"]
        xs = [float(h["hour"]) + HOUR / 2 for h in hours]
        ys = [float(h["count"]) for h in hours]
        self.bars.setOpts(x=xs, height=ys, width=HOUR * 0.8)
        start = float((result.get("window") or {}).get("start") or result.get("from") or 0)
        end = float(result.get("until") or 0)
        low = min([start, *[x - HOUR / 2 for x in xs]]) if start else min(xs, default=end)
        high = max([end, *[x + HOUR / 2 for x in xs]])
        if high > low:
            self.chart.setXRange(low, high, padding=0.02)
        self.chart.setYRange(0, max(ys, default=1.0) * 1.15, padding=0)
        total = max(int(emails["would_send"]), 1)
        _fill(
            self.domains,
            [
                [d["domain"], format_count(d["count"]), f"{100 * d['count'] / total:.1f}%"]
                for d in result["per_domain"]
            ],
            numeric=(1, 2),
        )
        _fill(
            self.caps,
            [
                [
                    c["period"],
                    c["limit"],
                    format_count(c["capped"]),
                    format_count(c["contacts"]),
                    (c.get("example") or {}).get("email") or "",
                ]
                for c in result["caps"]
            ],
            numeric=(2, 3),
        )
        if self.kind == "workflow":
            self.tabs.setTabText(1, f"Caps binding ({len(result['caps'])})")
        _fill(
            self.sample,
            [
                [
                    _when(s["at"]) + (" (after quiet hours)" if s.get("deferred") else ""),
                    s.get("email") or s["contact_id"],
                    f"{s['step']} \u00b7 {s['template']}" if "step" in s else "enters the segment",
                ]
                for s in result["sample"]
            ],
        )
        reasons = result.get("suppressed_reasons") or []
        self.reasons.setText(
            "Suppressed: "
            + "; ".join(f"{html.escape(r['reason'])} ({format_count(r['count'])})" for r in reasons)
            if reasons
            else ""
        )

    def _style_chart(self) -> None:
        palette = self.palette()
        self.chart.setBackground(theme.surface_color(palette))
        for name in ("left", "bottom"):
            axis = self.chart.getAxis(name)
            axis.setPen(pg.mkPen(theme.border_color(palette)))
            axis.setTextPen(pg.mkPen(theme.text_color(palette)))


class DryRunDialog(QDialog):
    """``DryRunPanel`` in a window of its own; closing it cancels a job still running.

    Open it with ``open()`` or ``show()`` (never ``exec()`` inside an async slot)."""

    def __init__(
        self,
        client: EngineClient,
        kind: str,
        definition: dict[str, Any],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Dry run")
        self.panel = DryRunPanel(client, kind, definition, self)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 12, 10)
        layout.addWidget(self.panel, 1)
        layout.addWidget(buttons)
        self.resize(1100, 760)
        self.finished.connect(lambda _code: self.panel.cancel())
