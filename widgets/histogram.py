"""A latency histogram on a log time axis, with p50/p95/p99 markers."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt
from PySide6.QtGui import QFontMetricsF
from PySide6.QtWidgets import QWidget

from widgets import theme
from widgets.format import format_count, format_duration

QUANTILES: tuple[tuple[str, float], ...] = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))
_MARKER_STYLE = {
    "p50": Qt.PenStyle.DotLine,
    "p95": Qt.PenStyle.DashLine,
    "p99": Qt.PenStyle.SolidLine,
}


def bucket_edges(upper_bounds: npt.ArrayLike, n_counts: int) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper edge (seconds) of each bucket, from the buckets' upper bounds.

    Bucket ``i`` holds samples in ``(upper[i-1], upper[i]]``; the first starts one ratio below
    its bound, and an extra last count (``n_counts == len(upper) + 1``) is the overflow bucket.
    """
    upper = np.asarray(upper_bounds, dtype=np.float64)
    if upper.size < 2 or np.any(upper <= 0) or np.any(np.diff(upper) <= 0):
        raise ValueError("bucket bounds must be positive, increasing, at least two")
    ratio = upper[1] / upper[0]
    if n_counts == upper.size + 1:
        upper = np.append(upper, upper[-1] * ratio)
    elif n_counts != upper.size:
        raise ValueError(f"{n_counts} counts for {upper.size} bucket bounds")
    lower = np.concatenate(([upper[0] / ratio], upper[:-1]))
    return lower, upper


def quantile(
    lower: npt.ArrayLike, upper: npt.ArrayLike, counts: npt.ArrayLike, q: float
) -> float | None:
    """The ``q`` quantile (0..1) of bucketed samples, interpolated geometrically in its bucket.

    None when there are no samples. The engine reports bucket upper bounds; interpolating is
    closer to the truth for buckets this wide and keeps markers from jumping between bounds.
    """
    lo = np.asarray(lower, dtype=np.float64)
    hi = np.asarray(upper, dtype=np.float64)
    c = np.asarray(counts, dtype=np.float64)
    total = float(c.sum())
    if total <= 0:
        return None
    rank = q * total
    cumulative = np.cumsum(c)
    i = int(np.searchsorted(cumulative, rank, side="left"))
    i = min(i, c.size - 1)
    before = cumulative[i] - c[i]
    fraction = 0.0 if c[i] == 0 else min(max((rank - before) / c[i], 0.0), 1.0)
    return float(lo[i] * (hi[i] / lo[i]) ** fraction)


LABEL_GAP_PX = 4.0
"""Room kept between a marker's label and its line, another label or another line."""


def place_labels(xs: list[float], widths: list[float], span: float) -> list[tuple[bool, int]]:
    """Where each marker label goes: (on the left of its line?, row from the top).

    ``xs`` are the lines' pixel positions in increasing order, ``widths`` the labels' widths,
    ``span`` the plot's width. A label sits right of its line unless it would run past the
    plot's right edge or across the next line; then left, unless that crosses the previous
    line too, when it takes the side that stays inside the plot. Labels that would still meet
    one already placed go one row lower, so close percentiles (p95 49 ms, p99 51 ms) never
    print over each other.
    """
    placed: list[tuple[float, float, int]] = []  # (left, right, row) of each label so far
    out: list[tuple[bool, int]] = []
    for i, (x, width) in enumerate(zip(xs, widths, strict=True)):
        nxt = xs[i + 1] if i + 1 < len(xs) else math.inf
        prev = xs[i - 1] if i > 0 else -math.inf
        room_right = min(nxt, span) - x
        room_left = x - max(prev, 0.0)
        fits_right = room_right >= width + LABEL_GAP_PX
        fits_left = room_left >= width + LABEL_GAP_PX
        # Crowded both ways: stay inside the plot (on a lower row if labels would meet).
        crowded_side = x + width + LABEL_GAP_PX > span
        left = not fits_right if fits_right or fits_left else crowded_side
        lo, hi = (x - width - LABEL_GAP_PX, x) if left else (x, x + width + LABEL_GAP_PX)
        row = 0
        while any(
            row == r and lo < b + LABEL_GAP_PX and a < hi + LABEL_GAP_PX for a, b, r in placed
        ):
            row += 1
        placed.append((lo, hi, row))
        out.append((left, row))
    return out


class DurationLogAxis(pg.AxisItem):  # type: ignore[misc]
    """An axis whose values are log10(seconds), labelled as durations ("1 ms", "100 ms", "1 s")."""

    def tickValues(
        self, minVal: float, maxVal: float, size: float
    ) -> list[tuple[float, list[float]]]:
        lo, hi = math.floor(minVal), math.ceil(maxVal)
        majors = [float(d) for d in range(lo, hi + 1) if minVal <= d <= maxVal]
        minors: list[float] = []
        decades = max(maxVal - minVal, 1e-9)
        steps = (2, 5) if size / decades > 120 else ()
        for d in range(lo, hi + 1):
            for m in steps:
                v = d + math.log10(m)
                if minVal <= v <= maxVal:
                    minors.append(v)
        return [(1.0, majors), (0.3, minors)]

    def tickStrings(self, values: list[float], scale: float, spacing: float) -> list[str]:
        return [format_duration(10.0**v) for v in values]


class LatencyHistogram(pg.PlotWidget):  # type: ignore[misc]
    """Counts per latency bucket on a log axis, with p50, p95 and p99 marked and labelled.

    Feed it with ``set_buckets`` (bucket upper bounds in seconds, as the engine's telemetry
    publishes them, plus counts) or ``set_samples`` (raw latencies). Narrow buckets are merged
    into ``bins_per_decade`` bars so the shape stays readable.

    Signals: none of its own.
    """

    def __init__(
        self,
        title: str = "",
        *,
        bins_per_decade: int = 8,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent=parent, axisItems={"bottom": DurationLogAxis(orientation="bottom")})
        self._title = title
        self._bins_per_decade = bins_per_decade
        self._percentiles: dict[str, float] = {}
        self._label_sides: dict[str, tuple[bool, int]] = {}
        self._total = 0.0
        item = self.getPlotItem()
        item.setMenuEnabled(False)
        item.hideButtons()
        item.setMouseEnabled(x=False, y=False)
        item.enableAutoRange(x=False, y=False)
        item.showGrid(x=True, y=False, alpha=0.12)
        self._bars = pg.BarGraphItem(x0=[], x1=[], height=[], y0=0)
        item.addItem(self._bars)
        self._markers: dict[str, pg.InfiniteLine] = {}
        for index, (name, _q) in enumerate(QUANTILES):
            line = pg.InfiniteLine(
                angle=90,
                movable=False,
                label="",
                labelOpts={"position": 0.92 - 0.1 * index, "anchors": [(0, 0.5), (0, 0.5)]},
            )
            line.setZValue(10)
            line.hide()
            item.addItem(line, ignoreBounds=True)
            self._markers[name] = line
        # The lines only carry "p50"; the values ("p50 18 ms · p95 49 ms · p99 320 ms") are
        # the x axis label, where long titles or close percentiles cannot collide with them.
        self._summary = ""
        # Label sides depend on pixel distances: lay them out again when the plot resizes.
        item.getViewBox().sigResized.connect(lambda _box: self._place_labels())
        self._apply_fonts()
        self._apply_palette()

    def summary_text(self) -> str:
        """The percentiles as shown in the title row, e.g. "p50 18.2 ms · p95 48.9 ms"."""
        return " \u00b7 ".join(f"{k} {format_duration(v)}" for k, v in self._percentiles.items())

    # -- API -------------------------------------------------------------------------------
    def set_buckets(
        self,
        upper_bounds: npt.ArrayLike,
        counts: npt.ArrayLike,
        *,
        percentiles: Mapping[str, float] | None = None,
    ) -> None:
        """Show bucketed latencies: ``upper_bounds`` in seconds, ``counts`` per bucket.

        ``percentiles`` ({"p50": s, "p95": s, "p99": s}) overrides the ones computed here.
        """
        c = np.asarray(counts, dtype=np.float64).ravel()
        lower, upper = bucket_edges(upper_bounds, c.size)
        computed = {name: quantile(lower, upper, c, q) for name, q in QUANTILES}
        shown = {k: v for k, v in computed.items() if v is not None}
        if percentiles is not None:
            shown.update(percentiles)
        self._show(lower, upper, c, shown)

    def set_samples(self, seconds: npt.ArrayLike) -> None:
        """Show raw latencies (seconds), binned on log-spaced edges."""
        data = np.asarray(seconds, dtype=np.float64)
        data = data[np.isfinite(data) & (data > 0)]
        if not data.size:
            self._show(np.array([]), np.array([]), np.array([]), {})
            return
        lo = math.floor(math.log10(data.min()) * self._bins_per_decade)
        hi = math.ceil(math.log10(data.max()) * self._bins_per_decade) + 1
        edges = 10.0 ** (np.arange(lo, hi + 1) / self._bins_per_decade)
        counts, _ = np.histogram(data, bins=edges)
        shown = {name: float(np.quantile(data, q)) for name, q in QUANTILES}
        self._show(edges[:-1], edges[1:], counts.astype(np.float64), shown)

    def percentiles(self) -> dict[str, float]:
        """The marked percentiles in seconds, e.g. {"p50": 0.012, ...}."""
        return dict(self._percentiles)

    def bar_count(self) -> int:
        """How many bars are drawn."""
        return len(self._bars.opts["height"])

    # -- drawing ---------------------------------------------------------------------------
    def _show(
        self,
        lower: np.ndarray,
        upper: np.ndarray,
        counts: np.ndarray,
        percentiles: Mapping[str, float],
    ) -> None:
        self._percentiles = {k: float(v) for k, v in percentiles.items()}
        self._total = float(counts.sum()) if counts.size else 0.0
        x0, x1, heights = self._merge(lower, upper, counts)
        self._bars.setOpts(x0=x0, x1=x1, height=heights)
        item = self.getPlotItem()
        if heights.size:
            left, right = float(x0[0]), float(x1[-1])
            for value in self._percentiles.values():
                if value > 0:
                    left = min(left, math.log10(value))
                    right = max(right, math.log10(value))
            pad = (right - left) * 0.04 or 0.5
            item.setXRange(left - pad, right + pad, padding=0)
            # Headroom above the tallest bar for the marker labels.
            item.setYRange(0, float(heights.max()) * 1.45, padding=0)
        else:
            item.setXRange(-4, 0, padding=0)
            item.setYRange(0, 1, padding=0)
        for name, line in self._markers.items():
            marked = self._percentiles.get(name)
            if marked is None or marked <= 0:
                line.hide()
                continue
            line.setPos(math.log10(marked))
            line.label.setText(name)
            line.show()
        self._place_labels()
        self._summary = self.summary_text()
        self._set_summary_label()
        total = format_count(self._total)
        self.setToolTip(
            f"{total} samples; "
            + ", ".join(f"{k} {format_duration(v)}" for k, v in self._percentiles.items())
        )

    def _place_labels(self) -> None:
        """Put the marker labels where they overlap neither each other nor other lines."""
        box = self.getPlotItem().getViewBox()
        (left, right), _y = box.viewRange()
        width, height = float(box.width()), float(box.height())
        shown = sorted(
            (
                (line.value(), name, line)
                for name, line in self._markers.items()
                if line.isVisible()
            ),
            key=lambda item: item[0],
        )
        if not shown or width <= 0 or right <= left:
            return
        metrics = QFontMetricsF(self._markers["p50"].label.textItem.font())
        xs = [(value - left) / (right - left) * width for value, _n, _l in shown]
        # The text item's box includes its document margins: measure that, not just the font.
        boxes = [line.label.textItem.boundingRect() for _v, _n, line in shown]
        widths = [
            max(metrics.horizontalAdvance(name) + 6.0, box.width())
            for (_v, name, _l), box in zip(shown, boxes, strict=True)
        ]
        tall = max([metrics.height() * 1.25, *(box.height() for box in boxes)])
        step = max(0.1, (tall + LABEL_GAP_PX) / height) if height > 0 else 0.1
        places = place_labels(xs, widths, width)
        self._label_sides = {}
        for (_value, name, line), (on_left, row) in zip(shown, places, strict=True):
            anchor = (1.0, 0.5) if on_left else (0.0, 0.5)
            line.label.anchors = [anchor, anchor]
            line.label.setPosition(max(0.05, 0.92 - step * row))
            self._label_sides[name] = (on_left, row)

    def label_places(self) -> dict[str, tuple[bool, int]]:
        """Per shown marker: (label left of its line?, row from the top); for tests."""
        return dict(self._label_sides)

    def _merge(
        self, lower: np.ndarray, upper: np.ndarray, counts: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Bars in log10 space, buckets merged to ``bins_per_decade``, trimmed to the data."""
        if not counts.size or counts.sum() <= 0:
            return np.array([]), np.array([]), np.array([])
        mid = (np.log10(lower) + np.log10(upper)) / 2
        slot = np.floor(mid * self._bins_per_decade).astype(np.int64)
        nonzero = np.nonzero(counts > 0)[0]
        first, last = slot[nonzero[0]], slot[nonzero[-1]]
        slots = np.arange(first, last + 1)
        heights = np.zeros(slots.size)
        np.add.at(heights, slot[nonzero] - first, counts[nonzero])
        x0 = slots / self._bins_per_decade
        x1 = (slots + 1) / self._bins_per_decade
        return x0.astype(np.float64), x1.astype(np.float64), heights

    # -- look ------------------------------------------------------------------------------
    def _apply_fonts(self) -> None:
        item = self.getPlotItem()
        small = theme.scaled_font(self.font(), 0.9)
        for name in ("left", "bottom"):
            item.getAxis(name).setStyle(tickFont=small)
        item.setLabel("left", "samples", **{"font-size": theme.font_points(self, 1.0)})
        item.setTitle(
            self._title or " ", size=theme.font_points(self, 1.1), bold=True, justify="left"
        )
        self._set_summary_label()
        for line in self._markers.values():
            line.label.setFont(small)

    def _apply_palette(self) -> None:
        palette = self.palette()
        item = self.getPlotItem()
        fg = theme.secondary_text_color(palette)
        self.setBackground(theme.surface_color(palette))
        for name in ("left", "bottom"):
            axis = item.getAxis(name)
            axis.setPen(pg.mkPen(theme.border_color(palette)))
            axis.setTextPen(pg.mkPen(fg))
        bar = theme.series_color(0, palette)
        fill = theme.blend(theme.surface_color(palette), bar, 0.55)
        self._bars.setOpts(brush=pg.mkBrush(fill), pen=pg.mkPen(bar, width=1))
        text = theme.text_color(palette)
        label_bg = theme.surface_color(palette)
        label_bg.setAlphaF(0.85)
        for name, line in self._markers.items():
            line.setPen(pg.mkPen(text, width=1.5, style=_MARKER_STYLE[name]))
            line.label.setColor(text)
            line.label.fill = pg.mkBrush(label_bg)
        item.titleLabel.setAttr("color", text.name())
        item.setTitle(self._title or " ")
        self._set_summary_label()

    def _set_summary_label(self) -> None:
        self.getPlotItem().setLabel(
            "bottom",
            self._summary or "no samples yet",
            **{
                "font-size": theme.font_points(self, 1.0),
                "color": theme.text_color(self.palette()).name(),
            },
        )

    def changeEvent(self, event: QEvent) -> None:
        if getattr(self, "_summary", None) is None or getattr(self, "plotItem", None) is None:
            # Still inside pg.PlotWidget.__init__, or closed (close() drops the plot item).
            super().changeEvent(event)
            return
        kind = event.type()
        if kind in (QEvent.Type.FontChange, QEvent.Type.ApplicationFontChange):
            self._apply_fonts()
        elif kind in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            self._apply_palette()
        super().changeEvent(event)
