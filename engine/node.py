"""One engine node: wires NATS, the store, and the stages, and runs them until told to stop.

The local stack (the default) embeds a nats-server, SQLite and the capture inbox under the data
directory. With ``--nats``/``--database``/``--smtp`` the same node runs against real services.
Shutdown runs in order: stop intake (HTTP), finish the decide batch, stop timers, drain deliveries,
drain NATS, stop the inbox and the embedded server.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import secrets
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from nats import errors as nats_errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from engine import __version__, bus
from engine.access import LOCAL_ADMIN, SERVICE_USER, VIEWER
from engine.clock import Clock, SystemClock
from engine.config import Settings, parse_hostport
from engine.control import ControlError, ControlServer
from engine.errors import ConfigError
from engine.health import FAILING, HEALTHY, StoreHealth, routes_check
from engine.natsserver import NatsServer, NatsUser
from engine.store import Store, open_store
from engine.telemetry import Telemetry
from engine.tracking import TrackingLinks
from engine.unsubscribe import UnsubscribeTokens, load_or_create_secret

log = logging.getLogger(__name__)

METRICS_INTERVAL_S = 0.25
# Allocations between young-generation collections once running (settle_garbage_collector).
GC_YOUNG_THRESHOLD = 20_000


def read_secret_file(path: Path, *, create: bool = True) -> str:
    """A secret kept in a file only this user can read (generated on first use)."""
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    if not create:
        return ""
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value + "\n")
    return value


SERVICE_SECRET = "nats-engine.secret"
"""The local stack's password for the engines' own NATS user (mode 0600)."""
ADMIN_SECRET = "nats-admin.secret"
"""The local stack's password for its generated admin user (mode 0600)."""


def shop_context(settings: Settings) -> dict[str, Any]:
    """The render context's ``shop`` (name, url, postal address) from the ``[shop]`` settings."""
    shop = settings.shop
    return {"name": shop.name, "url": shop.url, "address": shop.address}


@dataclass
class Connection:
    """How to reach a running local stack; written to ``<data>/engine.json`` (mode 0600).

    ``nats_user``/``nats_password`` sign in as the local stack's generated admin user."""

    nats_url: str
    nats_user: str
    nats_password: str
    http_url: str
    inbox: str
    node: str
    pid: int

    @classmethod
    def load(cls, data_dir: Path) -> Connection | None:
        path = data_dir / "engine.json"
        try:
            raw = orjson.loads(path.read_bytes())
            known = {f: raw[f] for f in cls.__dataclass_fields__}
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
            return None
        return cls(**known)

    def save(self, data_dir: Path) -> None:
        path = data_dir / "engine.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(orjson.dumps(self.__dict__))


@dataclass
class Node:
    """A running engine node. ``start()`` brings everything up; ``stop()`` brings it down."""

    settings: Settings
    clock: Clock = field(default_factory=SystemClock)
    templates_dir: Path | None = None

    nats_server: NatsServer | None = None
    nc: NatsClient | None = None
    js: JetStreamContext | None = None
    store: Store | None = None
    telemetry: Telemetry = field(init=False)
    http_url: str = ""
    inbox_address: str = ""
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    _http: Any = None
    components: dict[str, Any] = field(default_factory=dict)
    partitions: int = 1  # decide partitions of the EVENTS stream in force (docs/cluster.md)
    _store_health: StoreHealth = field(init=False)

    def __post_init__(self) -> None:
        self.telemetry = Telemetry(self.settings.engine.node, self.settings.engine.role)
        self._store_health = StoreHealth(self.telemetry)

    def require_store(self) -> Store:
        """The open store, for control verbs: a ControlError while it is not open."""
        if self.store is None:
            raise ControlError("the store is not open")
        return self.store

    @property
    def data_dir(self) -> Path:
        return self.settings.data_path

    @property
    def nats_url(self) -> str:
        if self.nats_server is not None:
            return self.nats_server.url
        return self.settings.nats.url

    @property
    def nats_token(self) -> str:
        if self.nats_server is not None:
            return self.nats_server.token
        return self.settings.nats.token

    @property
    def service_user(self) -> str:
        """The NATS user the engines sign in as (their pings to each other come from it)."""
        if self.nats_server is not None:
            return SERVICE_USER
        return self.settings.nats.user or SERVICE_USER

    def nats_auth(self) -> dict[str, str]:
        """How this node signs in to NATS (``bus.connect`` keywords)."""
        nats = self.settings.nats
        if self.nats_server is not None:
            password = read_secret_file(self.data_dir / SERVICE_SECRET)
            return {"user": SERVICE_USER, "password": password}
        if nats.nkey_file:
            path = Path(nats.nkey_file).expanduser()
            try:
                return {"nkey_seed": path.read_text("utf-8").strip()}
            except OSError as exc:
                raise ConfigError(
                    f"nats.nkey_file: cannot read {path}: {exc.strerror or exc}"
                ) from None
        if nats.user:
            return {"user": nats.user, "password": nats.password}
        return {"token": nats.token} if nats.token else {}

    async def role_of(self, user: str) -> str | None:
        """The role of a control request's user: the engines' own user may only watch; every
        other user has the role the users table gives it (None: no such user)."""
        if user == self.service_user:
            return VIEWER
        from engine.users import role_of

        store = self.store
        if store is None:
            return None
        return await asyncio.to_thread(role_of, store, user)

    async def sync_nats_users(self) -> bool:
        """Write the users table into the embedded server's configuration and reload it
        (False: NATS is external; ``campaign-engine users nats-config`` prints the block)."""
        server, store = self.nats_server, self.store
        if server is None or store is None:
            return False
        from engine.users import nats_users

        users = [self._service_nats_user(), *await asyncio.to_thread(nats_users, store)]
        await server.areload(users)
        log.info("NATS users reloaded (%d)", len(users))
        return True

    def _service_nats_user(self) -> NatsUser:
        from engine.users import hash_password

        password = read_secret_file(self.data_dir / SERVICE_SECRET)
        return NatsUser(SERVICE_USER, password_hash=hash_password(password, generated=True))

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _ensure_streams(self) -> None:
        settings = self.settings
        assert self.js is not None
        if not settings.nats.partitions:  # 0: adopt the stream's layout
            found = await bus.stream_partitions(self.js)
            self.partitions = found or settings.nats.partition_count()
        await bus.ensure_streams(
            self.js,
            replicas=settings.nats.stream_replicas,
            max_age_days=settings.nats.max_age_days,
            ack_wait=settings.nats.ack_wait,
            partitions=self.partitions,
        )

    async def _start(self) -> None:
        from engine.library import load_library, seed_library

        settings = self.settings
        node = settings.engine.node
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

        # NATS: embedded unless a URL was given.
        if not settings.nats.url:
            log.info("starting the embedded NATS server (JetStream in %s)", self.data_dir / "nats")
            # Users from the store are added once it is open (sync_nats_users below).
            server = NatsServer(
                store_dir=self.data_dir / "nats",
                users=[self._service_nats_user()],
                sync_always=settings.engine.durability == "power",
            )
            await server.astart()
            self.nats_server = server
        auth = self.nats_auth()
        self.nc = await bus.connect(
            self.nats_url,
            name=f"engine-{node}",
            token=auth.get("token"),
            user=auth.get("user"),
            password=auth.get("password"),
            nkey_seed=auth.get("nkey_seed"),
        )
        self.js = self.nc.jetstream()
        # "Automatic" joins the layout a running cluster has (a node started later with
        # --nats must not re-lay the first node's decide consumers); a stream not made yet
        # gets the default: 1 on the embedded server, 16 on an external NATS.
        self.partitions = settings.nats.partition_count()
        await bus.when_jetstream_answers(
            self._ensure_streams, within=bus.JETSTREAM_WAIT_S, what="setting up the EVENTS stream"
        )

        # Store, then the starter workflows and templates on a fresh database.
        log.info("opening the database and applying migrations")
        self.store = await asyncio.to_thread(
            open_store,
            settings.database_url(),
            durability=settings.engine.durability,
            background_checkpoints=True,
            # A deliver process on its parent's SQLite file leaves the WAL to the parent.
            checkpointed_elsewhere=bool(settings.engine.ledger_node),
        )
        self._stack.callback(self.store.dispose)
        if self.nats_server is not None:
            # Zero-config: one generated admin user, loopback only (docs/access.md).
            from engine.users import ensure_local_admin

            admin_password = read_secret_file(self.data_dir / ADMIN_SECRET)
            await asyncio.to_thread(
                ensure_local_admin, self.store, LOCAL_ADMIN, admin_password, now=self.clock.now()
            )
            await self.sync_nats_users()
        await asyncio.to_thread(seed_library, self.store, self.templates_dir, self.clock.now())
        library = await asyncio.to_thread(load_library, self.store, settings)
        self.components["library"] = library
        from engine.segments.build import SegmentBuilder
        from engine.segments.definitions import load_segments
        from engine.segments.membership import SegmentRegistry

        segments = SegmentRegistry(await asyncio.to_thread(load_segments, self.store))
        self.components["segments"] = segments
        builder = SegmentBuilder(self.store, segments, self.clock)
        await builder.start()
        self._stack.push_async_callback(builder.stop)
        self.components["segment_builder"] = builder

        tokens = UnsubscribeTokens(load_or_create_secret(self.data_dir / "unsubscribe.key"))
        self.components["tokens"] = tokens
        host, port = parse_hostport(settings.http.listen, "http.listen")
        public_url = settings.http.public_url.rstrip("/")
        role = settings.engine.role

        from engine.feedback.intake import FeedbackIntake

        feedback = FeedbackIntake(
            self.store,
            self.clock,
            self.telemetry,
            bounce_domain=settings.sending.bounce_domain,
            segments=segments,
        )
        self.components["feedback"] = feedback
        if settings.feedback.imap_host:
            from engine.feedback.imap import ImapPoller

            poller = ImapPoller(settings.feedback, feedback, self.telemetry)
            await poller.start()
            self._stack.push_async_callback(poller.stop)
            self.components["feedback_imap"] = poller

        if role in ("all", "http"):
            from engine.ingest.http import HttpService
            from engine.ingest.publisher import EventPublisher
            from engine.unsubscribes import StoreUnsubscriber

            publisher = EventPublisher(self.js, self.telemetry)
            write_key = settings.ingest.write_key or read_secret_file(self.data_dir / "write-key")
            http = HttpService(
                publisher=publisher,
                write_key=write_key,
                telemetry=self.telemetry,
                metrics_text=self.telemetry.prometheus,
                unsubscribe=StoreUnsubscriber(self.store, self.clock, segments),
                health=self.health,
                tokens=tokens,
                feedback=feedback,
                tracking=TrackingLinks.from_settings(
                    tokens,
                    public_url,
                    opens=settings.tracking.opens,
                    clicks=settings.tracking.clicks,
                ),
            )
            # Bound first so unsubscribe links carry the real port; stopped first in stop().
            bound_host, bound_port = await http.start(host, port)
            self._http = http
            self.http_url = f"http://{bound_host}:{bound_port}"
            self.components["http"] = http

        # The default route: the configured relay, else the local capture inbox.
        from engine.deliver import DeliveryService, RelayConfig

        if settings.smtp.url:
            relay = RelayConfig.from_url(
                settings.smtp.url,
                connections=settings.smtp.connections,
                timeout=settings.smtp.timeout,
            )
        else:
            from engine.inbox import CaptureInbox

            inbox = CaptureInbox(
                self.data_dir / "inbox", keep=settings.inbox.keep, on_message=feedback.handle_mail
            )
            ihost, iport = parse_hostport(settings.inbox.listen, "inbox.listen")
            ihost, iport = await inbox.start(ihost, iport)
            self._stack.push_async_callback(inbox.stop)
            self.components["inbox"] = inbox
            self.inbox_address = f"{ihost}:{iport}"
            relay = RelayConfig(
                host=ihost,
                port=iport,
                tls="none",
                connections=settings.smtp.connections,
                timeout=settings.smtp.timeout,
            )

        # What previews and test sends use (engine/authoring): the same as the deliver stage.
        self.components["relay"] = relay
        self.components["public_url"] = public_url or self.http_url or f"http://{host}:{port}"
        delivery = None
        spawn = settings.engine.deliver_processes if role == "all" else 0
        if spawn:
            from engine.deliver.processes import DeliverProcesses

            relay_url = settings.smtp.url or f"smtp://{relay.host}:{relay.port}"
            if self.store.is_sqlite:  # the children claim and commit through this node
                from engine.deliver.ledger_proxy import LedgerHost

                ledger_host = LedgerHost(self.nc, self.store, node=settings.engine.node)
                await ledger_host.start()
                self._stack.push_async_callback(ledger_host.stop)  # after the children stop
                self.components["ledger_host"] = ledger_host
            children = DeliverProcesses(
                settings,
                nats_url=self.nats_url,
                nats_token=self.nats_token,
                nats_auth=self.nats_auth(),
                relay_url=relay_url,
                count=spawn,
            )
            log.info("starting %d deliver processes", spawn)
            children.start()
            # Stopped before the inbox (pushed earlier), so their last sends still land.
            self._stack.push_async_callback(children.stop)
            await children.wait_ready(self.nc, user=self.service_user)
            self.components["deliver_processes"] = children
        elif role in ("all", "deliver"):
            from engine.deliver.credentials import load_password
            from engine.deliver.routes import (
                known_routes,
                route_specs,
                unknown_routes,
                unknown_template_routes,
            )

            # Passwords come from the OS keyring (blocking: D-Bus on Linux), never from files.
            specs = await asyncio.to_thread(route_specs, settings, relay, load_password)
            known = known_routes(settings)
            for problem in [
                *unknown_routes(library.workflows.active(), known),
                *unknown_template_routes(library.template_routes, known),
            ]:
                log.warning("%s: its intents will fail until the route is configured", problem)
            remote_ledger = None
            if settings.engine.ledger_node:  # a deliver process of a node on SQLite
                from engine.deliver.ledger_proxy import RemoteLedger

                remote_ledger = RemoteLedger(self.nc, self.store, host=settings.engine.ledger_node)
            delivery = DeliveryService(
                store=self.store,
                renderer=library.renderer,
                settings=settings,
                telemetry=self.telemetry,
                clock=self.clock,
                node=node,
                tokens=tokens,
                public_url=self.components["public_url"],
                relay=relay,
                routes=specs,
                shop=shop_context(settings),
                remote_ledger=remote_ledger,
            )
            # Route limits hold cluster-wide: this node takes its share among the deliver nodes
            # it hears on NATS. Started first (held until it knows its share) and stopped
            # after delivery, so its "bye" comes once it sends no more.
            from engine.deliver.presence import DeliverPresence

            presence = DeliverPresence(
                self.nc,
                member=delivery.owner,
                routes=delivery.route_fingerprints,
                on_change=delivery.set_route_shares,
                interval=delivery.tuning.presence_interval,
                ttl=delivery.tuning.presence_ttl,
            )
            await presence.start()
            self._stack.push_async_callback(presence.stop)
            self.components["presence"] = presence
            await delivery.start()
            self._stack.push_async_callback(delivery.stop)
            self.components["delivery"] = delivery
            if role == "deliver":  # decide runs elsewhere and announces new intents
                from engine.deliver.wakeup import listen_for_ready

                ready = await listen_for_ready(self.nc, delivery.notify)
                self._stack.push_async_callback(ready.unsubscribe)

        if delivery is not None:
            on_intents: Callable[[Sequence[str]], None] = delivery.notify
        else:
            from engine.deliver.wakeup import ReadyAnnouncer

            on_intents = ReadyAnnouncer(self.nc)

        if role in ("all", "decide"):
            from engine.catalog.fanout import FanoutService
            from engine.decide import DecideWorker, TimerService
            from engine.decide.partitions import DecidePartitions

            store = self.store

            fanout = FanoutService(
                store=self.store,
                clock=self.clock,
                telemetry=self.telemetry,
                node=node,
                workflows=library.workflows,
                on_intents=on_intents,
            )
            timers = TimerService(
                store=self.store,
                clock=self.clock,
                telemetry=self.telemetry,
                node=node,
                workflows=library.workflows,
                on_intents=on_intents,
                segments=segments,
            )
            js = self.js

            def make_worker(consumer: str, executor: ThreadPoolExecutor) -> DecideWorker:
                return DecideWorker(
                    js=js,
                    store=store,
                    clock=self.clock,
                    telemetry=self.telemetry,
                    node=node,
                    workflows=library.workflows,
                    on_intents=on_intents,
                    on_timer=timers.poke,
                    segments=segments,
                    on_fanout=fanout.poke,
                    urgent=None if delivery is None else lambda: delivery.awaiting_replies,
                    consumer=consumer,
                    executor=executor,
                    lag_interval=0,  # DecidePartitions sums the lag of its partitions
                )

            # This node's share of the EVENTS partitions, one worker each (docs/cluster.md).
            decide = DecidePartitions(
                nc=self.nc,
                node=node,
                partitions=self.partitions,
                make_worker=make_worker,
                telemetry=self.telemetry,
                replicas=settings.nats.stream_replicas,
                ttl=settings.nats.lease_ttl,
            )
            await fanout.start()
            self._stack.push_async_callback(fanout.stop)
            await timers.start()
            self._stack.push_async_callback(timers.stop)
            # A restarted node may wait for its own old leases (same name: reclaimed at once).
            await decide.start(wait=settings.nats.lease_ttl + 1)
            self._stack.push_async_callback(decide.stop)
            self.components["decide"] = decide
            self.components["timers"] = timers
            from engine.broadcasts import BroadcastService

            broadcasts = BroadcastService(
                store=self.store,
                clock=self.clock,
                telemetry=self.telemetry,
                node=node,
                pacing=library.workflows.pacing,
                on_intents=on_intents,
            )
            await broadcasts.start()
            self._stack.push_async_callback(broadcasts.stop)
            self.components["broadcasts"] = broadcasts
            self.components["catalog_fanout"] = fanout

        # Alerts after the stages (their telemetry exists) and before the control API serves
        # alerts.*; stopped before the stages so a shutdown does not read as an outage.
        from engine.alerts import AlertService

        alerts = AlertService(
            settings=settings.alerts,
            telemetry=self.telemetry,
            clock=self.clock,
            node=node,
            store=self.store,
            nc=self.nc,
        )
        await alerts.start()
        self._stack.push_async_callback(alerts.stop)
        self.components["alerts"] = alerts

        control = ControlServer(self.nc, node, roles=self.role_of)
        from engine.operations import register_operations

        register_operations(control, self)
        from engine.segment_operations import follow_segment_changes, register_segment_operations

        register_segment_operations(control, self)
        # Saved segments go live on every node: each reloads on the notice (no restart).
        self._stack.push_async_callback(await follow_segment_changes(self))
        from engine.contact_operations import register_contact_operations

        register_contact_operations(control, self)
        from engine.authoring.operations import (
            follow_template_changes,
            register_template_operations,
        )

        register_template_operations(control, self)
        # Saved templates go live on every node: each reloads on the notice (no restart).
        self._stack.push_async_callback(await follow_template_changes(self))
        from engine.workflow_operations import (
            follow_workflow_changes,
            register_workflow_operations,
        )

        register_workflow_operations(control, self)
        # Saved, enabled and disabled workflows go live on every node: each reloads on the
        # notice (no restart).
        self._stack.push_async_callback(await follow_workflow_changes(self))
        from engine.broadcast_operations import register_broadcast_operations

        register_broadcast_operations(control, self)
        from engine.experiments.operations import register_experiment_operations

        register_experiment_operations(control, self)
        from engine.dry_run.operations import register_dry_run_operations

        dry_runs = register_dry_run_operations(control, self)
        self._stack.push_async_callback(dry_runs.stop)
        self.components["dry_runs"] = dry_runs
        await control.start()
        self._stack.push_async_callback(control.stop)
        self.components["control"] = control

        self._tasks.append(asyncio.create_task(self._publish_metrics(), name="metrics"))
        if role in ("all", "deliver"):
            from engine.deliverability import publish_gauges

            rates = publish_gauges(self.store, self.clock, self.telemetry)
            self._tasks.append(asyncio.create_task(rates, name="deliverability"))
        if role in ("all", "decide"):
            from engine.retention import run_retention

            retention = run_retention(
                self.store,
                self.clock,
                self.telemetry,
                stream_max_age_days=settings.nats.max_age_days,
                activity_days=settings.engine.activity_days,
            )
            self._tasks.append(asyncio.create_task(retention, name="retention"))
            from engine.experiments.operations import run_auto_promotion

            promotion = run_auto_promotion(self)
            self._tasks.append(asyncio.create_task(promotion, name="experiment-promotion"))
        if self.nats_server is not None:
            Connection(
                nats_url=self.nats_url,
                nats_user=LOCAL_ADMIN,
                nats_password=read_secret_file(self.data_dir / ADMIN_SECRET),
                http_url=self.http_url,
                inbox=self.inbox_address,
                node=node,
                pid=os.getpid(),
            ).save(self.data_dir)

    def health(self) -> dict[str, Any]:
        """What ``/healthz``, ``ping`` and every metrics snapshot say about this node.

        The checks (``nats``, ``store``, and ``routes`` on a node that delivers) use only what
        the node already knows (engine/health.py): this runs four times a second.
        """
        nc = self.nc
        connected = nc is not None and nc.is_connected
        report: dict[str, Any] = {
            "ok": connected and self.store is not None,
            "node": self.settings.engine.node,
            "role": self.settings.engine.role,
            "nats": HEALTHY if connected else FAILING,
            "database": self.store.dialect if self.store is not None else None,
            "http": self.http_url,
            "inbox": self.inbox_address,
        }
        details: dict[str, str] = {}
        report["store"], details["store"] = (
            self._store_health.check() if self.store is not None else (FAILING, "not open")
        )
        delivery = self.components.get("delivery")
        if delivery is not None:
            report["routes"], details["routes"] = routes_check(delivery.route_states())
        report["details"] = {check: words for check, words in details.items() if words}
        return report

    async def _publish_metrics(self) -> None:
        subject = f"metrics.{self.settings.engine.node}"
        while True:
            await asyncio.sleep(METRICS_INTERVAL_S)
            nc = self.nc
            if nc is None or not nc.is_connected:
                continue
            snapshot = self.telemetry.snapshot()
            snapshot["version"] = __version__
            snapshot["health"] = self.health()
            alerts = self.components.get("alerts")
            if alerts is not None:
                snapshot["alerts"] = alerts.active()
            try:
                await nc.publish(subject, orjson.dumps(snapshot, option=orjson.OPT_NON_STR_KEYS))
            except (OSError, ConnectionError, TimeoutError, nats_errors.Error):
                # Reconnecting: the next tick publishes again.
                log.debug("metrics publish failed", exc_info=True)

    async def stop(self) -> None:
        # Stop intake first, so nothing new arrives while the stages drain.
        http, self._http = self._http, None
        if http is not None:
            await http.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        # Components first (reverse start order), then NATS, then the embedded server & store.
        nc, self.nc = self.nc, None
        stack, self._stack = self._stack, contextlib.AsyncExitStack()
        try:
            # Components stop (and flush) while NATS is still connected; then NATS drains.
            await stack.aclose()
        finally:
            if nc is not None and not nc.is_closed:
                try:
                    await nc.drain()
                except Exception:  # reconnecting: drain is refused, close instead
                    with contextlib.suppress(Exception):
                        await nc.close()
        if self.nats_server is not None:
            self.nats_server.stop()
            self.nats_server = None
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / "engine.json").unlink()


def settle_garbage_collector() -> None:
    """Once a node has started: move what start-up built (modules, compiled templates, the
    schema, the workflows) out of the collector's sight (``gc.freeze``), and collect the young
    generation less often. The hot path allocates many short-lived objects and few cycles; the
    default threshold (700) ran a collection every few events, each walking the survivors."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)


async def run_node(settings: Settings, *, demo_rate: float = 0.0) -> int:
    """Run a node until cancelled (Ctrl-C), printing where its services are."""
    node = Node(settings)
    await node.start()
    settle_garbage_collector()
    try:
        print(f"Campaign engine '{settings.engine.node}' is running ({settings.engine.role}).")
        print(f"  data        {node.data_dir}")
        print(f"  NATS        {node.nats_url}")
        if node.http_url:
            print(
                f"  HTTP API    {node.http_url}/v1/track"
                f"  (write key in {node.data_dir / 'write-key'})"
            )
            print(f"  metrics     {node.http_url}/metrics")
        if node.inbox_address:
            print(f"  inbox       smtp://{node.inbox_address}  (campaign-engine inbox list)")
        print("Press Ctrl-C to stop.", flush=True)
        if demo_rate > 0 and node.js is not None:
            from engine.demo import DEFAULT_DOMAINS, SAFE_DOMAINS, DemoShop, run_demo

            # Simulated shoppers get consumer-mail domains only when mail stays in the local
            # inbox: behind a real relay, invented addresses at gmail.com could reach people.
            domains = SAFE_DOMAINS if settings.smtp.url else DEFAULT_DOMAINS
            print(f"Demo traffic: {demo_rate:g} events/s", flush=True)
            await run_demo(
                node.js,
                rate=demo_rate,
                duration=None,
                shop=DemoShop(domains=domains),
                backlog=lambda: node.telemetry.gauges.get("consumer_lag", 0.0),
            )
        await asyncio.Event().wait()
    finally:
        print("Stopping...", flush=True)
        await asyncio.shield(node.stop())
    return 0
