"""One decide batch: a list of stream messages in, one committed transaction out.

In order, inside one transaction:

1. decode each message; bad JSON or an event failing ``parse_event`` becomes a ``dead_letters``
   row with the reason (``field: problem``) and is otherwise skipped;
2. insert the messageIds into ``processed_events``; the ones already there (redeliveries,
   replays, a messageId seen twice) are skipped - this statement is also the first write, so on
   SQLite the transaction holds the write lock before it reads anything;
3. load, with one query each, the batch's contacts, the live enrollments and reentry history of
   the contacts whose events can touch them, and the activity windows conditions count over;
4. apply the events in stream order: profile update, activity, goals, resumed waits, triggers;
5. write contacts (and add the batch's orders to their lifetime value, engine/clv.py), activity
   and the step machine's changes with ``executemany``; commit.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import Connection

from engine.catalog.batch import apply_catalog
from engine.catalog.products import is_catalog_event
from engine.clock import Clock
from engine.clv import apply_orders
from engine.decide import lite
from engine.decide.changes import LIVE_STATES, Changes, Enrollment
from engine.decide.consent import consent_allows, load_consent, observe_consent, write_consent
from engine.decide.machine import Moment, StepMachine, Subject
from engine.decide.profiles import (
    Contact,
    RecentActivity,
    activity_row,
    load_activity,
    load_contacts,
    write_contacts,
)
from engine.decide.registry import WorkflowIndex, WorkflowRegistry
from engine.decide.sql import DecideSql
from engine.decide.workflow import Workflow
from engine.errors import EventInvalid
from engine.events import Event
from engine.experiments.conversions import Converted, record_conversions
from engine.experiments.exposures import winners_for
from engine.store import Store

if TYPE_CHECKING:  # engine.segments uses engine.decide's conditions: import it late
    from engine.segments.membership import MembershipChange, SegmentRegistry

log = logging.getLogger(__name__)

ParseEvent = Callable[..., Event]  # engine.ingest.validate.parse_event


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message of the EVENTS stream, as the decide transaction needs it."""

    data: bytes
    subject: str
    stream_seq: int
    msg_id: str | None  # the Nats-Msg-Id header
    published_at: float  # the JetStream timestamp, epoch seconds


@dataclass
class BatchOutcome:
    """What a committed batch did, for acks, telemetry and the callbacks."""

    intent_ids: list[str] = field(default_factory=list)
    intents_per_workflow: Counter[str] = field(default_factory=Counter)
    processed: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    reentry_skipped: Counter[str] = field(default_factory=Counter)
    capped: Counter[str] = field(default_factory=Counter)  # suppressed by the frequency cap
    consent_skipped: Counter[str] = field(default_factory=Counter)  # requires_consent not met
    segment_changes: list[MembershipChange] = field(default_factory=list)
    fanouts: list[str] = field(default_factory=list)  # catalog alert jobs this batch started
    received_at: list[float] = field(default_factory=list)  # of each processed event
    next_timer_at: float | None = None
    commit_seconds: float = 0.0
    committed_at: float = 0.0
    conversions: list[Converted] = field(default_factory=list)  # goals attributed to mails

    def merge(self, other: BatchOutcome) -> None:
        """Add another outcome (of a part of the same fetched batch) to this one."""
        self.intent_ids += other.intent_ids
        self.intents_per_workflow.update(other.intents_per_workflow)
        self.processed += other.processed
        self.duplicates += other.duplicates
        self.dead_letters += other.dead_letters
        self.reentry_skipped.update(other.reentry_skipped)
        self.capped.update(other.capped)
        self.consent_skipped.update(other.consent_skipped)
        self.segment_changes += other.segment_changes
        self.fanouts += other.fanouts
        self.received_at += other.received_at
        timers = [t for t in (self.next_timer_at, other.next_timer_at) if t is not None]
        self.next_timer_at = min(timers, default=None)
        self.commit_seconds += other.commit_seconds
        self.conversions += other.conversions
        self.committed_at = max(self.committed_at, other.committed_at)


def dead_letter_id(delivery: Delivery) -> str:
    """Stable across redeliveries and replays of the same message, so it is recorded once."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(delivery.stream_seq).encode())
    digest.update(b"\x1f")
    digest.update(delivery.data)
    return digest.hexdigest()


def decode_delivery(delivery: Delivery, parse: ParseEvent) -> Event | str:
    """The event a stream message carries, or the reason it is a dead letter (the dry run
    reads recorded messages the same way)."""
    try:
        data: Any = orjson.loads(delivery.data)
    except orjson.JSONDecodeError as exc:
        return f"payload: not valid JSON ({exc})"
    if isinstance(data, dict) and not data.get("messageId"):
        # Published straight to NATS without an id: the header, else the stream position,
        # so a redelivery or replay of this message is still recognised.
        data["messageId"] = delivery.msg_id or f"stream-{delivery.stream_seq}"
    try:
        return parse(data, received_at=delivery.published_at)
    except EventInvalid as exc:
        return f"{exc.field}: {exc.problem}"


class DecideBatch:
    """Runs batches of stream messages against the store (blocking; call from a worker thread)."""

    def __init__(
        self,
        *,
        store: Store,
        registry: WorkflowRegistry,
        clock: Clock,
        parse: ParseEvent,
        segments: SegmentRegistry | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.segments = segments
        self.clock = clock
        self.parse = parse
        self.sql = DecideSql.build(store)

    def decode(self, delivery: Delivery) -> Event | str:
        """The event, or the reason it is a dead letter."""
        return decode_delivery(delivery, self.parse)

    def run(self, deliveries: Sequence[Delivery]) -> BatchOutcome:
        """Decide one batch in one transaction and commit it."""
        outcome = BatchOutcome()
        events: list[tuple[Event, Delivery]] = []
        dead: list[tuple[Delivery, str]] = []
        seen: set[str] = set()
        for delivery in deliveries:
            decoded = self.decode(delivery)
            if isinstance(decoded, str):
                dead.append((delivery, decoded))
            elif decoded.message_id in seen:
                outcome.duplicates += 1
            else:
                seen.add(decoded.message_id)
                events.append((decoded, delivery))
        now = self.clock.now()
        with self.store.engine.connect() as conn, conn.begin() as tx:
            fresh = self._claim(conn, events, now)
            outcome.duplicates += len(events) - len(fresh)
            outcome.dead_letters = self._dead_letters(conn, dead, now)
            new = [event for event, _ in events if event.message_id in fresh]
            if new:
                self._decide(conn, new, now, outcome)
            started = time.perf_counter()
            tx.commit()
            outcome.commit_seconds = time.perf_counter() - started
        outcome.committed_at = self.clock.now()
        return outcome

    def dead_letter(self, delivery: Delivery, reason: str) -> bool:
        """Record one message as a dead letter in its own transaction (poison isolation)."""
        with self.store.begin() as conn:
            return self._dead_letters(conn, [(delivery, reason)], self.clock.now()) > 0

    def _claim(
        self, conn: Connection, events: list[tuple[Event, Delivery]], now: float
    ) -> set[str]:
        if not events:
            return set()
        if self.sql.lite and len(events) <= 500:
            return lite.claim_events(conn, [(e.message_id, d.stream_seq, now) for e, d in events])
        rows = [
            {"message_id": e.message_id, "stream_seq": d.stream_seq, "processed_at": now}
            for e, d in events
        ]
        return {row.message_id for row in conn.execute(self.sql.claim_events, rows)}

    def _dead_letters(self, conn: Connection, dead: list[tuple[Delivery, str]], now: float) -> int:
        if not dead:
            return 0
        rows = [
            {
                "id": dead_letter_id(d),
                "subject": d.subject[:255],
                "stream_seq": d.stream_seq,
                "payload": d.data,
                "reason": reason,
                "status": "open",
                "created_at": now,
            }
            for d, reason in dead
        ]
        return len(conn.execute(self.sql.dead_letters, rows).all())

    def _decide(
        self, conn: Connection, events: list[Event], now: float, outcome: BatchOutcome
    ) -> None:
        # The catalog source's events describe products, not people: no contact, activity,
        # segment or workflow work for them.
        catalog = apply_catalog(conn, self.registry.index, events, now)
        outcome.fanouts = catalog.fanouts
        people = [e for e in events if not is_catalog_event(e.activity_name)]
        if people:
            self._decide_people(conn, people, now, outcome)
        outcome.received_at += [e.received_at for e in events if is_catalog_event(e.activity_name)]
        outcome.processed = len(events)

    def _decide_people(
        self, conn: Connection, events: list[Event], now: float, outcome: BatchOutcome
    ) -> None:
        index, sql = self.registry.index, self.sql
        contacts = load_contacts(conn, sql, (e.contact_key for e in events))
        load_consent(conn, contacts, events, index)
        involved = {e.contact_key for e in events if index.needs_enrollments(e.activity_name)}
        live, history = self._load_enrollments(conn, involved, _limited(index, events))
        counted = [e for e in events if e.activity_name in index.counting_events]
        activity = load_activity(
            conn,
            sql,
            sorted({e.contact_key for e in counted}),
            index.activity_windows,
            min((e.timestamp for e in counted), default=now),
        )
        changes = Changes(pacing=self.registry.pacing)
        winners = winners_for(conn, index.versions.values())
        machine = StepMachine(changes, winners, template_routes=index.template_routes)
        decider = EventDecider(index, machine, live, history, outcome)
        for event in events:
            contact = contacts[event.contact_key]
            recent = activity.setdefault(contact.id, RecentActivity())
            decider.apply(event, contact, recent, now)
            outcome.received_at.append(event.received_at)
        write_contacts(conn, sql, contacts.values(), now)
        # Lifetime value: nothing runs for a batch without orders.
        apply_orders(conn, events, raw_sqlite=sql.lite)
        consented = write_consent(conn, contacts.values(), now)
        if sql.lite:
            lite.insert_activity(conn, [activity_row(e) for e in events])
        else:
            conn.execute(sql.insert_activity, [activity_row(e) for e in events])
        recheck = None
        if self.segments is not None and self.segments.index.segments:
            recheck = self._update_segments(conn, events, contacts, now, outcome, consented)
            if outcome.segment_changes and index.segment_triggers:
                self._enroll_entries(conn, decider, involved, contacts, activity, now)
        soonest = [t for t in (changes.next_timer_at, recheck) if t is not None]
        outcome.next_timer_at = min(soonest, default=None)
        ids, per_workflow = changes.write(conn, sql)
        outcome.intent_ids, outcome.intents_per_workflow = ids, per_workflow
        outcome.capped.update(c.workflow_id for c in changes.capped)
        if index.goal_events and any(e.activity_name in index.goal_events for e in events):
            traits = {cid: c.traits for cid, c in contacts.items()}
            outcome.conversions = record_conversions(
                conn, index.live, events, traits, _Activities(activity)
            )
        outcome.processed = len(events)

    def _update_segments(
        self,
        conn: Connection,
        events: list[Event],
        contacts: dict[str, Contact],
        now: float,
        outcome: BatchOutcome,
        consented: Collection[str] = (),
    ) -> float | None:
        """Re-evaluate the segments these events may affect, after the batch's profile and
        activity writes, in the same transaction. A contact new in this batch is evaluated
        against every segment (a condition such as "trait plan is missing" holds at once),
        one whose consent changed against the segments reading consent.
        Returns the earliest re-check it scheduled."""
        from engine.segments.membership import refresh

        assert self.segments is not None
        index = self.segments.index
        targets: dict[str, set[str]] = {}
        for event in events:
            contact = contacts[event.contact_key]
            wanted = targets.setdefault(contact.id, set())
            if not contact.stored:
                wanted.update(index.segments)
            else:
                wanted |= index.affected_by(event)
            if contact.id in consented:
                wanted |= index.by_consent
        outcome.segment_changes, recheck = refresh(conn, index, targets, now)
        return recheck

    def _enroll_entries(
        self,
        conn: Connection,
        decider: EventDecider,
        involved: set[str],
        contacts: dict[str, Contact],
        activity: dict[str, RecentActivity],
        now: float,
    ) -> None:
        """Start the workflows triggered by this batch's segment entries."""
        from engine.decide.segment_triggers import (
            enroll_entries,
            limited_workflows,
            triggered_entries,
        )

        index = self.registry.index
        entries = triggered_entries(index, decider.outcome.segment_changes)
        if not entries:
            return
        limited = limited_workflows(index, entries)
        if limited:
            # Enrollments of contacts not involved so far were never loaded; history of these
            # workflows may be missing for any of them.
            wanted = {c.contact_id for c in entries}
            live, history = load_enrollments(conn, self.sql, wanted, limited)
            for cid, found in live.items():
                if cid not in involved:
                    decider.live.setdefault(cid, []).extend(found)
            for key, at in history.items():
                decider.history[key] = max(at, decider.history.get(key, at))
        started, skipped = enroll_entries(
            index, decider.machine, entries, contacts, activity, decider.may_enter, now
        )
        for enrollment in started:
            decider.live.setdefault(enrollment.contact_id, []).append(enrollment)
            decider.history[(enrollment.workflow_id, enrollment.contact_id)] = now
        for workflow_id in skipped:
            decider.outcome.reentry_skipped[workflow_id] += 1

    def _load_enrollments(
        self, conn: Connection, contact_ids: set[str], limited: set[str]
    ) -> tuple[dict[str, list[Enrollment]], dict[tuple[str, str], float]]:
        return load_enrollments(conn, self.sql, contact_ids, limited)


def load_enrollments(
    conn: Connection, sql: DecideSql, contact_ids: set[str], limited: set[str]
) -> tuple[dict[str, list[Enrollment]], dict[tuple[str, str], float]]:
    """Live enrollments of these contacts, and when each last entered each
    reentry-limited workflow (one query)."""
    live: dict[str, list[Enrollment]] = {}
    history: dict[tuple[str, str], float] = {}
    if not contact_ids:
        return live, history
    params = {"ids": sorted(contact_ids), "workflows": sorted(limited)}
    rows: Iterable[Any]
    if sql.lite and len(contact_ids) + len(limited) <= 500:
        rows = [
            Enrollment.from_values(v)
            for v in lite.enrollments(conn, params["ids"], params["workflows"], LIVE_STATES)
        ]
    else:
        rows = conn.execute(sql.enrollments, params)
    for row in rows:
        if row.state in LIVE_STATES:
            enrollment = row if isinstance(row, Enrollment) else Enrollment.from_row(row)
            live.setdefault(row.contact_id, []).append(enrollment)
        if row.workflow_id in limited:
            key = (row.workflow_id, row.contact_id)
            history[key] = max(row.entered_at, history.get(key, row.entered_at))
    return live, history


def may_enter(
    wf: Workflow,
    contact_id: str,
    now: float,
    live: dict[str, list[Enrollment]],
    history: dict[tuple[str, str], float],
) -> bool:
    """The workflow's ``reentry`` rule for this contact, given its live enrollments and the
    last time it entered each reentry-limited workflow."""
    mode = wf.reentry.mode
    if mode == "always":
        return True
    last = history.get((wf.id, contact_id))
    if mode == "once":
        return last is None
    if any(e.live and e.workflow_id == wf.id for e in live.get(contact_id, [])):
        return False
    return last is None or now - last >= wf.reentry.after_s


class EventDecider:
    """Applies one event after another to in-memory state (goals, waits, triggers); the decide
    batch and the dry run (engine.dry_run) both drive it."""

    def __init__(
        self,
        index: WorkflowIndex,
        machine: StepMachine,
        live: dict[str, list[Enrollment]],
        history: dict[tuple[str, str], float],
        outcome: BatchOutcome,
    ) -> None:
        self.index = index
        self.machine = machine
        self.live = live
        self.history = history
        self.outcome = outcome

    def apply(self, event: Event, contact: Contact, recent: RecentActivity, now: float) -> None:
        previous_seen = contact.observe(event)
        observe_consent(event, contact)
        recent.add(event.activity_name, event.timestamp, event.properties)
        who = Subject(contact, recent)
        at = Moment.of_event(event, now)
        mine = self.live.setdefault(contact.id, [])
        for enrollment in mine:
            wf = self.index.get(enrollment.workflow_id, enrollment.workflow_version)
            if wf is None or not enrollment.live:
                continue
            if self.machine.goal_reached(wf, event, who, previous_seen):
                reason = f"goal reached: {event.activity_name} (messageId {event.message_id})"
                self.machine.exit(enrollment, reason, now)
            elif self.machine.awaits(wf, enrollment, event, who):
                self.machine.resume(wf, enrollment, event, who, at)
        for wf in self.index.triggered_by(event.activity_name):
            if not self.machine.trigger_holds(wf, event, who, previous_seen):
                continue
            if not consent_allows(wf, contact):
                self.outcome.consent_skipped[wf.id] += 1
                continue
            if not self.may_enter(wf, contact.id, now):
                self.outcome.reentry_skipped[wf.id] += 1
                continue
            mine.append(self.machine.enter(wf, event, who, previous_seen, at))
            self.history[(wf.id, contact.id)] = now

    def may_enter(self, wf: Workflow, contact_id: str, now: float) -> bool:
        return may_enter(wf, contact_id, now, self.live, self.history)


def _limited(index: WorkflowIndex, events: Iterable[Event]) -> set[str]:
    """Workflows triggered in this batch whose reentry rule needs the contact's history."""
    return {
        wf.id
        for e in events
        for wf in index.triggered_by(e.activity_name)
        if wf.reentry.mode != "always"
    }


class _Activities(dict[str, RecentActivity]):
    """Recent activity per contact; a contact without counted events has none."""

    def __missing__(self, key: str) -> RecentActivity:
        return RecentActivity()
