"""Telemetry: percentiles from buckets, JSON snapshots, Prometheus text."""

from __future__ import annotations

import json
import random

import pytest

from engine.telemetry import Telemetry, quantile_from_sparse


def test_percentiles_are_within_a_bucket() -> None:
    t = Telemetry("n1")
    rng = random.Random(3)
    samples = [rng.lognormvariate(-5, 1) for _ in range(20_000)]
    for s in samples:
        t.observe("e2e_seconds", s)
    ordered = sorted(samples)
    hist = t.histograms["e2e_seconds"]
    for q in (0.5, 0.95, 0.99):
        true = ordered[int(q * len(ordered))]
        assert hist.quantile(q) == pytest.approx(true, rel=0.11)


def test_snapshot_is_plain_json_and_deltas_add_up() -> None:
    t = Telemetry("n1")
    t.count("events_received_total", 3, source="http")
    for ms in (1, 2, 3, 40):
        t.observe("stage_seconds", ms / 1000, stage="decide")
    first = json.loads(json.dumps(t.snapshot()))  # must not need special encoders
    hist = first["histograms"]['stage_seconds{stage="decide"}']
    assert sum(hist["delta"].values()) == 4
    assert quantile_from_sparse(hist["delta"], 0.5) == pytest.approx(0.002, rel=0.11)
    assert first["counters"]['events_received_total{source="http"}'] == 3
    t.observe("stage_seconds", 0.005, stage="decide")
    second = t.snapshot()
    assert sum(second["histograms"]['stage_seconds{stage="decide"}']["delta"].values()) == 1
    assert second["gauges"]["process_rss_bytes"] > 0


def test_prometheus_text() -> None:
    t = Telemetry("n1")
    t.count("intents_total", outcome="sent", workflow="welcome")
    t.observe("e2e_seconds", 0.004)
    text = t.prometheus()
    assert 'campaign_intents_total{node="n1",outcome="sent",workflow="welcome"} 1' in text
    assert "# TYPE campaign_e2e_seconds histogram" in text
    assert 'campaign_e2e_seconds_count{node="n1"} 1' in text
    assert 'campaign_e2e_seconds_bucket{node="n1",le="+Inf"} 1' in text
