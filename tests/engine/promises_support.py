"""A real engine process, a real counting SMTP server and a producer, for the promise tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiosmtpd.handlers import AsyncMessage
from aiosmtpd.smtp import SMTP as SmtpServer
from nats.js import JetStreamContext

from engine.ids import new_id

ENGINE = Path(sys.executable).parent / "campaign-engine"


class CountingHandler(AsyncMessage):
    """Counts every message by Message-ID the moment its final dot arrives, then waits
    ``reply_delay`` before the 250 — so a kill can fall between the dot and the reply."""

    def __init__(self, reply_delay: float = 0.0) -> None:
        super().__init__()
        self.message_ids: Counter[str] = Counter()
        self.reply_delay = reply_delay

    async def handle_message(self, message: Any) -> None:
        self.message_ids[str(message["Message-ID"]).strip()] += 1
        if self.reply_delay:
            await asyncio.sleep(self.reply_delay)


@dataclass
class Sink:
    handler: CountingHandler
    server: asyncio.Server
    port: int

    @classmethod
    async def start(cls, reply_delay: float = 0.0) -> Sink:
        handler = CountingHandler(reply_delay)
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SmtpServer(handler, hostname="sink.test"), "127.0.0.1", 0
        )
        port = server.sockets[0].getsockname()[1]
        return cls(handler, server, port)

    async def stop(self) -> None:
        self.server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 5)


@dataclass
class EngineProcess:
    """``campaign-engine run`` against an external NATS, with SIGKILL and restart."""

    data_dir: Path
    nats_url: str
    nats_token: str
    smtp_port: int
    process: asyncio.subprocess.Process | None = None
    output: list[str] = field(default_factory=list)

    async def start(self) -> None:
        env = {
            **os.environ,
            "CAMPAIGN_NATS_TOKEN": self.nats_token,
            "CAMPAIGN_NATS_ACK_WAIT": "2",
            # One partition: the replay below restarts the one consumer, decide.
            "CAMPAIGN_NATS_PARTITIONS": "1",
            "CAMPAIGN_SMTP_CONNECTIONS": "4",
        }
        self.process = await asyncio.create_subprocess_exec(
            str(ENGINE),
            "run",
            "--data-dir",
            str(self.data_dir),
            "--nats",
            self.nats_url,
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
            line = await asyncio.wait_for(self.process.stdout.readline(), 60)
            if not line:
                raise AssertionError("engine exited:\n" + "".join(self.output))
            self.output.append(line.decode())
            if b"Press Ctrl-C" in line:
                break
        self._drain = asyncio.create_task(self._read_rest())

    async def _read_rest(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.output.append(line.decode())

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()
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
        await self._drain

    def ledger(self) -> list[tuple[str, str, str]]:
        """(intent id, status, trigger event id) of every intent."""
        db = sqlite3.connect(self.data_dir / "engine.sqlite3", timeout=10)
        try:
            return db.execute("SELECT id, status, event_id FROM intents").fetchall()
        finally:
            db.close()

    async def wait_settled(self, expected: int, timeout: float = 90) -> list[tuple[str, str, str]]:
        """Wait until ``expected`` intents exist and none is still on its way."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            rows = self.ledger()
            open_ = [r for r in rows if r[1] in ("queued", "claimed", "sending")]
            if len(rows) >= expected and not open_:
                return rows
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"not settled: {len(rows)} intents, {len(open_)} open")
            await asyncio.sleep(0.2)


def order(i: int) -> dict[str, Any]:
    """An Order Completed from a new customer: exactly one order confirmation."""
    user = f"buyer-{i}"
    return {
        "type": "track",
        "event": "Order Completed",
        "userId": user,
        "messageId": new_id(),
        "context": {"traits": {"email": f"{user}@example.com", "first_name": "Bo"}},
        "properties": {"order_id": f"o-{i}", "total": 10.0, "currency": "USD", "products": []},
    }


async def publish_until_acked(js: JetStreamContext, event: dict[str, Any]) -> None:
    """Publish with the event's Nats-Msg-Id, retrying (same id) until JetStream acks it."""
    data = orjson.dumps(event)
    for _ in range(200):
        try:
            await js.publish(
                "events.track", data, headers={"Nats-Msg-Id": event["messageId"]}, timeout=1
            )
            return
        except Exception:  # NATS restarting: retry with the same id, JetStream dedups
            await asyncio.sleep(0.1)
    raise AssertionError("could not publish")


async def produce(js: JetStreamContext, events: list[dict[str, Any]], rate: float) -> None:
    for i, event in enumerate(events):
        await publish_until_acked(js, event)
        if i % 10 == 9:
            await asyncio.sleep(10 / rate)
