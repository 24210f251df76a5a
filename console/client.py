"""``EngineClient``: the one bridge between NATS (nats-py on the qasync loop) and Qt.

Everything the console knows about engines arrives here: telemetry snapshots on
``metrics.<node>`` (four a second per node) and answers to control requests on
``control.<user>.<node>.<verb>``. nats-py runs on the same (qasync) event loop as Qt, so its
callbacks already run on the GUI thread and can emit signals directly.

The control envelope is re-implemented here on purpose (``engine.control`` pulls in the engine's
runtime; the subject comes from the pure ``engine.access``): request ``{"args": {...}}`` on the
signed-in user's own subject, reply ``{"ok": true, "result": ...}`` or ``{"ok": false, "error":
"plain words"}``. Who the console is, and its role, come from the engine (``whoami``): the
engine checks the role on every request, the console only shows it (docs/access.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import nats
import nats.errors
import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from PySide6.QtCore import QObject, QTimer, Signal

from console.errors import (
    ConsoleError,
    ControlRefused,
    EngineUnreachable,
    NoEngineAnswered,
    NotConnected,
    RequestTimedOut,
)
from console.metrics_model import MetricsModel
from console.nats_errors import unreachable_words
from console.profiles import NatsLogin
from engine.access import LOCAL_ADMIN, control_subject, inbox_prefix

log = logging.getLogger(__name__)

CONNECTING = "connecting"
CONNECTED = "connected"
RECONNECTING = "reconnecting"
DISCONNECTED = "disconnected"

STALE_AFTER_S = 3.0
"""A node whose snapshots stop for longer than this is flagged stale."""


class EngineClient(QObject):
    """Connects to NATS, turns snapshots into signals, and sends control requests.

    ``model`` (a :class:`~console.metrics_model.MetricsModel`) is fed with every snapshot
    before ``metrics_received`` is emitted, so pages can read series from it on their timers.

    Signals:
        metrics_received(str, dict): a snapshot arrived from a node (node name, snapshot).
        connection_changed(str): "connecting", "connected", "reconnecting" or "disconnected".
        nodes_changed(list): the sorted names of every node seen so far, emitted when a node
            appears or its staleness flips (see ``is_stale``).
        stale_changed(str, bool): a node stopped (True) or resumed (False) reporting metrics
            for more than ``STALE_AFTER_S`` seconds.
        alert_event(str, dict): an engine fired or resolved an alert, as it happened
            (``"fired"``/``"resolved"``, the alert); published on ``alerts.<node>``.
        alerts_changed(): the set of active alerts changed (see ``active_alerts``).
        identity_changed(str, str): the engine named the signed-in user and its role
            (``role`` is "" when no engine answered ``whoami``).
    """

    metrics_received = Signal(str, dict)
    alert_event = Signal(str, dict)
    alerts_changed = Signal()
    connection_changed = Signal(str)
    nodes_changed = Signal(list)
    stale_changed = Signal(str, bool)
    identity_changed = Signal(str, str)

    def __init__(
        self,
        *,
        actor: str | None = None,
        model: MetricsModel | None = None,
        stale_after_s: float = STALE_AFTER_S,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        # The NATS user the console signs in as: control subjects carry it, NATS lets it
        # publish under no other name, and the audit log records it.
        self.actor = self._default_actor = actor or LOCAL_ADMIN
        self.role = ""
        self.model = model or MetricsModel(stale_after_s=stale_after_s)
        self.stale_after_s = stale_after_s
        self.url = ""
        self._nc: NatsClient | None = None
        self._sub: Subscription | None = None
        self._state = DISCONNECTED
        self._last_seen: dict[str, float] = {}  # node -> time.monotonic() of its last snapshot
        self._stale: set[str] = set()
        self._alerts: dict[str, list[dict[str, Any]]] = {}  # node -> its active alerts
        self._alert_sub: Subscription | None = None
        self._control_node: str | None = None  # the node mutating verbs went to last
        self._violations: list[str] = []  # NATS permission errors, to explain a silent request
        self._stale_timer = QTimer(self)
        self._stale_timer.setInterval(500)
        self._stale_timer.timeout.connect(self._check_stale)

    # ---------------------------------------------------------------- connection

    @property
    def state(self) -> str:
        """The connection state (see ``connection_changed``)."""
        return self._state

    @property
    def is_connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def connect_to(
        self,
        url: str,
        token: str | None = None,
        *,
        login: NatsLogin | None = None,
        user: str | None = None,
        password: str | None = None,
        nkey_seed: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        """Connect to NATS at ``url`` (comma-separated URLs: a cluster) and subscribe to
        ``metrics.>`` and ``alerts.>``.

        ``login``: how to log in (token, user and password, nkey, creds file, TLS CA); a bare
        ``token`` is the local stack's shorthand, and ``user`` with a ``password`` or an
        ``nkey_seed`` the same as a login of those. An nkey user names itself with ``user``
        too: the control subjects carry the name. Then asks the engine who that is
        (``identity_changed``). Reconnects forever once connected; a first connection that
        fails raises ``EngineUnreachable`` saying why in words (refused, auth failed, timeout,
        name not found, TLS).
        """
        if self._nc is not None:
            raise RuntimeError("already connected; close() first")
        if login is None:
            login = NatsLogin(
                token=token or "",
                user=user or "",
                password=password or "",
                nkey_seed=nkey_seed or "",
            )
        options = login.connect_options()
        self.actor = login.user or self._default_actor
        self.url = url
        self._set_state(CONNECTING)
        first_errors: list[BaseException] = []

        async def on_disconnected() -> None:
            if self._nc is not None and not self._nc.is_closed:
                self._set_state(RECONNECTING)

        async def on_reconnected() -> None:
            self._set_state(CONNECTED)

        async def on_closed() -> None:
            self._set_state(DISCONNECTED)

        async def on_error(exc: Exception) -> None:
            if self._state == CONNECTING:
                first_errors.append(exc)  # why the first connection fails, for the words
            log.debug("NATS error: %s", type(exc).__name__)
            if "permissions violation" in str(exc).lower():
                self._violations.append(str(exc))

        try:
            self._nc = await nats.connect(
                servers=[s.strip() for s in url.split(",") if s.strip()],
                **options,
                inbox_prefix=inbox_prefix(self.actor),
                name=f"campaign-console ({self.actor})",
                connect_timeout=max(1, round(timeout)),
                allow_reconnect=True,
                # nats-py applies this to the first connection too, where -1 would retry
                # forever; it is lifted to "forever" once connected (below).
                max_reconnect_attempts=1,
                reconnect_time_wait=1,
                disconnected_cb=on_disconnected,
                reconnected_cb=on_reconnected,
                closed_cb=on_closed,
                error_cb=on_error,
            )
        except (TimeoutError, nats.errors.Error, OSError, ValueError) as exc:
            self._nc = None
            self._set_state(DISCONNECTED)
            raise EngineUnreachable(unreachable_words(url, exc, first_errors, timeout)) from exc
        # Once connected, an operations console keeps trying to get back: never give up.
        self._nc.options["max_reconnect_attempts"] = -1
        self._sub = await self._nc.subscribe("metrics.>", cb=self._on_metrics)
        self._alert_sub = await self._nc.subscribe("alerts.>", cb=self._on_alert)
        self._stale_timer.start()
        self._set_state(CONNECTED)
        await self.refresh_identity(timeout=timeout)

    async def refresh_identity(self, timeout: float = 5.0) -> str:
        """Ask the engines who the console is (``whoami``); returns the role ("" when no engine
        answered, e.g. none runs yet) and emits ``identity_changed``."""
        try:
            who = await self.request("whoami", timeout=timeout)
        except ConsoleError as exc:
            log.info("whoami: %s", exc)
            role = ""
        else:
            role = str(who.get("role") or "") if isinstance(who, dict) else ""
        self.role = role
        self.identity_changed.emit(self.actor, role)
        return role

    async def stop_intake(self) -> None:
        """Stop taking in snapshots (first step of shutdown); requests still work."""
        subs = (self._sub, self._alert_sub)
        self._sub = self._alert_sub = None
        for sub in subs:
            if sub is None:
                continue
            try:
                await sub.unsubscribe()
            except (nats.errors.Error, OSError):
                log.debug("unsubscribe failed", exc_info=True)

    async def close(self) -> None:
        """Drain the connection (pending requests finish, subscriptions end) and close it."""
        self._stale_timer.stop()
        nc, self._nc = self._nc, None
        self._sub = self._alert_sub = None
        if nc is None or nc.is_closed:
            self._set_state(DISCONNECTED)
            return
        try:
            await nc.drain()
        except (TimeoutError, nats.errors.Error, OSError):
            log.debug("drain failed; closing", exc_info=True)
            with contextlib.suppress(Exception):
                await nc.close()
        self._set_state(DISCONNECTED)

    def forget_engines(self) -> None:
        """Forget every node, metric and alert seen (after ``close()``, before connecting to
        other engines), so nothing of the old connection shows beside the new one."""
        if self._nc is not None:
            raise RuntimeError("still connected; close() first")
        self.model.clear()
        self._last_seen.clear()
        self._stale.clear()
        self._alerts.clear()
        self._control_node = None
        self.url = ""
        self.nodes_changed.emit([])
        self.alerts_changed.emit()

    def _set_state(self, state: str) -> None:
        if state != self._state:
            self._state = state
            self.connection_changed.emit(state)

    # ---------------------------------------------------------------- metrics

    async def _on_metrics(self, msg: Msg) -> None:
        try:
            snapshot = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            log.debug("unreadable snapshot on %s", msg.subject)
            return
        if not isinstance(snapshot, dict):
            return
        node = str(snapshot.get("node") or msg.subject.partition(".")[2])
        snapshot["node"] = node
        self.ingest(snapshot)

    def ingest(self, snapshot: dict[str, Any]) -> None:
        """Take one snapshot as if it had arrived on NATS (also used by tests and replays)."""
        node = str(snapshot["node"])
        self.model.ingest(snapshot)
        self._take_alerts(node, snapshot.get("alerts"))
        is_new = node not in self._last_seen
        self._last_seen[node] = time.monotonic()
        if node in self._stale:
            self._stale.discard(node)
            self.stale_changed.emit(node, False)
            self.nodes_changed.emit(self.nodes())
        elif is_new:
            self.nodes_changed.emit(self.nodes())
        self.metrics_received.emit(node, snapshot)

    # ---------------------------------------------------------------- alerts

    async def _on_alert(self, msg: Msg) -> None:
        try:
            body = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            log.debug("unreadable alert on %s", msg.subject)
            return
        if not isinstance(body, dict) or not isinstance(body.get("alert"), dict):
            return
        event, alert = str(body.get("event") or ""), body["alert"]
        node = str(alert.get("node") or msg.subject.partition(".")[2])
        current = [a for a in self._alerts.get(node, []) if a.get("id") != alert.get("id")]
        if event == "fired":
            current.append(alert)
        self._take_alerts(node, current)
        self.alert_event.emit(event, alert)

    def _take_alerts(self, node: str, alerts: Any) -> None:
        """The active alerts of ``node`` (from its snapshot or an alert message)."""
        if not isinstance(alerts, list):
            return  # an engine without alerting says nothing either way
        kept = [a for a in alerts if isinstance(a, dict) and a.get("id")]
        before = self._alerts.get(node, [])
        self._alerts[node] = kept
        if [a["id"] for a in before] != [a["id"] for a in kept]:
            self.alerts_changed.emit()

    def active_alerts(self) -> list[dict[str, Any]]:
        """Every active alert of every node still reporting, oldest first."""
        alerts = [
            alert
            for node, node_alerts in self._alerts.items()
            if node not in self._stale
            for alert in node_alerts
        ]
        return sorted(alerts, key=lambda a: float(a.get("since") or 0.0))

    def _check_stale(self) -> None:
        now = time.monotonic()
        changed = False
        for node, seen in self._last_seen.items():
            if node not in self._stale and now - seen > self.stale_after_s:
                self._stale.add(node)
                self.stale_changed.emit(node, True)
                changed = True
        if changed:
            self.nodes_changed.emit(self.nodes())

    def nodes(self) -> list[str]:
        """Every node that has reported metrics, sorted (stale ones included)."""
        return sorted(self._last_seen)

    def fresh_nodes(self) -> list[str]:
        """Nodes that reported within ``stale_after_s``."""
        return [n for n in self.nodes() if n not in self._stale]

    def is_stale(self, node: str) -> bool:
        """Whether ``node`` stopped reporting (unknown nodes count as stale)."""
        return node in self._stale or node not in self._last_seen

    def seconds_since(self, node: str | None = None) -> float:
        """Seconds since the last snapshot from ``node`` (None: from any node); inf if never."""
        if node is None:
            seen = max(self._last_seen.values(), default=None)
        else:
            seen = self._last_seen.get(node)
        return float("inf") if seen is None else time.monotonic() - seen

    # ---------------------------------------------------------------- control

    async def request(
        self,
        verb: str,
        args: dict[str, Any] | None = None,
        node: str = "all",
        timeout: float = 5,
    ) -> Any:
        """Send ``verb`` to ``node`` ("all": whichever node answers first); return its result.

        Raises ``ControlRefused`` for ``{"ok": false}``, ``RequestTimedOut``,
        ``NoEngineAnswered`` (nobody listens) or ``NotConnected``.
        """
        nc = self._nc
        if nc is None or nc.is_closed:
            raise NotConnected("Not connected to NATS.")
        body = orjson.dumps({"args": args or {}})
        subject = control_subject(self.actor, node, verb)
        try:
            msg = await nc.request(subject, body, timeout=timeout)
        except nats.errors.NoRespondersError as exc:
            raise NoEngineAnswered(verb, node) from exc
        except (TimeoutError, nats.errors.TimeoutError) as exc:
            if any(subject in v for v in self._violations[-20:]):
                raise ControlRefused(
                    f"NATS did not let {self.actor!r} send it: the console is signed in as "
                    "another user than it names, or the user lacks its NATS permissions",
                    node=None if node == "all" else node,
                    verb=verb,
                ) from exc
            raise RequestTimedOut(verb, node, timeout) from exc
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError) as exc:
            raise NotConnected("The NATS connection is closed.") from exc
        except nats.errors.ConnectionReconnectingError as exc:
            raise NotConnected("NATS is reconnecting; try again in a moment.") from exc
        try:
            reply = orjson.loads(msg.data)
        except orjson.JSONDecodeError as exc:
            raise ControlRefused("the engine sent an unreadable reply", verb=verb) from exc
        if not isinstance(reply, dict):
            raise ControlRefused("the engine sent an unreadable reply", verb=verb)
        if not reply.get("ok"):
            raise ControlRefused(
                str(reply.get("error") or "refused without a reason"),
                node=str(reply["node"]) if reply.get("node") else None,
                verb=verb,
            )
        return reply.get("result")

    def control_node(self) -> str | None:
        """The one node to send queue verbs to: the last one used while it still reports,
        else the first fresh node, else any node seen (None: no node has reported yet)."""
        fresh = self.fresh_nodes()
        if self._control_node in fresh:
            return self._control_node
        if fresh:
            return fresh[0]
        nodes = self.nodes()
        if self._control_node in nodes or (self._control_node and not nodes):
            return self._control_node
        return nodes[0] if nodes else None

    async def request_one(
        self, verb: str, args: dict[str, Any] | None = None, timeout: float = 5
    ) -> Any:
        """Send ``verb`` to exactly one node (see ``control_node``) and return its result.

        Queue controls live in the store, so any one node answers for all of them; on
        ``control.all`` every node would run a mutating verb (docs/CONTRACTS.md, "Queue
        control"). Before any node has reported metrics, a ``ping`` (whoever answers) names
        one.
        """
        node = self.control_node()
        if node is None:
            pong = await self.request("ping", timeout=timeout)
            node = str(pong.get("node") or "") if isinstance(pong, dict) else ""
            if not node:
                raise ControlRefused("the engine did not say its node name", verb=verb)
        self._control_node = node
        return await self.request(verb, args, node=node, timeout=timeout)

    async def request_each(
        self,
        verb: str,
        args: dict[str, Any] | None = None,
        *,
        nodes: list[str] | None = None,
        timeout: float = 5,
    ) -> dict[str, Any | BaseException]:
        """Send ``verb`` to every fresh node (or ``nodes``) at once; result or error per node."""
        targets = nodes if nodes is not None else self.fresh_nodes()
        results = await asyncio.gather(
            *(self.request(verb, args, node=n, timeout=timeout) for n in targets),
            return_exceptions=True,
        )
        return dict(zip(targets, results, strict=True))
