"""Group commit of the ledger's hot writes: dot markers, outcomes and lease renewals.

Every message waiting between "DATA accepted" and "final dot", on every connection, is marked
``sending`` in ONE transaction, and every outcome recorded meanwhile rides along. While a
commit runs, new arrivals gather for the next one, so the batch grows with the load and a
commit's cost is shared (the same idea as a database's own group commit). Dot waiters get
``True`` (write the dot) or ``False`` (this node no longer owns the intent: do not).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from engine.clock import Clock
from engine.deliver.model import Outcome
from engine.errors import StoreError
from engine.telemetry import Telemetry

log = logging.getLogger(__name__)

_RETRY_FIRST = 0.05
_RETRY_MAX = 2.0


class GroupCommitter:
    """Collects dot markers and outcomes and commits them together, one transaction a tick."""

    def __init__(
        self,
        *,
        commit: Callable[..., Awaitable[set[str]]],
        ping: Callable[[], Awaitable[None]],
        clock: Clock,
        telemetry: Telemetry,
        lease_seconds: float,
    ) -> None:
        self._commit_batch = commit  # Ledger.commit's keywords; returns the marked ids
        self._ping = ping
        self._clock = clock
        self._telemetry = telemetry
        self._lease_seconds = lease_seconds
        self._dots: list[tuple[str, asyncio.Future[bool]]] = []
        self._outcomes: list[Outcome] = []
        self._renew: list[str] = []
        self._flushers: list[asyncio.Future[None]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.commits = 0  # transactions committed (for figures and tests)

    def start(self) -> None:
        self._closing = False
        self._task = asyncio.create_task(self._loop(), name="deliver-group-commit")

    async def close(self, timeout: float = 30.0) -> None:
        """Commit everything still pending (for up to ``timeout`` seconds), then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            log.error(
                "deliver: stopping with %d outcomes not recorded (the store does not answer); "
                "their leases will run out and recovery takes them over",
                len(self._outcomes),
            )
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._task = None

    @property
    def pending(self) -> int:
        return len(self._dots) + len(self._outcomes)

    async def mark_dot(self, intent_id: str) -> bool:
        """Wait until ``intent_id`` is durably ``sending``; False when it is no longer ours."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._dots.append((intent_id, future))
        self._wakeup.set()
        return await future

    def record(self, outcome: Outcome) -> None:
        """Queue an outcome for the next commit (telemetry counts it once committed)."""
        self._outcomes.append(outcome)
        self._wakeup.set()

    def renew(self, intent_ids: list[str]) -> None:
        """Extend the leases of these intents in the next commit."""
        self._renew = intent_ids
        self._wakeup.set()

    async def flush(self) -> None:
        """Return once everything recorded before this call is committed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flushers.append(future)
        self._wakeup.set()
        await future

    async def _loop(self) -> None:
        delay = _RETRY_FIRST
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            dots, self._dots = self._dots, []
            outcomes, self._outcomes = self._outcomes, []
            renew, self._renew = self._renew, []
            flushers, self._flushers = self._flushers, []
            if dots or outcomes or renew:
                try:
                    marked = await self._commit(dots, outcomes, renew)
                except Exception as exc:
                    log.error("deliver: group commit failed: %s", short_error(exc))
                    self._telemetry.count("db_errors_total", stage="deliver")
                    if not await self._store_answers():  # down: keep the outcomes, retry
                        error = StoreError(f"could not mark intents as sending: {short_error(exc)}")
                        for _, future in dots:
                            if not future.done():
                                future.set_exception(error)
                        self._outcomes[:0] = outcomes
                        self._renew = self._renew or renew
                        self._flushers[:0] = flushers
                        await asyncio.sleep(delay)
                        delay = min(_RETRY_MAX, delay * 2)
                        self._wakeup.set()
                        continue
                    await self._commit_one_by_one(dots, outcomes)  # isolate the bad row
                else:
                    self._resolve(dots, marked, outcomes)
                delay = _RETRY_FIRST
            for flusher in flushers:
                if not flusher.done():
                    flusher.set_result(None)
            if self._closing and not (self._dots or self._outcomes or self._flushers):
                return

    def _resolve(
        self,
        dots: list[tuple[str, asyncio.Future[bool]]],
        marked: set[str],
        outcomes: list[Outcome],
    ) -> None:
        for intent_id, future in dots:
            if not future.done():
                future.set_result(intent_id in marked)
        for outcome in outcomes:
            if outcome.counted:
                self._telemetry.count(
                    "intents_total", outcome=outcome.status, workflow=outcome.workflow_id
                )

    async def _store_answers(self) -> bool:
        try:
            await self._ping()
        except Exception:
            return False
        return True

    async def _commit_one_by_one(
        self, dots: list[tuple[str, asyncio.Future[bool]]], outcomes: list[Outcome]
    ) -> None:
        """The store works but the batch failed: commit each item alone, drop what still fails.

        A dropped outcome leaves its row claimed or sending; when the lease runs out, recovery
        requeues it or makes it uncertain, so dropping never duplicates a send.
        """
        for dot in dots:
            try:
                marked = await self._commit([dot], [], [])
            except Exception as exc:
                if not dot[1].done():
                    dot[1].set_exception(
                        StoreError(f"could not mark as sending: {short_error(exc)}")
                    )
            else:
                self._resolve([dot], marked, [])
        for outcome in outcomes:
            try:
                await self._commit([], [outcome], [])
            except Exception as exc:
                log.error(
                    "deliver: dropped the %s outcome of intent %s: %s",
                    outcome.status,
                    outcome.intent_id,
                    short_error(exc),
                )
            else:
                self._resolve([], set(), [outcome])

    async def _commit(
        self,
        dots: list[tuple[str, asyncio.Future[bool]]],
        outcomes: list[Outcome],
        renew: list[str],
    ) -> set[str]:
        now = self._clock.now()
        started = time.perf_counter()
        marked = await self._commit_batch(
            now=now,
            dots=[intent_id for intent_id, future in dots if not future.done()],
            lease_until=now + self._lease_seconds,
            outcomes=outcomes,
            renew=renew,
        )
        self._telemetry.observe("db_commit_seconds", time.perf_counter() - started, stage="deliver")
        self.commits += 1
        return marked


def short_error(exc: BaseException) -> str:
    """An error in one line (SQLAlchemy's messages carry the statement and every parameter)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:300]}"
