"""Issue 8's chaos test: a three-node NATS cluster (JetStream, R3), PostgreSQL, three engine
node processes and an SMTP sink. Under a steady stream of numbered events per contact: SIGKILL
one engine node, then one NATS node, then restart both.

Every accepted event is decided once (one recorded outcome), each contact's events in order;
the sink receives each mail once (only mail in flight at the kill may be ``uncertain``).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine import bus
from tests.engine.cluster.cluster_support import (
    EngineNode,
    Metrics,
    Producer,
    covers_once,
    nats_cluster,
    out_of_order,
    start_all,
    urls,
    wait_processed,
)
from tests.engine.cluster.test_decide_failover import check_mail, settled
from tests.engine.promises_support import Sink

# Three engines, three NATS servers and PostgreSQL on 2 cores: allow a little over 2 minutes.
pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(180)]

PARTITIONS = 8


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    sink = await Sink.start()
    try:
        yield sink
    finally:
        await sink.stop()


async def wait_jetstream(nc: object, timeout: float = 30) -> None:
    """Until the cluster has elected a JetStream meta leader (it answers account info)."""
    js = nc.jetstream()  # type: ignore[attr-defined]
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await js.account_info()
            return
        except Exception:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_engine_and_nats_nodes_die_and_come_back_under_load(
    tmp_path: Path, pg_url: str, sink: Sink
) -> None:
    token = secrets.token_urlsafe(16)
    servers = nats_cluster(tmp_path, 3, token)
    await start_all(servers)
    env = {
        "CAMPAIGN_NATS_PARTITIONS": str(PARTITIONS),
        "CAMPAIGN_NATS_STREAM_REPLICAS": "3",
        "CAMPAIGN_SMTP_CONNECTIONS": "4",
        "CAMPAIGN_DELIVERY_LEASE_SECONDS": "5",
    }
    roles = {"n1": "all", "n2": "all", "n3": "decide"}
    nodes = {
        name: EngineNode(name, role, tmp_path / name, urls(servers), token, pg_url, sink.port, env)
        for name, role in roles.items()
    }
    nc = await bus.connect(urls(servers), token=token)
    metrics = Metrics()
    producer = Producer(nc.jetstream(), contacts=20, rate=60)
    produce: asyncio.Task[None] | None = None
    loop = asyncio.get_running_loop()
    try:
        await wait_jetstream(nc)
        await metrics.follow(nc)
        for node in nodes.values():  # one at a time: the first applies the migrations
            await node.start()
        await metrics.wait_for(
            lambda o: covers_once(o, PARTITIONS) and all(o.get(n) for n in roles)
        )
        produce = asyncio.create_task(producer.run())
        while len(producer.accepted) < 150:
            await asyncio.sleep(0.05)

        await nodes["n2"].kill()
        killed = loop.time()
        await metrics.wait_for(lambda o: covers_once(o, PARTITIONS) and "n2" not in o, timeout=20)
        print(f"engine node killed: partitions moved after {loop.time() - killed:.1f} s")

        servers[0].kill()
        mark = len(producer.accepted)
        while len(producer.accepted) < mark + 150:  # the stream goes on through two NATS nodes
            await asyncio.sleep(0.05)
        await asyncio.to_thread(servers[0].start, 20)
        await nodes["n2"].start()
        await metrics.wait_for(
            lambda o: covers_once(o, PARTITIONS) and all(o.get(n) for n in roles), timeout=30
        )
        mark = len(producer.accepted)
        while len(producer.accepted) < mark + 100:
            await asyncio.sleep(0.05)
        producer.stop()
        await produce

        accepted = set(producer.accepted)
        assert len(accepted) == len(producer.accepted)
        processed = await wait_processed(pg_url, accepted, timeout=60)
        assert not out_of_order(processed)
        intents = await settled(pg_url, len(accepted), timeout=60)
        check_mail(intents, sink, accepted)
        print(f"{len(accepted)} events, {producer.failures} publish retries")
    finally:
        producer.stop()
        if produce is not None and not produce.done():
            produce.cancel()
        await asyncio.gather(*(node.stop() for node in nodes.values()))
        for node in nodes.values():
            node.save_log()
        await nc.close()
        for server in servers:
            server.stop()
