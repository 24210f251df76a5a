"""The queue control verbs through the real control API: an engine node with its embedded
nats-server, SQLite and the capture inbox; requests as the console sends them."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from engine.config import load_settings
from engine.control import ControlError, request
from engine.deliver import RelayConfig, Route
from engine.node import Node
from engine.store import Store, schema
from tests.engine.access_support import grant

WORKFLOW = "welcome-series"
_seq = itertools.count(1)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    settings = load_settings(
        None,
        environ={},
        overrides={
            "engine": {"data_dir": str(tmp_path / "data"), "node": "q1"},
            "http": {"listen": "127.0.0.1:0"},
            "ingest": {"write_key": "wk-test"},
        },
    )
    node = Node(settings)
    await node.start()
    assert node.store is not None
    with node.store.begin() as conn:
        conn.execute(
            schema.contacts.insert(),
            {
                "id": "c1",
                "email": "ada@example.com",
                "traits": {"first_name": "Ada"},
                "consent": {},
                "first_seen_at": 0.0,
                "last_seen_at": 0.0,
                "updated_at": 0.0,
            },
        )
    try:
        yield node
    finally:
        await node.stop()


def add_intent(store: Store, to_addr: str, **fields: Any) -> str:
    n = next(_seq)
    now = time.time()
    intent_id = f"{int(now * 1000):012x}{n:020x}"
    row = {
        "id": intent_id,
        "dedup_key": f"dedup-{intent_id}",
        "workflow_id": WORKFLOW,
        "workflow_version": 1,
        "step_id": "welcome-1",
        "contact_id": "c1",
        "event_id": f"evt-{n}",
        "template_id": "welcome-1",
        "route": "default",
        "category": "marketing",
        "to_addr": to_addr,
        "domain": to_addr.rpartition("@")[2],
        "context": {"event": {"name": "Signed Up", "properties": {}}},
        "status": "queued",
        "attempts": 0,
        "next_attempt_at": now,
        "received_at": now - 0.5,
        "decided_at": now,
        **fields,
    }
    with store.begin() as conn:
        conn.execute(schema.intents.insert(), row)
    return intent_id


def row(store: Store, intent_id: str) -> dict[str, Any]:
    with store.begin() as conn:
        found = conn.execute(sa.select(schema.intents).where(schema.intents.c.id == intent_id))
        return dict(found.one()._mapping)


def status_of(store: Store, intent_id: str) -> str:
    return str(row(store, intent_id)["status"])


async def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_pause_resume_cancel_list_and_audit(node: Node) -> None:
    assert node.store is not None and node.nc is not None
    store, nc = node.store, node.nc

    grant(store, "ops-ana", "support")

    async def call(verb: str, args: dict[str, Any] | None = None) -> Any:
        return await request(nc, "q1", verb, args, user="ops-ana")

    ping = await call("ping")
    assert {"sending.pause", "sending.resume", "queues.list", "queues.cancel"} <= set(ping["verbs"])

    paused = await call("sending.pause", {"reason": "incident 42"})
    assert paused["changed"] and paused["control"]["kind"] == "all"
    ids = [add_intent(store, f"ok-{k}@example.com") for k in range(2)]
    gmail = add_intent(store, "ok@gmail.com")
    await asyncio.sleep(1.5)  # more than a poll interval: nothing may be claimed
    assert {status_of(store, i) for i in [*ids, gmail]} == {"queued"}

    listing = await call("queues.list", {"domains": 3})
    [queue] = listing["queues"]
    assert (queue["workflow"], queue["route"], queue["depth"], queue["held"]) == (
        WORKFLOW,
        "default",
        3,
        3,
    )
    assert queue["state"] == "paused"
    assert (queue["control"]["actor"], queue["control"]["reason"]) == ("ops-ana", "incident 42")
    assert [(d["domain"], d["depth"]) for d in queue["domains"]] == [
        ("example.com", 2),
        ("gmail.com", 1),
    ]
    assert listing["routes"] == ["default"]

    preview = await call("queues.pause", {"domain": "GMAIL.com", "preview": True})
    assert (preview["preview"], preview["count"], preview["changed"]) == (True, 1, False)
    assert len((await call("queues.list"))["controls"]) == 1  # the preview changed nothing
    await call("queues.pause", {"domain": "gmail.com", "reason": "gmail throttling"})

    resumed = await call("sending.resume")
    assert (resumed["count"], resumed["still_held"]) == (3, 1)
    await wait_for(lambda: {status_of(store, i) for i in ids} == {"sent"}, "the resumed sends")
    await asyncio.sleep(1.2)
    assert status_of(store, gmail) == "queued"  # its domain is still paused

    with pytest.raises(ControlError, match="a reason is required"):
        await call("queues.cancel", {"domain": "gmail.com"})
    cancelled = await call("queues.cancel", {"domain": "gmail.com", "reason": "list cleanup"})
    assert cancelled["count"] == 1
    assert cancelled["summary"] == "Cancelled 1 pending intent (domain gmail.com): list cleanup"
    cancelled_row = row(store, gmail)
    assert cancelled_row["status"] == "cancelled"
    assert cancelled_row["reply"] == "cancelled by ops-ana: list cleanup"
    key = f'intents_total{{outcome="cancelled",workflow="{WORKFLOW}"}}'
    assert node.telemetry.counters[key] == 1
    await call("queues.resume", {"domain": "gmail.com"})

    audit = await request(nc, "q1", "audit.list", {"search": "ops-ana"})
    audit = [a for a in audit if a["actor"] == "ops-ana"]  # not the entry that added her
    assert [(a["action"], a["target"], a["count"]) for a in reversed(audit)] == [
        ("sending.pause", "all", 0),
        ("queues.pause", "domain=gmail.com", 1),
        ("sending.resume", "all", 3),
        ("queues.cancel", "domain=gmail.com", 1),
        ("queues.resume", "domain=gmail.com", 0),
    ]
    assert audit[-1]["detail"]["reason"] == "incident 42"


async def test_bad_requests_are_refused_and_change_nothing(node: Node) -> None:
    assert node.store is not None and node.nc is not None
    store, nc = node.store, node.nc
    await request(nc, "q1", "sending.pause", {"reason": "hold everything"})
    intent = add_intent(store, "ok@example.com")
    before = row(store, intent)
    refusals = [
        ("queues.pause", {}, "give exactly one of workflow, route or domain \\(or all: true\\)"),
        ("queues.pause", {"workflow": WORKFLOW, "route": "default"}, "exactly one of"),
        ("queues.pause", {"all": True, "route": "default"}, "not both"),
        ("queues.pause", {"workflw": WORKFLOW}, "unknown argument 'workflw'"),
        ("queues.pause", {"workflow": "nope"}, "there is no workflow 'nope'"),
        ("queues.pause", {"domain": "a@b.com"}, "domain must be a recipient domain"),
        ("queues.pause", {"route": "default", "preview": "yes"}, "preview must be true or false"),
        ("queues.resume", {"workflow": WORKFLOW}, "workflow welcome-series is not paused"),
        ("queues.reroute", {"from_route": "default"}, "from_route and to_route are required"),
        (
            "queues.reroute",
            {"from_route": "default", "to_route": "relay-z"},
            "there is no route 'relay-z' \\(routes: default\\)",
        ),
        ("queues.reroute", {"from_route": "default", "to_route": "default"}, "already on"),
        ("queues.retry_now", {}, "say which queues"),
        ("queues.cancel", {"all": True}, "a reason is required"),
        ("queues.list", {"domains": "many"}, "domains must be a whole number"),
        ("routes.drain", {}, "route is required"),
        ("routes.drain", {"route": "relay-z"}, "there is no route 'relay-z'"),
    ]
    for verb, args, message in refusals:
        with pytest.raises(ControlError, match=message):
            await request(nc, "q1", verb, args)
    assert row(store, intent) == before
    with store.begin() as conn:
        assert len(conn.execute(sa.select(schema.queue_controls)).all()) == 1
        actions = [a.action for a in conn.execute(sa.select(schema.audit_log))]
        assert [a for a in actions if not a.startswith("users.")] == ["sending.pause"]


async def test_drain_reroute_and_retry_now(node: Node) -> None:
    assert node.store is not None and node.nc is not None
    store, nc = node.store, node.nc
    delivery = node.components["delivery"]

    grant(store, "ops-bo", "support")

    async def call(verb: str, args: dict[str, Any] | None = None) -> Any:
        return await request(nc, "q1", verb, args, user="ops-bo")

    # A second route, as the routes work will configure them: to the same capture inbox.
    host, port = node.inbox_address.rsplit(":", 1)
    relay_b = Route(
        "relay-b",
        RelayConfig(host=host, port=int(port), tls="none"),
        delivery,
        tuning=delivery.tuning,
        clock=node.clock,
    )
    relay_b.start()
    delivery.routes["relay-b"] = relay_b  # stopped with the service

    # Drain: nothing pending from before, so drained at once; new intents wait.
    preview = await call("routes.drain", {"route": "default", "preview": True})
    assert preview["count"] == 0 and preview["preview"]
    drained = await call("routes.drain", {"route": "default", "reason": "relay maintenance"})
    assert drained["control"]["state"] == "draining"
    waiting = [add_intent(store, f"ok-{k}@example.com") for k in range(3)]
    await asyncio.sleep(1.5)
    assert {status_of(store, i) for i in waiting} == {"queued"}
    listing = await call("queues.list")
    assert listing["controls"][0]["state"] == "drained"
    assert listing["queues"][0]["state"] == "drained"
    assert listing["routes"] == ["default", "relay-b"]

    # Reroute the held intents to relay-b, which is paused first: they wait there.
    await call("queues.pause", {"route": "relay-b", "reason": "warming up"})
    args = {"from_route": "default", "to_route": "relay-b", "reason": "relay-a away"}
    preview = await call("queues.reroute", {**args, "preview": True})
    assert preview["summary"].startswith("Reroute 3 queued intents from default to relay-b")
    assert {row(store, i)["route"] for i in waiting} == {"default"}
    moved = await call("queues.reroute", args)
    assert moved["count"] == 3 and moved["queues"] == [
        {"workflow": WORKFLOW, "route": "default", "count": 3}
    ]
    assert {row(store, i)["route"] for i in waiting} == {"relay-b"}
    await call("queues.resume", {"route": "relay-b"})
    await wait_for(lambda: {status_of(store, i) for i in waiting} == {"sent"}, "relay-b sends")
    await call("queues.resume", {"route": "default"})

    # Retry now: a deferred intent becomes due at once, same id, attempts kept.
    later = time.time() + 3600
    deferred = add_intent(
        store, "ok-late@example.com", status="deferred", attempts=1, next_attempt_at=later
    )
    preview = await call("queues.retry_now", {"workflow": WORKFLOW, "preview": True})
    assert preview["count"] == 1 and row(store, deferred)["next_attempt_at"] == later
    retried = await call("queues.retry_now", {"workflow": WORKFLOW})
    assert retried["count"] == 1
    await wait_for(lambda: status_of(store, deferred) == "sent", "the retried send")
    sent = row(store, deferred)
    assert sent["attempts"] == 2 and sent["message_id"].startswith(f"<{deferred}@")

    with store.begin() as conn:
        audit = [
            (a.action, a.count)
            for a in conn.execute(
                sa.select(schema.audit_log)
                .where(schema.audit_log.c.actor == "ops-bo")
                .order_by(schema.audit_log.c.id)
            )
        ]
    assert audit == [
        ("routes.drain", 0),
        ("queues.pause", 0),
        ("queues.reroute", 3),
        ("queues.resume", 3),
        ("queues.resume", 0),
        ("queues.retry_now", 1),
    ]


async def test_routes_list_and_set_rate_live(node: Node) -> None:
    assert node.store is not None and node.nc is not None
    store, nc = node.store, node.nc
    delivery = node.components["delivery"]

    grant(store, "ops-cy", "admin")

    async def call(verb: str, args: dict[str, Any] | None = None) -> Any:
        return await request(nc, "q1", verb, args, user="ops-cy")

    listing = await call("routes.list")
    (default,) = listing["routes"]
    assert default["name"] == "default" and default["paused"] is False
    assert "password" not in str(listing)

    preview = await call("routes.set_rate", {"route": "default", "per_second": 5, "preview": True})
    assert preview["after"]["rate"]["per_second"] == 5
    assert delivery.route("default").limits.rate.per_second == 0  # a preview changes nothing

    done = await call("routes.set_rate", {"route": "default", "per_second": 5, "per_minute": 200})
    assert done["before"]["rate"]["per_second"] == 0
    rate = delivery.route("default").limits.rate
    assert (rate.per_second, rate.per_minute) == (5, 200)
    await call("routes.set_rate", {"route": "default", "domain": "Gmail.com", "concurrency": 2})
    rule = delivery.route("default").limits.domains["gmail.com"]
    assert rule.concurrency == 2
    assert delivery.route("default").limits.rate.per_second == 5  # the route rate is kept

    for args, message in [
        ({"route": "nope", "per_second": 1}, "no route named 'nope'"),
        ({"route": "default", "per_second": -1}, r"per_second must be 0 \(no limit\)"),
        ({"route": "default", "concurrency": 3}, "concurrency is per recipient domain"),
        ({"route": "default"}, "give at least one of"),
        ({"per_second": 1}, "route is required"),
    ]:
        with pytest.raises(ControlError, match=message):
            await call("routes.set_rate", args)
    assert delivery.route("default").limits.domains.keys() == {"gmail.com"}

    with store.begin() as conn:
        audits = conn.execute(
            sa.select(schema.audit_log).where(schema.audit_log.c.action == "routes.set_rate")
        ).all()
    assert [(a.actor, a.target) for a in audits] == [
        ("ops-cy", "route default"),
        ("ops-cy", "route default domain gmail.com"),
    ]
