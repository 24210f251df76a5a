"""End-to-end benchmark: events in over NATS -> decide -> render -> ledger -> SMTP to smtp-sink.

    python -m bench.pipeline                       # 1,000 events/s realistic mix, 20 s
    python -m bench.pipeline --scenario orders --rate 2500
    python -m bench.pipeline --durability power
    python -m bench.pipeline --scenario orders --rate 2500 --deliver-processes 1 \
        --smtp-connections 128 --max-inflight 2048 --claim-batch 256   # throughput settings

Prints, for the engine (a real `campaign-engine run` process with its embedded nats-server and
SQLite) and for the naive baseline measured in the same run: sustained emails/s, the latency from
the moment the producer published an event to the relay's 250 reply (p50/p95/p99, taken from the
ledger's accepted_at), engine CPU and peak RSS; the engine/baseline ratio; and Postfix's
smtp-source -> smtp-sink as the C reference for this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.harness import ROOT, ProcessSample, SmtpSink, percentile, smtp_source_path
from engine import bus
from engine.ids import new_id
from engine.natsserver import NatsServer

VENV_BIN = Path(sys.executable).parent


@dataclass
class Result:
    label: str
    published: int
    sent: int
    emails_per_s: float
    latencies: list[float]
    cpu: float = float("nan")
    peak_rss: int = 0
    notes: str = ""

    def line(self) -> str:
        p = [percentile(self.latencies, q) * 1000 for q in (0.5, 0.95, 0.99)]
        cpu = f"{self.cpu * 100:5.0f}%" if self.cpu == self.cpu else "    -"
        rss = f"{self.peak_rss / 2**20:6.0f} MiB" if self.peak_rss else "       -"
        return (
            f"{self.label:<22} {self.published:>8,} {self.sent:>8,} {self.emails_per_s:>9,.0f}"
            f" {p[0]:>8.2f} {p[1]:>8.2f} {p[2]:>8.2f} {cpu} {rss}  {self.notes}"
        )


HEADER = (
    f"{'':<22} {'events':>8} {'emails':>8} {'emails/s':>9} {'p50 ms':>8} {'p95 ms':>8}"
    f" {'p99 ms':>8}   cpu  peak RSS"
)


def order_event(i: int, now: float) -> dict[str, Any]:
    """An Order Completed from a new customer: exactly one order confirmation each."""
    user = f"bench-{i}"
    return {
        "type": "track",
        "event": "Order Completed",
        "userId": user,
        "messageId": new_id(),
        "traits": {"email": f"{user}@example.com", "first_name": "Ada"},
        "context": {"traits": {"email": f"{user}@example.com", "first_name": "Ada"}},
        "properties": {
            "order_id": f"o-{i}",
            "total": 42.5,
            "revenue": 40.0,
            "currency": "USD",
            "products": [
                {"product_id": "p1", "name": "Linen shirt", "price": 39.0, "quantity": 1},
                {"product_id": "p2", "name": "Socks", "price": 3.5, "quantity": 1},
            ],
            "bench_sent_at": now,
        },
    }


class Producer:
    """Publishes events at a fixed rate to JetStream, pipelining the acks."""

    def __init__(self, scenario: str, seed: int = 7) -> None:
        self.scenario = scenario
        self.count = 0
        self._shop: Any = None
        if scenario == "mix":
            from engine.demo import DemoShop

            self._shop = DemoShop(seed=seed)

    def next(self, now: float) -> dict[str, Any]:
        self.count += 1
        if self._shop is None:
            return order_event(self.count, now)
        event: dict[str, Any] = self._shop.next_event()
        event.setdefault("properties", {})["bench_sent_at"] = now
        return event

    async def run(self, js: Any, rate: float, duration: float) -> int:
        """Publish for ``duration`` seconds; every PubAck is awaited before returning.

        JetStream's asynchronous publish (one reply subscription for all acks, as ``nats
        bench`` does) rather than a task and an inbox per event: the producer shares the
        machine's two cores with the engine, and the per-event task cost a fifth of a core
        at 2,500 events/s.
        """
        tick = 0.005
        start = time.monotonic()
        sent = 0
        acks: list[asyncio.Future[Any]] = []
        while (elapsed := time.monotonic() - start) < duration:
            due = int(elapsed * rate) - sent
            for _ in range(due):
                event = self.next(time.time())
                data = orjson.dumps(event)
                acks.append(
                    await js.publish_async(
                        f"events.{event['type']}", data, headers={"Nats-Msg-Id": event["messageId"]}
                    )
                )
                sent += 1
            acks = [a for a in acks if not a.done() or a.cancelled() or a.exception() is not None]
            await asyncio.sleep(tick)
        await asyncio.gather(*acks)  # raises if the stream refused one
        return sent


def ledger_latencies(db_path: Path, since: float) -> tuple[int, list[float], list[float]]:
    """(sent, latencies, accept times) of the intents whose events were published after
    ``since`` (the accept times sorted)."""
    db = sqlite3.connect(db_path)
    try:
        rows = db.execute(
            "SELECT accepted_at, context FROM intents"
            " WHERE status='sent' AND accepted_at IS NOT NULL"
        ).fetchall()
    finally:
        db.close()
    latencies: list[float] = []
    accepts: list[float] = []
    for accepted_at, context in rows:
        ctx = orjson.loads(context) if isinstance(context, str | bytes) else context
        props = ((ctx or {}).get("event") or {}).get("properties") or {}
        sent_at = props.get("bench_sent_at")
        if sent_at is not None and sent_at >= since:
            latencies.append(accepted_at - float(sent_at))
            accepts.append(accepted_at)
    accepts.sort()
    return len(rows), latencies, accepts


def window_rates(accepts: list[float], start: float, width: float = 10.0) -> str:
    """The slowest and fastest ``width``-second window of accepted mails (whole windows only):
    a rate held through the run, not an average that hides a stall."""
    if not accepts:
        return "no windows"
    counts = [0] * (int((accepts[-1] - start) // width) + 1)
    for accepted_at in accepts:
        counts[int((accepted_at - start) // width)] += 1
    whole = counts[:-1] or counts
    return f"per {width:g} s: {min(whole) / width:,.0f}-{max(whole) / width:,.0f} emails/s"


def ledger_open(db_path: Path) -> int:
    db = sqlite3.connect(db_path)
    try:
        (n,) = db.execute(
            "SELECT count(*) FROM intents WHERE status IN ('queued','claimed','sending')"
        ).fetchone()
    finally:
        db.close()
    return int(n)


async def engine_stages(nc: Any) -> str:
    """The engine's own per-stage p50/p99 (from its telemetry), to show where time goes."""
    from engine.access import SERVICE_USER
    from engine.control import request

    snap = await request(nc, "bench", "metrics", user=SERVICE_USER)
    parts = []
    for key, hist in sorted(snap["histograms"].items()):
        if key.startswith(("stage_seconds", "db_commit_seconds", "e2e_seconds")):
            name = key.replace("stage_seconds", "").replace("_seconds", "")
            parts.append(f"{name} {hist['p50'] * 1000:.1f}/{hist['p99'] * 1000:.1f}")
    return "engine p50/p99 ms: " + ", ".join(parts)


@contextlib.asynccontextmanager
async def running_engine(
    args: argparse.Namespace, sink: SmtpSink, workdir: Path
) -> AsyncIterator[EngineUnderTest]:
    """A real ``campaign-engine run`` process sending to ``sink``; SIGINT on the way out."""
    data = workdir / f"engine-{args.durability}"
    cmd = [
        str(VENV_BIN / "campaign-engine"),
        "run",
        "--data-dir",
        str(data),
        "--smtp",
        f"smtp://127.0.0.1:{sink.port}",
        "--http",
        "127.0.0.1:0",
        "--durability",
        args.durability,
        "--node",
        "bench",
    ]
    env = {
        **os.environ,
        "CAMPAIGN_WORKFLOWS_ABANDONED_CART_DELAY": "30m",
        "CAMPAIGN_ENGINE_DELIVER_PROCESSES": str(args.deliver_processes),
        **{
            name: str(value)
            for name, value in (
                ("CAMPAIGN_SMTP_CONNECTIONS", getattr(args, "smtp_connections", None)),
                ("CAMPAIGN_DELIVERY_MAX_INFLIGHT", getattr(args, "max_inflight", None)),
                ("CAMPAIGN_DELIVERY_CLAIM_BATCH", getattr(args, "claim_batch", None)),
            )
            if value
        },
        "CAMPAIGN_ENGINE_EVENT_LOOP": getattr(args, "event_loop", "uvloop"),
    }
    # The engine's output goes to a file: a pipe no one reads fills up and stalls the engine on
    # its next log line.
    log_path = data.parent / f"{data.name}.log"
    log_file = log_path.open("wb")
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, not on a hot path
        cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env
    )
    try:
        conn_file = data / "engine.json"
        deadline = time.monotonic() + 60
        conn: dict[str, Any] = {}
        while not conn:
            if proc.poll() is not None or time.monotonic() > deadline:
                out = log_path.read_text(errors="replace")[-4000:]
                raise SystemExit(f"engine did not start:\n{out}")
            await asyncio.sleep(0.1)
            try:  # written once the node is up; may be caught half-written
                conn = orjson.loads(conn_file.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                conn = {}
        # The producer publishes events as the engines' own NATS user (docs/access.md).
        from engine.access import SERVICE_USER
        from engine.node import SERVICE_SECRET, read_secret_file

        password = read_secret_file(data / SERVICE_SECRET, create=False)
        nc = await bus.connect(conn["nats_url"], user=SERVICE_USER, password=password, name="bench")
        try:
            yield EngineUnderTest(proc, nc, nc.jetstream(), data / "engine.sqlite3")
        finally:
            await nc.drain()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log_file.close()


@dataclass
class EngineUnderTest:
    proc: subprocess.Popen[bytes]
    nc: Any
    js: Any
    db_path: Path

    async def drained(self, timeout: float = 180.0) -> bool:
        """Wait until the decide consumer has nothing pending and no intent is on its way."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = await self.js.consumer_info(bus.EVENTS_STREAM, bus.DECIDE_CONSUMER)
            if (
                info.num_pending == 0
                and info.num_ack_pending == 0
                and not ledger_open(self.db_path)
            ):
                return True
            await asyncio.sleep(0.25)
        return False


async def bench_engine(args: argparse.Namespace, sink: SmtpSink, workdir: Path) -> Result:
    async with running_engine(args, sink, workdir) as engine:
        js = engine.js
        sampler = ProcessSample(engine.proc.pid)
        producer = Producer(args.scenario)
        # Warm up (templates compiled, connections open), then measure.
        await producer.run(js, min(args.rate, 200), 2.0)
        await asyncio.sleep(1.0)
        since = time.time()
        sampler.start()

        async def sample() -> None:
            while True:
                sampler.sample()
                await asyncio.sleep(0.5)

        sampling = asyncio.create_task(sample())
        published = await producer.run(js, args.rate, args.duration)
        cpu = sampler.cpu_ratio()
        await engine.drained()
        sampling.cancel()
        stages = await engine_stages(engine.nc)
        sent, latencies, accepts = ledger_latencies(engine.db_path, since)
        measured = len(latencies)
        window = max((accepts[-1] if accepts else since) - since, 1e-9)
        return Result(
            label=f"engine ({args.durability}"
            + (f", +{args.deliver_processes} deliver" if args.deliver_processes else "")
            + (f", {args.smtp_connections} conns" if getattr(args, "smtp_connections", 0) else "")
            + ")",
            published=published,
            sent=measured,
            emails_per_s=measured / window,
            latencies=latencies,
            cpu=cpu,
            peak_rss=sampler.peak_rss,
            notes=f"{window_rates(accepts, since)}; {sent - measured:,} warm-up mails not counted;"
            f" {stages}",
        )


async def bench_naive(args: argparse.Namespace, sink: SmtpSink, workdir: Path) -> Result:
    from bench.naive import run_naive

    server = NatsServer(store_dir=workdir / "naive-nats")
    server.start()
    try:
        nc = await bus.connect(server.url, token=server.token, name="bench-naive")
        js = nc.jetstream()
        await bus.ensure_streams(js)
        stop = asyncio.Event()
        latencies: list[float] = []
        started = time.time()
        # Measured over the load plus as long again: a sustained rate, not a drain time.
        until = time.monotonic() + 2 * args.duration
        consumer = asyncio.create_task(
            run_naive(
                server.url,
                server.token,
                ("127.0.0.1", sink.port),
                workdir / "naive.db",
                stop,
                latencies,
                until,
            )
        )
        producer = Producer(args.scenario)  # the same events the engine got
        published = await producer.run(js, args.rate, args.duration)
        stop.set()
        sent = await asyncio.wait_for(consumer, timeout=args.duration * 3 + 30)
        elapsed = time.time() - started
        await nc.drain()
        return Result(
            "naive baseline",
            published,
            sent,
            sent / elapsed,
            latencies,
            notes="1 connection, email.message, commit per row",
        )
    finally:
        server.stop()


def c_reference(sink: SmtpSink, messages: int = 50_000) -> str:
    source = smtp_source_path()
    if source is None:
        return "smtp-source not found"
    env = {**os.environ, "LD_LIBRARY_PATH": str(Path(source).parent.parent / "lib" / "postfix")}
    started = time.monotonic()
    subprocess.run(
        [source, "-d", "-s", "8", "-m", str(messages), "-l", "3000", f"127.0.0.1:{sink.port}"],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    elapsed = time.monotonic() - started
    return f"{messages / elapsed:,.0f} msg/s ({messages:,} x 3 KB, 8 sessions)"


async def main_async(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="cc-bench-"))
    print(
        f"Campaign Console pipeline benchmark: scenario={args.scenario} rate={args.rate:g}/s "
        f"duration={args.duration:g}s cores={os.cpu_count()} ({workdir})",
        flush=True,
    )
    results: list[Result] = []
    with SmtpSink() as sink:
        for durability in args.durabilities:
            args.durability = durability
            results.append(await bench_engine(args, sink, workdir))
            print(HEADER + "\n" + results[-1].line(), flush=True)
        if not args.skip_naive:
            naive = await bench_naive(args, sink, workdir)
            results.append(naive)
        reference = c_reference(sink) if not args.skip_reference else "skipped"
    print()
    print(HEADER)
    for result in results:
        print(result.line())
    if not args.skip_naive and results[0].sent and results[-1].sent:
        engine, naive = results[0], results[-1]
        if args.scenario == "orders":  # one mail per event for both: throughput compares
            print(f"engine / naive emails/s: {engine.emails_per_s / naive.emails_per_s:.1f}x")
        ratio = percentile(naive.latencies, 0.5) / percentile(engine.latencies, 0.5)
        print(f"naive / engine p50 latency: {ratio:,.0f}x")
    print(f"C reference (Postfix smtp-source -> smtp-sink): {reference}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=1000.0, help="events per second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of steady load")
    parser.add_argument("--scenario", choices=["mix", "orders"], default="mix")
    parser.add_argument(
        "--durability", dest="durabilities", action="append", choices=["process", "power"]
    )
    parser.add_argument(
        "--deliver-processes",
        type=int,
        default=0,
        metavar="N",
        help="run deliver in N separate processes (engine.deliver_processes)",
    )
    parser.add_argument(
        "--smtp-connections", type=int, metavar="N", help="smtp.connections (default 16)"
    )
    parser.add_argument(
        "--max-inflight", type=int, metavar="N", help="delivery.max_inflight (default 256)"
    )
    parser.add_argument(
        "--claim-batch", type=int, metavar="N", help="delivery.claim_batch (default 100)"
    )
    parser.add_argument("--event-loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--skip-reference", action="store_true")
    args = parser.parse_args()
    args.durabilities = args.durabilities or ["process", "power"]
    os.chdir(ROOT)
    # The producer shares the two cores with the engine: on asyncio's own loop its socket
    # writes (one per flush of nats-py) were a third of its CPU and it took 9% of the machine.
    import uvloop

    uvloop.run(main_async(args))


if __name__ == "__main__":
    main()
