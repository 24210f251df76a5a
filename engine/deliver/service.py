"""The deliver stage: claim intents, check them again, render, send, record exactly one outcome.

An intent moves ``queued`` -> ``claimed`` -> ``sending`` -> outcome. ``sending`` is committed
(with ``dot_at``) *before* the final dot of DATA goes on the wire, so the store always knows on
which side of the dot an in-flight message is, whatever instant the engine is killed at:
``claimed`` rows are safe to send again; ``sending`` rows whose node vanished become
``uncertain``, are counted, and are never retried blindly.

Per batch there is one claim transaction (which also loads contacts and suppressions); per
commit tick one transaction carries every dot marker and every outcome (see ``committer``).
Nothing on the hot path runs a statement per message.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from engine.catalog.send_data import CATALOG_VARIABLES, attach, is_alert
from engine.clock import Clock
from engine.config import Settings
from engine.deliver import outcomes, queues
from engine.deliver.committer import GroupCommitter
from engine.deliver.compose import Composer, Identity, check_at_send_time
from engine.deliver.ledger import Ledger, Recovery
from engine.deliver.ledger_proxy import HotLedger, LocalLedger, RemoteLedger
from engine.deliver.limits import RouteLimits, Share
from engine.deliver.model import UNCERTAIN, ClaimBatch, ClaimedIntent, Job, Outcome
from engine.deliver.policy import DeliveryTuning
from engine.deliver.presence import fingerprint
from engine.deliver.relay import RelayConfig
from engine.deliver.route import Route
from engine.deliver.routes import DEFAULT_ROUTE, RouteSpec, route_specs
from engine.deliver.smtp import TransactionResult
from engine.errors import HeaderInvalid, RenderError, StoreError, TemplateInvalid
from engine.render import Renderer
from engine.signing import SigningError, signer_from_settings
from engine.store import Store
from engine.telemetry import Telemetry
from engine.unsubscribe import UnsubscribeTokens

log = logging.getLogger(__name__)

T = TypeVar("T")
_YIELD_EVERY = 16  # messages composed between yields to the event loop
_MAX_NOTIFIED = 50_000  # beyond this, notifications are dropped: the poller finds them anyway


class DeliveryService:
    """Delivers send intents from the store over SMTP; see the module docstring."""

    def __init__(
        self,
        *,
        store: Store,
        renderer: Renderer,
        settings: Settings,
        telemetry: Telemetry,
        clock: Clock,
        node: str,
        tokens: UnsubscribeTokens,
        public_url: str,
        relay: RelayConfig,
        tuning: DeliveryTuning | None = None,
        shop: Mapping[str, Any] | None = None,
        routes: Mapping[str, RouteSpec] | None = None,
        remote_ledger: RemoteLedger | None = None,
    ) -> None:
        """``relay`` is the default route's; ``routes`` every route by name (see
        ``routes.route_specs``; its "default", when present, wins over ``relay``). Without
        ``routes``, the named routes of ``settings`` are built, which needs them to have no
        login (the node reads passwords from the keyring and passes ``routes``)."""
        self.node = node
        self.owner = f"{node}/{secrets.token_hex(4)}"  # this incarnation: the claim fence
        self.tuning = tuning or DeliveryTuning.from_settings(settings.delivery)
        self._store = store
        self._clock = clock
        self._telemetry = telemetry
        self._ledger = Ledger(store, node=node, owner=self.owner)
        # ``shop`` fills the render context's "shop" (name, url, address); default: the display
        # name of sending.from_address.
        identity = Identity.from_settings(settings.sending, public_url=public_url, shop=shop)
        # Keys are loaded and parsed here: a missing or unsafe key stops the start.
        signer = signer_from_settings(settings.dkim)
        if signer is not None and signer.key_for(identity.message_id_domain) is None:
            raise SigningError(
                f"no DKIM key for the sending domain {identity.message_id_domain!r} of "
                f"sending.from_address (keys for: {', '.join(signer.domains)})"
            )
        from engine.tracking import TrackingLinks

        tracker = TrackingLinks.from_settings(
            tokens,
            identity.public_url,
            opens=settings.tracking.opens,
            clicks=settings.tracking.clicks,
        )
        self._composer = Composer(renderer, tokens, identity, signer, tracker)
        # DKIM's RSA operation (~0.6 ms) runs on these threads, off the event loop and in
        # parallel: the cryptography library releases the GIL while it signs.
        self._signing: ThreadPoolExecutor | None = None
        self._signing_workers = 2 if signer is not None else 0
        self._signatures: set[asyncio.Future[Job]] = set()
        # A deliver process on its parent's SQLite file claims and commits through the parent
        # (engine.deliver.ledger_proxy); everything else reads and writes the store itself.
        self._hot: HotLedger = remote_ledger or LocalLedger(self._ledger, self._run_blocking)
        self._committer = GroupCommitter(
            commit=partial(self._hot.commit, owner=self.owner),
            ping=partial(self._hot.ping, owner=self.owner),
            clock=clock,
            telemetry=telemetry,
            lease_seconds=self.tuning.lease_seconds,
        )
        specs = dict(routes) if routes is not None else route_specs(settings, relay)
        specs.setdefault(DEFAULT_ROUTE, RouteSpec(relay))
        self.routes: dict[str, Route] = {
            name: Route(
                name,
                spec.relay,
                self,
                tuning=self.tuning,
                clock=clock,
                limits=spec.limits,
                telemetry=telemetry,
            )
            for name, spec in specs.items()
        }
        self._audits: set[asyncio.Task[None]] = set()
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._inflight: dict[str, ClaimedIntent] = {}
        self._notified: deque[str] = deque()
        self._wakeup = asyncio.Event()
        self._room = asyncio.Event()
        self._stopping = False
        self._stop_event = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._rng = random.Random()

    # -- public interface -------------------------------------------------------------------

    @property
    def composer(self) -> Composer:
        """What renders and builds each message (previews use it, to show the same bytes)."""
        return self._composer

    @property
    def renderer(self) -> Renderer:
        return self._composer.renderer

    @renderer.setter
    def renderer(self, renderer: Renderer) -> None:
        self._composer.renderer = renderer

    @property
    def inflight(self) -> int:
        """Intents claimed by this service and not finished yet."""
        return len(self._inflight)

    @property
    def awaiting_replies(self) -> bool:
        """True while a mail transaction on some route waits for the relay (its envelope or
        its final dot sent): the decide worker lets it finish before a batch (on SQLite)."""
        return any(route.busy for route in self.routes.values())

    def notify(self, intent_ids: Sequence[str]) -> None:
        """Intents just committed as ``queued``: claim them without waiting for the poller.

        Cheap and non-blocking; safe to call from another thread (it hops onto the loop).
        """
        loop = self._loop
        if loop is not None and threading.get_ident() != self._loop_thread:
            loop.call_soon_threadsafe(self.notify, list(intent_ids))
            return
        if self._stopping or len(self._notified) > _MAX_NOTIFIED:
            return
        self._notified.extend(intent_ids)
        self._wakeup.set()

    async def start(self) -> None:
        """Recover abandoned intents, then start the routes, the committer and the claimer."""
        workers = 1 if self._store.is_sqlite else 2  # SQLite has one writer anyway
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="deliver-db")
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._stopping = False
        self._stop_event.clear()
        try:
            recovery = await self._run_blocking(
                lambda: self._ledger.recover(now=self._clock.now(), own_node=True)
            )
        except BaseException:
            self._shutdown_executor()
            raise
        self._count_recovery(recovery)
        if self._signing_workers:
            self._signing = ThreadPoolExecutor(
                max_workers=self._signing_workers, thread_name_prefix="deliver-dkim"
            )
        self._committer.start()
        for route in self.routes.values():
            route.start()
        self._tasks = [
            asyncio.create_task(self._claim_loop(), name="deliver-claim"),
            asyncio.create_task(self._maintenance_loop(), name="deliver-maintenance"),
        ]
        log.info(
            "deliver: started as %s; routes: %s",
            self.owner,
            ", ".join(f"{name} ({route.relay.address})" for name, route in self.routes.items()),
        )

    async def stop(self) -> None:
        """Stop claiming, let in-flight sends finish, hand back the rest, commit, QUIT."""
        self._stopping = True
        self._stop_event.set()
        self._wakeup.set()
        self._room.set()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks = []
        if self._signatures:  # each hands its job back (stopping) or fails it
            await asyncio.gather(*self._signatures, return_exceptions=True)
        if self._signing is not None:
            self._signing.shutdown(wait=True)
            self._signing = None
        for route in self.routes.values():
            await route.close(self.tuning.drain_timeout)
        if self._audits:
            await asyncio.gather(*self._audits, return_exceptions=True)
        leftovers = list(self._inflight.values())
        for intent in leftovers:  # claimed but never handed to a route
            self._finish(outcomes.handed_back(intent, None, None))
        await self._committer.close(self.tuning.drain_timeout)
        self._shutdown_executor()
        self._telemetry.gauge("inflight", 0)

    async def flush(self) -> None:
        """Wait until every outcome recorded so far is committed (tests, operations)."""
        await self._committer.flush()

    # -- routes, for the control API --------------------------------------------------------

    def route(self, name: str) -> Route:
        """The route called ``name``; KeyError naming the known ones otherwise."""
        route = self.routes.get(name)
        if route is None:
            raise KeyError(f"no route named {name!r} (routes: {', '.join(self.routes)})")
        return route

    def route_states(self) -> list[dict[str, Any]]:
        """Every route's address, state, limits and counters (no secrets)."""
        return [route.state() for route in self.routes.values()]

    def set_route_limits(self, name: str, limits: RouteLimits) -> None:
        """Change a route's limits live (in memory: the settings file is not rewritten)."""
        self.route(name).set_limits(limits)

    def route_fingerprints(self) -> dict[str, str]:
        """Each route's name and a digest of its limits (announced by ``presence``)."""
        return {name: fingerprint(route.limits) for name, route in self.routes.items()}

    def set_route_shares(self, shares: Mapping[str, Share]) -> None:
        """This node's part of each route's cluster-wide limits (from ``presence``); routes
        not named keep theirs."""
        for name, share in shares.items():
            route = self.routes.get(name)
            if route is not None:
                route.set_share(share)

    def pause_route(self, name: str, reason: str) -> int:
        """Pause a route in memory; returns how many queued jobs went back to the ledger."""
        return len(self.route(name).pause(reason))

    def resume_route(self, name: str) -> bool:
        """Resume a paused route (False: it was not paused). Intents it handed back come round
        within ``pause_recheck`` seconds."""
        resumed = self.route(name).resume()
        if resumed:
            self._wakeup.set()
        return resumed

    # -- claiming ---------------------------------------------------------------------------

    async def _run_blocking(self, work: Callable[[], T]) -> T:
        if self._executor is None:
            raise StoreError("the delivery service is not running")
        if self._store.inline:
            return work()
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    def _shutdown_executor(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def _claim_loop(self) -> None:
        tuning = self.tuning
        next_poll = 0.0
        failures = 0
        while not self._stopping:
            room = tuning.max_inflight - len(self._inflight)
            # Claim in worthwhile batches: under load, wait until a batch's worth of room is
            # free instead of claiming a few intents at a time (each claim has a fixed cost).
            if room < min(tuning.claim_batch, max(1, tuning.max_inflight // 2)):
                self._room.clear()
                await self._room.wait()
                continue
            down_for = min(route.unavailable_for for route in self.routes.values())
            if down_for > 0:  # nowhere to send: claiming now would only hand them back
                try:
                    await asyncio.wait_for(self._stop_event.wait(), down_for)
                except TimeoutError:
                    pass
                continue
            limit = min(room, tuning.claim_batch)
            ids: list[str] | None = None
            mono = time.monotonic()
            if mono < next_poll:
                if not self._notified:
                    self._wakeup.clear()
                    try:
                        # Not wait_for: see Route._work (a notified claim would start two loop
                        # turns late, each of which may run a whole decide batch first).
                        async with asyncio.timeout(next_poll - mono):
                            await self._wakeup.wait()
                    except TimeoutError:
                        pass
                    continue
                ids = [self._notified.popleft() for _ in range(min(limit, len(self._notified)))]
            try:
                batch = await self._claim(limit, ids)
            except Exception as exc:
                failures += 1
                self._telemetry.count("db_errors_total", stage="deliver")
                log.error("deliver: claiming intents failed: %s", exc)
                await asyncio.sleep(min(5.0, 0.1 * 2**failures))
                continue
            failures = 0
            if ids is None:  # a poll: poll again at once while there is a backlog
                next_poll = mono if len(batch.intents) >= limit else mono + tuning.poll_interval
            if batch.intents:
                await self._dispatch(batch)

    async def _claim(self, limit: int, ids: list[str] | None) -> ClaimBatch:
        now = self._clock.now()
        lease_until = now + self.tuning.lease_seconds
        started = time.perf_counter()
        batch = await self._hot.claim(
            owner=self.owner, now=now, lease_until=lease_until, limit=limit, ids=ids
        )
        if batch.intents:
            self._telemetry.observe("stage_seconds", time.perf_counter() - started, stage="claim")
        # Catalog data (current prices, the cart, recommendations; the alert re-check) only
        # for the intents whose template reads it or that are catalog alerts.
        uses = self._composer.renderer.variables
        wanted = [
            (i.contact_id, i.context)
            for i in batch.intents
            if is_alert(i.context) or uses(i.template_id) & CATALOG_VARIABLES
        ]
        if wanted:
            try:
                await self._run_blocking(lambda: attach(self._store, wanted, now))
            except Exception:  # sent without it: the template shows what the event said
                log.exception("deliver: loading catalog data failed")
        return batch

    async def _dispatch(self, batch: ClaimBatch) -> None:
        now = self._clock.now()
        for index, intent in enumerate(batch.intents):
            self._inflight[intent.id] = intent
            outcome = check_at_send_time(intent, batch, now)
            route = self.routes.get(intent.route)
            if outcome is None and route is None:
                # Never another route: that could send through a relay nobody chose for it.
                known = ", ".join(sorted(self.routes))
                reason = f"unknown route {intent.route!r}: not configured on this node ({known})"
                outcome = outcomes.failed(intent, reason, now)
            if outcome is None and route is not None:
                started = time.perf_counter()
                try:
                    job = self._composer.compose(
                        intent,
                        batch.contacts.get(intent.contact_id),
                        now,
                        sign=self._signing is None,
                    )
                except (RenderError, TemplateInvalid, HeaderInvalid, SigningError) as exc:
                    outcome = outcomes.failed(intent, str(exc), now)
                except Exception as exc:  # a bug must fail one intent, not the worker
                    log.exception("deliver: composing intent %s failed", intent.id)
                    outcome = outcomes.failed(
                        intent, f"internal error: {type(exc).__name__}: {exc}", now
                    )
                else:
                    if job.unsigned is not None and self._signing is not None:
                        self._sign_then_submit(route, job, started)
                    else:
                        self._telemetry.observe(
                            "stage_seconds", time.perf_counter() - started, stage="render"
                        )
                        route.submit(job)
            if outcome is not None:
                self._finish(outcome)
            if index % _YIELD_EVERY == _YIELD_EVERY - 1:
                await asyncio.sleep(0)
        self._telemetry.gauge("inflight", len(self._inflight))

    def _sign_then_submit(self, route: Route, job: Job, started: float) -> None:
        assert self._signing is not None
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._signing, self._composer.sign_job, job)
        self._signatures.add(future)

        def signed(done: asyncio.Future[Job]) -> None:
            self._signatures.discard(done)
            intent = job.intent
            if done.cancelled() or self._stopping:
                self._finish(outcomes.handed_back(intent, None, None))
                return
            error = done.exception()
            if error is not None:
                if not isinstance(error, SigningError):
                    log.error("deliver: signing intent %s failed", intent.id, exc_info=error)
                self._finish(outcomes.failed(intent, str(error), self._clock.now()))
                return
            self._telemetry.observe("stage_seconds", time.perf_counter() - started, stage="render")
            route.submit(job)

        future.add_done_callback(signed)

    def _finish(self, outcome: Outcome) -> None:
        self._committer.record(outcome)
        if self._inflight.pop(outcome.intent_id, None) is not None:
            self._room.set()

    # -- route hooks ------------------------------------------------------------------------

    async def before_dot(self, job: Job) -> bool:
        """Commit ``sending`` for this job (grouped with every other one waiting)."""
        marked = await self._committer.mark_dot(job.intent.id)
        if marked:
            job.dot_at = self._clock.now()
        return marked

    def finished(self, route: Route, job: Job, result: TransactionResult) -> None:
        """Turn a transaction's result into the intent's outcome."""
        intent = job.intent
        now = self._clock.now()
        reply = result.reply
        if reply is not None:
            self._telemetry.count("smtp_replies_total", route=route.name, code=str(reply.code))
        if result.aborted:  # another node owns it now; it is theirs to finish
            log.warning("deliver: intent %s was taken over before its final dot", intent.id)
            if self._inflight.pop(intent.id, None) is not None:
                self._room.set()
            return
        if result.delivered:
            self._telemetry.observe(
                "stage_seconds", time.perf_counter() - result.data_started, stage="smtp"
            )
            self._telemetry.observe("e2e_seconds", max(0.0, now - intent.received_at))
        self._finish(outcomes.after_transaction(job, result, now, self.tuning, self._rng))

    def handed_back(self, jobs: list[Job], reason: str, retry_at: float | None) -> None:
        """Jobs a route did not attempt go back to ``queued`` (not an attempt, not an outcome).

        ``retry_at`` None: due again at once; the reason is kept only when it says something
        about the relay (shutting down is not worth overwriting the last real reply).
        """
        keep = None if retry_at is None else reason
        for job in jobs:
            self._finish(outcomes.handed_back(job.intent, keep, retry_at))

    def crashed(self, job: Job, error: BaseException) -> None:
        """Sending raised: after the dot marker that is uncertain, before it a hand-back."""
        expected = isinstance(error, StoreError | asyncio.CancelledError)
        if not expected and job.dot_at is None:
            log.error("deliver: sending intent %s failed", job.intent.id, exc_info=error)
        self._finish(outcomes.after_crash(job, error, self._clock.now(), hand_back=expected))

    def auto_paused(self, route: Route, reason: str, handed_back: int) -> None:
        """A route paused itself: count it, warn, and persist the pause as a queue control
        (actor "engine", audited as ``route.auto_pause``) so every node holds the route's
        intents in the claim itself, across restarts, until an operator resumes it
        (``queues.resume {route}``); see :meth:`_sync_route_pauses`."""
        self._telemetry.count("route_auto_pauses_total", route=route.name)
        log.warning("deliver: route %s paused itself: %s", route.name, reason)
        now = self._clock.now()
        names = set(self.routes)

        def persist() -> None:
            queues.pause(
                self._store,
                queues.Scope(kind="route", value=route.name),
                actor="engine",
                reason=f"{reason} (node {self.node}, relay {route.relay.address})",
                now=now,
                routes=names,
                action="route.auto_pause",
            )

        async def write() -> None:
            try:
                await self._run_blocking(persist)
            except Exception as exc:
                log.error("deliver: cannot persist the pause of route %s: %s", route.name, exc)

        task = asyncio.create_task(write(), name=f"persist-pause-{route.name}")
        self._audits.add(task)
        task.add_done_callback(self._audits.discard)

    async def _sync_route_pauses(self) -> None:
        """Resume in memory the auto-paused routes whose persisted pause an operator lifted."""
        auto = [route for route in self.routes.values() if route.paused and route.auto_paused]
        if not auto or self._audits:  # a pause still being written counts as held
            return
        held = await self._run_blocking(lambda: queues.paused_routes(self._store))
        for route in auto:
            if route.name not in held:
                log.info("deliver: route %s: its pause was lifted; resuming", route.name)
                self.resume_route(route.name)

    # -- upkeep -----------------------------------------------------------------------------

    async def _maintenance_loop(self) -> None:
        """Gauges every poll interval; lease renewal and recovery every ``renew_every``."""
        tuning = self.tuning
        next_renew = time.monotonic() + tuning.renew_every
        while not self._stopping:
            try:
                await asyncio.wait_for(self._stop_event.wait(), tuning.poll_interval)
            except TimeoutError:
                pass
            if self._stopping:
                return
            try:
                depth = await self._run_blocking(partial(self._ledger.due_count, self._clock.now()))
                self._telemetry.gauge("queue_depth", depth)
                self._telemetry.gauge("inflight", len(self._inflight))
                await self._sync_route_pauses()
                if time.monotonic() >= next_renew:
                    next_renew = time.monotonic() + tuning.renew_every
                    self._committer.renew(list(self._inflight))
                    recover = partial(self._ledger.recover, now=self._clock.now(), own_node=False)
                    recovery = await self._run_blocking(recover)
                    self._count_recovery(recovery)
            except Exception as exc:
                log.error("deliver: upkeep failed: %s", exc)

    def _count_recovery(self, recovery: Recovery) -> None:
        if recovery.requeued or recovery.uncertain:
            log.warning(
                "deliver: recovered %d claimed intents (queued again) and %d in flight at the "
                "final dot (uncertain)",
                recovery.requeued,
                len(recovery.uncertain),
            )
        for _, workflow_id in recovery.uncertain:
            self._telemetry.count("intents_total", outcome=UNCERTAIN, workflow=workflow_id)
