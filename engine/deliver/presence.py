"""Which deliver nodes are alive, learned on NATS, so that route limits hold cluster-wide.

Every deliver node (a node with role ``all`` or ``deliver``, and each of a node's deliver
processes) announces itself on the core-NATS subject ``deliver.presence`` every
``presence_interval`` seconds: its member id (the delivery service's claim owner,
``<node>/<8 hex>``, so each incarnation is a new member) and, for each route it serves, a
fingerprint of that route's limits. Each node keeps the members it heard from within
``presence_ttl`` seconds; for each route it takes an equal share of the route's limits
(:class:`~engine.deliver.limits.Share`) among the members serving that route, ranked by id.

- Join: a starting node says ``hello``; the others answer with their announcement at once and
  take the newcomer into their shares. The newcomer sends nothing on a limited route until
  ``presence_interval / 2`` after its hello came back (it cannot know its share before).
- Leave: a node that stops says ``bye``; the others take over its share at once.
- Death: a member not heard from for ``presence_ttl`` is dropped (checked every
  ``presence_interval / 2``): the survivors take over its share within
  ``presence_ttl + presence_interval / 2`` of its last announcement.
- Cut off: a node that has not heard its own announcement come back for ``presence_ttl`` (NATS
  down, or this node unreachable) holds its limited routes, since the others are about to
  take over its share; when its announcements come back, it says ``hello`` again and waits as
  a newcomer does.

Core NATS, not JetStream: presence is about now, and a lost announcement only costs a
``presence_ttl`` of caution. Unlimited routes are never held nor shared.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import nats.errors
import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from engine.deliver.limits import RouteLimits, Share, TimeSource

log = logging.getLogger(__name__)

PRESENCE = "deliver.presence"
HELLO, BEAT, BYE = "hello", "beat", "bye"


def fingerprint(limits: RouteLimits) -> str:
    """A short digest of a route's limits: members whose limits differ are told apart."""
    data = orjson.dumps(limits.as_dict(), option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2s(data, digest_size=6).hexdigest()


@dataclass
class _Member:
    routes: dict[str, str]  # route -> fingerprint of its limits
    seen: float


class Membership:
    """The live deliver nodes as one node sees them, and its share of each route. Pure: the
    caller passes the time and the announcements."""

    def __init__(self, me: str, *, interval: float, ttl: float) -> None:
        self.me = me
        self.interval = interval
        self.ttl = ttl
        self.others: dict[str, _Member] = {}
        self._echo = -math.inf  # when our own announcement last came back
        self._hello_back: float | None = None  # when our last hello came back
        self.settled = False

    def in_touch(self, now: float) -> bool:
        """Whether our own announcements come back (we hear what the others hear)."""
        return now - self._echo <= self.ttl

    @property
    def hello_back(self) -> bool:
        """Whether our hello of this round came back."""
        return self._hello_back is not None

    def rejoin(self) -> None:
        """Forget what we knew and wait for a hello round, as when starting."""
        self.others.clear()
        self._hello_back = None
        self.settled = False

    def heard(self, member: str, kind: str, routes: Mapping[str, str], now: float) -> bool:
        """An announcement; True when who serves which route changed."""
        if member == self.me:
            self._echo = now
            if kind == HELLO and self._hello_back is None:
                self._hello_back = now
            return False
        if kind == BYE:
            return self.others.pop(member, None) is not None
        known = self.others.get(member)
        self.others[member] = _Member(dict(routes), now)
        return known is None or set(known.routes) != set(routes)

    def check(self, now: float) -> tuple[list[str], bool]:
        """Drop members not heard from for ``ttl``; settle or fall back as time says.
        Returns (dropped members, True when we just got cut off and must say hello again)."""
        dropped = [m for m, info in self.others.items() if now - info.seen > self.ttl]
        for member in dropped:
            del self.others[member]
        if self.settled and not self.in_touch(now):
            self.rejoin()
            return dropped, True
        back = self._hello_back
        if not self.settled and back is not None and now - back >= self.interval / 2:
            self.settled = True
        return dropped, False

    def shares(self, routes: Iterable[str], now: float) -> dict[str, Share]:
        """Our share of each of ``routes``."""
        held = not (self.settled and self.in_touch(now))
        out = {}
        for route in routes:
            members = sorted([self.me, *(m for m, i in self.others.items() if route in i.routes)])
            out[route] = Share(members=len(members), rank=members.index(self.me), held=held)
        return out

    def differing(self, routes: Mapping[str, str]) -> list[tuple[str, str]]:
        """(member, route) pairs whose limits for the route differ from ours."""
        return sorted(
            (member, route)
            for member, info in self.others.items()
            for route, print_ in info.routes.items()
            if route in routes and routes[route] != print_
        )


class _Monotonic:
    def now(self) -> float:
        return time.monotonic()


class DeliverPresence:
    """Announce this deliver node on ``deliver.presence`` and keep its shares up to date.

    ``routes()`` gives each served route's limits fingerprint (read at every announcement, so
    a live change of limits is announced); ``on_change(shares)`` gets every route's share
    whenever one changes (first during :meth:`start`, held).
    """

    def __init__(
        self,
        nc: NatsClient,
        *,
        member: str,
        routes: Callable[[], Mapping[str, str]],
        on_change: Callable[[dict[str, Share]], None],
        interval: float = 1.0,
        ttl: float = 3.0,
        clock: TimeSource | None = None,
    ) -> None:
        self._nc = nc
        self._routes = routes
        self._on_change = on_change
        self._clock = clock or _Monotonic()
        self.membership = Membership(member, interval=interval, ttl=ttl)
        self._interval = interval
        self._shares: dict[str, Share] = {}
        self._sub: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._warned: set[tuple[str, str, str]] = set()

    @property
    def shares(self) -> dict[str, Share]:
        return dict(self._shares)

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(PRESENCE, cb=self._received)
        self._update()  # held until the hello round is done
        await self._announce(HELLO)
        self._task = asyncio.create_task(self._run(), name="deliver-presence")

    async def stop(self) -> None:
        """Say bye (the others take over this node's share at once) and stop listening."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._sub is not None:
            await self._announce(BYE)
            try:
                await self._sub.unsubscribe()
            except nats.errors.Error as exc:  # closing or reconnecting: nothing to undo
                log.debug("presence: unsubscribe failed: %s", exc)
            self._sub = None

    async def _run(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(self._interval / 2)
            ticks += 1
            dropped, cut_off = self.membership.check(self._clock.now())
            for member in dropped:
                log.warning("deliver node %s stopped announcing itself: taking over", member)
            if cut_off:
                log.warning(
                    "this deliver node no longer hears its own announcements on NATS: holding "
                    "its rate-limited routes until it does"
                )
            self._update()
            if cut_off or not self.membership.hello_back:
                await self._announce(HELLO)  # (again: the first was lost, or we were cut off)
            elif ticks % 2 == 0:
                await self._announce(BEAT)

    async def _announce(self, kind: str) -> None:
        payload = {"member": self.membership.me, "kind": kind, "routes": dict(self._routes())}
        try:
            await self._nc.publish(PRESENCE, orjson.dumps(payload))
        except nats.errors.Error as exc:  # closed or reconnecting: the echo check notices
            log.debug("presence: %s not published: %s", kind, exc)

    async def _received(self, msg: Msg) -> None:
        try:
            data = orjson.loads(msg.data)
            member, kind, routes = data["member"], data["kind"], data.get("routes", {})
            if not isinstance(member, str) or kind not in (HELLO, BEAT, BYE):
                raise ValueError(f"member {member!r}, kind {kind!r}")
            if not isinstance(routes, dict):
                raise ValueError("routes is not a table")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            log.debug("presence: ignoring a malformed announcement: %s", exc)
            return
        mine = member == self.membership.me
        changed = self.membership.heard(member, kind, routes, self._clock.now())
        if changed and not mine:
            log.info("deliver node %s %s", member, "left" if kind == BYE else "is serving")
        if kind == HELLO and not mine:
            await self._announce(BEAT)  # so the newcomer knows us before it sends
        if not mine:
            self._check_limits(member)
        self._update()

    def _check_limits(self, member: str) -> None:
        for other, route in self.membership.differing(self._routes()):
            if other != member:
                continue
            key = (other, route, self.membership.others[other].routes[route])
            if key not in self._warned:
                self._warned.add(key)
                log.warning(
                    "route %s: deliver node %s has other limits than this node; each node "
                    "takes its share of its own (set the same limits on every node)",
                    route,
                    other,
                )

    def _update(self) -> None:
        shares = self.membership.shares(self._routes(), self._clock.now())
        if shares != self._shares:
            self._shares = shares
            self._on_change(dict(shares))
