"""A route: one relay and the pool of persistent connections that send to it.

Each connection has a worker that takes the next job from the route's queue, so a slow reply
or a failed recipient on one connection never holds up the others. Connections open lazily,
are NOOP-checked after sitting idle and closed (QUIT) after a long idle spell. When the relay
cannot be reached the route backs off and hands its jobs back to the ledger instead of holding
them, so their suppression and expiry are checked again when they come round.

Per-domain limits and several routes per node come later; the :class:`RouteHooks` seam is what
the service gives a route, and a route owns nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

from engine.clock import Clock
from engine.deliver.model import Job
from engine.deliver.policy import DeliveryTuning
from engine.deliver.relay import RelayConfig
from engine.deliver.smtp import Envelope, SmtpConnection, TransactionResult, Transport
from engine.errors import DeliveryError, RelayUnavailable

log = logging.getLogger(__name__)

TransportFactory = Callable[[RelayConfig, ssl.SSLContext | None], Transport]


def _smtp_connection(relay: RelayConfig, tls_context: ssl.SSLContext | None) -> Transport:
    return SmtpConnection(relay, tls_context=tls_context)


def tls_context_for(relay: RelayConfig) -> ssl.SSLContext | None:
    """The client TLS context for a relay (built once per route: loading CAs is slow)."""
    if relay.tls == "none":
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=relay.ca_file)
    if not relay.validate_certs:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class RouteHooks(Protocol):
    """What a route reports to the service that owns the jobs."""

    async def before_dot(self, job: Job) -> bool:
        """Commit the dot marker; True: write the final dot."""
        ...

    def finished(self, route: Route, job: Job, result: TransactionResult) -> None:
        """A transaction ended (in any way the relay can end it)."""
        ...

    def handed_back(self, jobs: list[Job], reason: str, retry_at: float | None) -> None:
        """These jobs were not attempted (relay unreachable, shutting down)."""
        ...

    def crashed(self, job: Job, error: BaseException) -> None:
        """Sending raised something unexpected, or was cancelled mid-way."""
        ...


class Route:
    """A relay and its connection pool; jobs go in with :meth:`submit`."""

    def __init__(
        self,
        name: str,
        relay: RelayConfig,
        hooks: RouteHooks,
        *,
        tuning: DeliveryTuning,
        clock: Clock,
        transport_factory: TransportFactory = _smtp_connection,
    ) -> None:
        self.name = name
        self.relay = relay
        self._hooks = hooks
        self._tuning = tuning
        self._clock = clock
        self._factory = transport_factory
        self._queue: asyncio.Queue[Job | None] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self._connecting: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._down_until = 0.0  # monotonic
        self._backoff = 0.0
        self.down_reason = ""
        self.busy = 0  # transactions in progress

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    @property
    def is_down(self) -> bool:
        return time.monotonic() < self._down_until

    @property
    def down_for(self) -> float:
        """Seconds until the route tries its relay again (0 when it is up)."""
        return max(0.0, self._down_until - time.monotonic())

    def start(self) -> None:
        tls_context = tls_context_for(self.relay)
        self._closing = False
        self._workers = [
            asyncio.create_task(self._work(tls_context), name=f"route-{self.name}-{i}")
            for i in range(self.relay.connections)
        ]

    def submit(self, job: Job) -> None:
        """Queue a job for the next free connection (or hand it straight back if down)."""
        if self._closing:
            self._hooks.handed_back([job], "shutting down", None)
        elif self.is_down:
            self._hooks.handed_back([job], self.down_reason, self._retry_at())
        else:
            self._queue.put_nowait(job)

    async def close(self, timeout: float) -> None:
        """Hand back queued jobs, let transactions in progress finish (up to ``timeout``), QUIT."""
        self._closing = True
        left = self._drain()
        if left:
            self._hooks.handed_back(left, "shutting down", None)
        for _ in self._workers:
            self._queue.put_nowait(None)
        for task in self._connecting:  # nothing sent yet: no need to wait for a slow relay
            task.cancel()
        if self._workers:
            _, pending = await asyncio.wait(self._workers, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []

    def _drain(self) -> list[Job]:
        """Take the queued jobs out; stop sentinels stay for the workers."""
        jobs: list[Job] = []
        sentinels = 0
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if job is None:
                sentinels += 1
            else:
                jobs.append(job)
        for _ in range(sentinels):
            self._queue.put_nowait(None)
        return jobs

    def _retry_at(self) -> float:
        return self._clock.now() + max(0.0, self._down_until - time.monotonic())

    def _mark_down(self, error: DeliveryError) -> None:
        tuning = self._tuning
        self._backoff = min(
            tuning.route_backoff_max, max(tuning.route_backoff_first, self._backoff * 2)
        )
        self._down_until = time.monotonic() + self._backoff
        self.down_reason = str(error)
        log.warning("route %s: %s; retrying in %.0f s", self.name, error, self._backoff)

    async def _work(self, tls_context: ssl.SSLContext | None) -> None:
        conn = self._factory(self.relay, tls_context)
        try:
            while True:
                try:
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for runs the get in a
                    # task of its own, so a job reaches its worker two loop turns later, and on
                    # a busy engine a decide batch (1-2 ms, inline on SQLite) can run in each.
                    async with asyncio.timeout(self._tuning.idle_close_after):
                        job = await self._queue.get()
                except TimeoutError:
                    await conn.quit()
                    continue
                if job is None:
                    return
                await self._deliver(conn, job)
        finally:
            if conn.is_connected:
                await asyncio.shield(conn.quit())

    async def _ready(self, conn: Transport) -> bool:
        """Make ``conn`` usable: NOOP it after an idle spell, (re)connect when needed."""
        if conn.is_connected and time.monotonic() - conn.last_used > self._tuning.idle_ping_after:
            await conn.ping()
        if not conn.is_connected:
            await conn.connect()
            self._backoff = 0.0
        return not self._closing

    async def _deliver(self, conn: Transport, job: Job) -> None:
        if self.is_down:
            self._hooks.handed_back([job], self.down_reason, self._retry_at())
            return
        task = asyncio.current_task()
        assert task is not None
        self._connecting.add(task)
        try:
            ready = await self._ready(conn)
        except asyncio.CancelledError:
            self._hooks.handed_back([job], "shutting down", None)
            raise
        except DeliveryError as exc:
            self._mark_down(exc)
            self._hooks.handed_back([job, *self._drain()], str(exc), self._retry_at())
            return
        finally:
            self._connecting.discard(task)
        if not ready:
            self._hooks.handed_back([job], "shutting down", None)
            return
        envelope = Envelope(job.sender, job.recipient, len(job.body), job.eight_bit)
        self.busy += 1
        try:
            result = await conn.transact(envelope, job.body, partial(self._hooks.before_dot, job))
        except BaseException as exc:
            conn.close()
            self._hooks.crashed(job, exc)
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            self.busy -= 1
        reply = result.reply
        if reply is not None and reply.code == 421 and result.stage != "dot":
            # "Service not available, closing": about the relay, not this message. Back off
            # and hand it back untried rather than deferring it for minutes.
            conn.close()
            self._mark_down(RelayUnavailable(f"relay {self.relay.address}: {reply}"))
            self._hooks.handed_back([job, *self._drain()], self.down_reason, self._retry_at())
            return
        self._hooks.finished(self, job, result)
        if reply is not None and not result.delivered and conn.is_connected:
            await conn.reset()
