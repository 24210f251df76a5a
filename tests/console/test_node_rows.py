"""The Nodes page's rows from synthetic snapshots in the engine's format (no Qt, no NATS)."""

from __future__ import annotations

import math

import pytest

from console.metrics_model import MetricsModel
from console.node_rows import TOTALS, health_status, node_rows, partition_words, uptime_words
from tests.console.test_metrics_model import T0, FakeNode
from widgets.theme import Status


def _run(model: MetricsModel, node: FakeNode, seconds: float, sent: int, **extra: object) -> None:
    for _ in range(int(seconds * 4)):
        node.telemetry.count("events_processed_total", sent)
        node.telemetry.count("intents_total", sent, outcome="sent", workflow="w")
        snap = node.snapshot()
        snap.update(extra)
        model.ingest(snap, received_at=float(snap["ts"]))  # type: ignore[arg-type]


def test_two_nodes_their_totals_and_a_silent_one_left_out() -> None:
    model = MetricsModel(history_s=600)
    a, b = FakeNode("a1", pid=11), FakeNode("b2", pid=22)
    a.telemetry.gauge("consumer_lag", 40)
    b.telemetry.gauge("consumer_lag", 25)
    a.telemetry.gauge("inflight", 3)
    b.telemetry.gauge("inflight", 5)
    # a1 at 10 events/s (2.5 a tick), b2 at 30 events/s: both one email per event.
    for _ in range(12):
        _run(model, a, 0.25, 3 if _ % 2 else 2, role="decide", partitions=[0, 1, 2, 3, 7])
        _run(model, b, 0.25, 7 if _ % 2 else 8, role="deliver", version="0.1.0")
    now = a.t
    ages = {"a1": 0.1, "b2": 0.2}
    rows = node_rows(model, ["b2", "a1"], ages.__getitem__, 3.0, now)
    assert [r["name"] for r in rows] == ["a1", "b2", TOTALS]
    one, two, totals = rows
    assert (one["role"], two["role"]) == ("decide", "deliver")
    assert (one["identity"], two["identity"]) == ("pid 11", "v0.1.0 \u00b7 pid 22")
    assert one["partitions"] == "0\u20133, 7" and two["partitions"] == "\u2014"
    assert one["uptime"] == pytest.approx(now - T0)
    assert one["state"] == "healthy" and one["checks"] == "NATS healthy"
    assert one["events_in"] == pytest.approx(10, rel=0.05)
    assert two["emails_out"] == pytest.approx(30, rel=0.05)
    assert totals["events_in"] == pytest.approx(one["events_in"] + two["events_in"])
    assert totals["emails_out"] == pytest.approx(one["emails_out"] + two["emails_out"])
    assert totals["consumer_lag"] == 40  # one shared consumer: the largest, not 65
    assert totals["inflight"] == 8
    assert totals["rss"] == pytest.approx(one["rss"] + two["rss"])
    assert (totals["role"], totals["state"], totals["partitions"]) == (
        "2 of 2 reporting",
        "healthy",
        "5 owned",
    )

    # b2 goes silent: still listed, flagged with its silence, left out of the totals.
    ages["b2"] = 12.4
    one, two, totals = node_rows(model, ["a1", "b2"], ages.__getitem__, 3.0, now)
    assert (two["state"], two["reporting"], two["status"]) == (
        "not reporting 12 s",
        False,
        Status.UNKNOWN,
    )
    assert two["emails_out"] == pytest.approx(30, rel=0.05)  # its last figure, greyed
    assert totals["emails_out"] == pytest.approx(one["emails_out"])
    assert totals["consumer_lag"] == 40 and totals["inflight"] == 3
    assert (totals["role"], totals["state"], totals["status"]) == (
        "1 of 2 reporting",
        "1 not reporting",
        Status.DEGRADED,
    )
    ages["a1"] = math.inf
    *_, totals = node_rows(model, ["a1", "b2"], ages.__getitem__, 3.0, now)
    assert (totals["state"], totals["events_in"]) == ("none reporting", None)


def test_a_nodes_state_is_its_worst_check_in_words() -> None:
    assert health_status({"nats": "healthy", "store": "healthy", "routes": "healthy"}) == (
        Status.HEALTHY,
        "NATS, store, routes healthy",
    )
    status, words = health_status(
        {
            "nats": "healthy",
            "store": "degraded",
            "routes": "failing",
            "details": {"store": "3 database errors", "routes": "default down: refused"},
        }
    )
    assert status == Status.FAILING
    assert words == "store degraded: 3 database errors; routes failing: default down: refused"
    assert health_status({"nats": "ok", "store": "ok"})[0] == Status.HEALTHY
    assert health_status({}) == (Status.HEALTHY, "no checks reported")


def test_words_for_partitions_and_uptimes() -> None:
    assert partition_words(None) == "\u2014"
    assert partition_words([]) == "none"
    assert partition_words([5, 0, 1, 2, 9, 10]) == "0\u20132, 5, 9\u201310"
    assert partition_words(["p-b", 3]) == "3, p-b"
    assert [
        uptime_words(s) for s in (math.nan, 4.9, 125, 3 * 3600 + 300, 2 * 86400 + 4 * 3600)
    ] == [
        "\u2014",
        "4 s",
        "2 min",
        "3 h 5 min",
        "2 d 4 h",
    ]
