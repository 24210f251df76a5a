"""Fixtures for decide tests: a migrated store, a manual clock, a NATS client with the EVENTS
stream, and ``make_stack`` to run a decide worker plus timer service over them."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from decide_support import DecideStack, starters
from nats.aio.client import Client as NatsClient

from engine.bus import connect, ensure_streams
from engine.clock import ManualClock
from engine.decide import WorkflowRegistry
from engine.store import Store

MakeStack = Callable[..., Awaitable[DecideStack]]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def bus(nats_url: str, nats_token: str) -> AsyncIterator[NatsClient]:
    nc = await connect(nats_url, token=nats_token, name="decide-test")
    try:
        await ensure_streams(nc.jetstream())
        yield nc
    finally:
        if nc.is_connected:
            await nc.drain()
        else:
            with contextlib.suppress(ConnectionError):
                await nc.close()


@pytest.fixture
async def make_stack(bus: NatsClient, store: Store, clock: ManualClock) -> AsyncIterator[MakeStack]:
    """``await make_stack(registry=None, store=None)``: a started stack (starter workflows by
    default), stopped at the end of the test."""
    stacks: list[DecideStack] = []

    async def make(
        registry: WorkflowRegistry | None = None, on_store: Store | None = None, batch: int = 256
    ) -> DecideStack:
        target = on_store or store
        reg = registry or starters()
        stack = DecideStack(nc=bus, store=target, clock=clock, registry=reg)
        await stack.start(batch=batch)
        stacks.append(stack)
        return stack

    try:
        yield make
    finally:
        for stack in stacks:
            await stack.stop()
