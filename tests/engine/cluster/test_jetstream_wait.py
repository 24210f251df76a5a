"""A node started while JetStream does not answer yet (a NATS server restarting, a cluster
electing its meta leader) waits for it instead of exiting; one that never answers is a clear
error after ``bus.JETSTREAM_WAIT_S``. The chaos test met this: an engine node restarted right
after a NATS node and died on "nats: timeout" while setting up the EVENTS stream."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NatsClient

from engine import bus
from engine.config import load_settings
from engine.errors import BusError
from engine.natsserver import NatsServer, find_binary, free_port
from engine.node import Node


class PlainNats:
    """A nats-server without JetStream: it takes connections, and no one answers $JS.API."""

    def __init__(self, port: int, token: str) -> None:
        self.process = subprocess.Popen(
            [find_binary(), "-a", "127.0.0.1", "-p", str(port), "--auth", token],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[tuple[int, str, PlainNats]]:
    port, token = free_port(), secrets.token_urlsafe(12)
    server = PlainNats(port, token)
    try:
        yield port, token, server
    finally:
        server.stop()


async def connected(url: str, token: str) -> NatsClient:
    for _ in range(100):
        try:
            return await bus.connect(url, token=token)
        except BusError:
            await asyncio.sleep(0.05)
    raise AssertionError(f"no NATS at {url}")


async def test_a_jetstream_that_never_answers_is_a_clear_error(
    plain: tuple[int, str, PlainNats],
) -> None:
    port, token, _ = plain
    nc = await connected(f"nats://127.0.0.1:{port}", token)
    try:
        js = nc.jetstream()
        with pytest.raises(BusError, match=r"^checking: JetStream did not answer within 1 s"):
            await bus.when_jetstream_answers(js.account_info, within=1.0, what="checking")
    finally:
        await nc.close()


async def test_a_node_waits_for_jetstream_then_starts(
    tmp_path: Path, plain: tuple[int, str, PlainNats], caplog: pytest.LogCaptureFixture
) -> None:
    port, token, server = plain
    settings = load_settings(
        None,
        environ={},
        overrides={
            "engine": {"data_dir": str(tmp_path / "data"), "node": "w1"},
            "http": {"listen": "127.0.0.1:0"},
            "nats": {"url": f"nats://127.0.0.1:{port}", "token": token, "partitions": 2},
        },
    )
    node = Node(settings)
    starting = asyncio.create_task(node.start())
    try:
        for _ in range(200):
            if "JetStream is not answering yet" in caplog.text:
                break
            assert not starting.done(), "the node started without JetStream?"
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the node never said it was waiting for JetStream")
        assert not starting.done()
        # The server comes back, now with JetStream, on the same port: the node goes on.
        await asyncio.to_thread(server.stop)
        jetstream = NatsServer(store_dir=tmp_path / "js", port=port, token=token)
        await jetstream.astart()
        try:
            await asyncio.wait_for(starting, timeout=45)
            assert node.partitions == 2
            info = await node.js.stream_info(bus.EVENTS_STREAM)  # type: ignore[union-attr]
            assert info.config.name == bus.EVENTS_STREAM
        finally:
            await node.stop()
            await jetstream.astop()
    finally:
        if not starting.done():
            starting.cancel()
