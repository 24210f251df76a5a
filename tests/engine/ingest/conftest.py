"""Fixtures for ingest tests: a real nats-server with the EVENTS stream and the HTTP service
on a free port, with a write key, telemetry and an unsubscribe callback that records calls."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
from ingest_support import WRITE_KEY, Ingest
from nats.aio.client import Client as NatsClient

from engine.bus import connect, ensure_streams
from engine.ingest.http import HttpService
from engine.ingest.publisher import EventPublisher
from engine.telemetry import Telemetry
from engine.unsubscribe import UnsubscribeTokens


@pytest.fixture
async def bus(nats_url: str, nats_token: str) -> AsyncIterator[NatsClient]:
    nc = await connect(nats_url, token=nats_token, name="ingest-test")
    try:
        await ensure_streams(nc.jetstream())
        yield nc
    finally:
        # A test that killed the server leaves the client reconnecting: drain needs a server.
        if nc.is_connected:
            await nc.drain()
        else:
            # nats-py's close() mid-reconnect may trip over the dead socket; it still closes.
            with contextlib.suppress(ConnectionError):
                await nc.close()


@pytest.fixture
async def ingest(bus: NatsClient) -> AsyncIterator[Ingest]:
    js = bus.jetstream()
    telemetry = Telemetry("test")
    tokens = UnsubscribeTokens(b"0123456789abcdef-test-secret")
    unsubscribed: list[tuple[str, str, str]] = []

    async def record_unsubscribe(contact_id: str, address: str, source: str) -> None:
        unsubscribed.append((contact_id, address, source))

    health: dict[str, object] = {"ok": True, "node": "test"}
    service = HttpService(
        publisher=EventPublisher(js, telemetry, timeout=1.0),
        write_key=WRITE_KEY,
        telemetry=telemetry,
        metrics_text=telemetry.prometheus,
        health=lambda: health,
        unsubscribe=record_unsubscribe,
        tokens=tokens,
        shutdown_timeout=2,
    )
    host, port = await service.start("127.0.0.1", 0)
    url = f"http://{host}:{port}"
    session = aiohttp.ClientSession(url)
    try:
        yield Ingest(url, bus, js, session, telemetry, tokens, unsubscribed, health)
    finally:
        await session.close()
        await service.stop()
