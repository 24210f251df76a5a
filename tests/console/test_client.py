"""EngineClient against a real nats-server: snapshots become signals, requests use the envelope."""

from __future__ import annotations

import asyncio
from typing import Any

import nats
import orjson
import pytest
from pytestqt.qtbot import QtBot

from console.client import CONNECTED, DISCONNECTED, EngineClient
from console.errors import (
    ControlRefused,
    EngineUnreachable,
    NoEngineAnswered,
    NotConnected,
    RequestTimedOut,
    describe,
)
from console.metrics_model import Metric
from engine.natsserver import NatsServer, free_port
from tests.console.conftest import run, serve_control, wait_until

# The format engine.node publishes (JSON turns the sparse bucket keys into strings).
SNAPSHOT: dict[str, Any] = {
    "node": "n1",
    "ts": 0.0,
    "pid": 42,
    "uptime": 1.0,
    "counters": {"events_processed_total": 0},
    "gauges": {"queue_depth": 3},
    "histograms": {},
    "health": {"node": "n1", "nats": "healthy", "database": "sqlite", "inbox": "x"},
}


async def publish_snapshots(url: str, token: str, count: int, node: str = "n1") -> None:
    import time

    nc = await nats.connect(url, token=token)
    try:
        for i in range(count):
            snap = dict(SNAPSHOT, node=node, ts=time.time())
            snap["counters"] = {"events_processed_total": 25 * i}
            await nc.publish(f"metrics.{node}", orjson.dumps(snap))
            await nc.flush()
            await asyncio.sleep(0.05)
    finally:
        await nc.drain()


def test_snapshots_become_signals_and_series(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop, nats_server: NatsServer
) -> None:
    client = EngineClient()
    states: list[str] = []
    client.connection_changed.connect(states.append)

    async def scenario() -> None:
        await client.connect_to(nats_server.url, nats_server.token)
        with (
            qtbot.waitSignal(client.nodes_changed, timeout=5000) as nodes,
            qtbot.waitSignal(client.metrics_received, timeout=5000) as got,
        ):
            task = asyncio.ensure_future(publish_snapshots(nats_server.url, nats_server.token, 12))
            await wait_until(lambda: got.signal_triggered)
        assert got.args[0] == "n1" and got.args[1]["gauges"]["queue_depth"] == 3
        assert nodes.args == [["n1"]]
        await task
        await wait_until(lambda: client.model.latest(Metric.QUEUE_DEPTH, "n1") == 3)
        assert client.nodes() == ["n1"] and client.fresh_nodes() == ["n1"]
        assert client.seconds_since("n1") < 5
        await client.close()

    run(qloop, scenario())
    assert states == ["connecting", CONNECTED, DISCONNECTED]


def test_a_node_that_stops_reporting_is_flagged_stale(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop, nats_server: NatsServer
) -> None:
    client = EngineClient(stale_after_s=0.6)

    async def scenario() -> None:
        await client.connect_to(nats_server.url, nats_server.token)
        await publish_snapshots(nats_server.url, nats_server.token, 2)
        await wait_until(lambda: client.nodes() == ["n1"])
        with qtbot.waitSignal(client.stale_changed, timeout=5000) as stale:
            await wait_until(lambda: stale.signal_triggered)
        assert stale.args == ["n1", True]
        assert client.is_stale("n1") and client.fresh_nodes() == []
        with qtbot.waitSignal(client.stale_changed, timeout=5000) as back:
            await publish_snapshots(nats_server.url, nats_server.token, 1)
            await wait_until(lambda: back.signal_triggered)
        assert back.args == ["n1", False]
        await client.close()

    run(qloop, scenario())


def test_requests_use_the_envelope_and_map_refusals(
    qloop: asyncio.AbstractEventLoop, nats_server: NatsServer
) -> None:
    client = EngineClient()

    async def scenario() -> None:
        responder, seen = await serve_control(
            nats_server.url,
            nats_server.token,
            "n1",
            {
                "echo": {"ok": True, "result": {"pong": 1}, "node": "n1"},
                "nope": {
                    "ok": False,
                    "error": "limit must be a positive whole number",
                    "node": "n1",
                },
            },
        )
        try:
            await client.connect_to(nats_server.url, nats_server.token)
            assert await client.request("echo", {"a": 1}, node="n1") == {"pong": 1}
            assert client.role == "admin"  # whoami, asked at connect
            # The subject names the signed-in user; the body carries the arguments only.
            assert seen[-1] == {"subject": "control.admin.n1.echo", "args": {"a": 1}}
            assert await client.request("echo") == {"pong": 1}  # control.admin.all.echo
            assert seen[-1]["subject"] == "control.admin.all.echo"
            with pytest.raises(ControlRefused) as refused:
                await client.request("nope", node="n1")
            assert refused.value.message == "limit must be a positive whole number"
            assert refused.value.node == "n1"
            assert "refused (node n1): limit must be" in describe(refused.value)
            with pytest.raises(NoEngineAnswered):
                await client.request("echo", node="elsewhere", timeout=2)
            with pytest.raises(RequestTimedOut) as slow:
                await client.request("silent", node="n1", timeout=0.3)  # subscribed, never answers
            assert "did not answer 'silent' within 0.3 s" in describe(slow.value)
            results = await client.request_each("echo", nodes=["n1", "elsewhere"], timeout=1)
            assert results["n1"] == {"pong": 1}
            assert isinstance(results["elsewhere"], NoEngineAnswered)
        finally:
            await client.close()
            await responder.drain()
        with pytest.raises(NotConnected):
            await client.request("echo")

    run(qloop, scenario())


def test_an_unreachable_nats_is_a_clear_error(qloop: asyncio.AbstractEventLoop) -> None:
    client = EngineClient()
    url = f"nats://127.0.0.1:{free_port()}"
    with pytest.raises(EngineUnreachable) as failed:
        run(qloop, client.connect_to(url, timeout=1))
    host = url.removeprefix("nats://")
    assert describe(failed.value) == (
        f"Nothing accepts connections at {host} (connection refused): is NATS running there,"
        " and is the port right?"
    )
    assert client.state == DISCONNECTED


def test_a_wrong_token_is_named_as_such(
    qloop: asyncio.AbstractEventLoop, nats_server: NatsServer
) -> None:
    client = EngineClient()
    with pytest.raises(EngineUnreachable) as failed:
        run(qloop, client.connect_to(nats_server.url, "not-the-token", timeout=1))
    assert "refused the login (authorization violation)" in describe(failed.value)
    assert "not-the-token" not in describe(failed.value)
    assert client.state == DISCONNECTED and not client.is_connected


def test_the_client_reconnects_after_nats_restarts(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop, nats_server: NatsServer
) -> None:
    client = EngineClient()
    states: list[str] = []
    client.connection_changed.connect(states.append)

    async def scenario() -> None:
        await client.connect_to(nats_server.url, nats_server.token)
        await asyncio.to_thread(nats_server.stop)
        await wait_until(lambda: client.state == "reconnecting", timeout=10)
        await asyncio.to_thread(nats_server.start)
        await wait_until(lambda: client.state == CONNECTED, timeout=15)
        await publish_snapshots(nats_server.url, nats_server.token, 2)
        await wait_until(lambda: client.nodes() == ["n1"], timeout=5)
        await client.close()

    run(qloop, scenario())
    assert states == ["connecting", CONNECTED, "reconnecting", CONNECTED, DISCONNECTED]
