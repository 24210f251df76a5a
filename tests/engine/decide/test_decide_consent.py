"""Consent per purpose through the running decide worker (real NATS, manual clock): events set
it with when and how, the history keeps every change, location workflows enroll only contacts
who consented, offers carry their codes into the intent."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from conftest import MakeStack
from decide_support import STARTERS, identify, intents, rows, trace, track

from engine.clock import ManualClock
from engine.decide import WorkflowRegistry, load_workflow_dir
from engine.decide.workflow import parse_workflow
from engine.offers.model import OfferBook
from engine.store import Store, schema


def shopper(clock: ManualClock, user: str, **traits: Any) -> dict[str, Any]:
    return identify(clock, user, {"email": f"{user}@example.com", **traits})


def consent(clock: ManualClock, user: str, purpose: str, granted: bool, **props: Any) -> Any:
    return track(clock, user, "Consent Updated", {"purpose": purpose, "granted": granted, **props})


def geofence(clock: ManualClock, user: str, distance: float = 120) -> dict[str, Any]:
    props = {"store_id": "s-1", "store_name": "Harbour Street", "distance_m": distance}
    return track(clock, user, "Geofence Entered", props)


def contact_consent(store: Store, user: str) -> dict[str, Any]:
    [row] = rows(store, schema.contacts, schema.contacts.c.id == user)
    return dict(row.consent)


def history(store: Store, user: str) -> list[tuple[str, bool, str | None, bool]]:
    h = schema.consent_history
    with store.begin() as conn:
        found = conn.execute(
            sa.select(h.c.purpose, h.c.granted, h.c.method, h.c.applied)
            .where(h.c.contact_id == user)
            .order_by(h.c.id)
        )
        return [tuple(r) for r in found]  # type: ignore[misc]


async def test_consent_events_set_consent_with_when_and_how(
    make_stack: MakeStack, clock: ManualClock, store: Store
) -> None:
    stack = await make_stack()
    given = consent(clock, "ann", "location", True, method="app_prompt", source="ios")
    await stack.send(shopper(clock, "ann"), given)
    await stack.settle()
    entry = contact_consent(store, "ann")["location"]
    assert entry == {
        "granted": True,
        "at": clock.now(),
        "method": "app_prompt",
        "source": "ios",
        "event_id": given["messageId"],
    }
    clock.advance(60)
    segment_prefs = track(
        clock,
        "ann",
        "Segment Consent Preference Updated",
        context={"consent": {"categoryPreferences": {"location": False, "advertising": True}}},
    )
    await stack.send(segment_prefs)
    await stack.settle()
    state = contact_consent(store, "ann")
    assert state["location"]["granted"] is False and state["location"]["source"] == "segment"
    assert state["advertising"]["granted"] is True
    assert history(store, "ann") == [
        ("location", True, "app_prompt", True),
        ("advertising", True, "consent_preferences", True),
        ("location", False, "consent_preferences", True),
    ]
    # A late event saying something older does not undo the newer statement; it is kept.
    stale = consent(clock, "ann", "location", True)
    stale["timestamp"] = "2000-01-01T00:00:00Z"
    await stack.send(stale)
    await stack.settle()
    assert contact_consent(store, "ann")["location"]["granted"] is False
    assert history(store, "ann")[-1] == ("location", True, None, False)


async def test_malformed_consent_events_are_dead_letters(
    make_stack: MakeStack, clock: ManualClock, store: Store
) -> None:
    stack = await make_stack()
    await stack.send(
        shopper(clock, "bo"),
        track(clock, "bo", "Consent Updated", {"purpose": "location", "granted": "yes"}),
        track(clock, "bo", "Consent Updated", {"purpose": "Location!", "granted": True}),
    )
    await stack.settle()
    reasons = sorted(r.reason for r in rows(store, schema.dead_letters))
    assert reasons[0] == "properties.granted: must be true or false"
    assert reasons[1].startswith("properties.purpose: must be a purpose name")
    assert contact_consent(store, "bo") == {}
    assert history(store, "bo") == []


def signed_starters() -> WorkflowRegistry:
    """The starter workflows with a signing key for their generated offers."""
    return WorkflowRegistry(load_workflow_dir(STARTERS), OfferBook(secret=b"k" * 32))


async def test_location_workflow_only_for_consenting_contacts(
    make_stack: MakeStack, clock: ManualClock, store: Store
) -> None:
    stack = await make_stack(registry=signed_starters())
    await stack.send(
        shopper(clock, "yes"),
        shopper(clock, "never"),
        shopper(clock, "took-back"),
        consent(clock, "yes", "location", True),
        consent(clock, "took-back", "location", True),
        consent(clock, "took-back", "location", False),
        # Same batch: the grant is applied before the geofence event that follows it.
        geofence(clock, "yes"),
        geofence(clock, "never"),
        geofence(clock, "took-back"),
    )
    await stack.settle()
    assert stack.sends() == ["store-nearby"]
    [sent] = intents(store)
    assert sent.contact_id == "yes" and sent.context["requires_consent"] == "location"
    # The starter's own offer: a signed code and its value, ready for the template.
    assert sent.context["offer"]["code"].startswith("NEAR-")
    assert sent.context["offer"]["value"] == "10%"
    # At most one a day.
    clock.advance(3600)
    await stack.send(geofence(clock, "yes"))
    await stack.settle()
    assert stack.sends("yes") == ["store-nearby"]
    clock.advance(86400)
    await stack.send(geofence(clock, "yes", distance=900))  # too far away: not near the store
    await stack.send(geofence(clock, "yes"))
    await stack.settle()
    assert stack.sends("yes") == ["store-nearby", "store-nearby"]
    first, second = intents(store)
    assert first.context["offer"]["code"] != second.context["offer"]["code"]


async def test_a_consent_change_refreshes_consent_segments(
    make_stack: MakeStack, clock: ManualClock, store: Store
) -> None:
    from engine.segments.membership import SegmentRegistry
    from engine.segments.model import Segment
    from engine.segments.text import parse_condition

    stack = await make_stack()
    assert stack.worker is not None
    locals_ = Segment("locals", "Locals", 1, parse_condition("consented to location"))
    stack.worker.runner.segments = SegmentRegistry([locals_])
    await stack.send(shopper(clock, "cy"), consent(clock, "cy", "location", True))
    await stack.settle()
    members = rows(store, schema.segment_members, schema.segment_members.c.contact_id == "cy")
    assert [m.segment_id for m in members] == ["locals"]
    clock.advance(10)
    await stack.send(consent(clock, "cy", "location", False))
    await stack.settle()
    assert rows(store, schema.segment_members, schema.segment_members.c.contact_id == "cy") == []


OFFER_FLOW: dict[str, Any] = {
    "id": "welcome-offer",
    "name": "Welcome offer",
    "category": "marketing",
    "trigger": {"event": "Signed Up"},
    "steps": [{"id": "mail", "type": "send", "template": "welcome-1", "offer": "spring"}],
}


def pool_registry(store: Store) -> WorkflowRegistry:
    book = OfferBook.from_settings({"spring": {"kind": "pool", "value": "5%"}}, b"k" * 32)
    return WorkflowRegistry([parse_workflow(OFFER_FLOW, source="test")], book)


async def test_pool_offer_exhausted_is_a_clear_outcome(
    make_stack: MakeStack, clock: ManualClock, store: Store
) -> None:
    from engine.offers.issue import import_pool

    with store.begin() as conn:
        import_pool(conn, "spring", ["SPRING-1"], clock.now())
    stack = await make_stack(registry=pool_registry(store))
    for user in ("dee", "eve"):
        await stack.send(shopper(clock, user), track(clock, user, "Signed Up"))
        await stack.settle()
    [sent] = intents(store)
    assert sent.contact_id == "dee" and sent.context["offer"]["code"] == "SPRING-1"
    [eve] = stack.enrollments("eve", "welcome-offer")
    lines = trace(store, eve.id)
    assert any(line.startswith("offer_exhausted: offer spring: no codes left") for line in lines)
    [audit] = rows(store, schema.audit_log, schema.audit_log.c.action == "offer.pool_exhausted")
    assert audit.target == "spring" and audit.count == 1
    # A send naming an offer nobody defined is refused with the reason in the trace.
    missing = {**OFFER_FLOW, "id": "nope", "steps": [{**OFFER_FLOW["steps"][0], "offer": "gone"}]}
    stack.registry.add(parse_workflow(missing, source="test"))
    await stack.send(track(clock, "dee", "Signed Up"))
    await stack.settle()
    [nope] = stack.enrollments("dee", "nope")
    assert any("offer 'gone' is not defined" in line for line in trace(store, nope.id))
