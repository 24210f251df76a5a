"""The Nodes page: every engine node's state and figures, and the totals, in one table.

One row per node that has reported metrics (name, role, version and pid, uptime, state,
events/s, emails/s, consumer lag, in-flight, CPU, memory, owned decide partitions, health
checks), then the totals row. A node that stops reporting stays listed, greyed, as "not
reporting 12 s". The state is an icon and a word, never colour alone. Rows come from
:func:`console.node_rows.node_rows`, recomputed once a second while the page shows.

Double-click a row (or select it and press Enter or "Show on Live") to see the Live page for
that node alone; the totals row shows all nodes together.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QFont, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import (
    QApplication,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSizePolicy,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from console.alerts import severity
from console.client import EngineClient
from console.metrics_model import Metric
from console.node_rows import NOT_REPORTING, TOTALS, check_lines, node_rows, uptime_words
from console.pages.live import downsample
from widgets import theme
from widgets.empty_state import EmptyState
from widgets.format import format_age, format_bytes, format_count, format_rate
from widgets.sparkline_table import Column, SparklineTableModel, SparklineTableView
from widgets.theme import Status

REFRESH_MS = 1000
TREND_S = 300
"""The span of the CPU sparklines, in seconds."""


def _cpu(value: float) -> str:
    """A fraction of one core as a percentage of it (``35%``; ``140%`` is 1.4 cores)."""
    percent = value * 100
    return f"{percent:.0f}%" if percent >= 10 else f"{percent:.1f}%"


def _uptime(value: Any) -> str:
    return uptime_words(float(value))


COLUMNS: tuple[Column, ...] = (
    Column("label", "Node", numeric=False),
    Column("role", "Role", numeric=False, tooltip="decide, deliver, http, or all of them"),
    Column("identity", "Version \u00b7 pid", numeric=False),
    Column("uptime", "Uptime", _uptime, tooltip="Since the node started"),
    Column("state", "State", numeric=False, tooltip="The worst of its health checks"),
    Column("events_in", "Events in", format_rate, tooltip="Events decided per second"),
    Column("emails_out", "Emails out", format_rate, tooltip="Emails the relay accepted per second"),
    Column(
        "consumer_lag",
        "Consumer lag",
        format_count,
        tooltip="Events waiting on the stream (one shared consumer: the totals show the largest)",
    ),
    Column("inflight", "In flight", format_count, tooltip="Intents being sent"),
    Column("cpu", "CPU", _cpu, tooltip="Of one core (200% is two cores)"),
    Column("rss", "Memory", format_bytes, tooltip="Resident memory"),
    Column(
        "cpu_trend",
        f"CPU, {TREND_S // 60} min",
        sparkline=True,
        tooltip="CPU over the last minutes, of one core (each row on its own scale)",
    ),
    Column(
        "partitions",
        "Partitions",
        numeric=False,
        tooltip="Decide partitions the node owns (a dash: the engine does not say)",
    ),
    Column("checks", "Health checks", numeric=False, tooltip="NATS, store and routes"),
)


class NodeTableModel(SparklineTableModel):
    """Node rows: the state as icon + word, silent nodes greyed, the totals row in bold.

    Signals: the standard QAbstractItemModel ones.
    """

    def __init__(self, columns: Sequence[Column] = COLUMNS, parent: QWidget | None = None) -> None:
        super().__init__(columns, key_field="name", parent=parent)
        fields = [c.field for c in columns]
        self._state_column = fields.index("state")

    def data(
        self,
        index: QModelIndex | QPersistentModelIndex,
        role: int = Qt.ItemDataRole.DisplayRole,
    ) -> Any:
        if not index.isValid():
            return None
        row = self._rows[self._keys[index.row()]]
        palette = QApplication.palette()
        if role == Qt.ItemDataRole.ForegroundRole and not row.get("reporting", True):
            return theme.secondary_text_color(palette)
        if role == Qt.ItemDataRole.FontRole and row.get("name") == TOTALS:
            font = QFont(QApplication.font())
            font.setBold(True)
            return font
        if index.column() == self._state_column:
            if role == Qt.ItemDataRole.DecorationRole:
                if not row.get("reporting", True):
                    return theme.icon(theme.STALE_ICON, theme.status_color(Status.UNKNOWN, palette))
                return theme.status_icon(row.get("status") or Status.UNKNOWN, palette)
            if role == Qt.ItemDataRole.ToolTipRole:
                return str(row.get("state_tip") or row.get("state") or "")
        elif role == Qt.ItemDataRole.ToolTipRole:
            text = super().data(index, Qt.ItemDataRole.DisplayRole)
            return text or None
        return super().data(index, role)

    def set_ordered_rows(self, rows: Sequence[dict[str, Any]]) -> bool:
        """Show ``rows`` in their order: updated in place while the same nodes are listed,
        rebuilt when one appears or goes (True: rebuilt, the selection is gone)."""
        keys = [str(r["name"]) for r in rows]
        if keys == self._keys:
            self.set_rows(rows)
            return False
        self.beginResetModel()
        self._keys = keys
        self._rows = {str(r["name"]): dict(r) for r in rows}
        self.endResetModel()
        return True

    def rows(self) -> list[dict[str, Any]]:
        """Copies of the rows in model order (nodes by name, then the totals)."""
        return [dict(self._rows[k]) for k in self._keys]


class NodeDetail(QFrame):
    """The selected node in full: its state, each health check with why, the partitions it
    owns, when it last reported, and its active alerts. A bordered card under the table.

    Signals: none.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = QLabel("")
        self.title.setFont(theme.scaled_font(self.font(), 1.15, bold=True))
        self.title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._grid = QGridLayout()
        self._grid.setHorizontalSpacing(8)
        self._grid.setVerticalSpacing(4)
        self._grid.setColumnStretch(2, 1)
        self._rows: list[tuple[QLabel, QLabel, QLabel]] = []
        layout = QVBoxLayout(self)
        margin = self.fontMetrics().height()
        layout.setContentsMargins(margin, margin // 2 + 2, margin, margin)
        layout.setSpacing(8)
        layout.addWidget(self.title)
        layout.addLayout(self._grid)
        self._shown: tuple[Any, ...] | None = None
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Maximum)

    def show_lines(self, title: str, lines: list[tuple[str, Status | str, str]]) -> None:
        """``lines``: (label, status or qtawesome icon name, words). Rows are kept and
        updated in place (a pool that grows), so nothing is rebuilt once a second."""
        shown = (title, tuple(lines), self.fontMetrics().height())
        if shown == self._shown:
            return
        self._shown = shown
        self.title.setText(title)
        palette = self.palette()
        size = self.fontMetrics().height()
        while len(self._rows) < len(lines):
            self._add_row(size)
        for (name, icon, text), (label, look, words) in zip(self._rows, lines, strict=False):
            name.setText(label)
            if isinstance(look, Status):
                icon.setPixmap(theme.status_icon(look, palette).pixmap(size, size))
            elif look:
                colour = theme.status_color(theme.STALE_STATUS, palette)
                icon.setPixmap(theme.icon_pixmap(look, colour, size))
            else:
                icon.clear()
            text.setText(words)
        for index, row in enumerate(self._rows):
            for widget in row:
                widget.setVisible(index < len(lines))

    def _add_row(self, size: int) -> None:
        row = len(self._rows)
        name = QLabel()
        name.setStyleSheet(f"color: {theme.secondary_text_color(self.palette()).name()}")
        icon = QLabel()
        icon.setFixedWidth(size)
        text = QLabel()
        text.setWordWrap(True)
        text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._grid.addWidget(name, row, 0)
        self._grid.addWidget(icon, row, 1)
        self._grid.addWidget(text, row, 2)
        self._rows.append((name, icon, text))

    def text(self) -> str:
        """Everything shown, one line per row (for tests and screen readers)."""
        if self._shown is None:
            return ""
        title, lines, _size = self._shown
        return "\n".join([title, *(f"{label}: {words}" for label, _look, words in lines)])

    def paintEvent(self, event: QPaintEvent) -> None:
        palette = self.palette()
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5)
        radius = max(4.0, self.fontMetrics().height() * 0.35)
        painter.setPen(QPen(theme.border_color(palette), 1))
        painter.setBrush(theme.surface_color(palette))
        painter.drawRoundedRect(rect, radius, radius)
        painter.end()


class NodesPage(QWidget):
    """The Nodes page (see the module docstring). Built with ``NodesPage(client)``.

    Signals:
        node_activated(str): show this node on the Live page (``"all"``: every node).
    """

    node_activated = Signal(str)

    def __init__(self, client: EngineClient, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.client = client
        self.model = client.model

        title = QLabel("Nodes")
        title.setFont(theme.scaled_font(self.font(), 1.5, bold=True))
        self.summary = QLabel("")
        self.live_button = QPushButton("Show on Live")
        self.live_button.setToolTip("The Live page for the selected node (totals: all nodes)")
        self.live_button.setEnabled(False)
        self.live_button.clicked.connect(self._show_selected)
        header = QHBoxLayout()
        header.setSpacing(12)
        header.addWidget(title)
        header.addWidget(self.summary, 1)
        header.addWidget(self.live_button)

        self.table_model = NodeTableModel()
        self.table = SparklineTableView(self.table_model)
        # Nodes by name, totals last: sorting would move the totals row among the nodes.
        self.table.setSortingEnabled(False)
        self.table.model().sort(-1)  # the source order
        columns = self.table.horizontalHeader()
        columns.setSortIndicatorShown(False)
        columns.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        columns.setSectionResizeMode(len(COLUMNS) - 1, QHeaderView.ResizeMode.Stretch)
        self.table.row_activated.connect(self.node_activated)
        self.table.selectionModel().selectionChanged.connect(self._selection_changed)
        self.note = QLabel(
            "Double-click a node to see the Live page for it alone. Silent nodes stay listed,"
            " greyed, and are left out of the totals."
        )
        self.note.setWordWrap(True)

        self.waiting = EmptyState(
            "mdi6.lan-pending",
            "Waiting for an engine to report\u2026",
            detail="Every engine node publishes its metrics and health four times a second;"
            " each one appears here as soon as it does.",
        )
        body = QWidget()
        body_layout = QVBoxLayout(body)
        body_layout.setContentsMargins(0, 0, 0, 0)
        self.detail = NodeDetail()
        self.pick = QLabel("Select a node to see its health checks, partitions and alerts.")
        self.pick.setAlignment(Qt.AlignmentFlag.AlignCenter)
        body_layout.setSpacing(8)
        body_layout.addWidget(self.table)
        body_layout.addWidget(self.note)
        body_layout.addWidget(self.detail)
        body_layout.addWidget(self.pick)
        body_layout.addStretch(1)
        self.states = QStackedWidget()
        self.states.addWidget(self.waiting)
        self.states.addWidget(body)
        self._body = body

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.setSpacing(8)
        layout.addLayout(header)
        layout.addWidget(self.states, 1)

        self._timer = QTimer(self)
        self._timer.setInterval(REFRESH_MS)
        self._timer.timeout.connect(self.refresh)
        client.nodes_changed.connect(lambda _nodes: self.refresh())
        self.refresh()
        self.page_shown()

    # ---------------------------------------------------------------- data

    def refresh(self) -> None:
        """Recompute every row from the model and the client's staleness."""
        client = self.client
        nodes = client.nodes()
        if not nodes:
            self.states.setCurrentWidget(self.waiting)
            self.table_model.set_ordered_rows([])
            self.summary.setText("")
            return
        rows = node_rows(self.model, nodes, client.seconds_since, client.stale_after_s, time.time())
        now = time.time()
        for row in rows:
            _t, cpu = self.model.window_series(Metric.CPU, row["name"], now - TREND_S, now)
            row["cpu_trend"] = downsample(cpu * 100.0)
        selected = self.table.selected_key()
        if self.table_model.set_ordered_rows(rows) and selected is not None:
            self.select(selected)
        self.states.setCurrentWidget(self._body)
        self.table.fit_rows()
        silent = [r["label"] for r in rows if r["name"] != TOTALS and not r["reporting"]]
        words = f"{len(nodes) - len(silent)} of {len(nodes)} nodes reporting"
        if silent:
            words += f" \u00b7 {NOT_REPORTING}: {', '.join(silent)}"
        palette = self.palette()
        colour = (
            theme.status_color(theme.STALE_STATUS, palette)
            if silent
            else theme.secondary_text_color(palette)
        )
        if self.summary.text() != words:
            self.summary.setText(words)
        self.summary.setStyleSheet(f"color: {colour.name()}")
        self._selection_changed()

    def rows(self) -> list[dict[str, Any]]:
        """The rows shown (nodes by name, then the totals)."""
        return self.table_model.rows()

    def select(self, node: str) -> None:
        """Select the row of ``node`` (``"all"``: the totals)."""
        row = self.table_model.row_for_key(node)
        if row is not None:
            self.table.selectRow(row)

    # ---------------------------------------------------------------- actions

    def _selection_changed(self, *_args: object) -> None:
        key = self.table.selected_key()
        self.live_button.setEnabled(key is not None)
        self._show_detail(key)

    def _show_detail(self, key: str | None) -> None:
        row = None
        if key is not None:
            number = self.table_model.row_for_key(key)
            row = self.table_model.rows()[number] if number is not None else None
        self.detail.setVisible(row is not None)
        self.pick.setVisible(row is None and self.states.currentWidget() is self._body)
        if row is None:
            return
        if key == TOTALS:
            title = f"All nodes · {row['role']}"
            lines: list[tuple[str, Status | str, str]] = [
                ("State", row["status"], str(row["state"])),
                ("Partitions", "", str(row["partitions"])),
            ]
            alerts = self.client.active_alerts()
        else:
            assert key is not None
            title = f"{key} · {row['role']} · {row['identity']}"
            reporting = bool(row["reporting"])
            look: Status | str = row["status"] if reporting else theme.STALE_ICON
            lines = [("State", look, str(row["state"] if reporting else row["state_tip"]))]
            for _name, status, words in check_lines(self.model.health(key)):
                first = "Health checks" if reporting else "Last known checks"
                label = first if len(lines) == 1 else ""
                lines.append((label, status if reporting else "", words))
            info = self.model.node_info(key)
            owned = info.partitions if info is not None else None
            count = f" ({len(owned)})" if owned else ""
            lines.append(("Partitions", "", f"{row['partitions']}{count}"))
            age = self.client.seconds_since(key)
            lines.append(("Last report", "", format_age(None if math.isinf(age) else age)))
            alerts = [a for a in self.client.active_alerts() if a.get("node") == key]
        for alert in alerts:
            label = "Alerts" if alert is alerts[0] else ""
            lines.append((label, severity(alert), str(alert.get("message") or alert.get("rule"))))
        if not alerts:
            lines.append(("Alerts", "", "none active"))
        self.detail.show_lines(title, lines)

    def _show_selected(self) -> None:
        key = self.table.selected_key()
        if key is not None:
            self.node_activated.emit(key)

    # ---------------------------------------------------------------- visibility

    def page_shown(self) -> None:
        self.refresh()
        self._timer.start()

    def page_hidden(self) -> None:
        self._timer.stop()
