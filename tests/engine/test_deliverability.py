"""Delivery and complaint rates from the ledger and the feedback records (SQLite and
PostgreSQL), served by the ``deliverability.summary`` verb over a real nats-server and kept in
the ``delivery_rate`` / ``complaint_rate`` gauges."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from engine import bus
from engine.clock import ManualClock
from engine.config import load_settings
from engine.control import ControlServer, request
from engine.deliverability import complaint_state, publish_gauges, summary
from engine.feedback import Bounce, Complaint
from engine.feedback.apply import apply_feedback
from engine.node import Node
from engine.operations import register_operations
from engine.store import Store
from engine.telemetry import Telemetry
from tests.engine.deliver.deliver_support import add_intent

NOW = 1_800_000_000.0
HOUR = 3600.0


def finished(
    store: Store, n: int, status: str, *, ago: float, accepted: bool, attempts: int = 1
) -> list[str]:
    """``n`` intents whose last attempt ended ``ago`` seconds before NOW with ``status``."""
    at = NOW - ago
    return [
        add_intent(
            store,
            f"{status}-{ago:g}-{i}@example.com",
            now=at - 1,
            status=status,
            attempts=attempts,
            accepted_at=at if accepted else None,
            finished_at=at,
        )
        for i in range(n)
    ]


def complain(store: Store, intent_ids: list[str], *, at: float) -> None:
    items = [Complaint(i, None, "abuse", "test", None, source="arf") for i in intent_ids]
    apply_feedback(store, items, at)


@pytest.fixture
def ledger(any_store: Store) -> Store:
    # Last 24 h: 1,000 attempted; 990 accepted by the relay, of which 6 bounced later (DSN).
    sent = finished(any_store, 984, "sent", ago=2 * HOUR, accepted=True)
    late = finished(any_store, 6, "sent", ago=3 * HOUR, accepted=True)
    apply_feedback(
        any_store,
        [Bounce(i, "x@example.com", "failed", "5.1.1", "", True, source="dsn") for i in late],
        NOW - HOUR,
    )
    finished(any_store, 4, "bounced", ago=HOUR, accepted=False)  # 550 at RCPT
    finished(any_store, 3, "deferred", ago=HOUR, accepted=False)
    finished(any_store, 2, "failed", ago=HOUR, accepted=False)
    finished(any_store, 1, "uncertain", ago=HOUR, accepted=False)
    # Not attempted: suppressed or expired at send time, render failures (no attempt).
    finished(any_store, 5, "suppressed", ago=HOUR, accepted=False, attempts=0)
    finished(any_store, 2, "failed", ago=HOUR, accepted=False, attempts=0)
    complain(any_store, sent[:2], at=NOW - HOUR)  # 2 / 984 = 0.2%: warning
    # Three days ago: 1,000 sent, 3 complaints.
    old = finished(any_store, 1000, "sent", ago=72 * HOUR, accepted=True)
    complain(any_store, old[:3], at=NOW - 70 * HOUR)
    # Older than a week: ignored.
    gone = finished(any_store, 10, "sent", ago=8 * 24 * HOUR, accepted=True)
    complain(any_store, gone, at=NOW - 8 * 24 * HOUR)
    return any_store


def test_rates_per_window(ledger: Store) -> None:
    result = summary(ledger, NOW)
    day, week = result["windows"]["24h"], result["windows"]["7d"]
    assert (day["attempted"], day["accepted"], day["delivered"], day["bounced"]) == (
        1000,
        990,
        984,
        10,
    )
    assert day["complaints"] == 2
    assert day["delivery_rate"] == pytest.approx(984 / 1000)
    assert day["complaint_rate"] == pytest.approx(2 / 984)
    assert day["state"] == "warning"
    assert (week["attempted"], week["delivered"], week["complaints"]) == (2000, 1984, 5)
    assert week["complaint_rate"] == pytest.approx(5 / 1984)
    assert week["state"] == "warning"
    assert result["state"] == "warning"
    assert result["thresholds"] == {"warning": 0.001, "failing": 0.003}
    # One more complaint in the last day: 3 / 984 passes 0.3%.
    complain(ledger, [day_intent(ledger)], at=NOW - 60)
    assert summary(ledger, NOW)["windows"]["24h"]["state"] == "failing"
    assert summary(ledger, NOW)["state"] == "failing"


def day_intent(store: Store) -> str:
    return finished(store, 1, "sent", ago=30 * 60, accepted=True)[0]


def test_empty_ledger_and_states(store: Store) -> None:
    result = summary(store, NOW)
    assert result["state"] == "ok"
    assert result["windows"]["24h"]["delivery_rate"] == 1.0
    assert result["windows"]["24h"]["complaint_rate"] == 0.0
    assert [complaint_state(r) for r in (0.0, 0.00099, 0.001, 0.00299, 0.003, 0.5)] == [
        "ok",
        "ok",
        "warning",
        "warning",
        "failing",
        "failing",
    ]


async def test_verb_and_gauges(ledger: Store, nats_url: str, nats_token: str) -> None:
    node = Node(load_settings(None, environ={}), clock=ManualClock(NOW))
    node.store = ledger
    nc = await bus.connect(nats_url, token=nats_token)
    control = ControlServer(nc, "n1", roles=node.role_of)
    register_operations(control, node)
    await control.start()
    try:
        # The engines' own user: a viewer, enough to read.
        reply = await request(nc, "n1", "deliverability.summary", user="engine")
    finally:
        await control.stop()
        await nc.drain()
    assert reply["state"] == "warning"
    assert reply["windows"]["24h"]["delivered"] == 984

    telemetry = Telemetry("n1")
    task = asyncio.create_task(publish_gauges(ledger, ManualClock(NOW), telemetry, interval=0.05))
    try:
        for _ in range(200):
            if 'complaint_rate{window="7d"}' in telemetry.gauges:
                break
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert telemetry.gauges['delivery_rate{window="24h"}'] == pytest.approx(0.984)
    assert telemetry.gauges['complaint_rate{window="24h"}'] == pytest.approx(2 / 984)
    assert telemetry.gauges['complaint_rate{window="7d"}'] == pytest.approx(5 / 1984)
    assert "complaint_rate" in telemetry.prometheus()
