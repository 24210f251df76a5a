"""A route: one relay, the pool of persistent connections that send to it, and its limits.

Each connection has a worker that takes the next job the route lets through, so a slow reply
or a failed recipient on one connection never holds up the others. Connections open lazily,
are NOOP-checked after sitting idle and closed (QUIT) after a long idle spell. When the relay
cannot be reached (or answers 421) the route backs off and hands its jobs back to the ledger
instead of holding them, so their suppression and expiry are checked again when they come round.

Limits (``limits.Limiter``): submitted jobs wait in one queue per recipient domain; whenever a
worker is free, :meth:`Route._pump` hands out the next job of each domain in turn whose limits
allow a transaction now. A domain waiting for its rate or concurrency is skipped, so a slow or
throttled domain never holds up the others; a timer wakes the pump when the earliest wait ends.

A route can be paused (by an operator, or by itself when its error rate passes
``DeliveryTuning.pause``): it takes no jobs and hands its queued ones back to the ledger, to be
claimed again after ``pause_recheck`` seconds. The :class:`RouteHooks` seam is what the service
gives a route, and a route owns nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

from engine.clock import Clock
from engine.deliver.limits import ErrorWatch, Limiter, RouteLimits, Share, has_limits
from engine.deliver.model import Job
from engine.deliver.policy import DeliveryTuning, too_many_recipients
from engine.deliver.relay import RelayConfig
from engine.deliver.smtp import Envelope, SmtpConnection, TransactionResult, Transport
from engine.errors import DeliveryError, RelayUnavailable
from engine.telemetry import Telemetry

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

    def auto_paused(self, route: Route, reason: str, handed_back: int) -> None:
        """The route paused itself (its error rate passed the threshold); ``handed_back``
        queued jobs went back to the ledger."""
        ...


class _Monotonic:
    """The limits' clock: monotonic seconds (wall-clock jumps must not open or shut a gate)."""

    @staticmethod
    def now() -> float:
        return time.monotonic()


def domain_of(job: Job) -> str:
    return job.recipient.rpartition("@")[2].lower()


def is_route_error(result: TransactionResult) -> bool:
    """Counts against the route in the auto-pause error rate: anything but a 2xx or a 5xx
    about the recipient's address (5.1.x: that address is bad, not the route)."""
    reply = result.reply
    if result.delivered:
        return False
    if reply is not None and too_many_recipients(reply):
        return True
    return not (reply is not None and reply.permanent and reply.enhanced.startswith("5.1."))


class Route:
    """A relay, its connection pool and its limits; jobs go in with :meth:`submit`."""

    def __init__(
        self,
        name: str,
        relay: RelayConfig,
        hooks: RouteHooks,
        *,
        tuning: DeliveryTuning,
        clock: Clock,
        limits: RouteLimits | None = None,
        telemetry: Telemetry | None = None,
        transport_factory: TransportFactory = _smtp_connection,
    ) -> None:
        self.name = name
        self.relay = relay
        self._hooks = hooks
        self._tuning = tuning
        self._clock = clock
        self._telemetry = telemetry
        self._factory = transport_factory
        self._limiter = Limiter(limits or RouteLimits(), _Monotonic(), tuning.throttle)
        self._watch = ErrorWatch(tuning.pause, _Monotonic())
        self._pending: dict[str, deque[Job]] = {}  # recipient domain -> jobs, round robin
        self._pending_count = 0
        self._ready: asyncio.Queue[Job | None] = asyncio.Queue()  # let through, for a worker
        self._idle = 0  # workers waiting for a job
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._workers: list[asyncio.Task[None]] = []
        self._connecting: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._down_until = 0.0  # monotonic
        self._backoff = 0.0
        self._down = False  # the last connection attempt failed
        self.down_reason = ""
        self.paused_reason: str | None = None
        self.auto_paused = False
        self.busy = 0  # transactions in progress

    # -- state ------------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        """Jobs waiting on this route (for a limit or for a connection)."""
        return self._pending_count + self._ready.qsize()

    @property
    def is_down(self) -> bool:
        return time.monotonic() < self._down_until

    @property
    def down_for(self) -> float:
        """Seconds until the route tries its relay again (0 when it is up)."""
        return max(0.0, self._down_until - time.monotonic())

    @property
    def paused(self) -> bool:
        return self.paused_reason is not None

    @property
    def unavailable_for(self) -> float:
        """Seconds before jobs for this route are worth claiming (0: now)."""
        return self._tuning.pause_recheck if self.paused else self.down_for

    @property
    def limits(self) -> RouteLimits:
        return self._limiter.limits

    def set_limits(self, limits: RouteLimits) -> None:
        """Change the route's limits live (jobs in progress finish; windows keep their history)."""
        self._limiter.set_limits(limits)
        log.info("route %s: limits changed to %s", self.name, limits.as_dict())
        self._pump()

    @property
    def share(self) -> Share:
        return self._limiter.share

    def set_share(self, share: Share) -> None:
        """This node's part of the route's cluster-wide limits (see ``presence``)."""
        if share == self._limiter.share:
            return
        self._limiter.set_share(share)
        if has_limits(self._limiter.limits):
            if share.held:
                log.warning(
                    "route %s: holding its sends until this node is in touch with the other "
                    "deliver nodes (it cannot know its share of the limits)",
                    self.name,
                )
            else:
                log.info(
                    "route %s: %d deliver node(s) share its limits; this one is #%d",
                    self.name,
                    share.members,
                    share.rank + 1,
                )
        self._pump()

    def state(self) -> dict[str, Any]:
        """Where the route sends, its state, limits and counters, for listing (no secrets)."""
        errors, attempts = self._watch.rate()
        return {
            "name": self.name,
            "address": self.relay.address,
            "tls": self.relay.tls,
            "connections": self.relay.connections,
            "paused": self.paused,
            "paused_reason": self.paused_reason,
            "auto_paused": self.auto_paused,
            "down": self.is_down,
            "down_reason": self.down_reason if self.is_down else "",
            "busy": self.busy,
            "queued": self.queued,
            "errors": errors,
            "attempts": attempts,
            **self._limiter.snapshot(),
        }

    def _gauge(self, name: str, value: float) -> None:
        if self._telemetry is not None:
            self._telemetry.gauge(name, value, route=self.name)

    # -- pause ------------------------------------------------------------------------------

    def pause(self, reason: str, *, auto: bool = False) -> list[Job]:
        """Take no more jobs; queued ones go back to the ledger (returned for counting).

        Transactions in progress finish. ``auto``: the route paused itself (reported through
        :meth:`RouteHooks.auto_paused`).
        """
        if self.paused:
            return []
        self.paused_reason = reason
        self.auto_paused = auto
        self._gauge("route_paused", 1)
        left = self._drain()
        if left:
            why = f"route {self.name} paused: {reason}"
            self._hooks.handed_back(left, why, self._paused_until())
        if auto:
            self._hooks.auto_paused(self, reason, len(left))
        else:
            log.info("route %s: paused: %s", self.name, reason)
        return left

    def resume(self) -> bool:
        """Take jobs again (False: it was not paused). The error window starts over."""
        if not self.paused:
            return False
        self.paused_reason = None
        self.auto_paused = False
        self._watch.reset()
        self._gauge("route_paused", 0)
        log.info("route %s: resumed", self.name)
        self._pump()
        return True

    def _paused_until(self) -> float:
        return self._clock.now() + self._tuning.pause_recheck

    # -- jobs -------------------------------------------------------------------------------

    def start(self) -> None:
        tls_context = tls_context_for(self.relay)
        self._closing = False
        self._gauge("route_paused", 1 if self.paused else 0)
        self._gauge("route_down", 0)
        self._workers = [
            asyncio.create_task(self._work(tls_context), name=f"route-{self.name}-{i}")
            for i in range(self.relay.connections)
        ]

    def submit(self, job: Job) -> None:
        """Queue a job for its domain's turn (or hand it straight back: down, paused, closing)."""
        if self._closing:
            self._hooks.handed_back([job], "shutting down", None)
        elif self.paused:
            reason = f"route {self.name} paused: {self.paused_reason}"
            self._hooks.handed_back([job], reason, self._paused_until())
        elif self.is_down:
            self._hooks.handed_back([job], self.down_reason, self._retry_at())
        else:
            domain = domain_of(job)
            jobs = self._pending.get(domain)
            if jobs is None:
                self._pending[domain] = deque((job,))
            else:
                jobs.append(job)
            self._pending_count += 1
            self._pump()

    def _pump(self) -> None:
        """Hand free workers the next job of each domain whose limits allow one now."""
        if self._closing or self.paused or not self._pending:
            return
        free = self._idle - self._ready.qsize()
        wait = math.inf
        while free > 0 and self._pending:
            moved = False
            for domain in list(self._pending):
                delay = self._limiter.acquire(domain)
                if delay > 0:
                    wait = min(wait, delay)
                    continue
                jobs = self._pending.pop(domain)
                self._ready.put_nowait(jobs.popleft())
                self._pending_count -= 1
                if jobs:  # to the back of the line: domains take turns
                    self._pending[domain] = jobs
                moved = True
                free -= 1
                if free <= 0:
                    break
            if not moved:
                break
        if self._pending and wait < math.inf:
            self._wake_in(wait)

    def _wake_in(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        at = loop.time() + delay + 0.001
        if self._timer is not None and self._timer_at <= at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        self._pump()

    async def close(self, timeout: float) -> None:
        """Hand back queued jobs, let transactions in progress finish (up to ``timeout``), QUIT."""
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = math.inf
        left = self._drain()
        if left:
            self._hooks.handed_back(left, "shutting down", None)
        for _ in self._workers:
            self._ready.put_nowait(None)
        for task in self._connecting:  # nothing sent yet: no need to wait for a slow relay
            task.cancel()
        if self._workers:
            _, pending = await asyncio.wait(self._workers, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []

    def _drain(self) -> list[Job]:
        """Take the waiting jobs out (their limit slots freed); stop sentinels stay."""
        jobs: list[Job] = []
        for pending in self._pending.values():
            jobs.extend(pending)
        self._pending.clear()
        self._pending_count = 0
        sentinels = 0
        while not self._ready.empty():
            job = self._ready.get_nowait()
            if job is None:
                sentinels += 1
            else:
                self._limiter.release(domain_of(job))
                jobs.append(job)
        for _ in range(sentinels):
            self._ready.put_nowait(None)
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

    def _record(self, *, error: bool) -> None:
        reason = self._watch.record(error=error)
        if reason is not None and not self.paused:
            log.warning("route %s: pausing itself: %s", self.name, reason)
            self.pause(reason, auto=True)

    # -- workers ----------------------------------------------------------------------------

    async def _work(self, tls_context: ssl.SSLContext | None) -> None:
        conn = self._factory(self.relay, tls_context)
        try:
            while True:
                idle_too_long = False
                self._idle += 1
                try:
                    self._pump()
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for runs the get in a
                    # task of its own, so a job reaches its worker two loop turns later, and on
                    # a busy engine a decide batch (1-2 ms, inline on SQLite) can run in each.
                    async with asyncio.timeout(self._tuning.idle_close_after):
                        job = await self._ready.get()
                except TimeoutError:
                    idle_too_long = True
                finally:
                    self._idle -= 1
                if idle_too_long:
                    await conn.quit()
                    continue
                if job is None:
                    return
                domain = domain_of(job)
                try:
                    await self._deliver(conn, job, domain)
                finally:
                    self._limiter.release(domain)
        finally:
            if conn.is_connected:
                await asyncio.shield(conn.quit())

    async def _ready_conn(self, conn: Transport) -> bool:
        """Make ``conn`` usable: NOOP it after an idle spell, (re)connect when needed."""
        if conn.is_connected and time.monotonic() - conn.last_used > self._tuning.idle_ping_after:
            await conn.ping()
        if not conn.is_connected:
            await conn.connect()
            self._backoff = 0.0
            if self._down:
                self._down = False
                self._gauge("route_down", 0)
                log.info("route %s: relay %s reachable again", self.name, self.relay.address)
        return not self._closing

    def _unreachable(self, job: Job, error: DeliveryError) -> None:
        """The relay refused or failed the connection (or said 421): back off, hand back."""
        self._mark_down(error)
        self._down = True
        self._gauge("route_down", 1)
        self._hooks.handed_back([job, *self._drain()], self.down_reason, self._retry_at())
        self._record(error=True)

    async def _deliver(self, conn: Transport, job: Job, domain: str) -> None:
        if self.is_down:
            self._hooks.handed_back([job], self.down_reason, self._retry_at())
            return
        if self.paused:
            reason = f"route {self.name} paused: {self.paused_reason}"
            self._hooks.handed_back([job], reason, self._paused_until())
            return
        task = asyncio.current_task()
        assert task is not None
        self._connecting.add(task)
        try:
            ready = await self._ready_conn(conn)
        except asyncio.CancelledError:
            self._hooks.handed_back([job], "shutting down", None)
            raise
        except DeliveryError as exc:
            # Includes a 421 (or any refusal) at the greeting or EHLO, and a TLS failure.
            self._unreachable(job, exc)
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
            self._unreachable(job, RelayUnavailable(f"relay {self.relay.address}: {reply}"))
            return
        self._hooks.finished(self, job, result)
        if not result.aborted:
            deferred = reply is not None and (reply.transient or too_many_recipients(reply))
            if reply is not None and self._limiter.record(domain, deferred=deferred):
                factor = self._limiter.throttle_factor(domain)
                log.warning(
                    "route %s: deferrals from %s spiked; its rate is cut to %.0f%%",
                    self.name,
                    domain,
                    factor * 100,
                )
                if self._telemetry is not None:
                    self._telemetry.count("domain_throttled_total", route=self.name)
            self._record(error=is_route_error(result))
        if reply is not None and not result.delivered and conn.is_connected:
            await conn.reset()
