"""Frequency caps with priorities, through real decide batches and timers on a real store."""

from __future__ import annotations

from typing import Any

import orjson
import sqlalchemy as sa
from decide_support import intents, trace, track

from engine.clock import ManualClock
from engine.decide import TimerService, WorkflowRegistry
from engine.decide.batch import DecideBatch, Delivery
from engine.decide.workflow import parse_workflow
from engine.deliver.ledger import Ledger
from engine.ingest.validate import parse_event
from engine.pacing.policy import Pacing
from engine.store import Store, schema
from engine.telemetry import Telemetry


def send_on(wf_id: str, event: str, category: str, priority: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": wf_id,
        "name": wf_id,
        "category": category,
        "priority": priority,
        "trigger": {"event": event},
        "steps": [{"id": "send", "type": "send", "template": f"{wf_id}-mail"}],
        **extra,
    }


WORKFLOWS = [
    send_on("promotion", "Promotion Seen", "marketing", "low"),
    send_on("newsletter", "Newsletter Due", "marketing", "normal"),
    send_on("abandoned-cart", "Product Added", "marketing", "high"),
    send_on("order-confirmation", "Order Completed", "transactional", "normal"),
    {
        **send_on("reminder", "Reminder Asked", "marketing", "high"),
        "steps": [
            {"id": "wait", "type": "wait", "duration": "1h"},
            {"id": "send", "type": "send", "template": "reminder-mail"},
        ],
    },
]


def registry(**caps: int) -> WorkflowRegistry:
    return WorkflowRegistry(
        (parse_workflow(d, source=f"test:{d['id']}") for d in WORKFLOWS), pacing=Pacing(**caps)
    )


class Decider:
    """Real decide batches on the store, one event per batch, as the stream delivers them."""

    def __init__(self, store: Store, clock: ManualClock, reg: WorkflowRegistry) -> None:
        self.batch = DecideBatch(store=store, registry=reg, clock=clock, parse=parse_event)
        self.clock = clock
        self.seq = 0
        self.capped: dict[str, int] = {}
        self.notified: list[str] = []  # what decide hands the deliver stage

    def event(self, user: str, name: str) -> None:
        self.seq += 1
        data = track(self.clock, user, name, context={"traits": {"email": f"{user}@example.com"}})
        outcome = self.batch.run(
            [Delivery(orjson.dumps(data), "events.track", self.seq, None, self.clock.now())]
        )
        assert outcome.processed == 1
        self.notified += outcome.intent_ids
        for wf, n in outcome.capped.items():
            self.capped[wf] = self.capped.get(wf, 0) + n


def by_workflow(store: Store, user: str = "ann") -> dict[str, tuple[str, str | None]]:
    return {
        row.workflow_id: (row.status, row.reply)
        for row in intents(store, schema.intents.c.contact_id == user)
    }


def enrollment_of(store: Store, workflow: str, user: str = "ann") -> str:
    e = schema.enrollments
    with store.begin() as conn:
        found = conn.execute(
            sa.select(e.c.id).where(e.c.workflow_id == workflow, e.c.contact_id == user)
        )
        return str(found.scalar_one())


def test_a_higher_priority_pre_empts_a_queued_lower_one(store: Store, clock: ManualClock) -> None:
    decide = Decider(store, clock, registry(per_day=1))
    decide.event("ann", "Promotion Seen")
    clock.advance(60)
    decide.event("ann", "Product Added")
    found = by_workflow(store)
    assert found["abandoned-cart"] == ("queued", None)
    assert found["promotion"] == (
        "suppressed",
        "frequency cap: pre-empted by abandoned-cart (priority 80 over 20)",
    )
    lines = trace(store, enrollment_of(store, "promotion"))
    assert lines[-1].startswith("capped: intent ")
    assert lines[-1].endswith("frequency cap: pre-empted by abandoned-cart (priority 80 over 20)")
    assert decide.capped == {"promotion": 1}


def test_a_lower_priority_is_dropped_rather_than_a_higher_one(
    store: Store, clock: ManualClock
) -> None:
    decide = Decider(store, clock, registry(per_day=1))
    decide.event("ann", "Product Added")
    decide.event("ann", "Promotion Seen")
    decide.event("bob", "Promotion Seen")  # another contact has a cap of his own
    found = by_workflow(store)
    assert found["abandoned-cart"] == ("queued", None)
    status, reason = found["promotion"]
    assert status == "suppressed"
    assert reason == (
        "frequency cap: 1 marketing mail a day already planned on 2027-01-15; "
        "none queued with a priority below 20"
    )
    assert by_workflow(store, "bob")["promotion"] == ("queued", None)
    # A dropped intent is recorded, never handed to the deliver stage.
    assert sorted(decide.notified) == sorted(r.id for r in intents(store) if r.status == "queued")
    last = trace(store, enrollment_of(store, "promotion"))[-1]
    assert last.startswith("capped: intent ") and last.endswith("a priority below 20")


def test_equal_priority_keeps_the_first(store: Store, clock: ManualClock) -> None:
    decide = Decider(store, clock, registry(per_day=1))
    decide.event("ann", "Newsletter Due")
    decide.event("ann", "Newsletter Due")
    statuses = [row.status for row in intents(store)]
    assert statuses == ["queued", "suppressed"]


def test_transactional_mail_is_never_capped_nor_counted(store: Store, clock: ManualClock) -> None:
    decide = Decider(store, clock, registry(per_day=1))
    decide.event("ann", "Order Completed")
    decide.event("ann", "Promotion Seen")
    decide.event("ann", "Order Completed")
    rows = intents(store)
    assert [(r.workflow_id, r.status) for r in rows] == [
        ("order-confirmation", "queued"),
        ("promotion", "queued"),
        ("order-confirmation", "queued"),
    ]
    assert [r.cap_day for r in rows] == [None, "2027-01-15", None]


def test_a_mail_already_claimed_is_not_pre_empted(store: Store, clock: ManualClock) -> None:
    decide = Decider(store, clock, registry(per_day=1))
    decide.event("ann", "Promotion Seen")
    # The deliver stage claims the promotion (the real claim statement): it is on its way.
    ledger = Ledger(store, node="n1", owner="n1/0001")
    claimed = ledger.claim(now=clock.now(), lease_until=clock.now() + 60, limit=10)
    assert [i.workflow_id for i in claimed.intents] == ["promotion"]
    decide.event("ann", "Product Added")
    found = by_workflow(store)
    assert found["promotion"] == ("claimed", None)
    assert found["abandoned-cart"][0] == "suppressed"


def test_the_next_local_day_has_room_again_and_the_week_cap_binds(
    store: Store, clock: ManualClock
) -> None:
    decide = Decider(store, clock, registry(per_day=1, per_week=2))
    decide.event("ann", "Promotion Seen")  # Friday 2027-01-15
    clock.advance(86_400)
    decide.event("ann", "Promotion Seen")  # Saturday: a new day
    clock.advance(86_400)
    decide.event("ann", "Promotion Seen")  # Sunday: the week (Mon-Sun) is full
    clock.advance(86_400)
    decide.event("ann", "Promotion Seen")  # Monday: a new week
    rows = intents(store)
    assert [(r.cap_day, r.status) for r in rows] == [
        ("2027-01-15", "queued"),
        ("2027-01-16", "queued"),
        ("2027-01-17", "suppressed"),
        ("2027-01-18", "queued"),
    ]
    assert rows[2].reply.startswith(
        "frequency cap: 2 marketing mails a week already planned in 2027-W02"
    )


def test_a_week_cap_pre_empts_the_lowest_priority_of_the_week(
    store: Store, clock: ManualClock
) -> None:
    decide = Decider(store, clock, registry(per_week=2))
    decide.event("ann", "Newsletter Due")  # normal
    clock.advance(86_400)
    decide.event("ann", "Promotion Seen")  # low
    clock.advance(3_600)
    decide.event("ann", "Product Added")  # high: takes the promotion's place
    found = by_workflow(store)
    assert found["newsletter"] == ("queued", None)
    assert found["promotion"][0] == "suppressed"
    assert found["abandoned-cart"] == ("queued", None)


def test_a_mail_that_ended_unsent_frees_its_place(store: Store, clock: ManualClock) -> None:
    decide = Decider(store, clock, registry(per_day=1))
    decide.event("ann", "Promotion Seen")
    with store.begin() as conn:  # as queues.cancel ends it
        conn.execute(sa.update(schema.intents).values(status="cancelled"))
    decide.event("ann", "Newsletter Due")
    assert by_workflow(store)["newsletter"] == ("queued", None)


async def test_a_timer_send_pre_empts_too(store: Store, clock: ManualClock) -> None:
    reg = registry(per_day=1)
    decide = Decider(store, clock, reg)
    decide.event("ann", "Reminder Asked")  # sends after 1 h, through the timer service
    decide.event("ann", "Promotion Seen")
    clock.advance(3_600)
    timers = TimerService(
        store=store,
        clock=clock,
        telemetry=Telemetry("t"),
        node="t",
        workflows=reg,
        on_intents=lambda ids: None,
    )
    outcome = timers.fire_due()
    assert outcome.fired == 1 and outcome.capped == {"promotion": 1}
    found = by_workflow(store)
    assert found["reminder"] == ("queued", None)
    assert found["promotion"][1] == "frequency cap: pre-empted by reminder (priority 80 over 20)"
