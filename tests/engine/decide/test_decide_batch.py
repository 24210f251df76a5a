"""One decide transaction against the real store: dedup, dead letters, profiles, intents,
enrollments and their trace, reentry. Runs ``DecideBatch`` directly (no NATS)."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from decide_support import identify, intents, page, registry_of, rows, trace, track

from engine.clock import ManualClock
from engine.decide.batch import DecideBatch, Delivery
from engine.decide.registry import WorkflowRegistry, load_stored_workflows
from engine.decide.workflow import parse_workflow
from engine.errors import WorkflowInvalid
from engine.ids import dedup_key
from engine.ingest.validate import parse_event
from engine.store import Store, schema

_seq = itertools.count(1)

ORDER = {
    "id": "order-confirmation",
    "name": "Order confirmation",
    "category": "transactional",
    "version": 1,
    "expires_after": "1d",
    "trigger": {
        "event": "Order Completed",
        "where": [{"property": "total", "op": "gt", "value": 0}],
    },
    "steps": [{"id": "confirm", "type": "send", "template": "order-confirmation"}],
}


def delivery(event: dict[str, Any] | bytes, *, msg_id: str | None = None) -> Delivery:
    data = event if isinstance(event, bytes) else orjson.dumps(event)
    return Delivery(
        data=data,
        subject="events.track",
        stream_seq=next(_seq),
        msg_id=msg_id,
        published_at=1_800_000_000.0,
    )


def runner(store: Store, clock: ManualClock, registry: WorkflowRegistry) -> DecideBatch:
    return DecideBatch(store=store, registry=registry, clock=clock, parse=parse_event)


def count(store: Store, table: sa.Table) -> int:
    with store.begin() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() or 0)


def test_the_same_message_id_twice_makes_one_intent(any_store: Store, clock: ManualClock) -> None:
    batch = runner(any_store, clock, registry_of(ORDER))
    who = identify(clock, "u1", {"email": "Ann@Example.com"})
    order = track(clock, "u1", "Order Completed", {"order_id": "o1", "total": 30})
    first = batch.run([delivery(who), delivery(order), delivery(order)])
    assert (first.processed, first.duplicates, len(first.intent_ids)) == (2, 1, 1)
    again = batch.run([delivery(order), delivery(who)])  # a redelivery or a replay
    assert (again.processed, again.duplicates, again.intent_ids) == (0, 2, [])
    [intent] = intents(any_store)
    assert intent.id == first.intent_ids[0]
    happened = intent.context["event"]["ts"]
    assert happened == clock.now()
    key = dedup_key("order-confirmation", "confirm", "u1", order["messageId"], happened)
    assert intent.dedup_key == key
    assert key.startswith(f"{int(happened * 1000):011x}")
    assert (intent.to_addr, intent.domain, intent.category) == (
        "Ann@Example.com",
        "example.com",
        "transactional",
    )
    assert (intent.status, intent.route, intent.template_id) == (
        "queued",
        "default",
        "order-confirmation",
    )
    assert intent.context == {
        "event": {
            "name": "Order Completed",
            "properties": {"order_id": "o1", "total": 30},
            "ts": clock.now(),
        }
    }
    assert intent.decided_at == intent.next_attempt_at == clock.now()
    assert intent.expires_at == pytest.approx(intent.received_at + 86400)
    assert count(any_store, schema.activity) == 2
    assert count(any_store, schema.processed_events) == 2


def test_an_intent_is_never_made_twice_even_when_the_processed_id_is_gone(
    any_store: Store, clock: ManualClock
) -> None:
    """The intents' dedup key is the last line of defence (processed_events may be pruned)."""
    batch = runner(any_store, clock, registry_of(ORDER))
    order = track(
        clock,
        "u1",
        "Order Completed",
        {"total": 5},
        context={"traits": {"email": "u1@example.com"}},
    )
    assert len(batch.run([delivery(order)]).intent_ids) == 1
    with any_store.begin() as conn:
        conn.execute(sa.delete(schema.processed_events))
    assert batch.run([delivery(order)]).intent_ids == []
    assert len(intents(any_store)) == 1
    # One batch with the old order again and a new one: only the new one is handed on.
    with any_store.begin() as conn:
        conn.execute(sa.delete(schema.processed_events))
    other = track(
        clock,
        "u2",
        "Order Completed",
        {"total": 7},
        context={"traits": {"email": "u2@example.com"}},
    )
    made = batch.run([delivery(order), delivery(other)]).intent_ids
    assert made == [i.id for i in intents(any_store) if i.contact_id == "u2"]
    assert len(intents(any_store)) == 2


def test_bad_payloads_become_dead_letters_and_the_rest_goes_on(
    store: Store, clock: ManualClock
) -> None:
    batch = runner(store, clock, registry_of(ORDER))
    bad_json = delivery(b'{"type": "track", "userId": ')
    no_user = delivery({"type": "track", "event": "Order Completed", "messageId": "m-anon"})
    good = delivery(
        track(
            clock,
            "u1",
            "Order Completed",
            {"total": 5},
            context={"traits": {"email": "u1@example.com"}},
        )
    )
    outcome = batch.run([bad_json, no_user, good])
    assert (outcome.dead_letters, outcome.processed, len(outcome.intent_ids)) == (2, 1, 1)
    dead = {row.stream_seq: row for row in rows(store, schema.dead_letters)}
    assert dead[bad_json.stream_seq].reason.startswith("payload: not valid JSON")
    assert dead[bad_json.stream_seq].payload == bad_json.data
    assert dead[no_user.stream_seq].reason == "userId: is required (or anonymousId)"
    assert {row.status for row in dead.values()} == {"open"}
    # Redelivered, the same bad message is not recorded twice.
    assert batch.run([bad_json]).dead_letters == 0
    assert count(store, schema.dead_letters) == 2


def test_events_without_message_id_use_the_header_or_stream_position(
    store: Store, clock: ManualClock
) -> None:
    batch = runner(store, clock, registry_of(ORDER))
    event = track(clock, "u1", "Order Completed", {"total": 5})
    del event["messageId"]
    with_header = delivery(event, msg_id="hdr-1")
    assert batch.run([with_header]).processed == 1
    assert batch.run([with_header]).duplicates == 1
    bare = delivery(event)
    assert batch.run([bare]).processed == 1
    assert batch.run([bare]).duplicates == 1  # the same stream message, redelivered
    ids = {row.message_id for row in rows(store, schema.processed_events)}
    assert ids == {"hdr-1", f"stream-{bare.stream_seq}"}


def test_profiles_merge_traits_and_keep_first_and_last_seen(
    store: Store, clock: ManualClock
) -> None:
    batch = runner(store, clock, registry_of(ORDER))
    start = clock.now()
    batch.run(
        [
            delivery(
                identify(clock, "u1", {"email": "u1@example.com", "plan": "free", "name": "Ann"})
            ),
            delivery(track(clock, "u1", "Product Viewed", context={"timezone": "Europe/Berlin"})),
        ]
    )
    clock.advance(3600)
    batch.run(
        [
            delivery(identify(clock, "u1", {"plan": "pro", "email": "not an address"})),
            delivery(
                page(clock, "u1", context={"timezone": "Not/AZone", "traits": {"city": "Bonn"}})
            ),
        ]
    )
    [contact] = rows(store, schema.contacts)
    assert contact.email == "u1@example.com"
    assert contact.traits == {
        "email": "not an address",
        "plan": "pro",
        "name": "Ann",
        "city": "Bonn",
    }
    assert contact.timezone == "Europe/Berlin"
    assert contact.first_seen_at == pytest.approx(start)
    assert contact.last_seen_at == pytest.approx(start + 3600)
    assert contact.consent == {}


def test_a_contact_without_email_gets_no_intent_and_the_trace_says_why(
    store: Store, clock: ManualClock
) -> None:
    batch = runner(store, clock, registry_of(ORDER))
    outcome = batch.run([delivery(track(clock, "u2", "Order Completed", {"total": 5}))])
    assert outcome.processed == 1 and outcome.intent_ids == []
    assert intents(store) == []
    [enrollment] = rows(store, schema.enrollments)
    assert enrollment.state == "completed"
    assert [line.split(":")[0] for line in trace(store, enrollment.id)] == [
        "entered",
        "no_email",
        "completed",
    ]


def test_trigger_filters_decide_who_enters(store: Store, clock: ManualClock) -> None:
    batch = runner(store, clock, registry_of(ORDER))
    email = {"context": {"traits": {"email": "u@example.com"}}}
    batch.run(
        [
            delivery(track(clock, "u1", "Order Completed", {"total": 0}, **email)),
            delivery(track(clock, "u1", "Order Completed", {"total": "12"}, **email)),
            delivery(track(clock, "u1", "Order Updated", {"total": 12}, **email)),
            delivery(track(clock, "u1", "Order Completed", {"total": 12}, **email)),
        ]
    )
    assert len(intents(store)) == 1
    assert len(rows(store, schema.enrollments)) == 1


def reentry(mode: str) -> dict[str, Any]:
    return {
        "id": "nudge",
        "name": "Nudge",
        "category": "marketing",
        "version": 1,
        "reentry": mode,
        "trigger": {"event": "Product Added"},
        "steps": [
            {"id": "wait", "type": "wait", "duration": "1h"},
            {"id": "send", "type": "send", "template": "nudge"},
        ],
    }


@pytest.mark.parametrize(
    ("mode", "entries"),
    [("always", [2, 3, 4]), ("once", [1, 1, 1]), ("after 1d", [1, 1, 2])],
)
def test_reentry_rules(store: Store, clock: ManualClock, mode: str, entries: list[int]) -> None:
    batch = runner(store, clock, registry_of(reentry(mode)))
    seen = []
    # Two adds in one batch (the second while the first enrollment waits) ...
    batch.run(
        [
            delivery(track(clock, "u1", "Product Added")),
            delivery(track(clock, "u1", "Product Added")),
        ]
    )
    seen.append(len(rows(store, schema.enrollments)))
    clock.advance(3 * 3600)  # ... one after the first enrollment's wait would have ended
    with store.begin() as conn:
        e = schema.enrollments
        conn.execute(sa.update(e).values(state="completed", step_id=None))
    batch.run([delivery(track(clock, "u1", "Product Added"))])
    seen.append(len(rows(store, schema.enrollments)))
    clock.advance(86400)  # ... and one more than a day after the first entry
    batch.run([delivery(track(clock, "u1", "Product Added"))])
    seen.append(len(rows(store, schema.enrollments)))
    assert seen == entries


def test_branch_steps_log_the_condition_and_the_way_taken(store: Store, clock: ManualClock) -> None:
    wf = {
        "id": "tiered",
        "name": "Tiered",
        "category": "marketing",
        "version": 1,
        "trigger": {"event": "Order Completed"},
        "steps": [
            {
                "id": "big",
                "type": "branch",
                "condition": {"property": "total", "op": "gte", "value": 100},
                "then": "vip",
                "else": "regular",
            },
            {"id": "regular", "type": "send", "template": "thanks", "next": "exit"},
            {"id": "vip", "type": "send", "template": "vip-thanks"},
        ],
    }
    batch = runner(store, clock, registry_of(wf))
    email = {"context": {"traits": {"email": "u@example.com"}}}
    batch.run(
        [
            delivery(track(clock, "small", "Order Completed", {"total": 20}, **email)),
            delivery(track(clock, "large", "Order Completed", {"total": 250}, **email)),
        ]
    )
    sent = {row.contact_id: row.template_id for row in intents(store)}
    assert sent == {"small": "thanks", "large": "vip-thanks"}
    by_contact = {row.contact_id: row for row in rows(store, schema.enrollments)}
    assert by_contact["small"].state == "exited"
    assert by_contact["large"].state == "completed"
    lines = trace(store, by_contact["small"].id)
    assert "branch: property total gte 100 is false -> regular" in lines


def test_every_stored_version_is_loaded_and_the_highest_enabled_one_triggers(
    store: Store, clock: ManualClock
) -> None:
    v1 = parse_workflow(ORDER, source="t")
    v2 = parse_workflow({**ORDER, "version": 2, "expires_after": "2d"}, source="t")
    with store.begin() as conn:
        for wf, enabled in ((v1, True), (v2, True)):
            conn.execute(
                schema.workflows.insert(),
                {
                    "id": wf.id,
                    "version": wf.version,
                    "name": wf.name,
                    "category": wf.category,
                    "definition": wf.to_definition(),
                    "enabled": enabled,
                    "created_at": clock.now(),
                },
            )
    registry = WorkflowRegistry(load_stored_workflows(store))
    assert registry.get("order-confirmation", 1) is not None  # for enrollments still on v1
    [active] = registry.active()
    assert (active.version, active.expires_after) == (2, 172800)
    assert registry.index.triggered_by("Order Completed") == (active,)
    # The live version is the highest enabled one: with v2 switched off, v1 (still enabled)
    # starts enrollments again (workflows.enable/disable keep one version enabled at a time).
    with store.begin() as conn:
        w = schema.workflows
        conn.execute(sa.update(w).where(w.c.version == 2).values(enabled=False))
    registry = WorkflowRegistry(load_stored_workflows(store))
    [active] = registry.active()
    assert active.version == 1 and registry.index.triggered_by("Order Completed") == (active,)
    # Paused from the console (every version off): no new enrollments, running ones keep
    # their definition.
    with store.begin() as conn:
        conn.execute(sa.update(w).values(enabled=False))
    registry = WorkflowRegistry(load_stored_workflows(store))
    assert registry.active() == [] and registry.index.triggered_by("Order Completed") == ()
    assert registry.get("order-confirmation", 2) is not None
    # A misspelt setting for the newest version is an error, not silently ignored.
    with pytest.raises(WorkflowInvalid, match="no such parameter"):
        load_stored_workflows(store, overrides={"order-confirmation": {"delay": "1m"}})
