"""Deliver in separate processes: decide announces intents on ``intents.ready``; children send.

Real nats-server, SQLite shared by the processes, the capture inbox; no mocks.
"""

from __future__ import annotations

import asyncio
import base64
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine import bus
from engine.config import load_settings, settings_from_data
from engine.deliver.ledger_proxy import LedgerHost
from engine.deliver.processes import DeliverProcesses, child_settings
from engine.deliver.wakeup import ReadyAnnouncer, listen_for_ready
from engine.errors import ConfigError
from engine.inbox import list_messages
from engine.node import Node


def test_a_child_gets_the_parents_settings_pointed_at_its_services(tmp_path: Path) -> None:
    parent = load_settings(
        None,
        environ={},
        overrides={
            "engine": {"data_dir": str(tmp_path), "node": "n1", "deliver_processes": 2},
            "sending": {"from_address": "Shop <a@shop.example>"},
            "workflows": {"welcome-series": {"gap": "3s"}},
        },
    )
    data = child_settings(
        parent, index=2, nats_url="nats://127.0.0.1:1", nats_token="t0k", relay_url="smtp://x:25"
    )
    child = settings_from_data(data, "test")
    assert (child.engine.role, child.engine.node, child.engine.deliver_processes) == (
        "deliver",
        "n1-deliver2",
        0,
    )
    assert (child.nats.url, child.nats.token, child.smtp.url) == (
        "nats://127.0.0.1:1",
        "t0k",
        "smtp://x:25",
    )
    assert child.database_url() == parent.database_url()
    assert child.sending.from_address == "Shop <a@shop.example>"
    assert child.workflows == {"welcome-series": {"gap": "3s"}}


def test_deliver_processes_are_bounded() -> None:
    with pytest.raises(ConfigError, match=r"engine\.deliver_processes: expected 0 to 16, got 17"):
        load_settings(None, environ={"CAMPAIGN_ENGINE_DELIVER_PROCESSES": "17"})


async def test_each_notice_reaches_one_deliver_node_of_the_group(
    nats_url: str, nats_token: str
) -> None:
    nc = await bus.connect(nats_url, token=nats_token, name="t")
    got: list[tuple[str, list[str]]] = []
    subs = [
        await listen_for_ready(nc, lambda ids, n=name: got.append((n, ids))) for name in ("a", "b")
    ]
    announce = ReadyAnnouncer(nc)
    for n in range(20):
        announce([f"i{n}x", f"i{n}y"])
    announce([])  # nothing to say: nothing published
    await asyncio.to_thread(announce, ["from-a-thread"])  # hops onto the loop
    for _ in range(100):
        if len(got) == 21:
            break
        await asyncio.sleep(0.02)
    for sub in subs:
        await sub.unsubscribe()
    await nc.drain()
    received = sorted(i for _, ids in got for i in ids)
    assert received == sorted([f"i{n}{s}" for n in range(20) for s in "xy"] + ["from-a-thread"])


@pytest.fixture
async def node(tmp_path: Path) -> Any:
    settings = load_settings(
        None,
        environ={},
        overrides={
            "engine": {"data_dir": str(tmp_path / "data"), "node": "p1", "deliver_processes": 2},
            "http": {"listen": "127.0.0.1:0"},
            "ingest": {"write_key": "wk-test"},
        },
    )
    node = Node(settings)
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


async def test_the_node_sends_through_its_deliver_processes_and_stops_them(node: Node) -> None:
    children: DeliverProcesses = node.components["deliver_processes"]
    procs = list(children.procs)
    assert "delivery" not in node.components and children.alive() == 2
    auth = {"Authorization": "Basic " + base64.b64encode(b"wk-test:").decode()}
    batch = {
        "batch": [
            {
                "type": "track",
                "userId": f"u{n}",
                "event": "Order Completed",
                "context": {"traits": {"email": f"u{n}@example.com"}},
                "properties": {"order_id": f"o{n}", "total": 5, "currency": "USD"},
            }
            for n in range(40)
        ]
    }
    async with (
        aiohttp.ClientSession(headers=auth) as http,
        http.post(f"{node.http_url}/v1/batch", json=batch) as resp,
    ):
        assert resp.status == 200
    inbox = node.data_dir / "inbox"
    for _ in range(300):
        if len(list_messages(inbox, limit=500)) >= 40:
            break
        await asyncio.sleep(0.1)
    assert len(list_messages(inbox, limit=500)) == 40
    db = sqlite3.connect(node.data_dir / "engine.sqlite3")
    try:
        rows = db.execute("SELECT status, claimed_by FROM intents").fetchall()
    finally:
        db.close()
    assert len(rows) == 40 and {status for status, _ in rows} == {"sent"}
    assert {owner.split("/")[0] for _, owner in rows} <= {"p1-deliver1", "p1-deliver2"}
    # On SQLite the children claimed and committed through the parent: one writer.
    host: LedgerHost = node.components["ledger_host"]
    assert host.requests >= 2
    await node.stop()
    assert children.procs == []
    assert all(proc.returncode == 0 for proc in procs)  # stopped cleanly, and reaped


def test_each_process_gets_its_share_of_the_pools_and_the_whole_limits(tmp_path: Path) -> None:
    parent = load_settings(
        None,
        environ={},
        overrides={
            "engine": {"data_dir": str(tmp_path), "deliver_processes": 2},
            "smtp": {"connections": 16},
            "routes": {
                "esp": {
                    "host": "relay.example",
                    "per_second": 100,
                    "per_hour": 9001,
                    "connections": 8,
                    "domain_concurrency": 1,
                    "domains": {"gmail.com": {"concurrency": 4, "per_second": 20}},
                }
            },
        },
    )
    data = child_settings(
        parent, index=1, nats_url="nats://x:1", nats_token="t", relay_url="smtp://x:25", count=2
    )
    child = settings_from_data(data, "test")
    esp = child.routes["esp"]
    assert esp.connections == 4 and child.smtp.connections == 8  # pools are split
    # Limits stay whole: the processes share them at run time (presence), like any nodes.
    assert (esp.per_second, esp.per_hour, esp.per_minute) == (100, 9001, 0)
    assert esp.domain_concurrency == 1
    assert esp.domains["gmail.com"] == {"concurrency": 4, "per_second": 20}
    assert parent.routes["esp"].per_second == 100  # the parent's settings are untouched
    assert child.engine.ledger_node == parent.engine.node  # SQLite: the parent writes
    on_postgres = load_settings(
        None,
        environ={},
        overrides={"database": {"url": "postgresql://127.0.0.1/x"}, "engine": {"node": "pg"}},
    )
    data = child_settings(
        on_postgres, index=1, nats_url="nats://x:1", nats_token="t", relay_url="smtp://x:25"
    )
    assert settings_from_data(data, "test").engine.ledger_node == ""
