"""A draft workflow over recorded events: the decide stage's own code on a simulated clock.

Each recorded event is applied by ``EventDecider`` (the class a decide batch uses: goals,
resumed waits, trigger, consent and reentry rules) with a ``StepMachine`` whose ``Changes`` are
collected here instead of written. The clock is the recording's: an event is decided at its
``receivedAt``, and before it every simulated timer due by then fires through
``StepMachine.fire`` - so a ``wait_until`` whose event was recorded before its timeout takes
``on_event``, otherwise ``on_timeout``, exactly as the timer service and decide would have
ordered them. Timers still pending when the recording ends are reported as waiting.

Contacts start as the store has them, except those first seen inside the window, who start
blank and are built by the replayed events as decide built them; counted activity starts with
the stored rows from before the first replayed event. Then the sends the machine queued go
through ``preview_caps`` (the frequency caps, counting what the store already holds) and the
deliver stage's ``check_at_send_time`` (suppression list, unsubscribes, consent, expiry)
against the store as it is now. Nothing is written.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from engine.catalog.products import is_catalog_event
from engine.decide.batch import BatchOutcome, EventDecider
from engine.decide.changes import Changes, Enrollment
from engine.decide.machine import Moment, StepMachine, Subject
from engine.decide.profiles import Contact, RecentActivity, load_activity, load_contacts
from engine.decide.registry import WorkflowIndex
from engine.decide.sql import DecideSql
from engine.decide.workflow import Workflow
from engine.deliver.compose import check_at_send_time
from engine.deliver.model import ClaimBatch, ClaimedIntent, ContactRow
from engine.dry_run.report import SAMPLE, Tally
from engine.errors import DryRunError
from engine.events import Event
from engine.pacing.caps import preview_caps
from engine.pacing.policy import Pacing
from engine.store import Store, schema

_CHUNK = 500


def check_replayable(workflow: Workflow) -> None:
    """Refuse triggers the recorded events alone cannot replay, saying why."""
    if workflow.trigger.segment is not None:
        raise DryRunError(
            f"{workflow.id} starts on entering segment {workflow.trigger.segment!r}: a dry run "
            "replays events against one draft and cannot follow segment entries yet - dry-run "
            "the segment itself to see who would enter"
        )
    if workflow.trigger.catalog is not None:
        raise DryRunError(
            f"{workflow.id} starts on a catalog change ({workflow.trigger.catalog.kind}), "
            "which fans out over stored activity rather than events: a dry run cannot replay it"
        )


class WorkflowSimulation:
    """One draft workflow run over recorded events (feed chunks in stream order, then
    ``finish``)."""

    def __init__(
        self,
        workflow: Workflow,
        *,
        store: Store,
        pacing: Pacing,
        template_routes: Mapping[str, str] | None = None,
        until: float,
        sample: int = SAMPLE,
    ) -> None:
        check_replayable(workflow)
        self.workflow = dataclasses.replace(workflow, enabled=True)
        self.store = store
        self.pacing = pacing
        self.sql = DecideSql.build(store)
        self.until = until
        self.index = WorkflowIndex.build([self.workflow], template_routes)
        with store.begin() as conn:
            from engine.experiments.exposures import winners_for

            winners = winners_for(conn, [self.workflow])
        self.machine = StepMachine(
            Changes(pacing=pacing), winners, template_routes=self.index.template_routes
        )
        self.outcome = BatchOutcome()
        self.live: dict[str, list[Enrollment]] = {}
        self.history: dict[tuple[str, str], float] = {}
        self.decider = EventDecider(self.index, self.machine, self.live, self.history, self.outcome)
        self.contacts: dict[str, Contact] = {}
        self.activity: dict[str, RecentActivity] = {}
        self.enrollments: dict[str, Enrollment] = {}
        self.timers: list[tuple[float, int, dict[str, Any]]] = []
        self._timer_seq = 0
        self._current_timer: dict[str, str] = {}  # enrollment -> its one live timer
        self.intents: list[dict[str, Any]] = []
        self.notes: Counter[str] = Counter()  # trace kinds (no_email, quiet_hours, ...)
        self.sample_size = sample
        self.cutoff: float | None = None  # the first replayed event's time
        self.last_at: float | None = None
        self.scanned = 0
        self.unreadable = 0
        self.triggered = 0

    # -- feeding ------------------------------------------------------------------------------

    def feed(self, events: Sequence[Event | str]) -> None:
        """Apply one chunk of decoded recorded events (a ``str`` is an unreadable message)."""
        # Catalog events describe products, not people: decide skips them here too.
        readable = [e for e in events if isinstance(e, Event)]
        good = [e for e in readable if not is_catalog_event(e.activity_name)]
        self.scanned += len(events)
        self.unreadable += len(events) - len(readable)
        if not good:
            return
        if self.cutoff is None:
            self.cutoff = good[0].received_at
        self._load([e.contact_key for e in good])
        for event in good:
            now = event.received_at
            self._fire_until(now)
            self.last_at = now if self.last_at is None else max(self.last_at, now)
            if event.activity_name in self.workflow.trigger.events:
                self.triggered += 1
            contact = self.contacts[event.contact_key]
            recent = self.activity.setdefault(contact.id, RecentActivity())
            changes = self._fresh()
            self.decider.apply(event, contact, recent, now)
            self._take(changes)

    def _load(self, keys: list[str]) -> None:
        """Contacts (and activity, and reentry history) first met in this chunk."""
        wanted = sorted(set(keys) - set(self.contacts))
        if not wanted:
            return
        assert self.cutoff is not None
        cutoff = self.cutoff
        with self.store.begin() as conn:
            found = load_contacts(conn, self.sql, wanted)
            consent = _consent(conn, [c for c in found.values() if c.stored])
            windows = self.index.activity_windows
            recent = load_activity(conn, self.sql, wanted, windows, cutoff) if windows else {}
            if self.workflow.reentry.mode != "always":
                self._history(conn, wanted, cutoff)
            seen = _last_seen_before(conn, [c.id for c in found.values() if c.stored], cutoff)
        for cid, contact in found.items():
            if contact.first_seen_at is not None and contact.first_seen_at >= cutoff:
                contact = Contact(cid)  # born in the window: the replay builds it
            elif contact.stored:
                # "Inactive for N days" conditions read the last-seen from before each event:
                # the store's is from after the window, the activity table has the one before.
                contact.last_seen_at = seen.get(cid, contact.first_seen_at)
            contact.consent = dict(consent.get(cid, {})) if contact.stored else {}
            self.contacts[cid] = contact
            mine = recent.get(cid, RecentActivity())
            # Rows from the window itself are replayed; only the ones before it are history.
            mine.entries = [e for e in mine.entries if e[1] < cutoff]
            self.activity[cid] = mine

    def _history(self, conn: Connection, ids: list[str], cutoff: float) -> None:
        e = schema.enrollments.c
        for start in range(0, len(ids), _CHUNK):
            rows = conn.execute(
                sa.select(e.contact_id, sa.func.max(e.entered_at))
                .where(
                    e.workflow_id == self.workflow.id,
                    e.contact_id.in_(ids[start : start + _CHUNK]),
                    e.entered_at < cutoff,
                )
                .group_by(e.contact_id)
            )
            for cid, entered in rows:
                self.history[(self.workflow.id, cid)] = float(entered)

    def _fresh(self) -> Changes:
        """Fresh ``Changes`` for the next decision (taken back with ``_take``)."""
        changes = Changes(pacing=self.pacing)
        self.machine.changes = changes
        return changes

    def _take(self, changes: Changes) -> None:
        """Keep what one decision produced instead of writing it."""
        self.enrollments.update(changes.enrollments)
        for timer in changes.timers:
            self._timer_seq += 1
            heapq.heappush(self.timers, (float(timer["fire_at"]), self._timer_seq, timer))
            self._current_timer[timer["enrollment_id"]] = timer["id"]
        self.intents.extend(changes.intents)
        self.notes.update(line["kind"] for line in changes.log)

    def _fire_until(self, now: float) -> None:
        """Fire every simulated timer due by ``now``, in time order (they may add more)."""
        while self.timers and self.timers[0][0] <= now:
            fire_at, _, timer = heapq.heappop(self.timers)
            enrollment = self.enrollments.get(timer["enrollment_id"])
            if enrollment is None or self._current_timer.get(enrollment.id) != timer["id"]:
                continue  # cancelled: the awaited event or the goal came first
            del self._current_timer[enrollment.id]
            wf = self.index.get(enrollment.workflow_id, enrollment.workflow_version)
            contact = self.contacts[enrollment.contact_id]
            who = Subject(contact, self.activity.setdefault(contact.id, RecentActivity()))
            at = Moment(now=fire_at, at=fire_at, due_at=fire_at)
            assert wf is not None
            changes = self._fresh()
            self.machine.fire(wf, enrollment, timer["step_id"], who, at)
            self._take(changes)

    # -- the answer ---------------------------------------------------------------------------

    def finish(self, *, complete: bool = True) -> dict[str, Any]:
        """Fire what was due by ``until``, apply caps and send-time checks; the report."""
        end = max(self.until, self.last_at or self.until)
        self._fire_until(end)
        with self.store.begin() as conn:
            capped = preview_caps(conn, self.pacing, self.intents)
            checks = _send_time_checks(conn, [i for i in self.intents if i["status"] == "queued"])
        sends = Tally(self.sample_size)
        suppressed: Counter[str] = Counter()
        expired = 0
        for intent in self.intents:
            if intent["status"] != "queued":
                continue
            verdict = checks.get(intent["id"])
            if verdict is not None and verdict[0] == "suppressed":
                suppressed[verdict[1]] += 1
                continue
            if verdict is not None and verdict[0] == "expired":
                expired += 1
                continue
            at = float(intent["next_attempt_at"])
            sends.add(
                at,
                intent["contact_id"],
                intent["to_addr"],
                {
                    "contact_id": intent["contact_id"],
                    "email": intent["to_addr"],
                    "template": intent["template_id"],
                    "step": intent["step_id"],
                    "at": at,
                    "decided_at": intent["decided_at"],
                    "deferred": at > float(intent["decided_at"]),
                },
            )
        states = Counter(e.state for e in self.enrollments.values())
        exits = Counter(
            "goal" if (e.exit_reason or "").startswith("goal reached") else "other"
            for e in self.enrollments.values()
            if e.state == "exited"
        )
        return {
            "kind": "workflow",
            "workflow": self.workflow.id,
            "name": self.workflow.name,
            "complete": complete,
            "from": self.cutoff,
            "until": end,
            "events": {
                "scanned": self.scanned,
                "unreadable": self.unreadable,
                "triggering": self.triggered,
            },
            "enrollments": {
                "entered": len(self.enrollments),
                "completed": states["completed"],
                "converted": exits["goal"],
                "exited": exits["other"],
                "waiting": states["waiting"] + states["active"],
            },
            "emails": {
                "would_send": sends.count,
                "recipients": len(sends.recipients),
                "decided": len(self.intents),
                "capped": sum(1 for c in capped if not c.preempted),
                "preempting": sum(1 for c in capped if c.preempted),
                "suppressed": sum(suppressed.values()),
                "expired": expired,
                "deferred_quiet_hours": self.notes["quiet_hours"],
                "no_email": self.notes["no_email"],
            },
            "skipped": {
                "no_consent": sum(self.outcome.consent_skipped.values()),
                "reentry": sum(self.outcome.reentry_skipped.values()),
            },
            "suppressed_reasons": [{"reason": r, "count": n} for r, n in suppressed.most_common()],
            "per_hour": sends.per_hour(),
            "per_domain": sends.per_domain(),
            "caps": _caps_table(self.intents, capped),
            "sample": sends.sample,
        }


def _last_seen_before(conn: Connection, ids: list[str], cutoff: float) -> dict[str, float]:
    a = schema.activity.c
    out: dict[str, float] = {}
    for start in range(0, len(ids), _CHUNK):
        rows = conn.execute(
            sa.select(a.contact_id, sa.func.max(a.ts))
            .where(a.contact_id.in_(ids[start : start + _CHUNK]), a.ts < cutoff)
            .group_by(a.contact_id)
        )
        out.update({cid: float(ts) for cid, ts in rows})
    return out


def _consent(conn: Connection, contacts: list[Contact]) -> dict[str, dict[str, Any]]:
    c = schema.contacts.c
    out: dict[str, dict[str, Any]] = {}
    ids = [x.id for x in contacts]
    for start in range(0, len(ids), _CHUNK):
        query = sa.select(c.id, c.consent).where(c.id.in_(ids[start : start + _CHUNK]))
        for row in conn.execute(query):
            out[row.id] = dict(row.consent) if isinstance(row.consent, dict) else {}
    return out


def _send_time_checks(
    conn: Connection, intents: list[dict[str, Any]]
) -> dict[str, tuple[str, str]]:
    """The deliver stage's send-time verdict on each intent, at its planned time, against the
    store's contacts and suppression list as they are now: ``{id: (status, reason)}``."""
    batch = ClaimBatch([])
    c, s = schema.contacts.c, schema.suppressions.c
    ids = sorted({i["contact_id"] for i in intents})
    addresses = sorted({str(i["to_addr"]).lower() for i in intents})
    for start in range(0, len(ids), _CHUNK):
        query = sa.select(c.id, c.email, c.traits, c.consent, c.unsubscribed_at).where(
            c.id.in_(ids[start : start + _CHUNK])
        )
        for row in conn.execute(query):
            batch.contacts[row.id] = ContactRow(
                id=row.id,
                email=row.email,
                traits=row.traits if isinstance(row.traits, dict) else {},
                consent=row.consent if isinstance(row.consent, dict) else {},
                unsubscribed_at=row.unsubscribed_at,
            )
    for start in range(0, len(addresses), _CHUNK):
        query = sa.select(s.address, s.scope).where(
            s.address.in_(addresses[start : start + _CHUNK])
        )
        for entry in conn.execute(query):
            if batch.suppressions.get(entry.address) != "all":
                batch.suppressions[entry.address] = entry.scope
    out: dict[str, tuple[str, str]] = {}
    for intent in intents:
        claimed = ClaimedIntent(
            id=intent["id"],
            workflow_id=intent["workflow_id"],
            step_id=intent["step_id"],
            contact_id=intent["contact_id"],
            event_id=intent["event_id"],
            template_id=intent["template_id"],
            route=intent["route"],
            category=intent["category"],
            to_addr=intent["to_addr"],
            context=intent["context"],
            attempts=0,
            expires_at=intent["expires_at"],
            received_at=intent["received_at"],
        )
        verdict = check_at_send_time(claimed, batch, float(intent["next_attempt_at"]))
        if verdict is not None and verdict.counted:
            out[intent["id"]] = (verdict.status, verdict.reply or verdict.status)
    return out


def _caps_table(intents: list[dict[str, Any]], capped: Sequence[Any]) -> list[dict[str, Any]]:
    """Where the caps bind: per local day (or ISO week), how many sends they stopped."""
    by_id = {i["id"]: i for i in intents}
    rows: dict[str, dict[str, Any]] = {}
    for cap in capped:
        if cap.preempted:
            continue
        intent = by_id.get(cap.intent_id)
        if intent is None:
            continue
        period = intent["cap_day"] if "a day" in cap.reason else intent["cap_week"]
        row = rows.setdefault(
            period,
            {"period": period, "limit": cap.reason.split(": ")[1].split(" already")[0],
             "capped": 0, "contacts": set(), "example": None},
        )  # fmt: skip
        row["capped"] += 1
        row["contacts"].add(intent["contact_id"])
        if row["example"] is None:
            row["example"] = {"email": intent["to_addr"], "step": intent["step_id"]}
    out = []
    for period in sorted(rows):
        row = rows[period]
        out.append({**row, "contacts": len(row["contacts"])})
    return out
