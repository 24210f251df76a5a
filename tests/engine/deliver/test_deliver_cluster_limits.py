"""Route limits hold across deliver nodes: three engine processes (``--role deliver``), one
real nats-server, one SQLite file, one real SMTP sink. Together they keep to the route's
20/s; when one is killed (SIGKILL) the two survivors take over its share."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import nats.errors
import pytest
from deliver_support import ScriptedSmtp, add_contact, add_intent

from engine import bus
from engine.config import Settings, load_settings
from engine.control import ControlError, request
from engine.deliver.ledger_proxy import LedgerHost
from engine.deliver.processes import DeliverProcesses
from engine.library import seed_library
from engine.natsserver import NatsServer
from engine.store import open_store
from tests.engine.access_support import grant

RATE = 20.0  # the route's per_second, for the whole cluster
BURST = 3.0  # its bucket: a burst of 3 at most (1 per node)
NODES = 3
INTERVAL, TTL = 0.5, 1.5  # presence timings: a dead node is dropped within TTL + INTERVAL / 2
WATCHER = "watcher"  # the viewer the test asks for the routes' shares
TOLERANCE = 2  # transactions: timer granularity and rounding at the window edges


def _settings(tmp_path: Path, sink: ScriptedSmtp) -> Settings:
    return load_settings(
        None,
        environ={},
        overrides={
            "engine": {"data_dir": str(tmp_path / "data"), "node": "cl"},
            # Small claims, so that every node has work for the route all along.
            "delivery": {
                "claim_batch": 5,
                "max_inflight": 10,
                "presence_interval": INTERVAL,
                "presence_ttl": TTL,
            },
            "routes": {
                "relay-b": {
                    "host": "127.0.0.1",
                    "port": sink.port,
                    "tls": "none",
                    "per_second": RATE,
                    "burst": BURST,
                    "connections": 6,
                }
            },
        },
    )


def _queue(settings: Settings, count: int) -> None:
    store = open_store(settings.database_url())
    try:
        seed_library(store, None, time.time())
        add_contact(store, "c1", "ok@example.com")
        grant(store, WATCHER, "viewer")
        now = time.time()
        for n in range(count):
            add_intent(
                store,
                f"ok-{n}@example.com",
                now=now,
                route="relay-b",
                template_id="order-confirmation",
                workflow_id="order-confirmation",
                category="transactional",
                context={"event": {"name": "Order Completed", "properties": {"order_id": n}}},
            )
    finally:
        store.dispose()


async def _shares(nc: bus.NatsClient, nodes: list[str]) -> list[dict[str, Any] | None]:
    out: list[dict[str, Any] | None] = []
    for node in nodes:
        try:
            reply = await request(nc, node, "routes.list", user=WATCHER, timeout=1.0)
        except (ControlError, TimeoutError, nats.errors.Error):
            out.append(None)
            continue
        route = next(r for r in reply["routes"] if r["name"] == "relay-b")
        out.append(route["share"])
    return out


async def _wait_shares(nc: bus.NatsClient, nodes: list[str], members: int, timeout: float) -> float:
    """Seconds until every node in ``nodes`` shares relay-b among ``members``, not held."""
    started = time.monotonic()
    while True:
        shares = await _shares(nc, nodes)
        if all(s is not None and s["members"] == members and not s["held"] for s in shares):
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"shares after {timeout} s: {shares}")
        await asyncio.sleep(0.05)


def _most_in(times: list[float], span: float) -> int:
    """The most of ``times`` in any window of ``span`` seconds."""
    most, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= span:
            first += 1
        most = max(most, last - first + 1)
    return most


@pytest.mark.timeout(180)
async def test_deliver_nodes_keep_to_the_route_rate_together_and_take_over_a_dead_ones_share(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    sink = ScriptedSmtp()
    await sink.start()
    settings = _settings(tmp_path, sink)
    await asyncio.to_thread(_queue, settings, 700)
    nc = await bus.connect(nats_server.url, token=nats_server.token, name="test")
    # The processes' parent node "cl" claims and commits for them (SQLite: one writer).
    store = open_store(settings.database_url())
    host = LedgerHost(nc, store, node="cl")
    await host.start()
    children = DeliverProcesses(
        settings,
        nats_url=nats_server.url,
        nats_token=nats_server.token,
        relay_url=f"smtp://127.0.0.1:{sink.port}",
        count=NODES,
    )
    try:
        children.start()
        await children.wait_ready(nc, timeout=120)
        nodes = children.nodes
        await _wait_shares(nc, nodes, NODES, timeout=10)

        def rcpt_times() -> list[float]:
            return sorted(at for _, at, _ in sink.spans)

        # Together: mail flows at the route's rate, never above it.
        while not sink.spans:
            await asyncio.sleep(0.05)
        first = rcpt_times()[0]
        await asyncio.sleep(max(0.0, first + 6.0 - time.monotonic()))
        before = rcpt_times()
        steady = [t for t in before if first + 1.0 <= t < first + 5.0]
        assert len(steady) >= 0.85 * RATE * 4, f"{len(steady)} in 4 s: the nodes held back"
        assert len(steady) <= RATE * 4 + BURST + TOLERANCE
        assert _most_in(before, 1.0) <= RATE + BURST + TOLERANCE
        assert len(before) <= BURST + RATE * (before[-1] - first) + TOLERANCE

        # One node dies without a word: the others take over its share within TTL + INTERVAL.
        victim = children.procs[0]
        victim.kill()
        killed = time.monotonic()
        took = await _wait_shares(nc, nodes[1:], NODES - 1, timeout=TTL + INTERVAL + 2.0)
        assert took <= TTL + INTERVAL + 0.5, f"the survivors took {took:.2f} s to take over"
        settled = time.monotonic()
        await asyncio.sleep(4.5)
        after = [t for t in rcpt_times() if settled + 0.5 <= t < settled + 4.5]
        assert len(after) >= 0.85 * RATE * 4, f"{len(after)} in 4 s: the share was not taken over"
        assert _most_in(rcpt_times(), 1.0) <= RATE + BURST + TOLERANCE
        assert victim.poll() == -9 and settled - killed == pytest.approx(took, abs=0.5)
    finally:
        await children.stop()
        await host.stop()
        store.dispose()
        await nc.drain()
        await sink.stop()
    # Every message went to one recipient once: nothing twice.
    copies = [sink.copies(f"ok-{n}@example.com") for n in range(700)]
    assert max(copies) == 1
