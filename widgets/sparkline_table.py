"""A table model with a sparkline column, its delegate, and a ready view (per-workflow table)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    QPointF,
    QRectF,
    QSize,
    QSortFilterProxyModel,
    Qt,
    Signal,
)
from PySide6.QtGui import QColor, QKeyEvent, QPainter, QPainterPath, QPalette, QPen
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QProxyStyle,
    QStyle,
    QStyledItemDelegate,
    QStyleOption,
    QStyleOptionViewItem,
    QTableView,
    QWidget,
)

from widgets import theme
from widgets.format import format_count, format_duration

SORT_ROLE = Qt.ItemDataRole.UserRole + 1
"""Raw value of a cell, for sorting (a QSortFilterProxyModel's ``sortRole``)."""
SPARKLINE_ROLE = Qt.ItemDataRole.UserRole + 2
"""The trend of a sparkline cell as a float numpy array."""
KEY_ROLE = Qt.ItemDataRole.UserRole + 3
"""The row's key (e.g. the workflow id), on every cell."""

AnyIndex = QModelIndex | QPersistentModelIndex


@dataclass(frozen=True, slots=True)
class Column:
    """One column: which field it shows, its header, and how values are written."""

    field: str
    header: str
    formatter: Callable[[Any], str] | None = None
    numeric: bool = True
    sparkline: bool = False
    tooltip: str = ""


WORKFLOW_COLUMNS: tuple[Column, ...] = (
    Column("name", "Workflow", numeric=False),
    Column("triggered", "Triggered", format_count, tooltip="Enrollments started in the window"),
    Column("sent", "Sent", format_count, tooltip="Emails accepted by the relay"),
    Column("deferred", "Deferred", format_count, tooltip="Temporary failures, will retry"),
    Column("bounced", "Bounced", format_count, tooltip="Permanent failures"),
    Column("p99", "p99", format_duration, tooltip="99th percentile, event to SMTP accepted"),
    Column("trend", "Trend", sparkline=True, tooltip="Sent per minute over the window"),
)


class SparklineTableModel(QAbstractTableModel):
    """Rows of named fields, one row per key, updated in place (selection survives updates).

    ``set_rows`` diffs against the current rows: changed rows emit ``dataChanged``, new ones are
    inserted and missing ones removed, so a view never resets under the operator's cursor.

    Signals: the standard QAbstractItemModel ones (``dataChanged``, ``rowsInserted``, ...).
    """

    def __init__(
        self,
        columns: Sequence[Column] = WORKFLOW_COLUMNS,
        *,
        key_field: str = "name",
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._columns = list(columns)
        self._key_field = key_field
        self._keys: list[str] = []
        self._rows: dict[str, dict[str, Any]] = {}

    # -- API -------------------------------------------------------------------------------
    def columns(self) -> list[Column]:
        """The column specs."""
        return list(self._columns)

    def sparkline_columns(self) -> list[int]:
        """Indexes of the sparkline columns (for delegates)."""
        return [i for i, c in enumerate(self._columns) if c.sparkline]

    def update_row(self, values: Mapping[str, Any]) -> None:
        """Insert or update the row keyed by ``values[key_field]`` (other fields merge in)."""
        key = str(values[self._key_field])
        if key in self._rows:
            current = self._rows[key]
            if all(k in current and _same(current[k], v) for k, v in values.items()):
                return  # nothing new: no dataChanged, so no relayout or repaint of the row
            current.update(values)
            row = self._keys.index(key)
            self.dataChanged.emit(self.index(row, 0), self.index(row, len(self._columns) - 1))
            return
        row = len(self._keys)
        self.beginInsertRows(QModelIndex(), row, row)
        self._keys.append(key)
        self._rows[key] = dict(values)
        self.endInsertRows()

    def remove_row(self, key: str) -> None:
        """Remove the row ``key`` (no-op if absent)."""
        if key not in self._rows:
            return
        row = self._keys.index(key)
        self.beginRemoveRows(QModelIndex(), row, row)
        del self._keys[row]
        del self._rows[key]
        self.endRemoveRows()

    def set_rows(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Make the rows exactly ``rows``, updating in place where keys match."""
        incoming = {str(r[self._key_field]): r for r in rows}
        for key in [k for k in self._keys if k not in incoming]:
            self.remove_row(key)
        for values in incoming.values():
            self.update_row(values)

    def key_for_row(self, row: int) -> str:
        """The key of source row ``row``."""
        return self._keys[row]

    def row_for_key(self, key: str) -> int | None:
        """The source row of ``key``, or None."""
        return self._keys.index(key) if key in self._rows else None

    def row_values(self, key: str) -> dict[str, Any]:
        """A copy of the fields of row ``key``."""
        return dict(self._rows[key])

    # -- Qt model --------------------------------------------------------------------------
    def rowCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._keys)

    def columnCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._columns)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation != Qt.Orientation.Horizontal or not 0 <= section < len(self._columns):
            return None
        column = self._columns[section]
        if role == Qt.ItemDataRole.DisplayRole:
            return column.header
        if role == Qt.ItemDataRole.ToolTipRole:
            return column.tooltip or None
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return _alignment(column)
        return None

    def data(self, index: AnyIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        column = self._columns[index.column()]
        key = self._keys[index.row()]
        value = self._rows[key].get(column.field)
        if role == KEY_ROLE:
            return key
        if column.sparkline:
            trend = _as_array(value)
            if role == SPARKLINE_ROLE:
                return trend
            if role == SORT_ROLE:
                return float(trend[-1]) if trend.size else 0.0
            if role in (Qt.ItemDataRole.ToolTipRole, Qt.ItemDataRole.AccessibleTextRole):
                return _trend_text(trend)
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            if value is None:
                return "\u2014"
            return column.formatter(value) if column.formatter else str(value)
        if role == SORT_ROLE:
            return value if value is not None else (float("-inf") if column.numeric else "")
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return _alignment(column)
        return None

    def flags(self, index: AnyIndex) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable


def _alignment(column: Column) -> int:
    horizontal = Qt.AlignmentFlag.AlignRight if column.numeric else Qt.AlignmentFlag.AlignLeft
    return int(horizontal | Qt.AlignmentFlag.AlignVCenter)


def _as_array(value: Any) -> np.ndarray:
    if value is None:
        return np.zeros(0)
    return np.asarray(value, dtype=np.float64).ravel()


def _trend_text(trend: np.ndarray) -> str:
    finite = trend[np.isfinite(trend)]
    if not finite.size:
        return "no data"
    return (
        f"latest {format_count(finite[-1])}, "
        f"min {format_count(finite.min())}, max {format_count(finite.max())}"
    )


CELL_PADDING = 6  # pixels each side of a cell's text; the header uses the same margin


def _padding(option: QStyleOptionViewItem) -> int:
    return CELL_PADDING


def _same(a: Any, b: Any) -> bool:
    """Equal values, arrays (sparklines) compared element-wise with NaN equal to NaN."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        try:
            return bool(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True))
        except TypeError:
            return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


class PaddedDelegate(QStyledItemDelegate):
    """The default text delegate with horizontal padding inside the cell.

    Signals: none of its own.
    """

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: AnyIndex) -> None:
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        widget = opt.widget
        style = widget.style() if widget is not None else None
        if style is not None:  # background over the whole cell, text inside the padding
            style.drawPrimitive(QStyle.PrimitiveElement.PE_PanelItemViewItem, opt, painter, widget)
        pad = _padding(opt)
        opt.rect = opt.rect.adjusted(pad, 0, -pad, 0)
        super().paint(painter, opt, index)

    def sizeHint(self, option: QStyleOptionViewItem, index: AnyIndex) -> QSize:
        pad = _padding(option)
        opt = QStyleOptionViewItem(option)
        if opt.rect.width() > 2 * pad:  # wrapping text is measured in the width it is drawn in
            opt.rect = opt.rect.adjusted(pad, 0, -pad, 0)
        hint = super().sizeHint(opt, index)
        return QSize(hint.width() + 2 * pad, hint.height())


class _HeaderStyle(QProxyStyle):
    """The application style with roomier header sections (matching the cells' padding)."""

    def pixelMetric(
        self,
        metric: QStyle.PixelMetric,
        option: QStyleOption | None = None,
        widget: QWidget | None = None,
    ) -> int:
        if metric == QStyle.PixelMetric.PM_HeaderMargin:
            return CELL_PADDING
        return super().pixelMetric(metric, option, widget)


class SparklineDelegate(QStyledItemDelegate):
    """Draws the ``SPARKLINE_ROLE`` array of a cell as a small line with a soft fill.

    Signals: none of its own.
    """

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: AnyIndex) -> None:
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        widget = opt.widget
        style = widget.style() if widget is not None else None
        if style is not None:  # the selection/hover background, as the style draws it
            style.drawPrimitive(QStyle.PrimitiveElement.PE_PanelItemViewItem, opt, painter, widget)
        trend = index.data(SPARKLINE_ROLE)
        if trend is None or len(trend) < 2:
            return
        values = np.asarray(trend, dtype=np.float64)
        finite = np.isfinite(values)
        if finite.sum() < 2:
            return
        rect = QRectF(opt.rect).adjusted(6, 5, -6, -5)
        lo = float(values[finite].min())
        hi = float(values[finite].max())
        span = hi - lo if hi > lo else 1.0
        n = values.size
        selected = bool(opt.state & QStyle.StateFlag.State_Selected)
        palette: QPalette = opt.palette
        if selected:
            colour = palette.color(QPalette.ColorRole.HighlightedText)
        else:
            colour = theme.series_color(0, palette)

        path = QPainterPath()
        points: list[QPointF] = []
        for i, v in enumerate(values):
            if not np.isfinite(v):
                continue
            x = rect.left() + rect.width() * i / (n - 1)
            y = rect.bottom() - rect.height() * (v - lo) / span
            points.append(QPointF(x, y))
        path.moveTo(points[0])
        for p in points[1:]:
            path.lineTo(p)

        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        area = QPainterPath(path)
        area.lineTo(points[-1].x(), rect.bottom())
        area.lineTo(points[0].x(), rect.bottom())
        area.closeSubpath()
        fill = QColor(colour)
        fill.setAlphaF(0.18)
        painter.fillPath(area, fill)
        painter.setPen(QPen(colour, 1.5))
        painter.drawPath(path)
        painter.setBrush(colour)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.drawEllipse(points[-1], 2.5, 2.5)
        painter.restore()

    def sizeHint(self, option: QStyleOptionViewItem, index: AnyIndex) -> QSize:
        height = option.fontMetrics.height()
        return QSize(height * 7, round(height * 1.6))


class _Header(QHeaderView):
    """A horizontal header that keeps room for the sort arrow on the sorted column only.

    Qt widens every section by the arrow's size when sorting is on, which in a table of short
    numbers leaves the one wide text column (a reason, a message) with little room.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(Qt.Orientation.Horizontal, parent)
        self.sortIndicatorChanged.connect(self._sort_changed)

    def sectionSizeFromContents(self, logicalIndex: int) -> QSize:
        size = super().sectionSizeFromContents(logicalIndex)
        if self.isSortIndicatorShown() and logicalIndex != self.sortIndicatorSection():
            margin = self.style().pixelMetric(QStyle.PixelMetric.PM_HeaderMargin, None, self)
            size.setWidth(max(0, size.width() - size.height() - margin))
        return size

    def _sort_changed(self, *_args: object) -> None:
        if self.count():  # the arrow moved: sections sized by their contents are measured again
            self.headerDataChanged(Qt.Orientation.Horizontal, 0, self.count() - 1)


class SparklineTableView(QTableView):
    """A sortable table for a ``SparklineTableModel`` with sparklines drawn in place.

    Double-click or Enter on a row activates it (e.g. opens that workflow).

    Signals:
        row_activated(str): the key of the row double-clicked or activated with Enter.
    """

    row_activated = Signal(str)

    def __init__(self, model: SparklineTableModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setHorizontalHeader(_Header(self))
        self._source = model
        self._proxy = QSortFilterProxyModel(self)
        self._proxy.setSourceModel(model)
        self._proxy.setSortRole(SORT_ROLE)
        self.setModel(self._proxy)
        self._delegate = SparklineDelegate(self)
        for column in model.sparkline_columns():
            self.setItemDelegateForColumn(column, self._delegate)
        self.setSortingEnabled(True)
        self.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        # Breathing room between right-aligned numbers and the next column's text. Done in a
        # delegate and a proxy style, not a style sheet: style sheets stop palette propagation.
        self._text_delegate = PaddedDelegate(self)
        self.setItemDelegate(self._text_delegate)
        self._header_style = _HeaderStyle()
        self.horizontalHeader().setStyle(self._header_style)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setAlternatingRowColors(True)
        self.setShowGrid(False)
        self.setWordWrap(False)
        self.verticalHeader().setVisible(False)
        header = self.horizontalHeader()
        header.setHighlightSections(False)
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        if model.columnCount():
            header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for column in model.sparkline_columns():
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Fixed)
            header.resizeSection(column, self.fontMetrics().height() * 8)
        self.verticalHeader().setDefaultSectionSize(round(self.fontMetrics().height() * 1.9))
        self.doubleClicked.connect(self._activate)

    def source_model(self) -> SparklineTableModel:
        """The model behind the sort proxy."""
        return self._source

    def selected_key(self) -> str | None:
        """The key of the selected row, or None."""
        rows = self.selectionModel().selectedRows()
        return str(rows[0].data(KEY_ROLE)) if rows else None

    def _activate(self, index: QModelIndex) -> None:
        if index.isValid():
            self.row_activated.emit(str(index.data(KEY_ROLE)))

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and self.currentIndex().isValid():
            self._activate(self.currentIndex())
            return
        super().keyPressEvent(event)

    def fit_rows(self, minimum: int = 4) -> None:
        """As tall as its rows (at least ``minimum``), so a few rows do not float in a tall box
        and a page scrolls instead of the table."""
        model = self.model()
        rows = max(model.rowCount() if model is not None else 0, minimum)
        height = (
            self.horizontalHeader().height()
            + rows * self.verticalHeader().defaultSectionSize()
            + 2 * self.frameWidth()
            + 2
        )
        if self.height() != height:
            self.setFixedHeight(height)
