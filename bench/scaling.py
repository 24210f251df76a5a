"""Deliver scaling: the same backlog sent by 1, then 2 deliver nodes (separate processes).

    python -m bench.scaling                       # 20,000 order confirmations, 1 then 2 nodes
    python -m bench.scaling --emails 50000 --nodes 1 2 3
    python -m bench.scaling --database postgresql://127.0.0.1/campaign_bench

For each node count, on a fresh data directory: a decide node (``campaign-engine run --role
decide``, its embedded nats-server, SQLite unless ``--database``) turns a backlog of order
events into queued intents while sending is paused; then N deliver nodes (``campaign-engine
run --role deliver --nats URL``, each its own process) start, sending is resumed, and they
send the backlog to Postfix's smtp-sink. Printed per run: emails/s (from the ledger's accept
times, first to last), the ratio to one node, the CPU each deliver node used (seconds and
share of one core over the drain), how many mails each sent, and what else was busy.

Reading it honestly: a deliver node is one Python process, so it is bound by one core. Two
nodes can only be twice as fast when two more cores are free; on a 2-core machine that also
runs nats-server, SQLite's writer, smtp-sink and the benchmark itself, the ratio is bounded by
the cores, not by the engine. The CPU columns show that bound: when two nodes together use
about the cores there are, the machine is full. Compare ratios on a machine with cores to
spare, or CPU seconds per email (``bench.cost``) on a busy one.
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
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats.errors
import orjson

from bench.harness import CLOCK_TICKS, SmtpSink
from bench.pipeline import order_event
from engine import bus
from engine.access import LOCAL_ADMIN, SERVICE_USER
from engine.control import ControlError, request
from engine.ids import new_id
from engine.node import ADMIN_SECRET, SERVICE_SECRET, read_secret_file

VENV_BIN = Path(sys.executable).parent
DECIDE = "decide"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads), from /proc."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = float(sum(values[:8]))
    return total - idle, total


@dataclass
class Run:
    """One measured run: ``nodes`` deliver nodes sending ``emails``."""

    nodes: int
    emails: int = 0
    seconds: float = float("nan")
    cpu: dict[str, float] = field(default_factory=dict)  # deliver node -> CPU seconds
    sent_by: dict[str, int] = field(default_factory=dict)
    wall: float = float("nan")  # resume to drained
    machine: float = float("nan")  # cores busy on the whole machine during the drain

    @property
    def rate(self) -> float:
        return self.emails / self.seconds if self.seconds > 0 else float("nan")


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [str(VENV_BIN / "campaign-engine"), "run", *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        _stop(list(reversed(procs)))


def _env(args: argparse.Namespace) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "CAMPAIGN_ENGINE_EVENT_LOOP": args.event_loop,
        "CAMPAIGN_WORKFLOWS_ABANDONED_CART_DELAY": "30m",
    }


def _database(args: argparse.Namespace) -> list[str]:
    return ["--database", args.database] if args.database else []


async def _connection(data: Path, proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the decide node did not start (see {data / 'decide.log'})")
        try:  # written once the node is up; may be caught half-written
            conn: dict[str, Any] = orjson.loads((data / "engine.json").read_bytes())
            return conn
        except (OSError, orjson.JSONDecodeError):
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def nats_as(url: str, user: str, password: str) -> AsyncIterator[Any]:
    nc = await bus.connect(url, user=user, password=password, name=f"bench-scaling-{user}")
    try:
        yield nc
    finally:
        await nc.drain()


async def publish(js: Any, count: int) -> None:
    """``count`` order events (one confirmation each), 1,000 acks in flight."""
    window = asyncio.Semaphore(1000)
    now = time.time()

    async def one(i: int) -> None:
        async with window:
            event = order_event(i, now)
            event["messageId"] = new_id()
            await js.publish(
                "events.track", orjson.dumps(event), headers={"Nats-Msg-Id": event["messageId"]}
            )

    await asyncio.gather(*(one(i) for i in range(count)))


def _open_ledger(data: Path, args: argparse.Namespace) -> Any:
    """The store to read outcomes from: the run's SQLite file, or PostgreSQL."""
    if not args.database:
        return sqlite3.connect(data / "engine.sqlite3", timeout=30)
    from engine.store import open_store

    return open_store(args.database, migrate=False).engine


def _count(db: Any, sql: str) -> list[tuple[Any, ...]]:
    if isinstance(db, sqlite3.Connection):
        return db.execute(sql).fetchall()
    from sqlalchemy import text

    with db.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql)).fetchall()]


async def _until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.25)


async def measure(args: argparse.Namespace, nodes: int, sink: SmtpSink, workdir: Path) -> Run:
    data = workdir / f"deliver-{nodes}"
    env = _env(args)
    run = Run(nodes)
    with processes() as procs:
        decide = _spawn(
            [
                "--data-dir",
                str(data),
                "--role",
                "decide",
                "--node",
                DECIDE,
                "--http",
                "127.0.0.1:0",
                *_database(args),
            ],
            env,
            workdir / f"decide-{nodes}.log",
        )
        procs.append(decide)
        data.mkdir(parents=True, exist_ok=True)
        conn = await _connection(data, decide)
        url = conn["nats_url"]
        service = read_secret_file(data / SERVICE_SECRET, create=False)
        admin = read_secret_file(data / ADMIN_SECRET, create=False)
        db = _open_ledger(data, args)
        async with (
            nats_as(url, SERVICE_USER, service) as engine_nc,
            nats_as(url, LOCAL_ADMIN, admin) as admin_nc,
        ):
            # Paused first: the backlog queues up whole, then every node starts on it at once.
            await request(admin_nc, DECIDE, "sending.pause", {"reason": "bench"}, user=LOCAL_ADMIN)
            await publish(engine_nc.jetstream(), args.emails)
            queued = "SELECT count(*) FROM intents WHERE status = 'queued'"
            await _until(
                lambda: _count(db, queued)[0][0] >= args.emails, 600, "decide to queue the backlog"
            )
            node_env = {
                **env,
                "CAMPAIGN_NATS_USER": SERVICE_USER,
                "CAMPAIGN_NATS_PASSWORD": service,
            }
            names = [f"deliver-{i}" for i in range(1, nodes + 1)]
            deliver = {}
            for name in names:
                deliver[name] = _spawn(
                    [
                        "--data-dir",
                        str(data),
                        "--nats",
                        url,
                        "--role",
                        "deliver",
                        "--node",
                        name,
                        "--smtp",
                        f"smtp://127.0.0.1:{sink.port}",
                        *_database(args),
                    ],
                    node_env,
                    workdir / f"{name}-of-{nodes}.log",
                )
                procs.append(deliver[name])
            for name, proc in deliver.items():  # each answers ping once it is delivering
                deadline = time.monotonic() + 90
                while True:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit(f"{name} did not start (see its log in {workdir})")
                    with contextlib.suppress(
                        ControlError, TimeoutError, OSError, nats.errors.Error
                    ):
                        await request(engine_nc, name, "ping", user=SERVICE_USER, timeout=0.5)
                        break
                    await asyncio.sleep(0.2)
            cpu0 = {name: cpu_seconds(p.pid) for name, p in deliver.items()}
            busy0 = machine_busy()
            started, resumed_at = time.monotonic(), time.time()
            await request(admin_nc, DECIDE, "sending.resume", {}, user=LOCAL_ADMIN)
            open_sql = "SELECT count(*) FROM intents WHERE status IN ('queued','claimed','sending')"
            await _until(lambda: _count(db, open_sql)[0][0] == 0, 1800, "the backlog to drain")
            run.wall = time.monotonic() - started
            busy1 = machine_busy()
            run.cpu = {name: cpu_seconds(p.pid) - cpu0[name] for name, p in deliver.items()}
            run.machine = (busy1[0] - busy0[0]) / (busy1[1] - busy0[1]) * (os.cpu_count() or 1)
        # Only this run's mails (a PostgreSQL database keeps the runs before).
        this_run = f"status = 'sent' AND accepted_at >= {resumed_at - 1:.3f}"
        sent = _count(
            db, f"SELECT count(*), min(accepted_at), max(accepted_at) FROM intents WHERE {this_run}"
        )[0]
        run.emails = int(sent[0])
        run.seconds = float(sent[2] - sent[1]) if sent[0] else float("nan")
        for owner, count in _count(
            db, f"SELECT claimed_by, count(*) FROM intents WHERE {this_run} GROUP BY 1"
        ):
            node = next((n for n in names if str(owner or "").startswith(n)), str(owner))
            run.sent_by[node] = run.sent_by.get(node, 0) + int(count)
        if isinstance(db, sqlite3.Connection):
            db.close()
        else:
            db.dispose()
    return run


def report(runs: list[Run]) -> None:
    cores = os.cpu_count() or 1
    base = runs[0].rate if runs else float("nan")
    print()
    print(f"{'deliver nodes':>13} {'emails':>8} {'emails/s':>9} {'ratio':>6}  CPU per node")
    for run in runs:
        per_node = ", ".join(
            f"{name} {cpu:.1f} s = {cpu / run.wall * 100:.0f}% of a core"
            f" ({run.sent_by.get(name, 0):,} sent)"
            for name, cpu in run.cpu.items()
        )
        ratio = run.rate / base
        print(f"{run.nodes:>13} {run.emails:>8,} {run.rate:>9,.0f} {ratio:>5.2f}x  {per_node}")
        print(
            f"{'':>13} machine: {run.machine:.2f} of {cores} cores busy during the drain"
            f" ({run.wall:.1f} s; nats-server, the store, smtp-sink and this script included)"
        )
    if len(runs) > 1:
        last = runs[-1]
        engine_cores = sum(last.cpu.values()) / last.wall
        print()
        print(
            f"{last.nodes} deliver nodes used {engine_cores:.2f} cores for themselves while the"
            f" machine had {last.machine:.2f} of {cores} busy."
        )
        if last.machine >= 0.85 * cores:
            print(
                f"The ratio {last.rate / base:.2f}x is bounded by the cores: this {cores}-core"
                " machine was full, so more deliver nodes could not run any faster here."
            )
        else:
            print(
                "The machine had cores to spare: the ratio is the engine's scaling, not a core"
                " limit."
            )


async def main_async(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="cc-scaling-"))
    print(
        f"Deliver scaling: {args.emails:,} emails, deliver nodes {args.nodes},"
        f" cores {os.cpu_count()}, store {'PostgreSQL' if args.database else 'SQLite'}"
        f" ({workdir})",
        flush=True,
    )
    runs = []
    with SmtpSink() as sink:
        for nodes in args.nodes:
            runs.append(await measure(args, nodes, sink, workdir))
            print(f"  {nodes} deliver node(s): {runs[-1].rate:,.0f} emails/s", flush=True)
    report(runs)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--emails", type=int, default=20_000, help="the backlog to send")
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2], metavar="N")
    parser.add_argument(
        "--database",
        default="",
        help="a PostgreSQL URL instead of SQLite (the runs follow one another in it; each"
        " counts only the mails it sent)",
    )
    parser.add_argument("--event-loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = parser.parse_args()
    if any(n < 1 for n in args.nodes):
        parser.error("--nodes: each count must be 1 or more")
    if args.emails < 1:
        parser.error("--emails: must be 1 or more")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
