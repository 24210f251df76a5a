"""Cluster-wide limits: each deliver node's share (pure, ManualClock), who is alive (pure,
times given), and the presence announcements over a real nats-server."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping

import pytest
from deliver_support import wait_for

from engine import bus
from engine.clock import ManualClock
from engine.deliver.limits import DomainRule, Limiter, Rate, RouteLimits, Share, has_limits
from engine.deliver.policy import DeliveryTuning
from engine.deliver.presence import BEAT, BYE, HELLO, DeliverPresence, Membership, fingerprint
from engine.errors import ConfigError
from engine.natsserver import NatsServer

LIMITS = RouteLimits(
    rate=Rate(per_second=30, per_minute=10, per_hour=100, burst=60),
    domain_concurrency=5,
    domain_rate=Rate(per_second=3),
    domains={"gmail.com": DomainRule(concurrency=2, rate=Rate(per_minute=7))},
)


def test_shares_divide_rates_and_counts_that_add_up_to_the_limit() -> None:
    parts = [Share(members=3, rank=r).of(LIMITS) for r in range(3)]
    assert [p.rate.per_second for p in parts] == [10, 10, 10]
    assert [p.rate.burst for p in parts] == [20, 20, 20]
    assert sum(p.rate.per_minute for p in parts) == 10  # 4 + 3 + 3
    assert [p.rate.per_minute for p in parts] == [4, 3, 3]
    assert sum(p.rate.per_hour for p in parts) == 100
    assert [p.domain_concurrency for p in parts] == [2, 2, 1]
    assert [p.domain_rate.per_second for p in parts] == [1, 1, 1]
    gmail = [p.for_domain("gmail.com") for p in parts]
    assert [c for c, _ in gmail] == [1, 1, 1]  # 2 among 3: one each, not 0 ("no limit")
    assert [r.per_minute for _, r in gmail] == [3, 2, 2]
    assert Share().of(LIMITS) is LIMITS  # alone: the whole limits
    open_route = RouteLimits()
    assert Share(members=4, rank=1).of(open_route).rate.unlimited
    assert not has_limits(open_route) and has_limits(LIMITS)
    with pytest.raises(ConfigError, match="rank 3 of 3 members"):
        Share(members=3, rank=3)


def test_a_limiter_enforces_its_share_and_keeps_history_when_the_share_changes() -> None:
    clock = ManualClock()
    limits = RouteLimits(rate=Rate(per_second=30, per_minute=10))
    limiter = Limiter(limits, clock, share=Share(members=2, rank=1))
    sent = 0
    while limiter.acquire("a.test") == 0.0:
        limiter.release("a.test")
        sent += 1
    assert sent == 5  # half of the minute's 10
    limiter.set_share(Share())  # the other node left: the whole minute, with our 5 counted
    more = 0
    while limiter.acquire("a.test") == 0.0:
        limiter.release("a.test")
        more += 1
    assert more == 5
    assert limiter.snapshot()["share"] == {"members": 1, "rank": 0, "held": False}
    assert limiter.limits is limits  # the cluster-wide limits are what the operator set
    clock.advance(60)
    limiter.set_share(Share(members=3, rank=0))
    assert limiter.in_force.rate.per_second == 10


def test_a_held_share_stops_a_limited_route_but_not_an_open_one() -> None:
    clock = ManualClock()
    held = Share(held=True)
    limited = Limiter(RouteLimits(rate=Rate(per_second=5)), clock, share=held)
    open_route = Limiter(RouteLimits(), clock, share=held)
    assert limited.acquire("a.test") == math.inf
    assert open_route.acquire("a.test") == 0.0
    limited.set_share(Share())
    assert limited.acquire("a.test") == 0.0


def test_members_join_leave_die_and_a_cut_off_node_holds() -> None:
    routes = {"esp": "f1", "default": "f0"}
    m = Membership("b/2", interval=1.0, ttl=3.0)
    assert m.shares(routes, 0.0)["esp"] == Share(held=True)  # no hello round yet
    m.heard("b/2", HELLO, routes, 0.1)  # our hello came back
    m.heard("a/1", BEAT, {"esp": "f1"}, 0.1)  # an answer to it
    assert m.check(0.5) == ([], False) and m.settled is False  # half an interval after the hello
    assert m.check(0.6) == ([], False) and m.settled is True
    assert m.shares(routes, 0.6) == {
        "esp": Share(members=2, rank=1),
        "default": Share(members=1, rank=0),  # a/1 does not serve it
    }
    assert m.heard("c/3", HELLO, routes, 1.0) is True  # a newcomer
    assert m.shares(routes, 1.0)["esp"] == Share(members=3, rank=1)
    assert m.heard("c/3", BEAT, routes, 1.5) is False  # nothing new
    assert m.heard("c/3", BYE, {}, 2.0) is True  # left: its share is ours at once
    assert m.shares(routes, 2.0)["esp"] == Share(members=2, rank=1)
    m.heard("b/2", BEAT, routes, 2.0)
    m.heard("b/2", BEAT, routes, 3.0)
    # a/1 was last heard at 0.1: still counted at 3.05, dropped past 3.1.
    assert m.check(3.05) == ([], False)
    assert m.check(3.2) == (["a/1"], False)
    assert m.shares(routes, 3.2)["esp"] == Share()
    # Our own announcements stop coming back: past the ttl we hold and start over.
    assert m.check(6.0) == ([], False)
    assert m.check(6.1) == ([], True) and not m.settled
    assert m.shares(routes, 6.1)["esp"].held
    m.heard("b/2", HELLO, routes, 7.0)
    m.check(7.5)
    assert m.shares(routes, 7.5)["esp"] == Share()


def test_members_with_other_limits_are_told_apart() -> None:
    m = Membership("a/1", interval=1.0, ttl=3.0)
    m.heard("b/2", BEAT, {"esp": "x", "default": "d"}, 0.0)
    assert m.differing({"esp": "y", "default": "d"}) == [("b/2", "esp")]
    limits = RouteLimits(rate=Rate(per_second=5))
    assert fingerprint(limits) == fingerprint(RouteLimits(rate=Rate(per_second=5)))
    assert fingerprint(limits) != fingerprint(RouteLimits(rate=Rate(per_second=6)))


def test_presence_timings_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"presence_ttl must be at least twice"):
        DeliveryTuning(presence_interval=1.0, presence_ttl=1.5)
    with pytest.raises(ConfigError, match=r"presence_interval must be positive"):
        DeliveryTuning(presence_interval=0.0)


class _Node:
    """One presence on its own NATS connection, recording the shares it was given."""

    def __init__(self, member: str, routes: Mapping[str, str]) -> None:
        self.member = member
        self.routes = dict(routes)
        self.shares: dict[str, Share] = {}
        self.presence: DeliverPresence | None = None
        self.nc: bus.NatsClient | None = None

    async def start(self, url: str, token: str) -> None:
        self.nc = await bus.connect(url, token=token, name=self.member)
        self.presence = DeliverPresence(
            self.nc,
            member=self.member,
            routes=lambda: self.routes,
            on_change=self.shares.update,
            interval=0.2,
            ttl=0.6,
        )
        await self.presence.start()

    def esp(self) -> Share | None:
        return self.shares.get("esp")


async def test_deliver_nodes_find_each_other_on_nats_and_share(
    nats_url: str, nats_token: str
) -> None:
    nodes = [_Node(f"n{i}/0000000{i}", {"esp": "f"}) for i in range(3)]
    for node in nodes:
        await node.start(nats_url, nats_token)
        assert node.esp() is not None and node.esp().held  # type: ignore[union-attr]
    try:
        await wait_for(
            lambda: [n.esp() for n in nodes] == [Share(members=3, rank=r) for r in range(3)],
            timeout=5,
            what="three members",
        )
        # A clean stop says bye: the others take over at once (well within a ttl).
        first = nodes.pop(0)
        assert first.presence is not None and first.nc is not None
        await first.presence.stop()
        await first.nc.close()
        await wait_for(
            lambda: [n.esp() for n in nodes] == [Share(members=2, rank=r) for r in range(2)],
            timeout=0.5,
            what="two members after a bye",
        )
        # A death says nothing: dropped after the ttl.
        dead = nodes.pop(0)
        assert dead.presence is not None and dead.nc is not None
        assert dead.presence._task is not None
        dead.presence._task.cancel()  # stops announcing, as a killed process would
        await asyncio.gather(dead.presence._task, return_exceptions=True)
        await dead.nc.close()
        await wait_for(lambda: nodes[0].esp() == Share(), timeout=2, what="one member")
    finally:
        for node in nodes:
            assert node.presence is not None and node.nc is not None
            await node.presence.stop()
            await node.nc.close()


async def test_a_node_cut_off_from_nats_holds_its_limited_routes_until_it_is_back(
    nats_server: NatsServer,
) -> None:
    node = _Node("solo/00000001", {"esp": "f"})
    await node.start(nats_server.url, nats_server.token)
    try:
        await wait_for(lambda: node.esp() == Share(), timeout=5, what="settled alone")
        nats_server.kill()
        await wait_for(lambda: node.esp() == Share(held=True), timeout=2, what="held")
        await asyncio.to_thread(nats_server.start)  # same port: the client reconnects
        await wait_for(lambda: node.esp() == Share(), timeout=10, what="back after a hello")
    finally:
        assert node.presence is not None and node.nc is not None
        await node.presence.stop()
        await node.nc.close()
