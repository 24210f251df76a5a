"""MetricsModel: synthetic snapshots in the engine's format, series out (no Qt, no NATS)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest

from console.metrics_model import ALL, N_BUCKETS, Metric, MetricsModel, dense, parse_key, quantile
from engine.telemetry import BUCKET_BOUNDS, Histogram, Telemetry

T0 = 1_750_000_000.0


def bucket_of(seconds: float) -> int:
    """The histogram bucket an observation of ``seconds`` lands in (as the engine computes it)."""
    hist = Histogram()
    hist.observe(seconds)
    return next(i for i, c in enumerate(hist.counts) if c)


class FakeNode:
    """Produces snapshots the way engine.node does, from a real engine Telemetry registry."""

    def __init__(self, name: str = "n1", pid: int = 100) -> None:
        self.name = name
        self.pid = pid
        self.telemetry = Telemetry(name)
        self.t = T0

    def restart(self) -> None:
        self.telemetry = Telemetry(self.name)
        self.pid += 1

    def snapshot(self, dt: float = 0.25) -> dict[str, object]:
        self.t += dt
        snap = self.telemetry.snapshot()
        snap["ts"] = self.t
        snap["pid"] = self.pid
        snap["uptime"] = self.t - T0
        snap["health"] = {"node": self.name, "nats": "healthy", "database": "sqlite"}
        # Over JSON the sparse bucket keys become strings; the model must take both.
        for hist in snap["histograms"].values():  # type: ignore[attr-defined]
            hist["delta"] = {str(k): v for k, v in hist["delta"].items()}
        return snap


def feed(model: MetricsModel, node: FakeNode, seconds: float, per_tick: dict[str, int]) -> None:
    """Run ``node`` for ``seconds`` at 4 snapshots/s, counting ``per_tick`` each tick."""
    for _ in range(int(seconds * 4)):
        for key, n in per_tick.items():
            name, labels = parse_key(key)
            node.telemetry.count(name, n, **labels)
        snap = node.snapshot()
        model.ingest(snap, received_at=float(snap["ts"]))  # type: ignore[arg-type]


@pytest.fixture
def model() -> Iterator[MetricsModel]:
    yield MetricsModel(history_s=600)


def test_parse_key_reads_labels() -> None:
    assert parse_key("events_processed_total") == ("events_processed_total", {})
    assert parse_key('intents_total{outcome="sent",workflow="welcome"}') == (
        "intents_total",
        {"outcome": "sent", "workflow": "welcome"},
    )


def test_quantile_and_dense_match_the_engine() -> None:
    hist = Histogram()
    for value in (0.001, 0.002, 0.004, 0.1):
        hist.observe(value)
    counts = dense({str(k): v for k, v in hist.delta().items()})
    assert counts.shape == (N_BUCKETS,)
    for q in (0.5, 0.99):
        assert quantile(counts, q) == hist.quantile(q)
    assert math.isnan(quantile(np.zeros(N_BUCKETS), 0.5))


def test_rates_from_counter_deltas(model: MetricsModel) -> None:
    node = FakeNode()
    # 25 events and 20 sends per 0.25 s tick: 100 events/s in, 80 emails/s out.
    feed(
        model,
        node,
        10,
        {
            "events_processed_total": 25,
            'events_received_total{source="http"}': 25,
            'intents_total{outcome="sent",workflow="welcome"}': 20,
        },
    )
    assert model.latest(Metric.EVENTS_IN, "n1") == pytest.approx(100)
    assert model.latest(Metric.EVENTS_RECEIVED, "n1") == pytest.approx(100)
    assert model.latest(Metric.EMAILS_OUT, "n1") == pytest.approx(80)
    assert model.latest(Metric.EMAILS_OUT, ALL) == pytest.approx(80)
    t, v = model.series(Metric.EVENTS_IN, "n1")
    assert t.size == 40 and math.isnan(v[0]) and np.allclose(v[8:], 100)
    assert model.has_traffic()


def test_a_restart_never_reads_as_a_negative_rate(model: MetricsModel) -> None:
    node = FakeNode()
    feed(model, node, 5, {"events_processed_total": 10})
    node.restart()
    feed(model, node, 5, {"events_processed_total": 10})
    _, v = model.series(Metric.EVENTS_IN, "n1")
    finite = v[np.isfinite(v)]
    assert finite.min() >= 0
    assert model.latest(Metric.EVENTS_IN, "n1") == pytest.approx(40)
    assert model.total("processed", "n1") == 400


def test_error_and_delivery_ratios(model: MetricsModel) -> None:
    node = FakeNode()
    feed(
        model,
        node,
        12,
        {
            'intents_total{outcome="sent",workflow="w"}': 18,
            'intents_total{outcome="bounced",workflow="w"}': 1,
            'intents_total{outcome="failed",workflow="w"}': 1,
            'intents_total{outcome="suppressed",workflow="w"}': 5,  # never attempted
        },
    )
    assert model.latest(Metric.ERROR_RATIO) == pytest.approx(0.10)
    assert model.latest(Metric.DELIVERY_RATIO) == pytest.approx(0.90)
    assert model.latest(Metric.BOUNCED_RATIO) == pytest.approx(0.05)
    assert model.latest(Metric.DEFERRED_RATIO) == pytest.approx(0.0)


def test_ratios_are_nan_when_nothing_was_attempted(model: MetricsModel) -> None:
    feed(model, FakeNode(), 3, {"events_processed_total": 5})
    assert math.isnan(model.latest(Metric.ERROR_RATIO))
    assert math.isnan(model.latest(Metric.DELIVERY_RATIO))


def test_latency_percentiles_over_a_sliding_window(model: MetricsModel) -> None:
    node = FakeNode()
    for _ in range(40):  # 10 s of fast sends
        for _ in range(10):
            node.telemetry.observe("e2e_seconds", 0.010)
        snap = node.snapshot()
        model.ingest(snap, received_at=float(snap["ts"]))  # type: ignore[arg-type]
    fast = model.latest(Metric.E2E_P99)
    assert fast == BUCKET_BOUNDS[bucket_of(0.010)]
    for _ in range(48):  # then 12 s of slow ones: the window forgets the fast ones
        for _ in range(10):
            node.telemetry.observe("e2e_seconds", 0.500)
        snap = node.snapshot()
        model.ingest(snap, received_at=float(snap["ts"]))  # type: ignore[arg-type]
    assert model.latest(Metric.E2E_P50) == BUCKET_BOUNDS[bucket_of(0.5)]
    # The long-window histogram still holds both populations.
    counts = model.histogram("e2e_seconds", t0=T0, t1=node.t)
    assert counts.sum() == 880
    assert counts[bucket_of(0.010)] == 400 and counts[bucket_of(0.5)] == 480


def test_stage_latency_means_in_pipeline_order(model: MetricsModel) -> None:
    node = FakeNode()
    for _ in range(20):
        node.telemetry.observe("stage_seconds", 0.040, stage="smtp")
        node.telemetry.observe("stage_seconds", 0.002, stage="decide")
        node.telemetry.observe("stage_seconds", 0.001, stage="ingest")
        snap = node.snapshot()
        model.ingest(snap, received_at=float(snap["ts"]))  # type: ignore[arg-type]
    stages = model.stage_latency(t0=T0)
    assert [s.stage for s in stages] == ["ingest", "decide", "smtp"]
    smtp = stages[-1]
    assert smtp.mean == pytest.approx(0.040) and smtp.count == 20


def test_all_nodes_add_rates_and_take_the_max_of_shared_gauges(model: MetricsModel) -> None:
    a, b = FakeNode("a", 1), FakeNode("b", 2)
    for _ in range(20):
        for node, depth in ((a, 30), (b, 32)):
            node.telemetry.count("events_processed_total", 10)
            node.telemetry.gauge("queue_depth", depth)
            node.telemetry.gauge("process_rss_bytes", 1000)
            snap = node.snapshot()
            model.ingest(snap, received_at=float(snap["ts"]))  # type: ignore[arg-type]
    assert model.nodes() == ["a", "b"]
    assert model.latest(Metric.EVENTS_IN, "a") == pytest.approx(40)
    assert model.latest(Metric.EVENTS_IN) == pytest.approx(80)
    assert model.latest(Metric.QUEUE_DEPTH) == 32  # one store: not 62


def test_stale_nodes_leave_the_totals(model: MetricsModel) -> None:
    a, b = FakeNode("a", 1), FakeNode("b", 2)
    feed(model, a, 3, {"events_processed_total": 10})
    b.t = a.t
    feed(model, b, 4, {"events_processed_total": 10})
    assert model.is_stale("a", now=b.t) and not model.is_stale("b", now=b.t)
    assert model.latest(Metric.EVENTS_IN) == pytest.approx(40)  # b only: a stopped reporting


def test_workflow_counts_over_a_window(model: MetricsModel) -> None:
    node = FakeNode()
    feed(
        model,
        node,
        10,
        {
            'intents_created_total{workflow="welcome"}': 2,
            'intents_total{outcome="sent",workflow="welcome"}': 2,
            'intents_created_total{workflow="cart"}': 1,
            'intents_total{outcome="deferred",workflow="cart"}': 1,
        },
    )
    rows = {r.workflow: r for r in model.workflow_stats(t0=node.t - 5)}
    assert set(rows) == {"cart", "welcome"}
    assert rows["welcome"].sent == 40 and rows["welcome"].triggered == 40
    assert rows["cart"].deferred == 20 and rows["cart"].sent == 0
    assert math.isnan(rows["welcome"].p99)  # no e2e_seconds{workflow} from this engine
    assert model.latest("wf:welcome") == pytest.approx(8)


def test_malformed_and_late_snapshots_are_skipped(model: MetricsModel) -> None:
    model.ingest({"node": ""})
    model.ingest({"node": "x", "ts": T0, "counters": {"events_processed_total": "many"}})
    model.ingest({"node": "x", "ts": T0 - 10, "counters": {}})
    assert model.nodes() == ["x"]
    assert not model.has_traffic()
