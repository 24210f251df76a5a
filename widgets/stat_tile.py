"""A stat tile: title, big current value, change over the window, sparkline, age when stale."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QMouseEvent, QPainter, QPaintEvent, QPalette, QPen
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from widgets import theme
from widgets.format import Formatter, describe_change, format_age, format_rate
from widgets.ring_buffer import RingBuffer
from widgets.theme import Status

# "2,431/s" -> ("2,431", "/s"); "18.2 ms" -> ("18.2", "ms"). Values with more than one number
# ("3 min 10 s") are not split: the unit part must hold no digit.
_VALUE_UNIT = re.compile(r"^([<>]?[-+]?[\d,]*\.?\d+)(\s*[^\d]*)$")


def split_value_unit(text: str) -> tuple[str, str]:
    """Split formatted text into the number and its unit, to draw the unit smaller.

    The unit keeps its leading space, so "18.2 ms" stays spaced and "2,431/s" stays tight.
    """
    match = _VALUE_UNIT.match(text)
    if not match:
        return text, ""
    return match.group(1), match.group(2)


class Sparkline(pg.PlotWidget):  # type: ignore[misc]
    """An axis-less pyqtgraph line with a soft fill, for tiles. Not interactive."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent=parent, background=None)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setStyleSheet("background: transparent")
        item = self.getPlotItem()
        for name in ("left", "bottom"):
            item.hideAxis(name)
            # Hidden axes still follow the view; without this each range change rewrites
            # their label as HTML.
            item.getAxis(name).enableAutoSIPrefix(False)
        item.setMenuEnabled(False)
        item.hideButtons()
        item.setMouseEnabled(x=False, y=False)
        item.setDownsampling(auto=True, mode="peak")
        item.setClipToView(True)
        item.enableAutoRange(x=False, y=False)
        item.getViewBox().setDefaultPadding(0.0)
        item.layout.setContentsMargins(0, 0, 0, 0)
        self.setMouseTracking(False)
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        # Peak downsampling to two points a pixel (pyqtgraph's default keeps ten).
        self.curve = item.plot(connect="finite", autoDownsampleFactor=1.0, dynamicRangeLimit=None)
        self.set_color(QColor("#888888"))

    def set_color(self, colour: QColor) -> None:
        """Line colour; the fill is the same colour, faint."""
        fill = QColor(colour)
        fill.setAlphaF(0.18)
        self.curve.setPen(pg.mkPen(colour, width=1.5))
        self.curve.setBrush(pg.mkBrush(fill))

    def show_series(self, t: np.ndarray, v: np.ndarray, x0: float, x1: float) -> None:
        """Draw ``(t, v)`` over the time range ``x0..x1`` (arrays are copied)."""
        finite = v[np.isfinite(v)]
        y_range = None
        if finite.size:
            lo, hi = float(finite.min()), float(finite.max())
            if hi - lo < 1e-12 * max(1.0, abs(hi)):
                lo, hi = lo - 1.0, hi + 1.0  # a flat line sits in the middle
            pad = (hi - lo) * 0.12
            lo_view = lo - pad
            self.curve.setFillLevel(lo_view)
            y_range = (lo_view, hi + pad)
        # x and y in one call: each range change makes the curve re-clip its data.
        self.getPlotItem().getViewBox().setRange(xRange=(x0, x1), yRange=y_range, padding=0)
        self.curve.setData(np.array(t, copy=True), np.array(v, copy=True))
        # Apply the ranges now: pyqtgraph would otherwise move the plot's transform while
        # painting, which schedules a second repaint of the sparkline.
        self.getPlotItem().getViewBox().prepareForPaint()


class StatTile(QFrame):
    """One number an operator watches: "Emails out/s  2,431/s  ▲ 12% vs 15 min ago  ~~~".

    Data arrival only appends (``push``); the owner's QTimer calls ``refresh()`` to redraw, so a
    burst of samples costs nothing until the next frame. The left accent and the icon in the
    title row show the status set with ``set_status``. When the newest sample is older than
    ``stale_after`` seconds the tile says "updated 42 s ago" in amber.

    Signals:
        clicked(): the tile was clicked (e.g. to jump to its chart).
    """

    clicked = Signal()

    def __init__(
        self,
        title: str,
        formatter: Formatter = format_rate,
        *,
        higher_is_better: bool | None = True,
        absolute_change: bool = False,
        window: float = 900.0,
        stale_after: float = 10.0,
        capacity: int = 8192,
        clock: Callable[[], float] = time.time,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._title = title
        self._formatter = formatter
        self._higher_is_better = higher_is_better
        self._absolute_change = absolute_change
        self._window = float(window)
        self._stale_after = float(stale_after)
        self._clock = clock
        self._buffer = RingBuffer(capacity)
        self._status: Status | None = None
        self._stale = False
        self._change_direction = 0
        self._created = clock()

        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setAttribute(Qt.WidgetAttribute.WA_Hover)

        self._title_label = QLabel(title)
        self._status_icon = QLabel()
        self._status_icon.setVisible(False)
        self._value_label = QLabel("\u2014")
        self._unit_label = QLabel("")
        self._change_label = QLabel("collecting\u2026")
        self._stale_icon = QLabel()
        self._stale_label = QLabel("")
        self._sparkline = Sparkline()

        for label in (self._title_label, self._value_label, self._change_label, self._stale_label):
            label.setTextInteractionFlags(Qt.TextInteractionFlag.NoTextInteraction)
        self._value_label.setAlignment(Qt.AlignmentFlag.AlignBaseline | Qt.AlignmentFlag.AlignLeft)

        title_row = QHBoxLayout()
        title_row.setSpacing(4)
        title_row.addWidget(self._title_label, 1)
        title_row.addWidget(self._status_icon)

        value_row = QHBoxLayout()
        value_row.setSpacing(0)
        value_row.addWidget(self._value_label, 0, Qt.AlignmentFlag.AlignBaseline)
        value_row.addWidget(self._unit_label, 0, Qt.AlignmentFlag.AlignBaseline)
        value_row.addStretch(1)

        stale_row = QHBoxLayout()
        stale_row.setSpacing(4)
        stale_row.addWidget(self._stale_icon)
        stale_row.addWidget(self._stale_label, 1)

        layout = QVBoxLayout(self)
        layout.setSpacing(2)
        layout.addLayout(title_row)
        layout.addLayout(value_row)
        layout.addWidget(self._change_label)
        layout.addWidget(self._sparkline)
        layout.addLayout(stale_row)
        # Reserve the staleness line so the tile does not jump when data goes stale.
        for widget in (self._stale_icon, self._stale_label):
            policy = widget.sizePolicy()
            policy.setRetainSizeWhenHidden(True)
            widget.setSizePolicy(policy)
            widget.setVisible(False)

        self._apply_fonts()
        self._apply_palette()

    # -- API -------------------------------------------------------------------------------
    def push(self, ts: float, value: float) -> None:
        """Record a sample (epoch seconds). Only appends; nothing is drawn until ``refresh``."""
        self._buffer.append(ts, value)

    def set_window(self, seconds: float) -> None:
        """The window the sparkline shows and the change is measured over."""
        self._window = float(seconds)

    def window_seconds(self) -> float:
        """The window in seconds."""
        return self._window

    def set_stale_after(self, seconds: float) -> None:
        """After how many seconds without data the tile shows its age in amber."""
        self._stale_after = float(seconds)

    def set_status(self, status: str | Status | None) -> None:
        """The status accent (and icon) of the tile; None removes it."""
        self._status = None if status is None else Status.parse(status)
        self._apply_palette()

    def status(self) -> Status | None:
        """The status shown, or None."""
        return self._status

    def set_formatter(self, formatter: Formatter) -> None:
        """How values are written (e.g. ``format_duration``)."""
        self._formatter = formatter

    def set_title(self, title: str) -> None:
        """The tile's title."""
        self._title = title
        self._title_label.setText(title)

    def is_stale(self) -> bool:
        """Whether the last refresh found the data stale."""
        return self._stale

    def value_text(self) -> str:
        """The current value as shown, e.g. "2,431/s"."""
        return self._value_label.text() + self._unit_label.text()

    def change_text(self) -> str:
        """The change line as shown, e.g. "▲ 12% vs 15 min ago"."""
        return self._change_label.text()

    def stale_text(self) -> str:
        """The staleness line ("" while data is fresh)."""
        return self._stale_label.text() if self._stale else ""

    def refresh(self, now: float | None = None) -> None:
        """Redraw from the buffer (called by the owner's QTimer)."""
        now = self._clock() if now is None else now
        latest = self._buffer.latest()
        if latest is None:
            self._set_value("\u2014")
            self._set_change("no data yet", 0)
            self._set_stale(now - self._created > self._stale_after, None)
            return
        last_t, last_v = latest
        self._set_value(self._formatter(last_v))

        reference = self._buffer.at_or_before(now - self._window) or self._buffer.oldest()
        assert reference is not None
        ref_t, ref_v = reference
        ago = now - ref_t
        if ref_t >= last_t:
            self._set_change("collecting\u2026", 0)
        else:
            shown_ago = self._window if ago >= self._window else ago
            change = describe_change(
                last_v,
                ref_v,
                shown_ago,
                formatter=self._formatter,
                absolute=self._absolute_change,
            )
            self._set_change(change.text, change.direction)

        t, v = self._buffer.window(now - self._window, now, pad=1)
        self._sparkline.show_series(t, v, now - self._window, now)
        age = now - last_t
        self._set_stale(age > self._stale_after, age)

    # -- internals -------------------------------------------------------------------------
    def _set_value(self, text: str) -> None:
        number, unit = split_value_unit(text)
        if self._value_label.text() != number:
            self._value_label.setText(number)
        if self._unit_label.text() != unit:
            self._unit_label.setText(unit)
        self.setAccessibleName(f"{self._title}: {text}")

    def _set_change(self, text: str, direction: int) -> None:
        if self._change_label.text() != text:
            self._change_label.setText(text)
        if direction != self._change_direction:
            self._change_direction = direction
            self._apply_palette()

    def _set_stale(self, stale: bool, age: float | None) -> None:
        changed = stale != self._stale
        self._stale = stale
        if stale:
            self._stale_label.setText(format_age(age))
        self._stale_icon.setVisible(stale)
        self._stale_label.setVisible(stale)
        if changed:
            self._apply_palette()

    def _change_colour(self, palette: QPalette) -> QColor:
        if self._change_direction == 0 or self._higher_is_better is None:
            return theme.secondary_text_color(palette)
        good = (self._change_direction > 0) == self._higher_is_better
        return theme.status_color(Status.HEALTHY if good else Status.FAILING, palette)

    def _apply_fonts(self) -> None:
        base = self.font()
        self._title_label.setFont(theme.scaled_font(base, 1.0, bold=True))
        self._value_label.setFont(theme.scaled_font(base, 2.2, bold=True))
        self._unit_label.setFont(theme.scaled_font(base, 1.25))
        self._change_label.setFont(theme.scaled_font(base, 0.95))
        self._stale_label.setFont(theme.scaled_font(base, 0.95))
        height = self.fontMetrics().height()
        self._sparkline.setFixedHeight(round(height * 2.6))
        icon = round(height * 1.05)
        self._status_icon.setFixedSize(icon, icon)
        self._stale_icon.setFixedSize(icon, icon)
        m = round(height * 0.6)
        layout = self.layout()
        if layout is not None:
            layout.setContentsMargins(m + 4, round(m * 0.8), m, round(m * 0.6))
        self._apply_palette()

    def _apply_palette(self) -> None:
        palette = self.palette()
        _set_text_colour(self._title_label, theme.secondary_text_color(palette))
        _set_text_colour(self._value_label, theme.text_color(palette))
        _set_text_colour(self._unit_label, theme.secondary_text_color(palette))
        _set_text_colour(self._change_label, self._change_colour(palette))
        amber = theme.status_color(theme.STALE_STATUS, palette)
        _set_text_colour(self._stale_label, amber)
        icon_px = self._stale_icon.width()
        self._stale_icon.setPixmap(theme.icon_pixmap(theme.STALE_ICON, amber, icon_px))
        if self._status is None:
            self._status_icon.setVisible(False)
            self._sparkline.set_color(theme.series_color(0, palette))
        else:
            self._status_icon.setPixmap(
                theme.status_icon(self._status, palette).pixmap(icon_px, icon_px)
            )
            self._status_icon.setToolTip(theme.status_style(self._status).word)
            self._status_icon.setVisible(True)
            self._sparkline.set_color(theme.status_color(self._status, palette))
        self.update()

    def changeEvent(self, event: QEvent) -> None:
        kind = event.type()
        if kind in (QEvent.Type.FontChange, QEvent.Type.ApplicationFontChange):
            self._apply_fonts()
        elif kind in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            self._apply_palette()
        super().changeEvent(event)

    def sizeHint(self) -> QSize:
        hint = super().sizeHint()
        return QSize(max(hint.width(), self.fontMetrics().averageCharWidth() * 24), hint.height())

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self.clicked.emit()
        super().mouseReleaseEvent(event)

    def paintEvent(self, event: QPaintEvent) -> None:
        palette = self.palette()
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5)
        radius = max(4.0, self.fontMetrics().height() * 0.35)
        border = theme.border_color(palette)
        if self.underMouse():
            border = theme.blend(border, theme.text_color(palette), 0.25)
        painter.setPen(QPen(border, 1))
        painter.setBrush(theme.surface_color(palette))
        painter.drawRoundedRect(rect, radius, radius)
        if self._status is not None:
            accent = QRectF(rect.left(), rect.top(), 4, rect.height())
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(theme.status_color(self._status, palette))
            painter.setClipRect(accent)
            painter.drawRoundedRect(rect, radius, radius)
        painter.end()


def _set_text_colour(label: QLabel, colour: QColor) -> None:
    palette = label.palette()
    if palette.color(QPalette.ColorRole.WindowText) == colour:
        return
    palette.setColor(QPalette.ColorRole.WindowText, colour)
    label.setPalette(palette)
