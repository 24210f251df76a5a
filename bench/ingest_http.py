"""Throughput of POST /v1/track against a real nats-server (server and load in separate processes).

usage: python -m bench.ingest_http [seconds] [concurrency]
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

WRITE_KEY = "bench-key"


async def serve() -> None:
    from aiohttp import web

    from engine.bus import connect, ensure_streams
    from engine.ingest.http import HttpService
    from engine.ingest.publisher import EventPublisher
    from engine.natsserver import NatsServer
    from engine.telemetry import Telemetry

    with tempfile.TemporaryDirectory() as tmp:
        nats = NatsServer(store_dir=Path(tmp) / "nats")
        nats.start()
        nc = await connect(nats.url, token=nats.token)
        js = nc.jetstream()
        await ensure_streams(js)
        telemetry = Telemetry("bench")
        service = HttpService(
            publisher=EventPublisher(js, telemetry),
            write_key=WRITE_KEY,
            telemetry=telemetry,
            metrics_text=telemetry.prometheus,
            health=dict,
        )

        async def stats(_request: web.Request) -> web.Response:
            snap = telemetry.snapshot()
            info = await js.stream_info("EVENTS")
            out = {
                k: {q: v[q] for q in ("count", "p50", "p99")} for k, v in snap["histograms"].items()
            }
            out["stream_messages"] = info.state.messages
            out["cpu_ratio"] = snap["gauges"]["process_cpu_ratio"]
            return web.Response(body=orjson.dumps(out), content_type="application/json")

        service.app.router.add_get("/bench/stats", stats)
        _host, port = await service.start("127.0.0.1", 0)
        print(port, flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await service.stop()
        await nc.drain()
        nats.stop()


async def load(port: int, seconds: float, concurrency: int) -> None:
    import aiohttp

    url = f"http://127.0.0.1:{port}"
    headers = {
        "Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode(),
        "Content-Type": "application/json",
    }
    counter = itertools.count()
    latencies: list[float] = []
    errors = 0
    prefix = os.urandom(4).hex()
    async with aiohttp.ClientSession(
        url, connector=aiohttp.TCPConnector(limit=concurrency)
    ) as session:
        await session.get("/bench/stats")
        deadline = time.perf_counter() + seconds

        batch_size = int(os.environ.get("BENCH_BATCH", "0"))

        def batch_body() -> bytes:
            return orjson.dumps(
                {
                    "batch": [
                        {
                            "type": "track",
                            "userId": f"user-{n % 5000}",
                            "event": "Product Viewed",
                            "messageId": f"{prefix}-{n}",
                            "properties": {"sku": f"SKU-{n % 300}"},
                        }
                        for n in itertools.islice(counter, batch_size)
                    ]
                }
            )

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                if batch_size:
                    started = time.perf_counter()
                    async with session.post("/v1/batch", data=batch_body(), headers=headers) as r:
                        await r.read()
                        errors += r.status != 200
                    latencies.append(time.perf_counter() - started)
                    continue
                n = next(counter)
                body = orjson.dumps(
                    {
                        "userId": f"user-{n % 5000}",
                        "event": "Product Viewed",
                        "messageId": f"{prefix}-{n}",
                        "properties": {"sku": f"SKU-{n % 300}", "price": 19.99, "currency": "EUR"},
                        "context": {"ip": "192.0.2.1", "library": {"name": "bench"}},
                        "timestamp": "2024-05-01T12:00:00.000Z",
                    }
                )
                started = time.perf_counter()
                async with session.post("/v1/track", data=body, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - started)

        async def one() -> None:
            nonlocal errors
            n = next(counter)
            body = orjson.dumps(
                {
                    "userId": f"user-{n % 5000}",
                    "event": "Product Viewed",
                    "messageId": f"{prefix}-{n}",
                    "properties": {"sku": f"SKU-{n % 300}", "price": 19.99, "currency": "EUR"},
                    "context": {"ip": "192.0.2.1", "library": {"name": "bench"}},
                    "timestamp": "2024-05-01T12:00:00.000Z",
                }
            )
            started = time.perf_counter()
            async with session.post("/v1/track", data=body, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    errors += 1
            latencies.append(time.perf_counter() - started)

        async def open_loop(rate: float) -> None:
            # Requests start on schedule whatever the server's speed (no coordinated omission
            # hiding slow responses): one tick per millisecond.
            tasks = set()
            sent = 0
            start = time.perf_counter()
            while (now := time.perf_counter()) < deadline:
                due = int((now - start) * rate)
                while sent < due:
                    task = asyncio.create_task(one())
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    sent += 1
                await asyncio.sleep(0.001)
            await asyncio.gather(*tasks)

        began = time.perf_counter()
        rate = float(os.environ.get("BENCH_RATE", "0"))
        if rate:
            await open_loop(rate)
        else:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
        async with session.get("/bench/stats") as response:
            stats = await response.json()
    latencies.sort()
    n = len(latencies)
    print(
        f"concurrency {concurrency}: {n} requests in {elapsed:.1f} s = {n / elapsed:,.0f} req/s, "
        f"errors {errors}"
    )
    print(
        f"  client-side latency p50 {latencies[n // 2] * 1e3:.2f} ms, "
        f"p99 {latencies[int(n * 0.99)] * 1e3:.2f} ms, max {latencies[-1] * 1e3:.1f} ms"
    )
    for key, value in stats.items():
        if isinstance(value, dict):
            print(
                f"  server {key}: n={value['count']} p50 {value['p50'] * 1e3:.2f} ms "
                f"p99 {value['p99'] * 1e3:.2f} ms"
            )
    print(f"  stream messages: {stats['stream_messages']}, server cpu {stats['cpu_ratio']:.2f}")


def main() -> None:
    if sys.argv[1:2] == ["serve"]:
        if os.environ.get("BENCH_PROFILE"):
            import cProfile
            import pstats

            with cProfile.Profile() as profile:
                asyncio.run(serve())
            pstats.Stats(profile, stream=sys.stderr).sort_stats("tottime").print_stats(35)
        else:
            asyncio.run(serve())
        return
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    concurrency = int(sys.argv[2]) if len(sys.argv) > 2 else 32
    server = subprocess.Popen(
        [sys.executable, __file__, "serve"],
        stdout=subprocess.PIPE,
        cwd=os.getcwd(),
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        asyncio.run(load(port, seconds, concurrency))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)


if __name__ == "__main__":
    main()
