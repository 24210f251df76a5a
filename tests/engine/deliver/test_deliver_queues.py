"""Queue controls in the ledger, on SQLite and PostgreSQL: claims honour pauses and drains,
reroute/retry_now/cancel change exactly what they count, previews change nothing."""

from __future__ import annotations

import time
from typing import Any

import pytest
import sqlalchemy as sa
from deliver_support import add_intent, intent_row, statuses

from engine.deliver import queues
from engine.deliver.ledger import Ledger
from engine.deliver.queues import QueueControlError, Scope, Selection
from engine.store import Store, schema

ROUTES = {"default", "relay-b"}


def claim_all(store: Store, now: float, *, ids: list[str] | None = None) -> set[str]:
    """Claim whatever is claimable (poll path, or the notified-ids path with ``ids``)."""
    ledger = Ledger(store, node="n", owner=f"n/{time.monotonic_ns() % 10**8:08d}")
    batch = ledger.claim(now=now, lease_until=now + 60, limit=1000, ids=ids)
    return {i.id for i in batch.intents}


def release(store: Store, ids: set[str]) -> None:
    """Hand claimed intents back to ``queued`` (as a node that stops does)."""
    with store.begin() as conn:
        conn.execute(
            sa.update(schema.intents)
            .where(schema.intents.c.id.in_(ids))
            .values(status="queued", claimed_by=None, lease_until=None)
        )


def audit_rows(store: Store) -> list[dict[str, Any]]:
    with store.begin() as conn:
        rows = conn.execute(sa.select(schema.audit_log).order_by(schema.audit_log.c.id)).all()
    return [dict(r._mapping) for r in rows]


def snapshot(store: Store) -> list[tuple[Any, ...]]:
    with store.begin() as conn:
        return [
            tuple(r)
            for r in conn.execute(sa.select(schema.intents).order_by(schema.intents.c.id)).all()
        ]


def controls(store: Store) -> list[tuple[Any, ...]]:
    with store.begin() as conn:
        return [tuple(r) for r in conn.execute(sa.select(schema.queue_controls)).all()]


@pytest.mark.parametrize("path", ["poll", "notified"])
def test_claims_skip_every_paused_scope(any_store: Store, path: str) -> None:
    store = any_store
    now = time.time()
    made = {
        "browse": add_intent(store, "a@gmail.com", now=now, workflow_id="browse"),
        "cart": add_intent(store, "b@example.com", now=now, workflow_id="cart"),
        "relay-b": add_intent(store, "c@example.com", now=now, route="relay-b", workflow_id="cart"),
        "gmail": add_intent(store, "d@GMAIL.com", now=now, workflow_id="cart", domain="gmail.com"),
        "deferred": add_intent(
            store, "e@example.com", now=now, status="deferred", workflow_id="cart"
        ),
    }
    every = set(made.values())

    def claimable() -> set[str]:
        got = claim_all(store, now, ids=sorted(every) if path == "notified" else None)
        release(store, got)
        return got

    assert claimable() == (every if path == "poll" else every - {made["deferred"]})
    expect_open = every if path == "poll" else every - {made["deferred"]}

    cases = [
        (Scope("workflow", "browse"), {made["browse"]}),
        (Scope("route", "relay-b"), {made["relay-b"]}),
        (Scope("domain", "gmail.com"), {made["browse"], made["gmail"]}),
        (Scope("all"), every),
    ]
    for scope, held in cases:
        result = queues.pause(store, scope, actor="ana", reason="test", now=now, routes=ROUTES)
        assert result["changed"] and result["count"] == len(held)
        assert claimable() == expect_open - held, scope
        result = queues.resume(store, scope, actor="ana", reason="", now=now)
        assert result["count"] == len(held) and result["still_held"] == 0
        assert claimable() == expect_open, scope
    assert controls(store) == []
    actions = [(r["action"], r["target"], r["count"]) for r in audit_rows(store)]
    assert actions == [
        ("queues.pause", "workflow=browse", 1),
        ("queues.resume", "workflow=browse", 1),
        ("queues.pause", "route=relay-b", 1),
        ("queues.resume", "route=relay-b", 1),
        ("queues.pause", "domain=gmail.com", 2),
        ("queues.resume", "domain=gmail.com", 2),
        ("queues.pause", "all", 5),
        ("queues.resume", "all", 5),
    ]


def test_pause_counts_in_flight_and_resume_reports_other_holds(any_store: Store) -> None:
    store = any_store
    now = time.time()
    gmail = add_intent(store, "a@gmail.com", now=now)
    example = add_intent(store, "b@example.com", now=now)
    add_intent(store, "c@example.com", now=now, status="claimed", claimed_by="n/1")
    queues.pause(
        store, Scope("domain", "gmail.com"), actor="ana", reason="", now=now, routes=ROUTES
    )
    paused = queues.pause(
        store, Scope("workflow", "browse"), actor="bo", reason="bad copy", now=now, routes=ROUTES
    )
    assert (paused["count"], paused["in_flight"]) == (2, 1)
    assert paused["queues"] == [{"workflow": "browse", "route": "default", "count": 2}]
    assert paused["summary"] == (
        "Paused workflow browse: 2 queued intents held, 1 in-flight intent finish normally"
    )
    again = queues.pause(
        store, Scope("workflow", "browse"), actor="cy", reason="", now=now + 5, routes=ROUTES
    )
    assert not again["changed"] and again["control"]["actor"] == "bo"
    preview = queues.resume(
        store, Scope("workflow", "browse"), actor="bo", reason="", now=now, preview=True
    )
    assert (preview["count"], preview["still_held"]) == (2, 1)
    assert len(controls(store)) == 2  # the preview changed nothing
    resumed = queues.resume(store, Scope("workflow", "browse"), actor="bo", reason="", now=now)
    assert (resumed["count"], resumed["still_held"]) == (2, 1)
    assert claim_all(store, now) == {example}  # gmail.com is still paused
    assert statuses(store)[gmail] == "queued"
    with pytest.raises(QueueControlError, match="workflow browse is not paused or draining"):
        queues.resume(store, Scope("workflow", "browse"), actor="bo", reason="", now=now)
    with pytest.raises(QueueControlError, match="there is no workflow 'nope'"):
        queues.pause(
            store, Scope("workflow", "nope"), actor="bo", reason="", now=now, routes=ROUTES
        )
    with pytest.raises(QueueControlError, match="there is no route 'relay-z'"):
        queues.pause(
            store, Scope("route", "relay-z"), actor="bo", reason="", now=now, routes=ROUTES
        )


def test_drain_sends_what_was_there_and_holds_the_rest(any_store: Store) -> None:
    store = any_store
    now = time.time()
    before = add_intent(store, "a@example.com", now=now - 10, decided_at=now - 10)
    retry = add_intent(store, "b@example.com", now=now - 10, decided_at=now - 10, status="deferred")
    other_route = add_intent(store, "c@example.com", now=now, route="relay-b")
    result = queues.drain(
        store, "default", actor="ana", reason="relay swap", now=now, routes=ROUTES
    )
    assert (result["count"], result["in_flight"]) == (2, 0)
    after = add_intent(store, "d@example.com", now=now + 1, decided_at=now + 1)
    with pytest.raises(QueueControlError, match="already draining"):
        queues.drain(store, "default", actor="ana", reason="", now=now, routes=ROUTES)

    listing = queues.list_queues(store, now=now + 1, routes=ROUTES)
    [control] = listing["controls"]
    assert (control["state"], control["remaining"]) == ("draining", 2)
    by_route = {q["route"]: q for q in listing["queues"]}
    assert by_route["default"]["state"] == "draining"
    assert by_route["default"]["held"] == 1
    assert by_route["relay-b"]["state"] == "active"

    got = claim_all(store, now + 1)
    assert got == {before, retry, other_route}
    listing = queues.list_queues(store, now=now + 1, routes=ROUTES)
    assert listing["controls"][0]["remaining"] == 2  # in flight: still draining
    with store.begin() as conn:
        conn.execute(
            sa.update(schema.intents)
            .where(schema.intents.c.id.in_(got))
            .values(status="sent", finished_at=now + 1)
        )
    listing = queues.list_queues(store, now=now + 2, routes=ROUTES)
    assert listing["controls"][0]["state"] == "drained"
    assert {q["route"]: q["state"] for q in listing["queues"]}["default"] == "drained"
    assert claim_all(store, now + 2) == set()
    queues.resume(store, Scope("route", "default"), actor="ana", reason="", now=now + 3)
    assert claim_all(store, now + 3) == {after}


def test_reroute_moves_pending_only_and_previews_change_nothing(any_store: Store) -> None:
    store = any_store
    now = time.time()
    moved = {
        add_intent(store, "a@gmail.com", now=now),
        add_intent(
            store,
            "b@example.com",
            now=now,
            status="deferred",
            attempts=2,
            next_attempt_at=now + 300,
        ),
        add_intent(store, "c@example.com", now=now, workflow_id="cart"),
    }
    stay = {
        add_intent(store, "d@example.com", now=now, status="claimed", claimed_by="n/1"),
        add_intent(store, "e@example.com", now=now, status="sending", claimed_by="n/1"),
        add_intent(store, "f@example.com", now=now, status="sent"),
    }
    add_intent(store, "g@example.com", now=now, route="relay-b")
    before = snapshot(store)

    preview = queues.reroute(
        store,
        from_route="default",
        to_route="relay-b",
        selection=Selection(),
        actor="ana",
        reason="",
        now=now,
        routes=ROUTES,
        preview=True,
    )
    assert preview["count"] == 3 and preview["preview"] and not preview["changed"]
    assert preview["summary"] == "Reroute 3 queued intents from default to relay-b"
    assert snapshot(store) == before and audit_rows(store) == []

    errors = [
        ("default", "default", "already on route default"),
        ("default", "relay-z", "there is no route 'relay-z' \\(routes: default, relay-b\\)"),
        ("relay-y", "relay-b", "there is no route 'relay-y'"),
    ]
    for source, target, message in errors:
        with pytest.raises(QueueControlError, match=message):
            queues.reroute(
                store,
                from_route=source,
                to_route=target,
                selection=Selection(),
                actor="ana",
                reason="",
                now=now,
                routes=ROUTES,
            )
    queues.drain(store, "relay-b", actor="ana", reason="", now=now, routes=ROUTES)
    with pytest.raises(QueueControlError, match="route relay-b is draining; resume it first"):
        queues.reroute(
            store,
            from_route="default",
            to_route="relay-b",
            selection=Selection(),
            actor="ana",
            reason="",
            now=now,
            routes=ROUTES,
        )
    queues.resume(store, Scope("route", "relay-b"), actor="ana", reason="", now=now)
    assert snapshot(store) == before

    sliced = queues.reroute(
        store,
        from_route="default",
        to_route="relay-b",
        selection=Selection(workflow="cart"),
        actor="ana",
        reason="slow",
        now=now,
        routes=ROUTES,
    )
    assert sliced["queues"] == [{"workflow": "cart", "route": "default", "count": 1}]
    result = queues.reroute(
        store,
        from_route="default",
        to_route="relay-b",
        selection=Selection(),
        actor="ana",
        reason="relay-a slow",
        now=now,
        routes=ROUTES,
    )
    assert result["count"] == 2 and result["changed"]
    assert result["summary"] == "Rerouted 2 queued intents from default to relay-b"
    for intent_id in moved:
        assert intent_row(store, intent_id)["route"] == "relay-b"
    deferred = [intent_row(store, i) for i in moved if intent_row(store, i)["attempts"] == 2]
    assert deferred[0]["status"] == "deferred" and deferred[0]["next_attempt_at"] == now + 300
    assert {intent_row(store, i)["route"] for i in stay} == {"default"}
    audit = [r for r in audit_rows(store) if r["action"] == "queues.reroute"]
    assert [(r["target"], r["count"], r["detail"]["reason"]) for r in audit] == [
        ("default->relay-b workflow=cart,route=default", 1, "slow"),
        ("default->relay-b route=default", 2, "relay-a slow"),
    ]


def test_retry_now_keeps_the_intent_and_its_attempts(any_store: Store) -> None:
    store = any_store
    now = time.time()
    later = add_intent(
        store,
        "a@example.com",
        now=now,
        status="deferred",
        attempts=3,
        next_attempt_at=now + 600,
        message_id="<a@shop>",
    )
    other = add_intent(
        store,
        "b@example.com",
        now=now,
        status="deferred",
        attempts=1,
        next_attempt_at=now + 600,
        workflow_id="cart",
    )
    queued = add_intent(store, "c@example.com", now=now, next_attempt_at=now + 600)
    before = snapshot(store)
    preview = queues.retry_now(
        store, Selection(workflow="browse"), actor="ana", reason="", now=now, preview=True
    )
    assert preview["count"] == 1 and snapshot(store) == before
    assert claim_all(store, now) == set()
    result = queues.retry_now(
        store, Selection(workflow="browse"), actor="ana", reason="relay ok", now=now
    )
    assert result["count"] == 1
    row = intent_row(store, later)
    assert (row["status"], row["attempts"], row["message_id"]) == ("deferred", 3, "<a@shop>")
    assert row["next_attempt_at"] == now
    assert claim_all(store, now) == {later}
    assert intent_row(store, other)["next_attempt_at"] == now + 600
    assert intent_row(store, queued)["next_attempt_at"] == now + 600
    [entry] = audit_rows(store)
    assert (entry["action"], entry["target"], entry["count"]) == (
        "queues.retry_now",
        "workflow=browse",
        1,
    )


def test_cancel_ends_pending_intents_with_the_reason(any_store: Store) -> None:
    store = any_store
    now = time.time()
    pending = {
        add_intent(store, "a@gmail.com", now=now),
        add_intent(store, "b@gmail.com", now=now, status="deferred", next_attempt_at=now + 60),
    }
    untouched = {
        add_intent(store, "c@gmail.com", now=now, status="claimed", claimed_by="n/1"),
        add_intent(store, "d@example.com", now=now),
        add_intent(store, "e@gmail.com", now=now, status="sent"),
    }
    with pytest.raises(QueueControlError, match="a reason is required"):
        queues.cancel(store, Selection(domain="gmail.com"), actor="ana", reason=" ", now=now)
    before = snapshot(store)
    preview = queues.cancel(
        store, Selection(domain="gmail.com"), actor="ana", reason="typo", now=now, preview=True
    )
    assert preview["count"] == 2 and snapshot(store) == before and audit_rows(store) == []
    result = queues.cancel(
        store, Selection(domain="gmail.com"), actor="ana", reason="wrong price in the copy", now=now
    )
    assert result["count"] == 2
    assert result["summary"] == (
        "Cancelled 2 pending intents (domain gmail.com): wrong price in the copy"
    )
    for intent_id in pending:
        row = intent_row(store, intent_id)
        assert row["status"] == "cancelled" and row["finished_at"] == now
        assert row["reply"] == "cancelled by ana: wrong price in the copy"
    assert {statuses(store)[i] for i in untouched} == {"claimed", "queued", "sent"}
    still_queued = {i for i in untouched if statuses(store)[i] == "queued"}
    assert claim_all(store, now) == still_queued  # cancelled ones are never claimed
    [entry] = audit_rows(store)
    assert (entry["action"], entry["count"], entry["detail"]["reason"]) == (
        "queues.cancel",
        2,
        "wrong price in the copy",
    )


def test_list_queues_reports_depth_rate_age_and_state(any_store: Store) -> None:
    store = any_store
    now = time.time()
    add_intent(store, "a@gmail.com", now=now, decided_at=now - 30)
    add_intent(store, "b@gmail.com", now=now, status="deferred", next_attempt_at=now + 60)
    add_intent(store, "c@yahoo.com", now=now, status="sending", claimed_by="n/1")
    for n in range(6):
        add_intent(store, f"s{n}@gmail.com", now=now, status="sent", finished_at=now - 5)
    add_intent(store, "old@gmail.com", now=now, status="sent", finished_at=now - 120)
    add_intent(store, "x@example.com", now=now, workflow_id="cart", route="relay-b")
    queues.pause(
        store, Scope("route", "relay-b"), actor="bo", reason="relay down", now=now, routes=ROUTES
    )

    listing = queues.list_queues(store, now=now, domains=5, routes=ROUTES)
    browse, cart = listing["queues"]
    assert {k: browse[k] for k in ("workflow", "route", "depth", "due", "deferred")} == {
        "workflow": "browse",
        "route": "default",
        "depth": 2,
        "due": 1,
        "deferred": 1,
    }
    assert (browse["in_flight"], browse["sent_last_minute"], browse["rate"]) == (1, 6, 0.1)
    assert browse["oldest_age"] == pytest.approx(30, abs=0.01)
    assert (browse["state"], browse["control"], browse["held"]) == ("active", None, 0)
    assert browse["domains"] == [
        {
            "domain": "gmail.com",
            "depth": 2,
            "due": 1,
            "deferred": 1,
            "in_flight": 0,
            "state": "active",
        },
        {
            "domain": "yahoo.com",
            "depth": 0,
            "due": 0,
            "deferred": 0,
            "in_flight": 1,
            "state": "active",
        },
    ]
    assert (cart["state"], cart["held"], cart["depth"]) == ("paused", 1, 1)
    assert cart["control"]["actor"] == "bo" and cart["control"]["reason"] == "relay down"
    assert [c["kind"] for c in listing["controls"]] == ["route"]
    assert listing["totals"]["depth"] == 3 and listing["routes"] == ["default", "relay-b"]
    assert "domains" not in queues.list_queues(store, now=now, routes=ROUTES)["queues"][0]
