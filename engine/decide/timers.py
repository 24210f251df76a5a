"""Durable timers: ``wait`` delays and ``wait_until`` timeouts, stored as rows.

The service sleeps until the earliest pending timer (``clock.sleep_until``; ``poke`` wakes it
early when a sooner timer is added, and it re-reads the table at least every ``poll_s`` so
timers added by other nodes are seen). Due timers are claimed and their enrollments continued in
one transaction per batch, then ``on_intents`` gets the new intent ids. Timers survive restarts
because they are rows; after a restart, late ones fire at once.

Claiming is safe across nodes and against the decide worker:

- PostgreSQL: the due timers and their enrollments are locked ``FOR UPDATE SKIP LOCKED``, so two
  timer services never take the same timer, and an enrollment the decide worker holds (it may
  be resuming that very wait with the awaited event) is skipped this round rather than waited
  for - no deadlock, and whichever commits first wins;
- both: the claim is ``UPDATE ... SET state = 'fired' WHERE state = 'pending'``; on SQLite that
  statement takes the write lock, and everything read afterwards is current.

``claimed_by``/``lease_until`` record which node fired a timer; because claim and continuation
commit together, a crash in between leaves the timer pending and it simply fires again.

Timer states: ``pending`` -> ``fired`` (continued), ``cancelled`` (the awaited event or the goal
came first), or ``failed`` (continuing it raised even on its own: logged, and never blocks the
timers behind it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import Connection

from engine.clock import Clock
from engine.decide.changes import Changes, Enrollment
from engine.decide.machine import Moment, StepMachine, Subject
from engine.decide.profiles import RecentActivity, load_activity, load_contacts
from engine.decide.registry import WorkflowRegistry
from engine.decide.sql import TRANSIENT_DB_ERRORS, DecideSql
from engine.decide.workflow import Workflow
from engine.experiments.exposures import winners_for
from engine.store import Store
from engine.telemetry import Telemetry

if TYPE_CHECKING:
    from engine.segments.membership import MembershipChange, SegmentRegistry

log = logging.getLogger(__name__)

T = TypeVar("T")

LEASE_S = 60.0


@dataclass
class FireOutcome:
    """What one claim-and-continue transaction did."""

    fired: int = 0
    stale: int = 0
    intent_ids: list[str] = field(default_factory=list)
    intents_per_workflow: dict[str, int] = field(default_factory=dict)
    capped: dict[str, int] = field(default_factory=dict)  # suppressed by the frequency cap
    next_fire_at: float | None = None
    rechecked: int = 0  # segment re-checks that were due
    segment_changes: list[MembershipChange] = field(default_factory=list)


class TimerService:
    """Fires due timers and continues their enrollments."""

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        telemetry: Telemetry,
        node: str,
        workflows: WorkflowRegistry,
        on_intents: Callable[[Sequence[str]], None],
        batch: int = 256,
        poll_s: float = 1.0,
        segments: SegmentRegistry | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.telemetry = telemetry
        self.node = node
        self.workflows = workflows
        self.on_intents = on_intents
        self.batch = batch
        self.poll_s = poll_s
        self.segments = segments
        self.sql = DecideSql.build(store)
        self._poked = asyncio.Event()
        self._deadline = 0.0
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self._stopping = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"timers-{self.node}")
        self._task = asyncio.create_task(self._run(), name=f"timers-{self.node}")

    async def stop(self) -> None:
        """Finish the batch in hand, then stop."""
        self._stopping = True
        self._poked.set()
        try:
            if self._task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        finally:
            self._task = None
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None

    def poke(self, fire_at: float | None = None) -> None:
        """A timer was added: wake up if it is due before the current sleep ends."""
        # Not asleep (deadline 0): the round in progress may have read the table before this
        # timer was added, so look again straight after it.
        if fire_at is None or self._deadline == 0.0 or fire_at < self._deadline:
            self._poked.set()

    async def _blocking(self, loop: asyncio.AbstractEventLoop, fn: Callable[[], T]) -> T:
        """Store work: inline on SQLite (see ``Store.inline``), else on the timer thread."""
        if self.store.inline:
            return fn()
        return await loop.run_in_executor(self._executor, fn)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        delay = 0.1
        while not self._stopping:
            self._poked.clear()
            try:
                try:
                    outcome = await self._blocking(loop, self.fire_due)
                except TRANSIENT_DB_ERRORS:
                    raise
                except Exception:
                    log.exception("timers: a batch failed; firing its timers one by one")
                    outcome = await self._blocking(loop, self.fire_isolated)
            except Exception as exc:  # the database is down, or worse: back off, never die
                self.telemetry.count("db_errors_total", stage="timers")
                log.warning("timers: firing failed (%s); retrying in %.1f s", exc, delay)
                await self._sleep(self.clock.now() + delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.1
            self._record(outcome)
            if outcome.intent_ids:
                try:
                    self.on_intents(outcome.intent_ids)
                except Exception:  # deliver also polls the store; never stop firing timers
                    log.exception("timers: the on_intents callback failed")
            if outcome.fired + outcome.stale >= self.batch or outcome.rechecked >= self.batch:
                continue  # more may be due
            now = self.clock.now()
            wake = now + self.poll_s
            if outcome.next_fire_at is not None:
                wake = min(wake, outcome.next_fire_at)
            await self._sleep(wake)

    async def _sleep(self, deadline: float) -> None:
        self._deadline = deadline
        if self._poked.is_set() or self._stopping:
            return
        sleeper = asyncio.ensure_future(self.clock.sleep_until(deadline))
        poked = asyncio.ensure_future(self._poked.wait())
        try:
            await asyncio.wait({sleeper, poked}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, poked):
                task.cancel()
            await asyncio.gather(sleeper, poked, return_exceptions=True)
            self._deadline = 0.0

    def _record(self, outcome: FireOutcome) -> None:
        if outcome.fired:
            self.telemetry.count("timers_fired_total", outcome.fired)
        for workflow, n in outcome.intents_per_workflow.items():
            self.telemetry.count("intents_created_total", n, workflow=workflow)
        for workflow, n in outcome.capped.items():
            self.telemetry.count("intents_total", n, outcome="suppressed", workflow=workflow)

    def fire_isolated(self) -> FireOutcome:
        """After a batch failed: each due timer in its own transaction; one that still fails is
        marked ``failed`` (and logged) so it cannot hold up the others."""
        now = self.clock.now()
        total = FireOutcome()
        with self.store.begin() as conn:
            due = conn.execute(self.sql.due_timers, {"now": now, "limit": self.batch}).all()
        for row in due:
            try:
                part = self.fire_due(only=row.id)
            except TRANSIENT_DB_ERRORS:
                raise
            except Exception:
                log.exception("timers: timer %s failed; marking it failed", row.id)
                with self.store.begin() as conn:
                    conn.execute(self.sql.fail_timer, {"b_id": row.id, "node": self.node})
                continue
            total.fired += part.fired
            total.stale += part.stale
            total.intent_ids += part.intent_ids
            for workflow, n in part.intents_per_workflow.items():
                total.intents_per_workflow[workflow] = (
                    total.intents_per_workflow.get(workflow, 0) + n
                )
            for workflow, n in part.capped.items():
                total.capped[workflow] = total.capped.get(workflow, 0) + n
            total.next_fire_at = part.next_fire_at
        return total

    def fire_due(self, only: str | None = None) -> FireOutcome:
        """Claim up to ``batch`` due timers (or just ``only``) and continue their enrollments,
        in one transaction."""
        now = self.clock.now()
        outcome = FireOutcome()
        with self.store.begin() as conn:
            claimed = self._claim(conn, now, only)
            if claimed:
                self._continue(conn, claimed, now, outcome)
            next_at = conn.execute(self.sql.next_timer).scalar()
            recheck_at = self._segment_rechecks(conn, now, outcome) if only is None else None
        soonest = [float(t) for t in (next_at, recheck_at) if t is not None]
        outcome.next_fire_at = min(soonest, default=None)
        return outcome

    def _segment_rechecks(self, conn: Connection, now: float, outcome: FireOutcome) -> float | None:
        """Membership that time alone changes (a window edge passed): re-evaluate the due
        re-checks in this transaction; returns when the next one is due."""
        if self.segments is None or not self.segments.index.segments:
            return None
        from engine.segments.membership import fire_rechecks, next_recheck

        changes, outcome.rechecked = fire_rechecks(conn, self.segments.index, now, self.batch)
        outcome.segment_changes = changes
        if changes and self.workflows.index.segment_triggers:
            self._enroll_entries(conn, changes, now, outcome)
        return next_recheck(conn)

    def _enroll_entries(
        self, conn: Connection, changes: list[MembershipChange], now: float, outcome: FireOutcome
    ) -> None:
        """Start the workflows triggered by entries that time alone caused."""
        from engine.decide.batch import load_enrollments, may_enter
        from engine.decide.segment_triggers import (
            enroll_entries,
            limited_workflows,
            triggered_entries,
        )

        index = self.workflows.index
        entries = triggered_entries(index, changes)
        if not entries:
            return
        ids = {c.contact_id for c in entries}
        contacts = load_contacts(conn, self.sql, ids)
        activity = load_activity(conn, self.sql, sorted(ids), index.activity_windows, now)
        live, history = load_enrollments(conn, self.sql, ids, limited_workflows(index, entries))

        def allowed(wf: Workflow, contact_id: str, at: float) -> bool:
            if not may_enter(wf, contact_id, at, live, history):
                return False
            history[(wf.id, contact_id)] = at  # a second entry in this round sees this one
            return True

        work = Changes(pacing=self.workflows.pacing)
        machine = StepMachine(
            work, winners_for(conn, index.versions.values()), template_routes=index.template_routes
        )
        enroll_entries(index, machine, entries, contacts, activity, allowed, now)
        new_ids, per_workflow = work.write(conn, self.sql)
        _count_capped(outcome, work)
        outcome.intent_ids += new_ids
        for workflow, n in per_workflow.items():
            outcome.intents_per_workflow[workflow] = (
                outcome.intents_per_workflow.get(workflow, 0) + n
            )

    def _claim(self, conn: Connection, now: float, only: str | None) -> list[sa.Row[Any]]:
        sql = self.sql
        due = conn.execute(sql.due_timers, {"now": now, "limit": self.batch}).all()
        if only is not None:
            due = [row for row in due if row.id == only]
        if not due:
            return []
        # Enrollments the decide worker holds are skipped now and fire on a later round.
        ids = sorted({row.enrollment_id for row in due})
        free = set(conn.execute(sql.lock_enrollments, {"ids": ids}).scalars())
        mine = [row.id for row in due if row.enrollment_id in free]
        if not mine:
            return []
        params = {"ids": mine, "node": self.node, "lease_until": now + LEASE_S}
        claimed = conn.execute(sql.claim_timers, params).all()
        return sorted(claimed, key=lambda row: row.fire_at)

    def _continue(
        self, conn: Connection, claimed: list[sa.Row[Any]], now: float, outcome: FireOutcome
    ) -> None:
        sql = self.sql
        ids = sorted({row.enrollment_id for row in claimed})
        enrollments = {
            row.id: Enrollment.from_row(row)
            for row in conn.execute(sql.enrollments_by_id, {"ids": ids})
        }
        contacts = load_contacts(conn, sql, {enr.contact_id for enr in enrollments.values()})
        index = self.workflows.index
        activity = load_activity(conn, sql, sorted(contacts), index.activity_windows, now)
        changes = Changes(pacing=self.workflows.pacing)
        machine = StepMachine(
            changes,
            winners_for(conn, index.versions.values()),
            template_routes=index.template_routes,
        )
        for timer in claimed:
            enrollment = enrollments.get(timer.enrollment_id)
            if enrollment is None:
                outcome.stale += 1
                continue
            wf = index.get(enrollment.workflow_id, enrollment.workflow_version)
            contact = contacts[enrollment.contact_id]
            if wf is None:
                if enrollment.live:
                    version = f"{enrollment.workflow_id} v{enrollment.workflow_version}"
                    machine.exit(enrollment, f"workflow {version} is not loaded", now)
                outcome.stale += 1
                continue
            who = Subject(contact, activity.get(contact.id) or RecentActivity())
            at = Moment(now=now, at=now, due_at=timer.fire_at)
            if machine.fire(wf, enrollment, timer.step_id, who, at):
                outcome.fired += 1
            else:
                outcome.stale += 1
        outcome.intent_ids, per_workflow = changes.write(conn, sql)
        outcome.intents_per_workflow = dict(per_workflow)
        _count_capped(outcome, changes)


def _count_capped(outcome: FireOutcome, changes: Changes) -> None:
    for capped in changes.capped:
        outcome.capped[capped.workflow_id] = outcome.capped.get(capped.workflow_id, 0) + 1
