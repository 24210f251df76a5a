"""Live time-series charts: ``LiveChart`` and the ``ChartGroup`` that drives several at once.

Follows pyqtgraph's ``scrollingPlots.py``/``PlotSpeedTest.py`` habits: each curve is created once
and then fed with ``setData``; data arrival only appends to preallocated ring buffers; a QTimer in
the group redraws. ``setClipToView(True)`` only works with x auto-range off, so the chart sets its
x range itself (following "now", or wherever the user scrolled to when frozen) and computes the
y range from what is visible.

Redrawing a chart means repainting all of it (the x axis moves with "now"), a few milliseconds
each. So the group never redraws every chart in one go: each tick of its timer redraws only the
next chart or tile, round robin, and the timer ticks often enough for each to be redrawn four
times a second (once a second for the long windows, where a quarter second is less than a
pixel). No tick takes long enough to make the console stutter. Charts nobody can see (page
hidden, scrolled away, window minimized) are skipped. The y range moves in coarse "nice" steps,
so the y axis and its grid are not redrawn on every sample.

Everything here is GUI-thread only: a bridge that receives data on another thread emits a Qt
signal, and the slot (on the GUI thread) calls ``push``.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, QPointF, Qt, QTimer, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QGraphicsItem, QWidget

from widgets import theme
from widgets.format import Formatter, format_si
from widgets.ring_buffer import RingBuffer

WINDOWS: dict[str, float] = {"1 min": 60.0, "15 min": 900.0, "1 h": 3600.0}
MIN_TICK_MS = 15
"""The group's timer never ticks faster; with more charts than that allows, a tick redraws two."""
FAST_PERIOD_S = 1 / 3
"""Each chart (and tile) is redrawn this often for short windows: 3 Hz (a 1-minute chart
moves a few pixels a redraw; 4 Hz cost the console ~27 % of a core at the top rate)."""
SLOW_PERIOD_S = 1.0
"""... and this often for windows of 15 minutes and more, where 0.25 s is under a pixel."""
SLOW_WINDOW_S = 900.0

# Steps the y range snaps to (times a power of ten): the range only moves when the data
# crosses one, so the axis and its grid are redrawn seldom instead of on every sample.
_NICE_STEPS = (1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0)


def nice_ceil(value: float) -> float:
    """The smallest "nice" number (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8 times 10^k) >= ``value``."""
    if value <= 0 or not math.isfinite(value):
        return value
    power = 10.0 ** math.floor(math.log10(value))
    for step in _NICE_STEPS:
        if step * power >= value * (1 - 1e-9):
            return step * power
    return 10.0 * power


def refresh_period(window: float) -> float:
    """Seconds between redraws of one chart showing ``window`` seconds."""
    return SLOW_PERIOD_S if window >= SLOW_WINDOW_S else FAST_PERIOD_S


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
        self._y_range: tuple[float, float] | None = None
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
        # Time needs no SI prefix; with it on, pyqtgraph rewrites the (hidden) axis label as
        # HTML on every x range change, that is on every redraw.
        item.getAxis("bottom").enableAutoSIPrefix(False)
        # Keep the y axis (ticks, labels and its grid lines) as a pixmap: its range moves
        # seldom (see _fit_y), so a redraw blits it instead of replaying every line and label.
        # Not the time axis: it moves on every redraw, and caching would only add a pixmap
        # to clear and blend each time. Its grid keeps to the labelled and the next level.
        item.getAxis("left").setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        item.getAxis("bottom").setStyle(maxTickLevel=1)
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
        # Antialiasing off: a 2 px antialiased pen makes Qt stroke the whole path (several ms a
        # curve once the window holds a few hundred points); without it pyqtgraph draws plain
        # line segments, which stay sharp at this width and cost a fraction of that.
        curve = self.getPlotItem().plot(
            name=label or key,
            connect="finite",
            antialias=False,
            # Peak downsampling to two points a pixel (pyqtgraph's default keeps ten).
            autoDownsampleFactor=1.0,
            # Values are always inside the y range we set, so pyqtgraph's guard against huge
            # ones is not needed, and it re-processes every curve on each y range change.
            dynamicRangeLimit=None,
        )
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

        ``follow=False`` leaves the x range alone (redraw new samples where the chart is).
        Nothing is done when neither the range nor the data changed since the last redraw.
        """
        self._now = time.time() if now is None else now
        if follow and not self._frozen:
            x0, x1 = self._now - self._window, self._now
        else:
            x0, x1 = self.x_range()
        moved = self._last_x_range != (x0, x1)
        if not moved and not any(s.dirty for s in self._series.values()):
            return  # frozen (or the clock stood still) and no new samples: nothing to redraw
        lo: float = np.inf
        hi: float = -np.inf
        for series in self._series.values():
            _, visible = series.buffer.window(x0, x1, pad=1)
            finite = visible[np.isfinite(visible)]
            if finite.size:
                lo = min(lo, float(finite.min()))
                hi = max(hi, float(finite.max()))
        y_range = self._fit_y(lo, hi)
        vb = self.getPlotItem().getViewBox()
        x_range = (x0, x1) if (x0, x1) != self.x_range() else None
        if x_range is not None or y_range is not None:
            # x and y in one call: each range change makes every curve re-clip its data.
            vb.setRange(xRange=x_range, yRange=y_range, padding=0)
        self._last_x_range = (x0, x1)
        span = x1 - x0
        for series in self._series.values():
            if series.dirty or moved:
                # A margin of one span each side lets a frozen chart pan smoothly between
                # redraws; the copy keeps later appends from rewriting what the curve holds.
                t, v = series.buffer.window(x0 - span, x1 + span, pad=1)
                series.curve.setData(t.copy(), v.copy())
                series.dirty = False
        # Apply the new ranges now rather than in the paint: pyqtgraph otherwise moves the
        # plot's transform while painting, which schedules a second full repaint of the chart.
        vb.prepareForPaint()
        self._update_legend()
        if self._hover_scene_pos is not None:
            self._show_readout(self._hover_scene_pos)

    def _fit_y(self, lo: float, hi: float) -> tuple[float, float] | None:
        """The y range for the visible data (nice steps, some hysteresis); None: keep it."""
        if not np.isfinite(lo):
            lo, hi = 0.0, 1.0
        if self._y_from_zero:
            lo = min(lo, 0.0)
        if hi - lo <= 0:
            hi = lo + (abs(lo) or 1.0)
        current = self._y_range
        if current is not None:
            c_lo, c_hi = current
            c_span = c_hi - c_lo
            # Keep the range while the data fits and still uses at least 40% of it.
            if lo >= c_lo and hi <= c_hi and (hi - lo) >= 0.4 * c_span:
                return None
        span = hi - lo
        top = hi + span * 0.1
        bottom = lo if self._y_from_zero and lo == 0 else lo - span * 0.1
        if bottom >= 0:
            top = nice_ceil(top)
        elif top <= 0:
            bottom = -nice_ceil(-bottom)
        else:
            top, bottom = nice_ceil(top), -nice_ceil(-bottom)
        self._y_range = (bottom, top)
        # A little below zero: pyqtgraph drops tick labels that would cross the axis ends, and
        # an operator wants to see the "0".
        pad = (top - bottom) * (0.05 if self._y_from_zero and bottom == 0 else 0.0)
        return bottom - pad, top

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


@dataclass(slots=True)
class _Unit:
    """One thing the group redraws on its turn: a chart, or a refresher (tiles and the like)."""

    refresh: Callable[[float], None]
    widget: QWidget | None  # skipped while this is not on screen
    every: int = 1  # takes its turn on every this many rounds
    rounds: int = 0


def on_screen(widget: QWidget) -> bool:
    """Whether any of ``widget`` can be seen: shown, not scrolled away, window not minimized.

    Not ``visibleRegion()``: it subtracts opaque children, and a chart (a QGraphicsView) is
    all viewport, so it always reads empty. The widget's rect clipped by each parent's is.
    """
    if not widget.isVisible() or widget.window().isMinimized():
        return False
    rect = widget.rect()
    child = widget
    while not child.isWindow():
        parent = child.parentWidget()
        if parent is None:
            break
        rect = rect.translated(child.pos()).intersected(parent.rect())
        if rect.isEmpty():
            return False
        child = parent
    return True


class ChartGroup(QObject):
    """Charts that share one time axis, one window and one freeze, redrawn by one QTimer.

    ``start()`` begins redrawing; ``stop()`` ends it. Each timer tick (``tick``) redraws only the
    next few charts and refreshers, round robin, so each is redrawn every ``refresh_period``
    seconds (3 Hz for short windows) while no single tick does more than a small share of the
    work; those not on screen are skipped. ``refresh()`` redraws everything at once.

    While following now, every chart sets its own x range (linked x axes would make each chart's
    step move all the others, a cascade of range updates on every tick). Frozen, the x axes are
    linked: panning or wheeling one chart pans all of them. Freezing one (a drag) freezes all.

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
        min_tick_ms: int = MIN_TICK_MS,
        clock: Callable[[], float] = time.time,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._charts: list[LiveChart] = []
        self._units: list[_Unit] = []
        self._next = 0
        self._window = float(window)
        self._frozen = False
        self._clock = clock
        self._min_tick_ms = min_tick_ms
        self._timer = QTimer(self)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)  # coarse timers bunch the turns up
        self._timer.timeout.connect(self.tick)
        self._retime()

    def add_chart(self, chart: LiveChart) -> None:
        """Join ``chart`` to the group: the group's window, freeze and redraw turns."""
        self._charts.append(chart)
        self._units.append(_Unit(lambda now: chart.refresh(now), chart))
        self._retime()
        chart.set_window(self._window)
        chart.set_frozen(self._frozen)
        if self._frozen and len(self._charts) > 1:
            chart.setXLink(self._charts[0])
        chart.frozen_changed.connect(self.set_frozen)

    def add_refresher(
        self, refresh: Callable[[float], None], widget: QWidget | None = None, *, every: int = 1
    ) -> None:
        """Also call ``refresh(now)`` in turn with the charts (stat tiles, histograms).

        With ``widget``, the turn is skipped while that widget is not on screen. ``every=2``
        takes the turn on every other round only (half the charts' rate: small sparklines).
        """
        self._units.append(_Unit(refresh, widget, max(1, every)))
        self._retime()

    def charts(self) -> list[LiveChart]:
        """The charts, in the order added."""
        return list(self._charts)

    def set_window(self, seconds: float) -> None:
        """Show the last ``seconds`` on every chart."""
        if seconds == self._window:
            return
        self._window = float(seconds)
        self._retime()
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
        source = self.sender()
        for chart in self._charts:
            chart.set_frozen(frozen)
        if frozen:
            # Charts are redrawn in turn, so their ranges differ by a tick or two: freeze them
            # all on one range (the chart the user dragged, if that is what froze them).
            lead = source if isinstance(source, LiveChart) else None
            if lead is None and self._charts:
                lead = self._charts[0]
            if lead is not None:
                x0, x1 = lead.x_range()
                for chart in self._charts:
                    if chart is not lead:
                        chart.getPlotItem().getViewBox().setXRange(x0, x1, padding=0)
            for chart in self._charts[1:]:
                chart.setXLink(self._charts[0])
        else:
            for chart in self._charts[1:]:
                chart.setXLink(None)
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

    def refresh_period(self) -> float:
        """Seconds between two redraws of the same chart (for the current window)."""
        return refresh_period(self._window)

    def _turns_per_round(self) -> float:
        return max(1.0, sum(1.0 / unit.every for unit in self._units))

    def per_tick(self) -> int:
        """How many charts and refreshers one tick redraws (at most): one, unless there are
        more than a tick every ``min_tick_ms`` can serve."""
        turns = self._turns_per_round()
        return max(1, math.ceil(turns * self._min_tick_ms / (self.refresh_period() * 1000)))

    def tick_interval_ms(self) -> int:
        """The timer's interval: each chart and refresher gets its turn every period."""
        turns = self._turns_per_round()
        period_ms = self.refresh_period() * 1000
        return max(self._min_tick_ms, round(period_ms * self.per_tick() / turns))

    def _retime(self) -> None:
        self._timer.setInterval(self.tick_interval_ms())

    def tick(self, now: float | None = None) -> int:
        """Redraw the next ``per_tick()`` charts and refreshers that are on screen, in turn.

        Returns how many were redrawn. Those off screen are passed over (and redrawn on their
        next turn once visible); a tick looks at each unit at most once.
        """
        if not self._units:
            return 0
        now = self._clock() if now is None else now
        budget = self.per_tick()
        done = 0
        for _ in range(len(self._units)):
            if done >= budget:
                break
            unit = self._units[self._next]
            self._next = (self._next + 1) % len(self._units)
            unit.rounds += 1
            if unit.rounds % unit.every:
                continue  # not this round
            if unit.widget is not None and not on_screen(unit.widget):
                continue
            unit.refresh(now)
            done += 1
        return done

    def refresh(self, now: float | None = None) -> None:
        """Redraw every chart (and refresher) for time ``now`` (default: the clock), at once."""
        now = self._clock() if now is None else now
        for unit in self._units:
            unit.refresh(now)
