"""Claims, fencing and crash recovery, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor

from deliver_support import (
    FAST,
    ScriptedSmtp,
    add_intent,
    intent_row,
    make_service,
    statuses,
    wait_for,
    wait_status,
)

from engine.clock import ManualClock, SystemClock
from engine.deliver.ledger import Ledger
from engine.deliver.model import Outcome
from engine.store import Store
from engine.telemetry import Telemetry


async def test_recovery_after_a_crash(any_store: Store, smtp_server: ScriptedSmtp) -> None:
    store = any_store
    clock = ManualClock(start=time.time())
    now = clock.now()
    telemetry = Telemetry("t")

    def left(addr: str, status: str, owner: str, lease: float) -> str:
        dot_at = now - 1 if status == "sending" else None
        return add_intent(
            store, addr, now=now, status=status, claimed_by=owner, lease_until=lease, dot_at=dot_at
        )

    # A crashed node's rows, leases run out: before the dot -> resend; after -> uncertain.
    dead_claimed = left("ok-a@example.com", "claimed", "dead/0001", now - 1)
    dead_sending = left("ok-b@example.com", "sending", "dead/0001", now - 1)
    # A live node's rows: left alone until their leases run out.
    live_claimed = left("ok-c@example.com", "claimed", "alive/0002", now + 30)
    live_sending = left("ok-f@example.com", "sending", "alive/0002", now + 30)
    # This node's previous incarnation (killed): taken over at once, lease or not.
    own_claimed = left("ok-d@example.com", "claimed", "test-node/0003", now + 30)
    own_sending = left("ok-e@example.com", "sending", "test-node/0003", now + 30)

    service = make_service(store, smtp_server.relay(), clock=clock, telemetry=telemetry)
    await service.start()
    try:
        for intent_id in (dead_claimed, own_claimed):
            await wait_status(store, intent_id, {"sent"})
        for intent_id in (dead_sending, own_sending):
            row = intent_row(store, intent_id)
            assert row["status"] == "uncertain" and row["reply"].startswith("uncertain:")
        await asyncio.sleep(0.5)  # several recovery passes
        assert intent_row(store, live_claimed)["status"] == "claimed"
        assert intent_row(store, live_sending)["status"] == "sending"

        clock.advance(31)  # the live node has gone silent: its leases run out
        await wait_status(store, live_claimed, {"sent"})
        await wait_status(store, live_sending, {"uncertain"})
    finally:
        await service.stop()

    assert sorted(r.rcpt_tos[0] for r in smtp_server.received) == [
        "ok-a@example.com",
        "ok-c@example.com",
        "ok-d@example.com",
    ]
    assert telemetry.counters['intents_total{outcome="uncertain",workflow="browse"}'] == 3
    assert telemetry.counters['intents_total{outcome="sent",workflow="browse"}'] == 3


async def test_two_nodes_share_the_intents_without_duplicates(
    any_store: Store, smtp_server: ScriptedSmtp
) -> None:
    store = any_store
    clock = SystemClock()
    ids = [add_intent(store, f"ok-{i}@example.com", now=clock.now()) for i in range(120)]
    tuning = dataclasses.replace(FAST, claim_batch=5, max_inflight=10)
    nodes = [
        make_service(store, smtp_server.relay(connections=2), clock=clock, node=n, tuning=tuning)
        for n in ("node-a", "node-b")
    ]
    for node in nodes:
        await node.start()
    try:
        nodes[0].notify(ids)
        nodes[1].notify(ids)
        await wait_for(
            lambda: set(statuses(store).values()) == {"sent"}, timeout=30, what="all sent"
        )
    finally:
        for node in nodes:
            await node.stop()
    addresses = [r.rcpt_tos[0] for r in smtp_server.received]
    assert len(addresses) == len(set(addresses)) == 120
    owners = {intent_row(store, i)["claimed_by"].split("/")[0] for i in ids}
    assert owners == {"node-a", "node-b"}


def test_concurrent_claims_never_overlap(any_store: Store) -> None:
    store = any_store
    now = time.time()
    ids = {add_intent(store, f"ok-{i}@example.com", now=now) for i in range(400)}
    ledgers = [Ledger(store, node=f"n{i}", owner=f"n{i}/x") for i in range(4)]

    def claim_all(ledger: Ledger) -> list[str]:
        got: list[str] = []
        while True:
            batch = ledger.claim(now=now, lease_until=now + 60, limit=25)
            if not batch.intents:
                return got
            got += [i.id for i in batch.intents]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(claim_all, ledgers))
    claimed = [i for result in results for i in result]
    assert len(claimed) == len(set(claimed)) == 400
    assert set(claimed) == ids


def test_a_node_that_lost_its_claim_cannot_mark_or_finish(any_store: Store) -> None:
    store = any_store
    now = time.time()
    intent_id = add_intent(store, "ok@example.com", now=now)
    slow = Ledger(store, node="slow", owner="slow/1")
    fast = Ledger(store, node="fast", owner="fast/1")
    (claimed,) = slow.claim(now=now, lease_until=now + 1, limit=10).intents
    # slow stalls past its lease; fast recovers the row and claims it.
    assert fast.recover(now=now + 2, own_node=False).requeued == 1
    assert [i.id for i in fast.claim(now=now + 2, lease_until=now + 60, limit=10).intents] == [
        intent_id
    ]
    late = Outcome(intent_id, "browse", "deferred", attempts=1, reply="451", next_attempt_at=now)
    assert (
        slow.commit(now=now + 3, dots=[intent_id], lease_until=now + 60, outcomes=[late]) == set()
    )
    row = intent_row(store, intent_id)
    assert row["status"] == "claimed" and row["claimed_by"] == "fast/1"
    assert fast.commit(now=now + 3, dots=[intent_id], lease_until=now + 60, outcomes=[]) == {
        intent_id
    }
    assert claimed.id == intent_id


def test_notified_claims_take_only_due_queued_intents(any_store: Store) -> None:
    store = any_store
    now = time.time()
    due = add_intent(store, "ok-1@example.com", now=now)
    later = add_intent(store, "ok-2@example.com", now=now, next_attempt_at=now + 60)
    done = add_intent(store, "ok-3@example.com", now=now, status="sent")
    ledger = Ledger(store, node="n", owner="n/1")
    batch = ledger.claim(now=now, lease_until=now + 60, limit=10, ids=[due, later, done])
    assert [i.id for i in batch.intents] == [due]
    assert ledger.due_count(now) == 0
    assert ledger.due_count(now + 61) == 1
