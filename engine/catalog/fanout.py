"""Fan-out: a price drop or a restock mails the contacts who looked at the product.

The decide batch that saw the change only records a job (``catalog_fanouts``). This service
walks the job's contacts in id order, ``chunk`` contacts per transaction, so a product viewed
by 100,000 people becomes 200 short transactions between which decide batches keep committing
(on SQLite the whole engine shares one writer: a chunk holds it for tens of milliseconds, not
for the whole audience). The cursor (``after``) commits with each chunk's enrollments, so a
crash resumes where it stopped, and enrollments and intents are keyed by (workflow, contact,
job) so a chunk decided twice sends nothing twice.

Who is mailed (``lookback`` counts back from the change):

- ``price_drop``: viewed or carted the product within ``lookback``, and did not buy it in that
  time;
- ``back_in_stock``: viewed or carted it while it was out of stock, within ``lookback``, and did
  not buy it in that time;
- and in both cases: did not get an alert of this workflow about this product within
  ``window`` (``catalog_alerts``), passes the trigger's ``where`` and the workflow's ``reentry``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite

from engine.clock import Clock
from engine.decide.batch import load_enrollments, may_enter
from engine.decide.changes import Changes
from engine.decide.conditions import Facts, all_hold
from engine.decide.machine import Moment, StepMachine, Subject
from engine.decide.profiles import RecentActivity, load_activity, load_contacts
from engine.decide.registry import WorkflowRegistry
from engine.decide.sql import TRANSIENT_DB_ERRORS, DecideSql
from engine.events import Event
from engine.experiments.exposures import winners_for
from engine.store import Store, schema
from engine.telemetry import Telemetry

log = logging.getLogger(__name__)

T = TypeVar("T")
CHUNK = 500


@dataclass
class FanoutStep:
    """What one chunk did."""

    job_id: str | None = None
    enrolled: int = 0
    skipped: int = 0
    done: bool = False
    intent_ids: list[str] = field(default_factory=list)
    intents_per_workflow: dict[str, int] = field(default_factory=dict)


def alert_event(job: Any) -> Event:
    """The synthetic trigger event of a job's enrollments (one id per job)."""
    stored = job.event
    return Event(
        message_id=f"catalog-{job.id}",
        type="track",
        user_id=None,
        anonymous_id=None,
        name=stored["name"],
        properties=dict(stored["properties"]),
        timestamp=float(stored.get("ts") or job.created_at),
        received_at=float(job.created_at),
    )


class Fanout:
    """Runs one chunk of the oldest pending job per call (blocking; a database thread)."""

    def __init__(
        self, store: Store, clock: Clock, workflows: WorkflowRegistry, chunk: int = CHUNK
    ) -> None:
        self.store = store
        self.clock = clock
        self.workflows = workflows
        self.chunk = chunk
        self.sql = DecideSql.build(store)

    def step(self) -> FanoutStep:
        now = self.clock.now()
        f = schema.catalog_fanouts
        with self.store.begin() as conn:
            if self.store.is_sqlite:
                # A write first: the chunk then holds SQLite's write lock before it reads.
                conn.execute(sa.update(f).where(f.c.state == "pending").values(state="pending"))
            query = sa.select(f).where(f.c.state == "pending").order_by(f.c.created_at, f.c.id)
            if not self.store.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            job = conn.execute(query.limit(1)).first()
            if job is None:
                return FanoutStep(done=True)
            return self._chunk(conn, job, now)

    def pending(self) -> int:
        f = schema.catalog_fanouts
        with self.store.begin() as conn:
            found = conn.execute(
                sa.select(sa.func.count()).select_from(f).where(f.c.state == "pending")
            ).scalar()
        return int(found or 0)

    def _chunk(self, conn: Connection, job: Any, now: float) -> FanoutStep:
        f, cp = schema.catalog_fanouts, schema.contact_products
        outcome = FanoutStep(job_id=job.id)
        index = self.workflows.index
        wf = index.get(job.workflow_id, job.workflow_version)
        if wf is None or wf.trigger.catalog is None:
            log.warning("catalog fan-out %s: workflow %s v%s is not loaded; dropped",
                        job.id, job.workflow_id, job.workflow_version)  # fmt: skip
            conn.execute(sa.update(f).where(f.c.id == job.id).values(state="done", finished_at=now))
            outcome.done = True
            return outcome
        trigger = wf.trigger.catalog
        since = float(job.created_at) - trigger.lookback
        looked = (
            sa.or_(cp.c.viewed_at > since, cp.c.carted_at > since)
            if trigger.kind == "price_drop"
            else cp.c.looked_out_at > since
        )
        query = (
            sa.select(cp.c.contact_id)
            .where(cp.c.product_id == job.product_id, looked)
            .where(sa.or_(cp.c.bought_at.is_(None), cp.c.bought_at <= since))
            .order_by(cp.c.contact_id)
            .limit(self.chunk)
        )
        if job.after is not None:
            query = query.where(cp.c.contact_id > job.after)
        ids = list(conn.execute(query).scalars())
        eligible = self._outside_window(conn, wf.id, job.product_id, ids, now - trigger.window)
        outcome.skipped = len(ids) - len(eligible)
        if eligible:
            self._enroll(conn, job, wf, eligible, now, outcome)
        outcome.done = len(ids) < self.chunk
        conn.execute(
            sa.update(f)
            .where(f.c.id == job.id)
            .values(
                after=ids[-1] if ids else job.after,
                enrolled=f.c.enrolled + outcome.enrolled,
                skipped=f.c.skipped + outcome.skipped,
                state="done" if outcome.done else "pending",
                finished_at=now if outcome.done else None,
            )
        )
        return outcome

    def _outside_window(
        self, conn: Connection, workflow_id: str, product_id: str, ids: list[str], since: float
    ) -> list[str]:
        """The contacts without an alert of this workflow about this product since ``since``."""
        if not ids:
            return []
        a = schema.catalog_alerts
        recent = set(
            conn.execute(
                sa.select(a.c.contact_id).where(
                    a.c.workflow_id == workflow_id,
                    a.c.product_id == product_id,
                    a.c.contact_id.in_(ids),
                    a.c.sent_at > since,
                )
            ).scalars()
        )
        return [cid for cid in ids if cid not in recent]

    def _enroll(
        self,
        conn: Connection,
        job: Any,
        wf: Any,
        ids: list[str],
        now: float,
        outcome: FanoutStep,
    ) -> None:
        event = alert_event(job)
        contacts = load_contacts(conn, self.sql, ids)
        windows = wf.activity_windows()
        activity = load_activity(conn, self.sql, ids, windows, now) if windows else {}
        limited = {wf.id} if wf.reentry.mode != "always" else set()
        live, history = load_enrollments(conn, self.sql, set(ids), limited)
        # The same pacing (caps, quiet hours), promoted experiment winners and template routes
        # as a send decided from an event.
        changes = Changes(pacing=self.workflows.pacing)
        index = self.workflows.index
        machine = StepMachine(
            changes,
            winners_for(conn, index.versions.values()),
            template_routes=index.template_routes,
        )
        alerted: list[dict[str, Any]] = []
        for cid in ids:
            contact = contacts[cid]
            if not contact.stored:
                continue
            who = Subject(contact, activity.get(cid) or RecentActivity())
            facts = Facts(contact.traits, event.properties, now, None, who.activity)
            if not all_hold(wf.trigger.where, facts) or not may_enter(wf, cid, now, live, history):
                outcome.skipped += 1
                continue
            at = Moment(now=now, at=now, due_at=float(job.created_at))
            machine.enter(wf, event, who, None, at)
            alerted.append(
                {"workflow_id": wf.id, "product_id": job.product_id, "contact_id": cid,
                 "sent_at": now}
            )  # fmt: skip
        if alerted:
            insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
            stmt = insert(schema.catalog_alerts)
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["workflow_id", "product_id", "contact_id"],
                    set_={"sent_at": stmt.excluded.sent_at},
                ),
                alerted,
            )
        outcome.enrolled = len(alerted)
        new_ids, per_workflow = changes.write(conn, self.sql)
        outcome.intent_ids = new_ids
        outcome.intents_per_workflow = dict(per_workflow)


class FanoutService:
    """Runs pending fan-out jobs in the background, a chunk at a time, until none is left.

    ``poke()`` (the decide worker, after a batch that started jobs) wakes it at once; it also
    looks every ``poll_s`` for jobs other nodes recorded.
    """

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        telemetry: Telemetry,
        node: str,
        workflows: WorkflowRegistry,
        on_intents: Callable[[Sequence[str]], None],
        chunk: int = CHUNK,
        poll_s: float = 5.0,
    ) -> None:
        self.fanout = Fanout(store, clock, workflows, chunk)
        self.store = store
        self.telemetry = telemetry
        self.node = node
        self.on_intents = on_intents
        self.poll_s = poll_s
        self._poked = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self._stopping = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"fanout-{self.node}")
        self._task = asyncio.create_task(self._run(), name=f"fanout-{self.node}")

    async def stop(self) -> None:
        """Finish the chunk in hand, then stop (the cursor is committed: it resumes there)."""
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

    def poke(self) -> None:
        self._poked.set()

    async def _blocking(self, fn: Callable[[], T]) -> T:
        if self.store.inline:
            return fn()
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def _run(self) -> None:
        delay = 0.1
        while not self._stopping:
            self._poked.clear()
            try:
                step = await self._blocking(self.fanout.step)
            except TRANSIENT_DB_ERRORS as exc:
                log.warning("catalog fan-out: database unavailable (%s); retrying", exc)
                await self._wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            except Exception:  # a bug must not stop alerts for good: log, back off, go on
                log.exception("catalog fan-out: a chunk failed")
                await self._wait(5.0)
                continue
            delay = 0.1
            self._record(step)
            if step.job_id is not None:
                await asyncio.sleep(0)  # let a decide batch in between chunks
                continue
            await self._wait(self.poll_s)

    async def _wait(self, seconds: float) -> None:
        if self._stopping:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._poked.wait(), seconds)

    def _record(self, step: FanoutStep) -> None:
        if step.enrolled:
            self.telemetry.count("catalog_alerts_enrolled_total", step.enrolled)
        for workflow, n in step.intents_per_workflow.items():
            self.telemetry.count("intents_created_total", n, workflow=workflow)
        if step.intent_ids:
            try:
                self.on_intents(step.intent_ids)
            except Exception:  # deliver also polls the store
                log.exception("catalog fan-out: the on_intents callback failed")
