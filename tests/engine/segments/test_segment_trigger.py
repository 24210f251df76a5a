"""``[trigger] segment_entered``: entering a segment starts a workflow, in the transaction that
records the entry (a decide batch, or a re-check fired by time alone)."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from engine.clock import ManualClock
from engine.decide.registry import WorkflowRegistry
from engine.decide.workflow import parse_workflow
from engine.errors import WorkflowInvalid
from engine.segments.membership import SegmentRegistry
from engine.store import Store, schema
from tests.engine.segments.segments_support import SegmentRig, identify, segment, track

BROWSING = segment(
    "browsing-x",
    '`Product Viewed` where product_id = "X" at least once in the last 10 minutes'
    " and no `Order Completed` in the last 10 minutes",
)
WAITING = segment(
    "added-no-recent-order",
    "`Product Added` at least once in the last 1 hour"
    " and no `Order Completed` in the last 10 minutes",
)


def workflow(segment_id: str, reentry: str = "always", **trigger: Any) -> dict[str, Any]:
    return {
        "id": f"on-{segment_id}",
        "name": f"On {segment_id}",
        "category": "marketing",
        "reentry": reentry,
        "trigger": {"segment_entered": segment_id, **trigger},
        "steps": [{"id": "mail", "type": "send", "template": "welcome-1"}],
    }


def rig(store: Store, clock: ManualClock, *definitions: dict[str, Any]) -> SegmentRig:
    workflows = WorkflowRegistry(parse_workflow(d, source="test") for d in definitions)
    return SegmentRig(store, clock, SegmentRegistry([BROWSING, WAITING]), workflows)


def enrollments(store: Store, workflow_id: str) -> list[sa.Row[Any]]:
    e = schema.enrollments
    with store.begin() as conn:
        query = sa.select(e).where(e.c.workflow_id == workflow_id).order_by(e.c.entered_at)
        return list(conn.execute(query))


def intents(store: Store) -> list[tuple[str, str]]:
    i = schema.intents
    with store.begin() as conn:
        return [(r.contact_id, r.template_id) for r in conn.execute(sa.select(i))]


def test_entering_a_segment_enrolls_the_contact(any_store: Store, clock: ManualClock) -> None:
    r = rig(any_store, clock, workflow("browsing-x"))
    r.decide(identify(clock, "ann", email="ann@example.com"), identify(clock, "bob", plan="x"))
    out = r.decide(track(clock, "ann", "Product Viewed", product_id="X"))
    assert intents(any_store) == [("ann", "welcome-1")]
    assert out.intent_ids and len(out.intent_ids) == 1
    (enrollment,) = enrollments(any_store, "on-browsing-x")
    assert enrollment.contact_id == "ann"
    assert enrollment.trigger["name"] == "Segment Entered"
    assert enrollment.trigger["properties"] == {"segment_id": "browsing-x"}


def test_entering_by_time_alone_enrolls_the_contact(any_store: Store, clock: ManualClock) -> None:
    r = rig(any_store, clock, workflow("added-no-recent-order"))
    r.decide(identify(clock, "ann", email="ann@example.com"))
    r.decide(track(clock, "ann", "Order Completed"), track(clock, "ann", "Product Added"))
    assert enrollments(any_store, "on-added-no-recent-order") == []
    clock.advance(600)
    fired = r.fire()
    assert [c.kind for c in fired.segment_changes] == ["entered"]
    assert len(fired.intent_ids) == 1
    assert intents(any_store) == [("ann", "welcome-1")]


def test_reentry_once_enrolls_only_the_first_entry(any_store: Store, clock: ManualClock) -> None:
    r = rig(any_store, clock, workflow("browsing-x", reentry="once"))
    for _ in range(2):
        r.decide(track(clock, "ann", "Product Viewed", product_id="X"))
        clock.advance(600)
        r.fire()  # leaves by time
    assert [kind for _, kind, _ in r.history("browsing-x")] == ["entered", "exited"] * 2
    assert len(enrollments(any_store, "on-browsing-x")) == 1


def test_trigger_conditions_filter_entries(any_store: Store, clock: ManualClock) -> None:
    r = rig(
        any_store,
        clock,
        workflow("browsing-x", where=[{"trait": "plan", "op": "eq", "value": "pro"}]),
    )
    r.decide(identify(clock, "ann", plan="pro"), identify(clock, "bob", plan="free"))
    r.decide(
        track(clock, "ann", "Product Viewed", product_id="X"),
        track(clock, "bob", "Product Viewed", product_id="X"),
    )
    assert [e.contact_id for e in enrollments(any_store, "on-browsing-x")] == ["ann"]


@pytest.mark.parametrize(
    ("trigger", "message"),
    [
        ({"segment_entered": "browsing-x", "event": "X"}, r"\[trigger\]: unknown key\(s\) event"),
        ({"segment_entered": "Not An Id"}, "segment_entered must be a segment id"),
    ],
)
def test_bad_segment_triggers_are_refused(trigger: dict[str, Any], message: str) -> None:
    definition = {**workflow("browsing-x"), "trigger": trigger}
    with pytest.raises(WorkflowInvalid, match=message):
        parse_workflow(definition, source="test")
