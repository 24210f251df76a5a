"""A node's health checks: judged from what it already counts, published in every snapshot.

The checks' logic on a real ``Telemetry``; then a real node (embedded nats-server, SQLite) whose
relay refuses connections reports its routes failing in the snapshot it publishes.
"""

from __future__ import annotations

import asyncio
import base64
import socket
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from engine import __version__, bus
from engine.config import load_settings
from engine.health import DEGRADED, FAILING, HEALTHY, StoreHealth, routes_check
from engine.node import Node
from engine.telemetry import Telemetry


def test_store_errors_without_a_commit_read_failing_and_beside_commits_degraded() -> None:
    telemetry = Telemetry("n1")
    store = StoreHealth(telemetry, window=10.0)
    assert store.check(now=100.0) == (HEALTHY, "")
    telemetry.observe("db_commit_seconds", 0.002, stage="decide")
    assert store.check(now=101.0) == (HEALTHY, "")

    telemetry.count("db_errors_total", stage="decide")
    telemetry.count("db_errors_total", 2, stage="deliver")
    status, words = store.check(now=102.0)
    assert status == DEGRADED  # a commit (at 101) is within the window beside the errors
    assert words == "3 database errors in the last 10 s"

    # Ten seconds on, only errors: nothing committed while the stages kept failing.
    telemetry.count("db_errors_total", stage="decide")
    assert store.check(now=112.5) == (
        FAILING,
        "1 database errors and no commit in the last 10 s",
    )
    # Commits again and no new error for a window: healthy.
    telemetry.observe("db_commit_seconds", 0.002, stage="deliver")
    assert store.check(now=113.0)[0] == DEGRADED  # recovering: the errors are in the window
    assert store.check(now=123.0) == (HEALTHY, "")


def test_routes_down_or_paused_by_themselves_are_named_and_an_operators_pause_is_not() -> None:
    up = {"name": "a", "down": False, "auto_paused": False, "paused": False}
    held = {"name": "b", "paused": True, "paused_reason": "maintenance", "auto_paused": False}
    down = {"name": "c", "down": True, "down_reason": "connection refused"}
    tripped = {"name": "d", "auto_paused": True, "paused_reason": "error rate 60 %"}
    assert routes_check([up, held]) == (HEALTHY, "")
    assert routes_check([up, down]) == (DEGRADED, "c down: connection refused")
    assert routes_check([down, tripped]) == (
        FAILING,
        "c down: connection refused; d paused itself: error rate 60 %",
    )
    assert routes_check([]) == (HEALTHY, "")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_nodes_snapshot_carries_its_role_version_and_a_failing_route(
    tmp_path: Path,
) -> None:
    settings = load_settings(
        None,
        environ={},
        overrides={
            "engine": {"data_dir": str(tmp_path / "data"), "node": "h1"},
            "http": {"listen": "127.0.0.1:0"},
            "ingest": {"write_key": "wk-test"},
            "smtp": {"url": f"smtp://127.0.0.1:{_closed_port()}"},
        },
    )
    node = Node(settings)
    await node.start()
    snapshots: list[dict[str, Any]] = []
    try:
        nc = await bus.connect(node.nats_url, **node.nats_auth(), name="test")
        got = asyncio.Event()

        async def on_metrics(msg: Any) -> None:
            snapshots.append(orjson.loads(msg.data))
            got.set()

        sub = await nc.subscribe("metrics.h1", cb=on_metrics)
        await asyncio.wait_for(got.wait(), 5)
        first = snapshots[-1]
        assert (first["node"], first["role"], first["version"]) == ("h1", "all", __version__)
        health = first["health"]
        assert (health["nats"], health["store"], health["routes"]) == (HEALTHY,) * 3
        assert health["details"] == {}

        auth = {"Authorization": "Basic " + base64.b64encode(b"wk-test:").decode()}
        order = {
            "userId": "u1",
            "event": "Order Completed",
            "context": {"traits": {"email": "u1@example.com"}},
            "properties": {"order_id": "o1", "total": 5, "currency": "USD"},
        }
        async with (
            aiohttp.ClientSession(headers=auth) as http,
            http.post(f"{node.http_url}/v1/track", json=order) as resp,
        ):
            assert resp.status == 200
        for _ in range(100):  # the send is tried, the relay refuses: the route is down
            if snapshots[-1]["health"]["routes"] != HEALTHY:
                break
            await asyncio.sleep(0.1)
        health = snapshots[-1]["health"]
        assert health["routes"] == FAILING  # the only route
        assert health["details"]["routes"].startswith("default down: ")
        assert health["store"] == HEALTHY and "store" not in health["details"]
        await sub.unsubscribe()
        await nc.drain()
    finally:
        await node.stop()
