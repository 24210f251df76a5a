"""The decide stage alone: throughput on a backlog, and latency at a paced rate.

Realistic traffic from ``engine.demo.DemoShop`` (sessions of views, carts, orders, sign-ups)
is published to a real nats-server's EVENTS stream and decided by ``DecideWorker`` with the
starter workflows on a SQLite store (WAL, synchronous=NORMAL) in a temporary directory.

1. Backlog: N events are published first, then the worker starts; events/s until all are
   committed and acked.
2. Paced: R events/s for S seconds with the worker running; publish -> commit latency per event
   is ``stage_seconds{stage="decide"}`` (the events carry no ``receivedAt``, so it is measured
   from the JetStream timestamp the server gave the message when it stored it).

Not a test (pytest does not collect it). Usage:
    .venv/bin/python -m bench.decide [backlog=20000] [rate=1000] [seconds=10]
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import orjson

from bench.harness import ROOT
from engine.bus import DECIDE_CONSUMER, EVENTS_STREAM, connect, ensure_streams
from engine.clock import SystemClock
from engine.decide import DecideWorker, WorkflowRegistry, load_workflow_dir
from engine.demo import DemoShop
from engine.natsserver import NatsServer
from engine.store import open_store
from engine.telemetry import Telemetry


async def publish_all(js: object, shop: DemoShop, count: int) -> None:
    pending = []
    for _ in range(count):
        event = shop.next_event()
        headers = {"Nats-Msg-Id": event["messageId"]}
        pending.append(js.publish(f"events.{event['type']}", orjson.dumps(event), headers=headers))  # type: ignore[attr-defined]
        if len(pending) == 500:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)


async def publish_paced(url: str, token: str, rate: float, total: int) -> None:
    """Publish ``total`` demo events at ``rate``/s; prints the achieved rate."""
    nc = await connect(url, token=token)
    js = nc.jetstream()
    shop = DemoShop(seed=11, shoppers=20_000, active_sessions=256)
    events = shop.events(total)
    t0 = time.perf_counter()
    for k, event in enumerate(events):
        delay = t0 + k / rate - time.perf_counter()
        if delay > 0.0005:
            await asyncio.sleep(delay)
        headers = {"Nats-Msg-Id": event["messageId"]}
        await js.publish(f"events.{event['type']}", orjson.dumps(event), headers=headers)
    print(total / (time.perf_counter() - t0))
    await nc.drain()


async def drained(js: object) -> None:
    while True:
        info = await js.consumer_info(EVENTS_STREAM, DECIDE_CONSUMER)  # type: ignore[attr-defined]
        if not info.num_pending and not info.num_ack_pending:
            return
        await asyncio.sleep(0.005)


async def main(backlog: int, rate: float, seconds: float) -> None:
    print(
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} (other work skews figures)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(store_dir=Path(tmp) / "nats")
        server.start()
        store = open_store(f"sqlite:///{Path(tmp) / 'engine.sqlite3'}")
        nc = await connect(server.url, token=server.token)
        try:
            js = nc.jetstream()
            await ensure_streams(js)
            clock = SystemClock()
            registry = WorkflowRegistry(load_workflow_dir(ROOT / "templates" / "workflows"))
            telemetry = Telemetry("bench")
            intents: list[str] = []
            worker = DecideWorker(
                js=js, store=store, clock=clock, telemetry=telemetry, node="bench",
                workflows=registry, on_intents=intents.extend,
            )  # fmt: skip
            shop = DemoShop(seed=7, shoppers=20_000, active_sessions=256)

            await publish_all(js, shop, backlog)
            started = time.perf_counter()
            await worker.start()
            await drained(js)
            elapsed = time.perf_counter() - started
            hist = telemetry.histograms['db_commit_seconds{stage="decide"}']
            print(
                f"backlog: {backlog} events in {elapsed:.2f} s = {backlog / elapsed:,.0f} events/s"
            )
            mean = backlog / max(hist.count, 1)
            commit_p50 = hist.quantile(0.5) * 1e3
            print(
                f"  batches: {hist.count} (mean {mean:.0f} events), commit p50 {commit_p50:.2f} ms"
            )

            decide = 'stage_seconds{stage="decide"}'
            telemetry.histograms.pop(decide, None)
            telemetry.histograms.pop('db_commit_seconds{stage="decide"}', None)
            total = int(rate * seconds)
            # The paced publisher is another process, so it does not share this one's CPU.
            publisher = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.decide", "--publish", server.url, server.token,
                str(rate), str(total),
                stdout=asyncio.subprocess.PIPE, cwd=ROOT,
            )  # fmt: skip
            out, _ = await publisher.communicate()
            achieved = float(out.decode().strip() or 0)
            await drained(js)
            lat = telemetry.histograms[decide]
            commit = telemetry.histograms['db_commit_seconds{stage="decide"}']
            print(f"paced: {total} events at {achieved:,.0f}/s (asked {rate:,.0f}/s)")
            print(
                f"  publish->commit p50 {lat.quantile(0.5) * 1e3:.2f} ms, "
                f"p99 {lat.quantile(0.99) * 1e3:.2f} ms; batches {commit.count} "
                f"(mean {total / max(commit.count, 1):.1f} events), "
                f"commit p50 {commit.quantile(0.5) * 1e3:.2f} ms"
            )
            print(f"  intents created: {len(intents)}; load average: {os.getloadavg()[0]:.2f}")
            await worker.stop()
        finally:
            await nc.drain()
            store.dispose()
            server.stop()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--publish"]:
        url, token, rate, total = sys.argv[2:6]
        asyncio.run(publish_paced(url, token, float(rate), int(total)))
        raise SystemExit(0)
    args = [float(a) for a in sys.argv[1:]]
    asyncio.run(
        main(
            int(args[0]) if args else 20_000,
            args[1] if len(args) > 1 else 1_000.0,
            args[2] if len(args) > 2 else 10.0,
        )
    )
