"""The decide worker: pulls the EVENTS stream in batches and commits each batch's decisions.

Fetching: ``fetch(batch, timeout)`` on the durable pull consumer ``decide``. Measured against a
real nats-server (nats-py 2.16): when idle, the first request is a ``no_wait`` pull with
``expires``, which the server holds until a message arrives and then answers with what is
available, so a lone event is handed over in ~0.4 ms (p50 at 1,000 events/s) instead of waiting
for the batch to fill; under load the same call returns full batches. Pulling one message and
then the rest (two fetches) was slower at low rates; a short timeout spun without helping.
After a full batch the next fetch overlaps the database work (see ``_run``).

A batch is decided on one database thread (blocking work never runs on the event loop), in one
transaction, then every message is acked and ``on_intents`` is called with the new intent ids.
Database outages are retried with backoff and the batch is kept (so per-contact order holds);
a batch that fails for another reason is retried one message at a time, and a message that
still fails becomes a dead letter instead of stalling the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import Error as JetStreamError

from engine.bus import DECIDE_CONSUMER, EVENTS_STREAM
from engine.clock import Clock
from engine.decide.batch import BatchOutcome, DecideBatch, Delivery, ParseEvent
from engine.decide.registry import WorkflowRegistry
from engine.decide.sql import TRANSIENT_DB_ERRORS
from engine.errors import BusError
from engine.store import Store
from engine.telemetry import Telemetry

if TYPE_CHECKING:
    from engine.segments.membership import SegmentRegistry

log = logging.getLogger(__name__)

T = TypeVar("T")
NATS_ERRORS = (nats.errors.Error, JetStreamError)


def delivery_of(msg: Msg) -> Delivery:
    """The parts of a JetStream message the decide transaction uses."""
    meta = msg.metadata
    headers = msg.headers or {}
    return Delivery(
        data=msg.data,
        subject=msg.subject,
        stream_seq=meta.sequence.stream,
        msg_id=headers.get("Nats-Msg-Id"),
        published_at=meta.timestamp.timestamp(),
    )


class _Stopping(Exception):
    """Raised inside retries when ``stop`` was asked for: leave the batch unacked."""


# How long past its own timeout stop() lets a fetch that may be collecting messages finish
# (see _run).
STOP_GRACE = 0.5
# How long a batch decided on the event loop waits for mail transactions awaiting a reply
# (see DecideWorker._make_way).
MAKE_WAY_MAX = 0.0005


class DecideWorker:
    """Consumes ``EVENTS`` through one durable consumer: ``decide``, or one partition's
    ``decide-<p>`` (``consumer``; engine/decide/partitions.py runs one worker per partition
    this node owns, all deciding on one shared ``executor`` thread).

    ``on_intents(ids)`` is called after each commit that created intents; ``on_timer(fire_at)``
    (optional) with the earliest timer a batch created, for ``TimerService.poke``;
    ``on_fanout()`` (optional) after a batch that started catalog alert fan-outs, for
    ``engine.catalog.fanout.FanoutService.poke``.
    """

    def __init__(
        self,
        *,
        js: JetStreamContext,
        store: Store,
        clock: Clock,
        telemetry: Telemetry,
        node: str,
        workflows: WorkflowRegistry,
        on_intents: Callable[[Sequence[str]], None],
        batch: int = 256,
        on_timer: Callable[[float], None] | None = None,
        parse: ParseEvent | None = None,
        segments: SegmentRegistry | None = None,
        fetch_timeout: float = 1.0,
        lag_interval: float = 2.0,
        on_fanout: Callable[[], None] | None = None,
        urgent: Callable[[], bool] | None = None,
        consumer: str = DECIDE_CONSUMER,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        """``lag_interval`` <= 0: do not sample the consumer's lag (the owner of several
        workers sums it). ``executor``: a database thread shared with other workers (kept
        running on stop); None: the worker has its own.

        ``urgent()`` (optional) says latency-critical work is in progress on this event loop
        (the local deliver stage waiting for a relay's reply): see :meth:`_make_way`."""
        if parse is None:
            from engine.ingest.validate import parse_event

            parse = parse_event
        self.js = js
        self.telemetry = telemetry
        self.node = node
        self.batch_size = batch
        self.on_intents = on_intents
        self.on_timer = on_timer
        self.on_fanout = on_fanout
        self.fetch_timeout = fetch_timeout
        self.lag_interval = lag_interval
        self.store = store
        self.urgent = urgent
        self.consumer = consumer
        self._shared_executor = executor
        self.runner = DecideBatch(
            store=store, registry=workflows, clock=clock, parse=parse, segments=segments
        )
        self._executor: ThreadPoolExecutor | None = None
        self._sub: JetStreamContext.PullSubscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._lag_task: asyncio.Task[None] | None = None
        self._next_fetch: asyncio.Task[list[Msg]] | None = None
        self._stopping = False
        self._handling = False
        self._flowing = False

    async def start(self) -> None:
        """Bind to the durable consumer and start pulling."""
        try:
            await self.js.consumer_info(EVENTS_STREAM, self.consumer)
            self._sub = await self.js.pull_subscribe_bind(
                durable=self.consumer, stream=EVENTS_STREAM
            )
        except NATS_ERRORS as exc:
            raise BusError(
                f"cannot bind to consumer {self.consumer} of {EVENTS_STREAM}: {exc}"
            ) from exc
        self._stopping = False
        self._flowing = False
        self._executor = self._shared_executor or ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"decide-{self.node}"
        )
        name = f"{self.consumer}-{self.node}"
        self._task = asyncio.create_task(self._run(), name=name)
        if self.lag_interval > 0:
            self._lag_task = asyncio.create_task(self._sample_lag(), name=f"lag-{name}")

    async def stop(self) -> None:
        """Finish the batch in hand (commit, ack), then stop pulling and release the thread."""
        self._stopping = True
        if not self._handling and self._next_fetch is not None and not self._flowing:
            self._next_fetch.cancel()  # idle poll: nothing in hand
        try:
            if self._task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        finally:
            self._task = None
            await self._release()

    async def _release(self) -> None:
        if self._lag_task is not None:
            self._lag_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lag_task
            self._lag_task = None
        if self._sub is not None:
            with contextlib.suppress(*NATS_ERRORS):
                await self._sub.unsubscribe()
            self._sub = None
        if self._executor is not None:
            if self._executor is not self._shared_executor:
                self._executor.shutdown(wait=True)
            self._executor = None

    async def _run(self) -> None:
        """Fetch, decide, ack. After a full batch (a backlog) the next fetch starts while this
        one is decided, so the round trip overlaps the database work; after a partial batch it
        does not, since a fetch in flight would return early with the first new message and
        make the next one wait a whole extra round (measured at 1,000 events/s: p50 3-9 ms
        instead of 7-18 ms with the fetch always overlapped, same throughput on a backlog)."""
        flowing = False
        while not self._stopping:
            task = self._next_fetch or self._start_fetch(flowing=flowing)
            msgs = await self._take(task)
            flowing = bool(msgs)
            if len(msgs) >= self.batch_size and not self._stopping:
                self._start_fetch(flowing=True)
            if msgs:
                await self._handle(msgs)
        # Stopping. A fetch started while messages were flowing is part of the batch in hand:
        # the server may be delivering its messages right now (they count as ack-pending), and
        # cancelling it mid-collection would strand them until ack_wait redelivers them. So it
        # runs to its end: full, or its own timeout (the server expires the pull then), which
        # bounds the wait. A fixed short grace was not enough on a loaded machine: a fetch
        # still collecting after it was cancelled and its messages stranded. Only a fetch
        # that outlives its timeout by STOP_GRACE (a connection in trouble) is cancelled.
        if self._next_fetch is not None:
            task = self._next_fetch
            if not task.done():
                await asyncio.wait({task}, timeout=self.fetch_timeout + STOP_GRACE)
            if not task.done():
                task.cancel()
            msgs = await self._take(task)
            if msgs:
                await self._handle(msgs)

    def _start_fetch(self, *, flowing: bool) -> asyncio.Task[list[Msg]]:
        """``flowing``: the last fetch returned messages, so this one may be collecting some
        right now; ``stop`` lets it finish. Only a poll after an empty one counts as idle."""
        self._flowing = flowing
        self._next_fetch = asyncio.create_task(self._fetch())
        return self._next_fetch

    async def _take(self, task: asyncio.Task[list[Msg]]) -> list[Msg]:
        """The fetched messages; none when the fetch was cancelled by ``stop``."""
        await asyncio.wait({task})
        if self._next_fetch is task:
            self._next_fetch = None
        return [] if task.cancelled() else task.result()

    async def _fetch(self) -> list[Msg]:
        assert self._sub is not None
        try:
            return await self._sub.fetch(self.batch_size, timeout=self.fetch_timeout)
        except TimeoutError:
            return []
        except NATS_ERRORS as exc:
            log.warning("decide: fetching from %s failed: %s", self.consumer, exc)
        except Exception:  # nats-py raises assorted types while the connection is in trouble
            log.exception("decide: fetching from %s failed", self.consumer)
        await asyncio.sleep(0.5)
        return []

    async def _handle(self, msgs: list[Msg]) -> None:
        self._handling = True
        try:
            if self.store.inline and self.urgent is not None:
                await self._make_way()
            await self._handle_batch(msgs)
        finally:
            self._handling = False

    async def _make_way(self) -> None:
        """On SQLite a batch is decided on the event loop and holds it for ~0.5-2 ms. A relay's
        reply that lands meanwhile waits for the whole batch, and each email waits for two
        replies (envelope, then the final dot) on its way to "accepted". So while ``urgent()``
        says a transaction awaits its reply, let the loop turn — for at most MAKE_WAY_MAX (a
        loopback relay answers in ~0.1 ms) — before taking the loop for the batch. Bounded,
        so a busy deliver stage delays decide by at most that much a batch."""
        assert self.urgent is not None
        deadline = time.perf_counter() + MAKE_WAY_MAX
        while self.urgent() and time.perf_counter() < deadline:  # noqa: ASYNC110 - loop turns,
            await asyncio.sleep(0)  # not a wait for an event: each turn polls the sockets

    async def _handle_batch(self, msgs: list[Msg]) -> None:
        deliveries = [delivery_of(m) for m in msgs]
        outcome = await self._decide(msgs, deliveries)
        if outcome is None:
            return  # stopping during a database outage: the stream redelivers them
        # Committed: hand the intents on before acking, since acks do not gate them.
        try:
            if outcome.intent_ids:
                self.on_intents(outcome.intent_ids)
            if outcome.next_timer_at is not None and self.on_timer is not None:
                self.on_timer(outcome.next_timer_at)
            if outcome.fanouts and self.on_fanout is not None:
                self.on_fanout()
        except Exception:  # a listener's bug must not stop the stage; the store has it all
            log.exception("decide: an on_intents/on_timer callback failed")
        for msg in msgs:
            with contextlib.suppress(*NATS_ERRORS):
                await msg.ack()
        self._record(outcome)

    async def _decide(self, msgs: list[Msg], deliveries: list[Delivery]) -> BatchOutcome | None:
        try:
            return await self._retrying(msgs, self.runner.run, deliveries)
        except _Stopping:
            return None
        except Exception:
            log.exception("decide: a batch of %d failed; retrying one by one", len(msgs))
        total = BatchOutcome()
        for msg, delivery in zip(msgs, deliveries, strict=True):
            try:
                total.merge(await self._retrying([msg], self.runner.run, [delivery]))
            except _Stopping:
                return None
            except Exception as exc:
                log.exception("decide: message %d failed; dead-lettering it", delivery.stream_seq)
                reason = f"decide failed: {type(exc).__name__}: {exc}"[:2000]
                try:
                    dead = await self._retrying([msg], self.runner.dead_letter, delivery, reason)
                except _Stopping:
                    return None
                total.dead_letters += int(dead)
        return total

    async def _retrying(self, msgs: list[Msg], fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on the database thread, retrying database outages until stopped."""
        loop = asyncio.get_running_loop()
        delay = 0.1
        while True:
            try:
                if self.store.inline:
                    return fn(*args)
                return await loop.run_in_executor(self._executor, fn, *args)
            except TRANSIENT_DB_ERRORS as exc:
                if self._stopping:
                    raise _Stopping from exc
                self.telemetry.count("db_errors_total", stage="decide")  # the node's store check
                log.warning("decide: database unavailable (%s); retrying in %.1f s", exc, delay)
                for msg in msgs:  # keep them ours while we retry
                    with contextlib.suppress(*NATS_ERRORS):
                        await msg.in_progress()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _record(self, outcome: BatchOutcome) -> None:
        t = self.telemetry
        t.count("events_processed_total", outcome.processed)
        if outcome.dead_letters:
            t.count("dead_letters_total", outcome.dead_letters)
        if outcome.duplicates:
            t.count("events_duplicate_total", outcome.duplicates)
        for workflow, n in outcome.intents_per_workflow.items():
            t.count("intents_created_total", n, workflow=workflow)
        for workflow, n in outcome.reentry_skipped.items():
            t.count("enrollments_skipped_total", n, workflow=workflow, reason="reentry")
        for workflow, n in outcome.capped.items():  # the frequency cap's outcomes
            t.count("intents_total", n, outcome="suppressed", workflow=workflow)
        for converted in outcome.conversions:
            t.count("conversions_total", workflow=converted.workflow_id)
            if converted.revenue is not None:
                t.count(
                    "conversion_revenue_total", converted.revenue, workflow=converted.workflow_id
                )
        for received in outcome.received_at:
            t.observe("stage_seconds", max(0.0, outcome.committed_at - received), stage="decide")
        if outcome.processed or outcome.dead_letters:
            t.observe("db_commit_seconds", outcome.commit_seconds, stage="decide")

    async def _sample_lag(self) -> None:
        while True:
            await asyncio.sleep(self.lag_interval)
            if self._sub is None:
                continue
            try:
                info = await self._sub.consumer_info()
            except NATS_ERRORS as exc:
                log.debug("decide: consumer info failed: %s", exc)
                continue
            self.telemetry.gauge("consumer_lag", float(info.num_pending or 0))
