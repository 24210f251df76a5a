"""The Live page: is mail flowing, fast, and landing? Answered in one glance.

Stat tiles (events in/s, emails out/s, p99 latency, error rate, delivery rate, complaint rate,
queue depth) over
the per-stage latency bar, a grid of live charts sharing one time axis, window and freeze, and
the per-workflow table. Data arrival (``client.metrics_received``) only appends samples; the
``ChartGroup``'s QTimer redraws charts and tiles in turn (charts 3 times a second, a few per
tick so no tick is long) and a 1 Hz timer recomputes the histogram, stage bar, workflow table
and staleness.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PySide6.QtCore import QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import (
    QComboBox,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLayout,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from console.client import CONNECTED, EngineClient
from console.metrics_model import ALL, Metric
from console.operations import Operation
from engine.telemetry import BUCKET_BOUNDS
from widgets import theme
from widgets.chart_controls import ChartControls
from widgets.empty_state import EmptyState
from widgets.format import (
    Formatter,
    format_age,
    format_bytes,
    format_count,
    format_duration,
    format_percent,
    format_rate,
    format_window,
)
from widgets.histogram import LatencyHistogram
from widgets.live_chart import ChartGroup, LiveChart
from widgets.sparkline_table import Column, SparklineTableModel, SparklineTableView
from widgets.stage_bar import DEFAULT_STAGES, StageBar
from widgets.stat_tile import StatTile
from widgets.theme import Status

log = logging.getLogger(__name__)

DEMO_RATE = 50
MAX_DEMO_RATE = 20_000  # what demo.start accepts
DEFAULT_WINDOW_S = 60.0
SLOW_REFRESH_MS = 1000
TREND_POINTS = 60


def _percent_points(value: float) -> str:
    """Chart values in percent points (0..100) written as percentages."""
    return format_percent(value / 100.0)


def _cpu(value: float) -> str:
    if math.isnan(value):
        return "\u2014"
    return f"{value:.0f}%" if value >= 10 else f"{value:.1f}%"


@dataclass(frozen=True)
class TileSpec:
    metric: str
    title: str
    formatter: Formatter
    higher_is_better: bool | None
    absolute_change: bool
    tooltip: str


TILES: tuple[TileSpec, ...] = (
    TileSpec(
        Metric.EVENTS_IN,
        "Events in",
        format_rate,
        None,
        False,
        "Events the decide stage took in per second (HTTP, NATS and demo alike),"
        " from events_processed_total.",
    ),
    TileSpec(
        Metric.EMAILS_OUT,
        "Emails out",
        format_rate,
        None,
        False,
        "Emails the relay accepted per second (intents_total{outcome=sent}).",
    ),
    TileSpec(
        Metric.E2E_P99,
        "p99 latency",
        format_duration,
        False,
        False,
        "99th percentile from event received to SMTP accepted, over the last 10 s.",
    ),
    TileSpec(
        Metric.ERROR_RATIO,
        "Error rate",
        format_percent,
        False,
        True,
        "Failed, bounced and uncertain sends over all attempted sends, last 10 s.",
    ),
    TileSpec(
        Metric.DELIVERY_RATIO,
        "Delivery rate",
        format_percent,
        True,
        True,
        "Sent over attempted (sent, deferred, bounced, failed, uncertain), last 10 s.",
    ),
    TileSpec(
        Metric.COMPLAINT_RATIO,
        "Complaints (24 h)",
        format_percent,
        False,
        True,
        "Spam complaints (ARF feedback reports) over delivered mail in the last 24 hours."
        " Gmail: keep it under 0.1 % (amber); at 0.3 % (red) delivery suffers.",
    ),
    TileSpec(
        Metric.QUEUE_DEPTH,
        "Queue depth",
        format_count,
        False,
        False,
        "Send intents waiting to be delivered.",
    ),
)


@dataclass(frozen=True)
class SeriesSpec:
    metric: str
    label: str
    scale: float = 1.0


@dataclass(frozen=True)
class ChartSpec:
    key: str
    title: str
    y_label: str
    unit: str
    formatter: Formatter
    series: tuple[SeriesSpec, ...]
    si_prefix: bool = True


CHARTS: tuple[ChartSpec, ...] = (
    ChartSpec(
        "throughput",
        "Throughput",
        "rate",
        "/s",
        format_rate,
        (SeriesSpec(Metric.EVENTS_IN, "events in"), SeriesSpec(Metric.EMAILS_OUT, "emails out")),
    ),
    ChartSpec(
        "latency",
        "Latency, event to SMTP accepted",
        "latency",
        "s",
        format_duration,
        (
            SeriesSpec(Metric.E2E_P50, "p50"),
            SeriesSpec(Metric.E2E_P95, "p95"),
            SeriesSpec(Metric.E2E_P99, "p99"),
        ),
    ),
    ChartSpec(
        "rates",
        "Outcomes",
        "share of attempts",
        "%",
        _percent_points,
        (
            SeriesSpec(Metric.DELIVERY_RATIO, "delivered", 100.0),
            SeriesSpec(Metric.DEFERRED_RATIO, "deferred", 100.0),
            SeriesSpec(Metric.BOUNCED_RATIO, "bounced", 100.0),
            SeriesSpec(Metric.ERROR_RATIO, "errors", 100.0),
        ),
        si_prefix=False,
    ),
    ChartSpec(
        "backlog",
        "Backlog",
        "waiting",
        "",
        format_count,
        (
            SeriesSpec(Metric.CONSUMER_LAG, "events (consumer lag)"),
            SeriesSpec(Metric.QUEUE_DEPTH, "emails queued"),
            SeriesSpec(Metric.INFLIGHT, "in flight"),
        ),
    ),
    ChartSpec(
        "io",
        "HTTP & database p99",
        "latency",
        "s",
        format_duration,
        (
            SeriesSpec(Metric.HTTP_P99, "HTTP request"),
            SeriesSpec(Metric.DB_COMMIT_P99, "DB commit"),
        ),
    ),
    ChartSpec(
        "cpu",
        "Engine CPU",
        "of one core",
        "%",
        _cpu,
        (SeriesSpec(Metric.CPU, "CPU", 100.0),),
        si_prefix=False,
    ),
    ChartSpec(
        "memory",
        "Engine memory",
        "resident",
        "B",
        format_bytes,
        (SeriesSpec(Metric.RSS, "RSS"),),
    ),
)

# Grid cells (row, column) in a two-column grid (legends need the width); the histogram sits
# beside the latency percentiles.
_CELLS: dict[str, tuple[int, int]] = {
    "throughput": (0, 0),
    "rates": (0, 1),
    "latency": (1, 0),
    "histogram": (1, 1),
    "backlog": (2, 0),
    "io": (2, 1),
    "cpu": (3, 0),
    "memory": (3, 1),
}
GRID_COLUMNS = 2


WORKFLOW_COLUMNS: tuple[Column, ...] = (
    Column("name", "Workflow", numeric=False),
    Column("triggered", "Triggered", format_count, tooltip="Send intents created in the window"),
    Column("sent", "Sent", format_count, tooltip="Emails the relay accepted in the window"),
    Column("deferred", "Deferred", format_count, tooltip="Temporary failures, will retry"),
    Column("bounced", "Bounced", format_count, tooltip="Permanent failures"),
    Column(
        "p99",
        "p99",
        format_duration,
        tooltip="99th percentile, event to SMTP accepted (needs e2e_seconds per workflow"
        " from the engine; a dash until it reports one)",
    ),
    Column("trend", "Sent/s", sparkline=True, tooltip="Emails sent per second over the window"),
)


def _error_status(value: float) -> Status | None:
    if math.isnan(value):
        return None
    return Status.HEALTHY if value < 0.01 else Status.DEGRADED if value < 0.05 else Status.FAILING


def _delivery_status(value: float) -> Status | None:
    if math.isnan(value):
        return None
    return Status.HEALTHY if value >= 0.98 else Status.DEGRADED if value >= 0.9 else Status.FAILING


# Gmail's sender guidelines: keep spam complaints under 0.1 %; at 0.3 % delivery suffers.
COMPLAINT_WARNING = 0.001
COMPLAINT_FAILING = 0.003


def _complaint_status(ratio: float) -> Status | None:
    if not math.isfinite(ratio):
        return None
    if ratio >= COMPLAINT_FAILING:
        return Status.FAILING
    return Status.DEGRADED if ratio >= COMPLAINT_WARNING else Status.HEALTHY


_TILE_STATUS: dict[str, Callable[[float], Status | None]] = {
    Metric.ERROR_RATIO: _error_status,
    Metric.DELIVERY_RATIO: _delivery_status,
    Metric.COMPLAINT_RATIO: _complaint_status,
}


def downsample(values: np.ndarray, points: int = TREND_POINTS) -> np.ndarray:
    """At most ``points`` values: the mean of equal slices (NaN-aware), for table sparklines."""
    if values.size <= points:
        return np.array(values, dtype=np.float64)
    edges = np.linspace(0, values.size, points + 1).astype(int)
    out = np.full(points, np.nan)
    for i in range(points):
        chunk = values[edges[i] : edges[i + 1]]
        finite = chunk[np.isfinite(chunk)]
        if finite.size:
            out[i] = finite.mean()
    return out


class LivePage(QWidget):
    """The Live page (see the module docstring). Built with ``LivePage(client)``.

    Signals:
        workflow_activated(str): a workflow row was double-clicked (or Enter); its name.
    """

    workflow_activated = Signal(str)

    def __init__(self, client: EngineClient, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.client = client
        self.model = client.model
        self._node = ALL
        self._pushed: dict[str, float] = {}
        self._demo_running: bool | None = None
        self._demo_op: Operation[Any] | None = None
        self._demo_rate_running: int | None = None
        self._stage_keys: list[tuple[str, str]] = list(DEFAULT_STAGES)

        self.group = ChartGroup(DEFAULT_WINDOW_S, parent=self)
        self.group.window_changed.connect(self._on_window_changed)
        self.group.frozen_changed.connect(lambda _f: self.refresh_slow())

        # -- header ------------------------------------------------------------------------
        title = QLabel("Live")
        title.setFont(theme.scaled_font(self.font(), 1.5, bold=True))
        self.node_box = QComboBox()
        self.node_box.setToolTip("Show one engine node, or all nodes added together")
        self.node_box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.node_box.addItem("All nodes", ALL)
        self.node_box.currentIndexChanged.connect(self._on_node_changed)
        self.controls = ChartControls(self.group)
        self.freshness_icon = QLabel()
        self.freshness = QLabel("no data yet")
        self.demo_rate = QSpinBox()
        self.demo_rate.setRange(1, MAX_DEMO_RATE)
        self.demo_rate.setValue(DEMO_RATE)
        self.demo_rate.setSuffix(" events/s")
        self.demo_rate.setGroupSeparatorShown(True)
        self.demo_rate.setAccelerated(True)
        self.demo_rate.setKeyboardTracking(False)
        self.demo_rate.setAccessibleName("Demo traffic rate")
        self.demo_rate.setToolTip(
            "How many simulated shop events a second demo traffic publishes; changing it while"
            " the demo runs applies it at once"
        )
        self.demo_rate.valueChanged.connect(self._on_demo_rate_changed)
        self.demo_button = QPushButton("Start demo traffic")
        self.demo_button.setToolTip("Publish a simulated shop's events at the rate beside")
        self.demo_button.clicked.connect(self._toggle_demo)

        header = QHBoxLayout()
        header.setSpacing(10)
        header.addWidget(title)
        header.addSpacing(8)
        header.addWidget(self.node_box)
        header.addWidget(self.controls)
        header.addStretch(1)
        header.addWidget(self.freshness_icon)
        header.addWidget(self.freshness)
        header.addSpacing(8)
        header.addWidget(self.demo_rate)
        header.addWidget(self.demo_button)

        # -- states: waiting for an engine / no events yet / the dashboard -------------------
        self.waiting = EmptyState(
            "mdi6.lan-pending",
            "Waiting for an engine to report\u2026",
            detail="Live figures appear as soon as an engine node publishes its metrics"
            " (four times a second).",
        )
        self.empty = EmptyState(
            "mdi6.chart-timeline-variant",
            "No events yet \u2014 start demo traffic",
            "Start demo traffic",
            detail=f"The engine is running but has not received an event. Demo traffic"
            f" publishes a simulated shop's sign-ups, product views, carts and orders at"
            f" {DEMO_RATE} events/s, so every chart here comes alive.",
        )
        self.empty.action_triggered.connect(self.start_demo)
        self.dashboard = self._build_dashboard()
        self.states = QStackedWidget()
        for widget in (self.waiting, self.empty, self.dashboard):
            self.states.addWidget(widget)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 0)
        layout.setSpacing(8)
        layout.addLayout(header)
        layout.addWidget(self.states, 1)

        self._slow_step = 0
        self._freshness_look: tuple[str, str, int, str] | None = None
        self._histogram_counts: np.ndarray | None = None
        self._slow = QTimer(self)
        self._slow.setInterval(SLOW_REFRESH_MS // len(self._slow_parts()))
        self._slow.timeout.connect(self._slow_tick)

        client.metrics_received.connect(self._on_metrics)
        client.nodes_changed.connect(self._on_nodes_changed)
        client.connection_changed.connect(self._on_connection_changed)
        self._on_nodes_changed(client.nodes())
        # One turn per tile (looked up by metric: a node switch recreates the tiles), so a
        # tick redraws one sparkline rather than all six; every other round (2 Hz) is plenty
        # for a small sparkline and a number, and leaves the CPU to the charts.
        for spec in TILES:
            self.group.add_refresher(
                lambda now, metric=spec.metric: self._refresh_tile(metric, now),
                self.tile_row_host,
                every=2,
            )
        self.page_shown()
        self.refresh_slow()
        if client.state == CONNECTED:
            self.refresh_demo_status()

    # ---------------------------------------------------------------- building

    def _build_dashboard(self) -> QWidget:
        self.tiles: dict[str, StatTile] = {}
        # A widget around the tile row, so the group can tell when the tiles are scrolled away.
        self.tile_row_host = QWidget()
        self.tile_row = QHBoxLayout(self.tile_row_host)
        self.tile_row.setContentsMargins(0, 0, 0, 0)
        self.tile_row.setSpacing(8)
        self._make_tiles()

        self.stage_bar = self._new_stage_bar(DEFAULT_STAGES)

        self.charts: dict[str, LiveChart] = {}
        grid = QGridLayout()
        grid.setSpacing(8)
        chart_height = self.fontMetrics().height() * 15
        for spec in CHARTS:
            chart = LiveChart(
                spec.title,
                unit=spec.unit,
                y_label=spec.y_label,
                formatter=spec.formatter,
                si_prefix=spec.si_prefix,
                window=DEFAULT_WINDOW_S,
            )
            for series in spec.series:
                chart.add_series(series.metric, series.label)
            chart.setFixedHeight(chart_height)
            self.charts[spec.key] = chart
            self.group.add_chart(chart)
            grid.addWidget(chart, *_CELLS[spec.key])
        self.histogram = LatencyHistogram("Latency distribution")
        self.histogram.setFixedHeight(chart_height)
        grid.addWidget(self.histogram, *_CELLS["histogram"])
        for index in range(GRID_COLUMNS):
            grid.setColumnStretch(index, 1)

        wf_title = QLabel("Workflows")
        wf_title.setFont(theme.scaled_font(self.font(), 1.1, bold=True))
        self.workflow_note = QLabel("")
        self.workflow_model = SparklineTableModel(WORKFLOW_COLUMNS)
        self.workflow_table = SparklineTableView(self.workflow_model)
        self.workflow_table.row_activated.connect(self.workflow_activated)
        self.workflow_table.setToolTip("Double-click a workflow to open it")

        wf_header = QHBoxLayout()
        wf_header.setSpacing(12)
        wf_header.addWidget(wf_title)
        wf_header.addWidget(self.workflow_note, 1)
        self.workflow_table.fit_rows()

        inner = QWidget()
        column = QVBoxLayout(inner)
        column.setContentsMargins(0, 0, 6, 6)
        column.setSpacing(10)
        column.addWidget(self.tile_row_host)
        self.stage_card = _card(self.stage_bar)
        column.addWidget(self.stage_card)
        column.addLayout(grid)
        column.addLayout(wf_header)
        column.addWidget(self.workflow_table)
        column.setSizeConstraint(QLayout.SizeConstraint.SetMinAndMaxSize)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(inner)
        return scroll

    def _make_tiles(self) -> None:
        """(Re)create the tiles: a node switch starts their history afresh from the model."""
        for tile in self.tiles.values():
            self.tile_row.removeWidget(tile)
            tile.deleteLater()
        self.tiles = {}
        self._tile_started: set[str] = set()
        now = time.time()
        window = self.group.window_seconds()
        for spec in TILES:
            tile = StatTile(
                spec.title,
                spec.formatter,
                higher_is_better=spec.higher_is_better,
                absolute_change=spec.absolute_change,
                window=window,
                stale_after=self.client.stale_after_s,
                capacity=16384,
            )
            tile.setToolTip(spec.tooltip)
            self.tiles[spec.metric] = tile
            t, v = self.model.window_series(spec.metric, self._node, now - window)
            for ts, value in zip(t.tolist(), v.tolist(), strict=True):
                self._push_tile(spec.metric, ts, value)
            self.tile_row.addWidget(tile)

    # ---------------------------------------------------------------- data arrival

    def _on_metrics(self, node: str, _snapshot: dict[str, Any]) -> None:
        """Append the newest samples of the selected node (or all nodes); nothing is drawn."""
        if self._node != ALL and node != self._node:
            return
        metrics = {s.metric for c in CHARTS for s in c.series} | {t.metric for t in TILES}
        for metric in metrics:
            sample = self.model.latest_sample(metric, self._node)
            if sample is None or sample[0] <= self._pushed.get(metric, -math.inf):
                continue
            ts, value = sample
            self._pushed[metric] = ts
            self._push_tile(metric, ts, value)
            for spec in CHARTS:
                for series in spec.series:
                    if series.metric == metric:
                        self.charts[spec.key].push(metric, ts, value * series.scale)

    def _push_tile(self, metric: str, ts: float, value: float) -> None:
        tile = self.tiles.get(metric)
        if tile is None:
            return
        # A rate's first sample is NaN (nothing to difference yet); leading NaNs would make
        # the tile's "change over the window" a dash until the window has passed.
        if metric not in self._tile_started:
            if math.isnan(value):
                return
            self._tile_started.add(metric)
        tile.push(ts, value)

    def show_node(self, node: str) -> None:
        """Show ``node`` alone (``ALL``: every node together), as if chosen in the selector."""
        index = self.node_box.findData(node)
        if index >= 0:
            self.node_box.setCurrentIndex(index)

    def selected_node(self) -> str:
        """The node shown (``ALL``: every node together)."""
        return self._node

    def _on_node_changed(self, _index: int) -> None:
        node = self.node_box.currentData()
        if node is None or node == self._node:
            return
        self._node = str(node)
        self._reload()

    def _reload(self) -> None:
        """Refill charts and tiles from the model's history for the selected node."""
        self._pushed.clear()
        for spec in CHARTS:
            chart = self.charts[spec.key]
            for series in spec.series:
                chart.buffer(series.metric).clear()
                t, v = self.model.series(series.metric, self._node)
                if t.size:
                    chart.extend(series.metric, t.copy(), v * series.scale)
                    self._pushed[series.metric] = float(t[-1])
        self._make_tiles()
        for metric in self.tiles:
            last = self.model.latest_sample(metric, self._node)
            if last is not None:
                self._pushed[metric] = max(self._pushed.get(metric, -math.inf), last[0])
        self.group.refresh()
        self.refresh_slow()

    def _on_nodes_changed(self, nodes: list[str]) -> None:
        current = self._node
        self.node_box.blockSignals(True)
        self.node_box.clear()
        self.node_box.addItem("All nodes", ALL)
        for node in nodes:
            stale = self.client.is_stale(node)
            self.node_box.addItem(f"{node} (not reporting)" if stale else node, node)
        index = self.node_box.findData(current)
        self.node_box.setCurrentIndex(max(index, 0))
        self.node_box.blockSignals(False)
        if index < 0 and current != ALL:
            self._node = ALL
            self._reload()
        self.refresh_slow()

    def _on_connection_changed(self, state: str) -> None:
        if state == CONNECTED:
            self.refresh_demo_status()
        self.refresh_slow()

    def _on_window_changed(self, seconds: float) -> None:
        for tile in self.tiles.values():
            tile.set_window(seconds)
        self.refresh_slow()

    # ---------------------------------------------------------------- drawing

    def _refresh_tiles(self, now: float) -> None:
        """Redraw every tile now."""
        for metric in self.tiles:
            self._refresh_tile(metric, now)

    def _refresh_tile(self, metric: str, now: float) -> None:
        tile = self.tiles.get(metric)
        if tile is None:
            return
        tile.refresh(now)
        judge = _TILE_STATUS.get(metric)
        if judge is not None:
            status = judge(self.model.latest(metric, self._node))
            if status != tile.status():
                tile.set_status(status)

    def visible_range(self) -> tuple[float, float]:
        """The time range the charts show (epoch seconds)."""
        charts = self.group.charts()
        if charts and self.group.is_frozen():
            return charts[0].x_range()
        now = time.time()
        return now - self.group.window_seconds(), now

    def refresh_slow(self) -> None:
        """Once a second: which state to show, staleness, histogram, stage bar, workflows."""
        for part in self._slow_parts():
            part()

    def _slow_parts(self) -> list[Callable[[], None]]:
        # The slow timer runs one part per tick (each still once a second), so no tick holds
        # the histogram, the stage bar and the workflow table together.
        return [self._refresh_header_and_histogram, self._refresh_stages, self._refresh_workflows]

    def _slow_tick(self) -> None:
        parts = self._slow_parts()
        parts[self._slow_step % len(parts)]()
        self._slow_step += 1

    def _window_suffix(self) -> tuple[float, float, str]:
        x0, x1 = self.visible_range()
        span = format_window(x1 - x0)
        suffix = " (frozen view)" if self.group.is_frozen() else f", last {span}"
        return x0, x1, suffix

    def _refresh_header_and_histogram(self) -> None:
        self._update_state()
        self._update_freshness()
        self._update_demo_button()
        if self.states.currentWidget() is not self.dashboard:
            return
        x0, x1, suffix = self._window_suffix()
        counts = self.model.histogram("e2e_seconds", self._node, t0=x0, t1=x1)
        if self._histogram_counts is None or not np.array_equal(counts, self._histogram_counts):
            self._histogram_counts = counts
            self.histogram.set_buckets(BUCKET_BOUNDS, counts.astype(np.float64).tolist())
        self.histogram.setToolTip(
            f"Event to SMTP accepted{suffix}: {format_count(float(counts.sum()))} emails"
        )

    def _refresh_stages(self) -> None:
        if self.states.currentWidget() is not self.dashboard:
            return
        x0, _x1, suffix = self._window_suffix()
        stages = self.model.stage_latency(self._node, t0=x0)
        timed = [s for s in stages if not math.isnan(s.mean)]
        self._show_stages([s.stage for s in timed])
        self.stage_bar.set_title(f"Where the time goes \u2014 mean time per stage{suffix}")
        self.stage_bar.set_values({s.stage: s.mean for s in timed})

    def _refresh_workflows(self) -> None:
        if self.states.currentWidget() is not self.dashboard:
            return
        x0, x1, suffix = self._window_suffix()
        rows = []
        for stats in self.model.workflow_stats(self._node, t0=x0):
            _, trend = self.model.window_series(f"wf:{stats.workflow}", self._node, x0, x1)
            rows.append(
                {
                    "name": stats.workflow,
                    "triggered": stats.triggered,
                    "sent": stats.sent,
                    "deferred": stats.deferred,
                    "bounced": stats.bounced,
                    "p99": None if math.isnan(stats.p99) else stats.p99,
                    "trend": downsample(trend),
                }
            )
        self.workflow_model.set_rows(rows)
        self.workflow_note.setText(
            f"counts{suffix} \u00b7 double-click a row to open the workflow"
            if rows
            else "No workflow has been triggered yet."
        )
        self.workflow_table.fit_rows()

    @staticmethod
    def _new_stage_bar(stages: Sequence[tuple[str, str]]) -> StageBar:
        bar = StageBar(stages, title="Where the time goes")
        bar.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        return bar

    def _show_stages(self, keys: list[str]) -> None:
        """Only the stages the engine timed: events published straight to NATS skip ingest,
        and a bar reading "ingest 0 s" would claim a measurement nobody made."""
        labels = dict(DEFAULT_STAGES)
        wanted = [(k, labels.get(k, k)) for k in keys] or list(DEFAULT_STAGES)
        if wanted == self._stage_keys:
            return
        self._stage_keys = wanted
        bar = self._new_stage_bar(wanted)
        layout = self.stage_card.layout()
        assert layout is not None
        layout.replaceWidget(self.stage_bar, bar)
        self.stage_bar.deleteLater()
        self.stage_bar = bar

    def _update_demo_button(self) -> None:
        busy = self._demo_op is not None and not self._demo_op.done()
        ready = self.client.state == CONNECTED and bool(self.client.fresh_nodes())
        self.demo_button.setEnabled(ready and not busy)
        if not busy:
            self.empty.set_action("Start demo traffic", enabled=ready)

    def _update_state(self) -> None:
        if not self.client.nodes():
            target: QWidget = self.waiting
        elif self.model.has_traffic(self._node):
            target = self.dashboard
        else:
            target = self.empty
        # In the empty state its own button is the one obvious action.
        self.demo_button.setVisible(target is not self.empty)
        self.demo_rate.setVisible(target is not self.empty)
        if self.states.currentWidget() is not target:
            self.states.setCurrentWidget(target)
            if target is self.dashboard:
                self.group.refresh()

    def _update_freshness(self) -> None:
        node = None if self._node == ALL else self._node
        age = self.client.seconds_since(node)
        stale = age > self.client.stale_after_s
        palette = self.palette()
        colour = (
            theme.status_color(theme.STALE_STATUS, palette)
            if stale
            else theme.secondary_text_color(palette)
        )
        text = format_age(None if math.isinf(age) else age)
        if self.freshness.text() != text:
            self.freshness.setText(text)
        size = self.fontMetrics().height()
        icon = theme.STALE_ICON if stale else "mdi6.clock-outline"
        note = theme.secondary_text_color(palette).name()
        # Style sheets and icon renders cost a restyle each; this runs every second, so only
        # when something changed (staleness, theme, font size).
        look = (colour.name(), icon, size, note)
        if look != self._freshness_look:
            self._freshness_look = look
            self.freshness.setStyleSheet(f"color: {colour.name()}")
            self.freshness_icon.setPixmap(theme.icon_pixmap(icon, colour, size))
            self.workflow_note.setStyleSheet(f"color: {note}")
            self.freshness.setToolTip(
                "Figures are stale: no metrics arrived lately" if stale else "Live figures"
            )

    # ---------------------------------------------------------------- demo traffic

    def start_demo(self) -> Operation[Any]:
        """Ask the engine for demo traffic at the rate chosen (``DEMO_RATE`` events/s at first);
        while it runs, this changes its rate."""
        self.empty.set_action("Starting demo traffic\u2026", enabled=False)
        self.demo_button.setEnabled(False)
        rate = self.demo_rate.value()
        changing = bool(self._demo_running)

        def started(result: Any) -> None:
            self._set_demo_running(True)
            self._demo_rate_running = rate
            verb = "rate changed to" if changing else "started:"
            self._show(f"Demo traffic {verb} {rate:,} events/s.", "healthy")

        op = Operation(
            self,
            lambda: self.client.request_one("demo.start", {"rate": rate}),
            label="Start demo traffic",
        ).success(started)
        op.signals.finished.connect(self._demo_finished)
        self._demo_op = op
        return op.run()

    def stop_demo(self) -> Operation[Any]:
        """Stop demo traffic."""
        self.demo_button.setEnabled(False)
        op = Operation(
            self, lambda: self.client.request_one("demo.stop"), label="Stop demo traffic"
        ).success(lambda _r: self._set_demo_running(False))
        op.signals.finished.connect(self._demo_finished)
        self._demo_op = op
        return op.run()

    def refresh_demo_status(self) -> None:
        def got(result: Any) -> None:
            if isinstance(result, dict):
                running = bool(result.get("running"))
                self._set_demo_running(running)
                rate = result.get("rate")
                if running and isinstance(rate, int | float) and 1 <= rate <= MAX_DEMO_RATE:
                    self._demo_rate_running = round(rate)
                    self.demo_rate.blockSignals(True)
                    self.demo_rate.setValue(round(rate))
                    self.demo_rate.blockSignals(False)

        status = Operation(self, lambda: self.client.request_one("demo.status", timeout=3))
        status.success(got).failure(lambda exc: log.debug("demo.status failed: %s", exc)).run()

    def _toggle_demo(self) -> None:
        if self._demo_running:
            self.stop_demo()
        else:
            self.start_demo()

    def _on_demo_rate_changed(self, rate: int) -> None:
        busy = self._demo_op is not None and not self._demo_op.done()
        if self._demo_running and not busy and rate != self._demo_rate_running:
            self.start_demo()

    def _demo_finished(self) -> None:
        self._update_demo_button()

    def _set_demo_running(self, running: bool) -> None:
        self._demo_running = running
        self.demo_button.setText("Stop demo traffic" if running else "Start demo traffic")

    def _show(self, text: str, status: str) -> None:
        window = self.window()
        show = getattr(window, "show_message", None)
        if callable(show):
            show(text, status)

    # ---------------------------------------------------------------- visibility

    def page_shown(self) -> None:
        """Start redrawing (the window calls this when the page becomes visible)."""
        self.group.start()
        self._slow.start()

    def page_hidden(self) -> None:
        """Stop redrawing while hidden; data keeps arriving into the buffers."""
        self.group.stop()
        self._slow.stop()


class Card(QFrame):
    """A bordered surface like the tiles and charts around it (repainted with the palette)."""

    def __init__(self, widget: QWidget, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        margin = self.fontMetrics().height() // 2 + 2
        layout.setContentsMargins(margin + 2, margin, margin + 2, margin)
        layout.addWidget(widget)

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


def _card(widget: QWidget) -> Card:
    return Card(widget)
