"""The Audit page: who did what and when, newest first.

Every operator action (through the console or the control API) and every automatic one (actor
``engine``) from ``audit.list``: time in local time (UTC in the tooltip), actor, action, target
and count. The search goes to the engine (actor, action and target); the actor and action boxes
filter what came back. The selected entry's detail JSON is shown pretty-printed in the side
panel. The list refreshes every 5 s while the page is visible and keeps the selection.

:class:`RecordTable` (a table of dict rows keyed by ``id`` that keeps its selection across
refreshes) is shared with the Dead letters page.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from PySide6.QtCore import QItemSelection, QItemSelectionModel, Qt, QTimer, Signal
from PySide6.QtGui import QFontDatabase, QPalette, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from console.client import EngineClient
from console.operations import Operation
from console.pages.polling import PollingPage
from widgets import theme
from widgets.empty_state import EmptyState
from widgets.format import format_age, format_count
from widgets.master_detail import MasterDetail

REFRESH_MS = 5000
LIST_LIMIT = 500
SEARCH_DELAY_MS = 300
ALL = ""
ID_ROLE = Qt.ItemDataRole.UserRole + 1


def local_time(ts: float) -> str:
    """``2026-11-27 14:03:12`` in local time."""
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def utc_time(ts: float) -> str:
    """``2026-11-27 14:03:12 UTC``."""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def pretty_json(value: Any) -> str:
    """``value`` as indented JSON (non-ASCII kept readable)."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def monospace() -> Any:
    return QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)


# ------------------------------------------------------------------------------- table


@dataclass(frozen=True)
class Cell:
    """One cell of a row: its text, tooltip and whether it is a number (right-aligned)."""

    text: str
    tooltip: str = ""
    numeric: bool = False


class RecordTable(QTableView):
    """A read-only table of dict rows keyed by ``"id"`` that keeps its selection on refresh.

    ``cells(row)`` turns a row into its :class:`Cell` list, one per column. ``widths`` holds,
    per column, the widest text it must show (its width comes from the font, so refreshes never
    make columns jump; the operator can still drag them) or "" for the column that stretches.

    Signals:
        selection_changed(list): the ids of the selected rows, in table order.
    """

    selection_changed = Signal(list)

    def __init__(
        self,
        columns: Sequence[str],
        cells: Callable[[dict[str, Any]], list[Cell]],
        *,
        widths: Sequence[str],
        multi: bool = False,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._cells = cells
        self.rows: list[dict[str, Any]] = []
        self._model = QStandardItemModel(0, len(columns), self)
        self._model.setHorizontalHeaderLabels(list(columns))
        self.setModel(self._model)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(
            QAbstractItemView.SelectionMode.ExtendedSelection
            if multi
            else QAbstractItemView.SelectionMode.SingleSelection
        )
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setShowGrid(False)
        self.setAlternatingRowColors(True)
        self.setWordWrap(False)
        self.verticalHeader().setVisible(False)
        header = self.horizontalHeader()
        fm = self.fontMetrics()
        pad = fm.averageCharWidth() * 3
        for column, (title, sample) in enumerate(zip(columns, widths, strict=True)):
            if sample:
                header.setSectionResizeMode(column, QHeaderView.ResizeMode.Interactive)
                width = max(fm.horizontalAdvance(sample), fm.horizontalAdvance(title))
                header.resizeSection(column, width + pad)
            else:
                header.setSectionResizeMode(column, QHeaderView.ResizeMode.Stretch)
        self.selectionModel().selectionChanged.connect(self._on_selection)

    def set_rows(self, rows: list[dict[str, Any]]) -> None:
        """Show ``rows``; rows that stay (same id) stay selected."""
        if rows == self.rows:
            return
        selected = set(self.selected_ids())
        current = self.current_id()
        self.rows = list(rows)
        selection = self.selectionModel()
        selection.blockSignals(True)
        try:
            self._model.setRowCount(0)
            for row in self.rows:
                items = []
                for cell in self._cells(row):
                    item = QStandardItem(cell.text)
                    item.setToolTip(cell.tooltip or cell.text)
                    if cell.numeric:
                        item.setTextAlignment(
                            Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
                        )
                    item.setData(str(row["id"]), ID_ROLE)
                    items.append(item)
                self._model.appendRow(items)
            keep = QItemSelection()
            last = self._model.columnCount() - 1
            for index, row in enumerate(self.rows):
                if str(row["id"]) in selected:
                    keep.select(self._model.index(index, 0), self._model.index(index, last))
                if str(row["id"]) == current:
                    selection.setCurrentIndex(
                        self._model.index(index, 0), QItemSelectionModel.SelectionFlag.NoUpdate
                    )
            selection.select(keep, QItemSelectionModel.SelectionFlag.ClearAndSelect)
        finally:
            selection.blockSignals(False)
        self._on_selection()

    def selected_ids(self) -> list[str]:
        """Ids of the selected rows, in table order."""
        rows = sorted(index.row() for index in self.selectionModel().selectedRows())
        return [str(self.rows[r]["id"]) for r in rows if r < len(self.rows)]

    def selected_rows(self) -> list[dict[str, Any]]:
        ids = set(self.selected_ids())
        return [row for row in self.rows if str(row["id"]) in ids]

    def current_id(self) -> str | None:
        index = self.selectionModel().currentIndex()
        if not index.isValid() or index.row() >= len(self.rows):
            return None
        return str(self.rows[index.row()]["id"])

    def select_ids(self, ids: Sequence[str]) -> None:
        """Select the rows of ``ids`` (others are deselected)."""
        wanted = {str(i) for i in ids}
        selection = QItemSelection()
        last = self._model.columnCount() - 1
        for index, row in enumerate(self.rows):
            if str(row["id"]) in wanted:
                selection.select(self._model.index(index, 0), self._model.index(index, last))
        self.selectionModel().select(selection, QItemSelectionModel.SelectionFlag.ClearAndSelect)

    def _on_selection(self, *_args: object) -> None:
        self.selection_changed.emit(self.selected_ids())


class Freshness(QLabel):
    """ "updated 3 s ago", amber when older than ``stale_after`` seconds.

    Signals: none.
    """

    def __init__(self, stale_after: float, parent: QWidget | None = None) -> None:
        super().__init__("no data yet", parent)
        self._stale_after = stale_after
        self._at: float | None = None
        self._timer = QTimer(self)
        self._timer.setInterval(1000)
        self._timer.timeout.connect(self.refresh)

    def mark(self) -> None:
        """Data arrived now."""
        self._at = time.monotonic()
        self.refresh()

    def start(self) -> None:
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    def refresh(self) -> None:
        if self._at is None:
            return
        age = time.monotonic() - self._at
        self.setText(format_age(age))
        # Colours from the parent's palette: this label's own text colour is the one set here.
        parent = self.parentWidget()
        base = parent.palette() if parent is not None else QApplication.palette()
        colour = (
            theme.status_color(theme.Status.DEGRADED, base)
            if age > self._stale_after
            else theme.secondary_text_color(base)
        )
        palette = self.palette()
        palette.setColor(QPalette.ColorRole.WindowText, colour)
        self.setPalette(palette)


# ------------------------------------------------------------------------------- page

COLUMNS = ("Time (local)", "Actor", "Action", "Target", "Count")


def audit_cells(row: dict[str, Any]) -> list[Cell]:
    ts = float(row.get("ts") or 0.0)
    count = row.get("count")
    return [
        Cell(local_time(ts), f"{utc_time(ts)}\n(local time shown)"),
        Cell(str(row.get("actor") or "")),
        Cell(str(row.get("action") or "")),
        Cell(str(row.get("target") or "")),
        Cell(format_count(count) if count is not None else "\u2014", numeric=True),
    ]


class AuditPage(PollingPage):
    """The Audit page (see the module docstring). Built with ``AuditPage(client)``.

    Signals: none of its own.
    """

    refresh_ms = REFRESH_MS

    def __init__(self, client: EngineClient, parent: QWidget | None = None) -> None:
        super().__init__(client, parent)
        self.all_rows: list[dict[str, Any]] = []
        self._answered = False

        title = QLabel("Audit")
        title.setFont(theme.scaled_font(self.font(), 1.5, bold=True))
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search actor, action or target")
        self.search.setClearButtonEnabled(True)
        self.search.setMinimumWidth(self.fontMetrics().averageCharWidth() * 36)
        self._search_delay = QTimer(self)
        self._search_delay.setSingleShot(True)
        self._search_delay.setInterval(SEARCH_DELAY_MS)
        self._search_delay.timeout.connect(self.refresh)
        self.search.textChanged.connect(lambda _text: self._search_delay.start())
        self.actor_box = QComboBox()
        self.actor_box.setToolTip("Only this actor (\u201cengine\u201d: automatic actions)")
        self.action_box = QComboBox()
        self.action_box.setToolTip("Only this action")
        for box, everyone in ((self.actor_box, "All actors"), (self.action_box, "All actions")):
            box.addItem(everyone, ALL)
            box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
            box.currentIndexChanged.connect(self._apply_filters)
        self.count = QLabel("")
        self.freshness = Freshness(3 * REFRESH_MS / 1000)
        header = QHBoxLayout()
        header.setSpacing(10)
        header.addWidget(title)
        header.addSpacing(8)
        header.addWidget(self.search, 1)
        header.addWidget(self.actor_box)
        header.addWidget(self.action_box)
        header.addWidget(self.count)
        header.addSpacing(8)
        header.addWidget(self.freshness)

        self.table = RecordTable(
            COLUMNS,
            audit_cells,
            widths=("2026-12-31 23:59:59", "m" * 12, "dead_letters.discard", "", "999,999"),
        )
        self.table.selection_changed.connect(self._show_detail)

        self.detail_title = QLabel("")
        self.detail_title.setFont(theme.scaled_font(self.font(), 1.15, bold=True))
        self.detail_title.setWordWrap(True)
        self.detail_form = QFormLayout()
        self.detail_fields: dict[str, QLabel] = {}
        for name in ("When", "Actor", "Action", "Target", "Count"):
            label = QLabel("")
            label.setWordWrap(True)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.detail_fields[name] = label
            self.detail_form.addRow(f"{name}:", label)
        self.detail_json = QPlainTextEdit()
        self.detail_json.setReadOnly(True)
        self.detail_json.setFont(monospace())
        detail = QWidget()
        column = QVBoxLayout(detail)
        column.setContentsMargins(8, 0, 0, 0)
        column.addWidget(self.detail_title)
        column.addLayout(self.detail_form)
        column.addWidget(QLabel("Detail"))
        column.addWidget(self.detail_json, 1)
        self.pick = EmptyState(
            "mdi6.clipboard-text-search-outline",
            "Select an entry to see its detail",
            detail="The detail holds what the action was given (ids, rates, reasons).",
        )
        self.empty = EmptyState(
            "mdi6.clipboard-text-clock-outline",
            "Nothing audited yet",
            detail="Every change made through the console or the control API \u2014 demo"
            " traffic started, dead letters retried, sending paused \u2014 is recorded here"
            " with who did it and when. Actions by the engine itself show the actor"
            " \u201cengine\u201d.",
        )
        self.no_match = EmptyState(
            "mdi6.clipboard-search-outline",
            "No entry matches",
            "Clear the search and filters",
        )
        self.no_match.action_triggered.connect(self.clear_filters)
        self.states = MasterDetail(
            self.table, detail, pick=self.pick, empty=self.empty, no_match=self.no_match
        )
        self.splitter, self.side = self.states.splitter, self.states.side

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 0)
        layout.setSpacing(8)
        layout.addLayout(header)
        layout.addWidget(self.states, 1)

    # ---------------------------------------------------------------- page hooks

    def on_shown(self) -> None:
        self.freshness.start()

    def on_hidden(self) -> None:
        self.freshness.stop()
        self._search_delay.stop()

    # ---------------------------------------------------------------- data

    def request_list(self) -> Operation[Any]:
        """Ask for the log (``refresh()`` calls this; see ``PollingPage``)."""
        query = self.search.text().strip()
        args: dict[str, Any] = {"limit": LIST_LIMIT}
        if query:
            args["search"] = query
        return (
            Operation(self, lambda: self.client.request("audit.list", args), label="Audit")
            .success(lambda rows: self.set_rows(rows, query))
            .run()
        )

    def set_rows(self, rows: list[dict[str, Any]], query: str = "") -> None:
        """Show ``audit.list`` rows (newest first), through the actor/action filters."""
        self.freshness.mark()
        if query != self.search.text().strip():
            return
        self._answered = True
        self.all_rows = sorted(rows, key=lambda r: (r.get("ts") or 0.0, r["id"]), reverse=True)
        if not query:
            self._offer(self.actor_box, {str(r.get("actor") or "") for r in self.all_rows})
            self._offer(self.action_box, {str(r.get("action") or "") for r in self.all_rows})
        self._apply_filters()

    def _offer(self, box: QComboBox, values: set[str]) -> None:
        """Add values not offered yet (kept sorted; the current choice stays)."""
        known = {box.itemData(i) for i in range(box.count())}
        new = sorted(v for v in values - known if v)
        if not new:
            return
        current = box.currentData()
        box.blockSignals(True)
        try:
            everything = sorted((known - {ALL}) | set(new))
            while box.count() > 1:
                box.removeItem(1)
            for value in everything:
                box.addItem(value, value)
            box.setCurrentIndex(max(0, box.findData(current)))
        finally:
            box.blockSignals(False)

    def _apply_filters(self, *_args: object) -> None:
        if not self._answered:
            return
        actor = self.actor_box.currentData()
        action = self.action_box.currentData()
        rows = [
            r
            for r in self.all_rows
            if (not actor or r.get("actor") == actor) and (not action or r.get("action") == action)
        ]
        filtered = bool(self.search.text().strip() or actor or action)
        if rows:
            self.states.setCurrentWidget(self.splitter)
        else:
            self.states.setCurrentWidget(self.no_match if filtered else self.empty)
        shown = f"{len(rows):,}"
        self.count.setText(
            f"{shown} of {len(self.all_rows):,} entries"
            if len(rows) != len(self.all_rows)
            else f"{shown} entr{'y' if len(rows) == 1 else 'ies'}"
        )
        self.table.set_rows(rows)

    def set_actor(self, actor: str) -> None:
        """Filter by ``actor`` ("" for all)."""
        self.actor_box.setCurrentIndex(max(0, self.actor_box.findData(actor)))

    def set_action(self, action: str) -> None:
        """Filter by ``action`` ("" for all)."""
        self.action_box.setCurrentIndex(max(0, self.action_box.findData(action)))

    def clear_filters(self) -> None:
        self.actor_box.setCurrentIndex(0)
        self.action_box.setCurrentIndex(0)
        self.search.clear()

    def visible_actions(self) -> list[str]:
        """The action of every row shown, top to bottom."""
        return [str(r.get("action")) for r in self.table.rows]

    # ---------------------------------------------------------------- detail

    def _show_detail(self, ids: list[str]) -> None:
        rows = self.table.selected_rows()
        if not rows:
            self.side.setCurrentWidget(self.pick)
            return
        row = rows[0]
        ts = float(row.get("ts") or 0.0)
        self.detail_title.setText(f"{row.get('action')} by {row.get('actor')}")
        self.detail_fields["When"].setText(f"{local_time(ts)}  ({utc_time(ts)})")
        self.detail_fields["Actor"].setText(str(row.get("actor") or ""))
        self.detail_fields["Action"].setText(str(row.get("action") or ""))
        self.detail_fields["Target"].setText(str(row.get("target") or "\u2014"))
        count = row.get("count")
        self.detail_fields["Count"].setText(format_count(count) if count is not None else "\u2014")
        self.detail_json.setPlainText(pretty_json(row.get("detail")))
        self.side.setCurrentIndex(1)

    def detail_text(self) -> str:
        """The detail JSON shown in the side panel."""
        return self.detail_json.toPlainText()
