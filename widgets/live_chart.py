"""Live time-series charts: ``LiveChart`` and the ``ChartGroup`` that drives several at once.

Follows pyqtgraph's ``scrollingPlots.py``/``PlotSpeedTest.py`` habits: each curve is created once
and then fed with ``setData``; data arrival only appends to preallocated ring buffers; a QTimer in
the group redraws about ten times a second. ``setClipToView(True)`` only works with x auto-range
off, so the chart sets its x range itself (following "now", or wherever the user scrolled to
when frozen) and computes the y range from what is visible.

Everything here is GUI-thread only: a bridge that receives data on another thread emits a Qt
signal, and the slot (on the GUI thread) calls ``push``.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, QPointF, QTimer, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QWidget

from widgets import theme
from widgets.format import Formatter, format_si
from widgets.ring_buffer import RingBuffer

WINDOWS: dict[str, float] = {"1 min": 60.0, "15 min": 900.0, "1 h": 3600.0}
REDRAW_INTERVAL_MS = 100


@dataclass(slots=True)
class _Series:
    key: str
    label: str
    buffer: RingBuffer
    curve: pg.PlotDataItem
    color: QColor | None  # None: the next categorical colour of the palette
    index: int
    dirty: bool = True


class LiveChart(pg.PlotWidget):  # type: ignore[misc]
    """A live chart of named series over a date axis, with units on the y axis.

    The owner creates the series once (``add_series``) and then only ``push``es samples; a
    ``ChartGroup`` (or the owner's own QTimer) calls ``refresh()``. While following, the x range
    is the last ``window`` seconds; frozen, the chart stops following and the user can drag or
    wheel back through the buffered history. Dragging a following chart freezes it. Hovering shows
    a crosshair with each series' exact value at that time; the legend shows current values.

    Signals:
        frozen_changed(bool): following stopped (True) or resumed (False), also when the user
            dragged the chart.
    """

    frozen_changed = Signal(bool)

    def __init__(
        self,
        title: str = "",
        *,
        unit: str = "",
        y_label: str = "",
        formatter: Formatter | None = None,
        si_prefix: bool = True,
        y_from_zero: bool = True,
        window: float = 60.0,
        capacity: int = 16384,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent=parent, axisItems={"bottom": pg.DateAxisItem(orientation="bottom")})
        self._title = title
        self._unit = unit
        self._y_label = y_label
        self._si_prefix = si_prefix
        self._formatter: Formatter = formatter or (lambda v: format_si(v, unit))
        self._y_from_zero = y_from_zero
        self._window = float(window)
        self._capacity = capacity
        self._frozen = False
        self._series: dict[str, _Series] = {}
        self._last_x_range: tuple[float, float] | None = None
        self._hover_scene_pos: QPointF | None = None
        self._now = time.time()

        item = self.getPlotItem()
        item.setMenuEnabled(False)
        item.hideButtons()
        item.setDownsampling(auto=True, mode="peak")
        item.setClipToView(True)
        item.enableAutoRange(x=False, y=False)
        item.setMouseEnabled(x=True, y=False)
        item.showGrid(x=True, y=True, alpha=0.12)
        item.getViewBox().sigRangeChangedManually.connect(self._on_user_range_change)
        # The legend sits in the title row, right-aligned, so it never covers the data.
        self._legend = pg.LegendItem(offset=None, colCount=8, verSpacing=-4, horSpacing=14)
        self._legend.setParentItem(item)
        item.legend = self._legend
        item.titleLabel.geometryChanged.connect(self._place_legend)

        self._crosshair = pg.InfiniteLine(angle=90, movable=False)
        self._crosshair.setZValue(50)
        self._readout = pg.TextItem(anchor=(0, 0))
        self._readout.setZValue(60)
        self._markers = pg.ScatterPlotItem(size=7)
        self._markers.setZValue(55)
        for overlay in (self._crosshair, self._readout, self._markers):
            item.addItem(overlay, ignoreBounds=True)
            overlay.hide()
        self.scene().sigMouseMoved.connect(self._on_mouse_moved)

        self._apply_fonts()
        self._apply_palette()

    # -- series ----------------------------------------------------------------------------
    def add_series(self, key: str, label: str = "", color: QColor | str | None = None) -> None:
        """Create the series ``key`` once (its curve lives as long as the chart)."""
        if key in self._series:
            raise ValueError(f"series {key!r} already exists")
        curve = self.getPlotItem().plot(name=label or key, connect="finite", antialias=True)
        series = _Series(
            key=key,
            label=label or key,
            buffer=RingBuffer(self._capacity),
            curve=curve,
            color=QColor(color) if color is not None else None,
            index=len(self._series),
        )
        self._series[key] = series
        self._style_series(series)

    def curve(self, key: str) -> pg.PlotDataItem:
        """The curve of series ``key`` (created once in ``add_series``)."""
        return self._series[key].curve

    def series_keys(self) -> list[str]:
        """The series, in the order they were added."""
        return list(self._series)

    def push(self, key: str, ts: float, value: float) -> None:
        """Append a sample to series ``key``; drawn at the next ``refresh``."""
        series = self._series[key]
        series.buffer.append(ts, value)
        series.dirty = True

    def extend(self, key: str, ts: np.ndarray, values: np.ndarray) -> None:
        """Append many samples at once (history on connect), oldest first."""
        series = self._series[key]
        series.buffer.extend(ts, values)
        series.dirty = True

    def buffer(self, key: str) -> RingBuffer:
        """The ring buffer of series ``key`` (read it; write through ``push``)."""
        return self._series[key].buffer

    # -- window and freeze -----------------------------------------------------------------
    def set_window(self, seconds: float) -> None:
        """Show the last ``seconds`` (when frozen: resize the view around its right edge)."""
        self._window = float(seconds)
        if self._frozen:
            _, right = self.x_range()
            self._set_x_range(right - self._window, right)
        else:
            self._set_x_range(self._now - self._window, self._now)

    def window_seconds(self) -> float:
        """The window in seconds."""
        return self._window

    def set_frozen(self, frozen: bool) -> None:
        """Stop (True) or resume (False) following now; frozen, the user may scroll back."""
        if frozen == self._frozen:
            return
        self._frozen = frozen
        if not frozen:
            self._set_x_range(self._now - self._window, self._now)
        self.frozen_changed.emit(frozen)

    def is_frozen(self) -> bool:
        """Whether the chart has stopped following now."""
        return self._frozen

    def x_range(self) -> tuple[float, float]:
        """The visible time range (epoch seconds)."""
        (x0, x1), _ = self.getPlotItem().getViewBox().viewRange()
        return float(x0), float(x1)

    # -- drawing ---------------------------------------------------------------------------
    def refresh(self, now: float | None = None, *, follow: bool = True) -> None:
        """Redraw: follow now (unless frozen), feed curves, fit y, update legend and readout.

        ``follow=False`` leaves the x range alone: a chart whose x axis is linked to one that
        has just followed now is already there (setting it again costs a round of linked
        range updates on every chart of the group).
        """
        self._now = time.time() if now is None else now
        if follow and not self._frozen:
            self._set_x_range(self._now - self._window, self._now)
        x0, x1 = self.x_range()
        moved = self._last_x_range != (x0, x1)
        self._last_x_range = (x0, x1)
        span = x1 - x0
        lo: float = np.inf
        hi: float = -np.inf
        for series in self._series.values():
            if series.dirty or moved:
                # A margin of one span each side lets a frozen chart pan smoothly between
                # redraws; the copy keeps later appends from rewriting what the curve holds.
                t, v = series.buffer.window(x0 - span, x1 + span, pad=1)
                series.curve.setData(t.copy(), v.copy())
                series.dirty = False
            _, visible = series.buffer.window(x0, x1, pad=1)
            finite = visible[np.isfinite(visible)]
            if finite.size:
                lo = min(lo, float(finite.min()))
                hi = max(hi, float(finite.max()))
        self._fit_y(lo, hi)
        self._update_legend()
        if self._hover_scene_pos is not None:
            self._show_readout(self._hover_scene_pos)

    def _fit_y(self, lo: float, hi: float) -> None:
        if not np.isfinite(lo):
            lo, hi = 0.0, 1.0
        if self._y_from_zero:
            lo = min(lo, 0.0)
        if hi - lo <= 0:
            hi = lo + (abs(lo) or 1.0)
        top = hi + (hi - lo) * 0.1
        # A little below zero: pyqtgraph drops tick labels that would cross the axis ends, and
        # an operator wants to see the "0".
        bottom = lo - (hi - lo) * (0.05 if self._y_from_zero and lo == 0 else 0.1)
        self.getPlotItem().getViewBox().setYRange(bottom, top, padding=0)

    def _update_legend(self) -> None:
        for series in self._series.values():
            latest = series.buffer.latest()
            value = self._formatter(latest[1]) if latest else "\u2014"
            text = f"{series.label}  {value}"
            label = self._legend.getLabel(series.curve)
            if label is not None and label.text != text:
                label.setText(text)

    def legend_text(self, key: str) -> str:
        """The legend entry of series ``key`` as shown, e.g. "sent  2,431/s"."""
        label = self._legend.getLabel(self._series[key].curve)
        return str(label.text) if label is not None else ""

    def _place_legend(self) -> None:
        """Centre the legend vertically on the title row (the row's height follows the font)."""
        title = self.getPlotItem().titleLabel
        centre = title.geometry().center().y()
        self._legend.anchor(itemPos=(1, 0.5), parentPos=(1, 0), offset=(-8, centre))

    def _set_x_range(self, x0: float, x1: float) -> None:
        self.getPlotItem().getViewBox().setXRange(x0, x1, padding=0)

    def _on_user_range_change(self, _mask: object) -> None:
        if not self._frozen:
            self.set_frozen(True)

    # -- hover readout ---------------------------------------------------------------------
    def _on_mouse_moved(self, scene_pos: QPointF) -> None:
        vb = self.getPlotItem().getViewBox()
        if not vb.sceneBoundingRect().contains(scene_pos):
            self._hide_readout()
            return
        self._hover_scene_pos = QPointF(scene_pos)
        self._show_readout(scene_pos)

    def readout_text(self) -> str:
        """The hover readout as plain text ("" when hidden), for tests and accessibility."""
        if not self._readout.isVisible():
            return ""
        return str(self._readout.textItem.toPlainText())

    def show_readout_at(self, t: float) -> None:
        """Show the crosshair at time ``t`` (what hovering does; also for keyboard/tests)."""
        vb = self.getPlotItem().getViewBox()
        y = vb.viewRange()[1][1]
        self._hover_scene_pos = vb.mapViewToScene(QPointF(t, y))
        self._show_readout(self._hover_scene_pos)

    def _show_readout(self, scene_pos: QPointF) -> None:
        vb = self.getPlotItem().getViewBox()
        point = vb.mapSceneToView(scene_pos)
        t = point.x()
        palette = self.palette()
        stamp = time.strftime("%H:%M:%S", time.localtime(t))
        lines = [f"<b>{stamp}</b>"]
        spots = []
        for series in self._series.values():
            sample = series.buffer.nearest(t)
            if sample is None or abs(sample[0] - t) > max(self._window / 50, 2.0):
                value = "\u2014"
            else:
                value = self._formatter(sample[1])
                if np.isfinite(sample[1]):
                    spots.append({"pos": sample, "brush": self._colour(series)})
            colour = self._colour(series).name()
            lines.append(
                f'<span style="color:{colour}">\u25a0</span> {html.escape(series.label)}: '
                f"<b>{html.escape(value)}</b>"
            )
        fg = theme.text_color(palette).name()
        self._readout.setHtml(f'<div style="color:{fg}">{"<br>".join(lines)}</div>')
        (x0, x1), _ = vb.viewRange()
        # Just inside the top of the plot, on the side of the cursor with more room.
        top = vb.sceneBoundingRect().top() + 4
        y_top = vb.mapSceneToView(QPointF(scene_pos.x(), top)).y()
        self._readout.setAnchor((1, 0) if t > (x0 + x1) / 2 else (0, 0))
        self._readout.setPos(t, y_top)
        self._crosshair.setPos(t)
        self._markers.setData(spots)
        for overlay in (self._crosshair, self._readout, self._markers):
            overlay.show()

    def _hide_readout(self) -> None:
        self._hover_scene_pos = None
        for overlay in (self._crosshair, self._readout, self._markers):
            overlay.hide()

    def leaveEvent(self, event: QEvent) -> None:
        self._hide_readout()
        super().leaveEvent(event)

    # -- look ------------------------------------------------------------------------------
    def _colour(self, series: _Series) -> QColor:
        return series.color or theme.series_color(series.index, self.palette())

    def _style_series(self, series: _Series) -> None:
        series.curve.setPen(pg.mkPen(self._colour(series), width=2))

    def _apply_fonts(self) -> None:
        item = self.getPlotItem()
        font = self.font()
        small = theme.scaled_font(font, 0.9)
        size = theme.font_points(self, 1.0)
        for name in ("left", "bottom"):
            item.getAxis(name).setStyle(tickFont=small)
        item.setLabel("left", self._y_label, units=self._unit or None, **{"font-size": size})
        item.getAxis("left").enableAutoSIPrefix(self._si_prefix)
        item.setTitle(
            self._title or " ", size=theme.font_points(self, 1.1), bold=True, justify="left"
        )
        self._legend.setLabelTextSize(theme.font_points(self, 0.95))
        self._readout.textItem.setFont(small)

    def _apply_palette(self) -> None:
        palette = self.palette()
        item = self.getPlotItem()
        fg = theme.secondary_text_color(palette)
        self.setBackground(theme.surface_color(palette))
        for name in ("left", "bottom"):
            axis = item.getAxis(name)
            axis.setPen(pg.mkPen(theme.border_color(palette)))
            axis.setTextPen(pg.mkPen(fg))
        self._legend.setLabelTextColor(theme.text_color(palette))
        bg = theme.surface_color(palette)
        bg.setAlphaF(0.85)
        self._legend.setBrush(pg.mkBrush(bg))
        item.titleLabel.setAttr("color", theme.text_color(palette).name())
        item.setTitle(self._title or " ")
        self._crosshair.setPen(pg.mkPen(fg, width=1, style=pg.QtCore.Qt.PenStyle.DashLine))
        readout_bg = theme.surface_color(palette)
        readout_bg.setAlphaF(0.92)
        self._readout.fill = pg.mkBrush(readout_bg)
        self._readout.border = pg.mkPen(theme.border_color(palette))
        for series in self._series.values():
            self._style_series(series)

    def changeEvent(self, event: QEvent) -> None:
        if getattr(self, "_readout", None) is None or getattr(self, "plotItem", None) is None:
            # Still inside pg.PlotWidget.__init__, or closed (close() drops the plot item).
            super().changeEvent(event)
            return
        kind = event.type()
        if kind in (QEvent.Type.FontChange, QEvent.Type.ApplicationFontChange):
            self._apply_fonts()
        elif kind in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            self._apply_palette()
        super().changeEvent(event)


class ChartGroup(QObject):
    """Charts that share one time axis, one window and one freeze, redrawn by one QTimer.

    Linking x axes means panning a frozen chart pans all of them; freezing one (a drag) freezes
    all. ``start()`` begins redrawing at about 10 Hz; ``stop()`` ends it.

    Signals:
        window_changed(float): the window (seconds) changed.
        frozen_changed(bool): the group stopped (True) or resumed (False) following now.
    """

    window_changed = Signal(float)
    frozen_changed = Signal(bool)

    def __init__(
        self,
        window: float = 60.0,
        *,
        interval_ms: int = REDRAW_INTERVAL_MS,
        clock: Callable[[], float] = time.time,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._charts: list[LiveChart] = []
        self._extra: list[Callable[[float], None]] = []
        self._window = float(window)
        self._frozen = False
        self._clock = clock
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.refresh)

    def add_chart(self, chart: LiveChart) -> None:
        """Join ``chart`` to the group: linked x axis, the group's window and freeze."""
        if self._charts:
            chart.setXLink(self._charts[0])
        self._charts.append(chart)
        chart.set_window(self._window)
        chart.set_frozen(self._frozen)
        chart.frozen_changed.connect(self.set_frozen)

    def add_refresher(self, refresh: Callable[[float], None]) -> None:
        """Also call ``refresh(now)`` on every tick (stat tiles, histograms) so all move as one."""
        self._extra.append(refresh)

    def charts(self) -> list[LiveChart]:
        """The charts, in the order added."""
        return list(self._charts)

    def set_window(self, seconds: float) -> None:
        """Show the last ``seconds`` on every chart."""
        if seconds == self._window:
            return
        self._window = float(seconds)
        for chart in self._charts:
            chart.set_window(seconds)
        self.window_changed.emit(self._window)

    def window_seconds(self) -> float:
        """The window in seconds."""
        return self._window

    def set_frozen(self, frozen: bool) -> None:
        """Freeze (True) or resume following now (False) on every chart."""
        if frozen == self._frozen:
            return
        self._frozen = frozen
        for chart in self._charts:
            chart.set_frozen(frozen)
        self.frozen_changed.emit(frozen)
        self.refresh()

    def is_frozen(self) -> bool:
        """Whether the group has stopped following now."""
        return self._frozen

    def start(self) -> None:
        """Start redrawing on the timer."""
        self._timer.start()

    def stop(self) -> None:
        """Stop redrawing."""
        self._timer.stop()

    def is_running(self) -> bool:
        """Whether the redraw timer runs."""
        return self._timer.isActive()

    def refresh(self, now: float | None = None) -> None:
        """Redraw every chart (and refresher) for time ``now`` (default: the clock)."""
        now = self._clock() if now is None else now
        # The first chart follows now; the others are x-linked to it and follow with it.
        for index, chart in enumerate(self._charts):
            chart.refresh(now, follow=index == 0)
        for refresh in self._extra:
            refresh(now)
