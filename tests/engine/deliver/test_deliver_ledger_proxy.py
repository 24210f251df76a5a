"""A deliver process on its parent's SQLite file claims and commits through the parent.

Real nats-server, real SQLite, the scripted SMTP server: the promises of the deliver stage
(each mail once, the dot marker before the final dot, the claim fence) hold through the
proxy, and a parent that does not answer is a store error in words.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from deliver_support import ScriptedSmtp, add_intent, intent_row, make_service, wait_status

from engine import bus
from engine.clock import SystemClock
from engine.deliver.ledger_proxy import LedgerHost, RemoteLedger
from engine.deliver.model import ClaimBatch, Outcome
from engine.errors import StoreError
from engine.store import Store
from engine.telemetry import Telemetry


def answer(host: LedgerHost, verb: str, request: dict[str, Any]) -> Any:
    """What the child would read from the host's answer."""
    return orjson.loads(host.answer(verb, request))


@pytest.fixture
async def host(nats_url: str, nats_token: str, store: Store) -> AsyncIterator[LedgerHost]:
    nc = await bus.connect(nats_url, token=nats_token, name="parent")
    host = LedgerHost(nc, store, node="parent")
    await host.start()
    try:
        yield host
    finally:
        await host.stop()
        await nc.drain()


@pytest.fixture
async def remote(nats_url: str, nats_token: str, store: Store) -> AsyncIterator[RemoteLedger]:
    nc = await bus.connect(nats_url, token=nats_token, name="child")
    try:
        yield RemoteLedger(nc, store, host="parent", timeout=2.0)
    finally:
        await nc.drain()


async def test_a_deliver_process_sends_through_its_parents_ledger(
    store: Store, host: LedgerHost, remote: RemoteLedger, smtp_server: ScriptedSmtp
) -> None:
    now = time.time()
    telemetry = Telemetry("child")
    ok = [add_intent(store, f"ok-{n}@example.com", now=now) for n in range(30)]
    after_dot = add_intent(store, "drop-after-dot@example.com", now=now)
    bounced = add_intent(store, "bounce@example.com", now=now)
    service = make_service(
        store, smtp_server.relay(), clock=SystemClock(), telemetry=telemetry, remote_ledger=remote
    )
    await service.start()
    try:
        service.notify([*ok, after_dot, bounced])
        for intent_id in ok:
            await wait_status(store, intent_id, {"sent"})
        await wait_status(store, bounced, {"bounced"})
        # Lost after the final dot: the marker was committed by the parent before the dot.
        await wait_status(store, after_dot, {"uncertain"})
    finally:
        await service.stop()
    assert all(smtp_server.copies(f"ok-{n}@example.com") == 1 for n in range(30))
    for intent_id in ok:
        row = intent_row(store, intent_id)
        assert row["claimed_by"] == service.owner and row["dot_at"] is not None
        assert row["message_id"] and row["accepted_at"] >= row["dot_at"]
    assert intent_row(store, after_dot)["dot_at"] is not None
    assert host.requests >= 3  # claims and commits went to the parent
    assert telemetry.counters['intents_total{outcome="sent",workflow="browse"}'] == 30


async def test_the_parent_keeps_the_claim_fence(store: Store, host: LedgerHost) -> None:
    now = time.time()
    mine = add_intent(store, "ok-fence@example.com", now=now)
    claimed = answer(
        host,
        "claim",
        {"owner": "child/1", "now": now, "lease_until": now + 30, "limit": 10, "ids": [mine]},
    )
    assert claimed == [mine]  # the ids: the child reads the rows itself
    assert intent_row(store, mine)["claimed_by"] == "child/1"
    # Another owner (a restarted child, a second process) may not mark or finish it.
    commit = {"now": now, "lease_until": now + 30, "outcomes": [], "renew": [], "dots": [mine]}
    assert answer(host, "commit", {**commit, "owner": "child/2"}) == []
    assert intent_row(store, mine)["status"] == "claimed"
    assert answer(host, "commit", {**commit, "owner": "child/1"}) == [mine]
    assert intent_row(store, mine)["status"] == "sending"


async def test_the_child_reads_only_what_it_holds(
    store: Store, host: LedgerHost, remote: RemoteLedger
) -> None:
    """The parent claims (a poll here, oldest first); the child reads the rows, contacts and
    suppressions in a read transaction, and leaves out one that is no longer its own."""
    now = time.time()
    first = add_intent(store, "ok-1@example.com", now=now - 2)
    second = add_intent(store, "ok-2@example.com", now=now - 1)
    batch = await remote.claim(owner="child/1", now=now, lease_until=now + 30, limit=10)
    assert [i.id for i in batch.intents] == [first, second]
    assert batch.intents[0].context["event"]["properties"] == {"product": "Lamp"}
    assert batch.contacts == {} and batch.suppressions == {}  # c1 has no contact row
    # Taken over by recovery between the parent's claim and the child's read: left out.
    third = add_intent(store, "ok-3@example.com", now=now)
    assert answer(host, "claim", {"owner": "child/1", "now": now, "lease_until": now + 30,
                                  "limit": 5, "ids": [third]}) == [third]  # fmt: skip
    with store.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE intents SET status = 'queued', claimed_by = NULL WHERE id = ?", (third,)
        )
    reader = remote._reading("child/1")
    assert reader.load([third, first]).intents[0].id == first
    assert len(reader.load([third, first]).intents) == 1
    assert await remote.claim(owner="child/1", now=now, lease_until=now + 30, limit=0) == (
        ClaimBatch([])
    )


async def test_outcomes_cross_the_wire_whole(
    store: Store, host: LedgerHost, remote: RemoteLedger
) -> None:
    now = time.time()
    intent_id = add_intent(store, "ok-wire@example.com", now=now)
    batch = await remote.claim(
        owner="child/1", now=now, lease_until=now + 30, limit=5, ids=[intent_id]
    )
    (intent,) = batch.intents
    assert intent.id == intent_id and intent.context["event"]["properties"] == {"product": "Lamp"}
    deferred = Outcome(
        intent_id=intent_id,
        workflow_id="browse",
        status="deferred",
        attempts=1,
        reply="451 4.7.1 try later \u2014 greylisted",
        next_attempt_at=now + 300,
        rendered_at=now,
        message_id=f"<{intent_id}@shop.test>",
    )
    assert (
        await remote.commit(
            owner="child/1", now=now, dots=[], lease_until=now + 30, outcomes=[deferred]
        )
        == set()
    )
    row = intent_row(store, intent_id)
    assert (row["status"], row["attempts"], row["reply"]) == ("deferred", 1, deferred.reply)
    assert row["next_attempt_at"] == pytest.approx(now + 300)
    assert row["message_id"] == deferred.message_id


async def test_a_parent_that_does_not_answer_is_a_store_error_in_words(
    host: LedgerHost, remote: RemoteLedger, nats_url: str, nats_token: str
) -> None:
    nc = await bus.connect(nats_url, token=nats_token, name="orphan")
    try:
        orphan = RemoteLedger(nc, remote._store, host="gone", timeout=0.5)
        with pytest.raises(StoreError, match=r"node 'gone' did not answer a ledger claim request"):
            await orphan.claim(owner="child/1", now=0, lease_until=1, limit=1, ids=["x"])
    finally:
        await nc.drain()
    with pytest.raises(StoreError, match=r"node 'parent': frobnicate: ValueError: unknown ledger"):
        await remote._request("frobnicate", {"owner": "child/1"})
    with pytest.raises(StoreError, match=r"the request names no claim owner"):
        await remote._request("ping", {})
    await remote.ping(owner="child/1")  # and the host still answers
