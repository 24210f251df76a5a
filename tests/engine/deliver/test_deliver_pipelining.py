"""PIPELINING (RFC 2920): MAIL, RCPT and DATA in one write, replies however the relay sends them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import pytest
import uvloop

from engine.deliver.relay import RelayConfig
from engine.deliver.smtp import Envelope, SmtpConnection, TransactionResult, stuff

T = TypeVar("T")


class PipeliningRelay:
    """A tiny SMTP server that advertises PIPELINING and writes replies in chosen pieces."""

    def __init__(self, *, rcpt_code: int = 250, data_code: int = 354, split: bool = False) -> None:
        self.rcpt_code = rcpt_code
        self.data_code = data_code
        self.split = split  # each reply in its own write, with a pause between
        self.reads: list[bytes] = []  # what arrived, one entry per read
        self.messages: list[bytes] = []
        self.closed = asyncio.Event()
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 test ESMTP\r\n")
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                command = line.upper()
                if command.startswith(b"EHLO"):
                    writer.write(b"250-test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
                elif command.startswith(b"MAIL"):
                    await self._group(reader, writer, line)
                elif command.startswith(b"QUIT"):
                    writer.write(b"221 bye\r\n")
                    await writer.drain()
                    break
                else:
                    writer.write(b"250 ok\r\n")
                await writer.drain()
        finally:
            writer.close()
            self.closed.set()

    async def _group(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, mail: bytes
    ) -> None:
        rcpt = await reader.readline()
        data = await reader.readline()
        self.reads.append(mail + rcpt + data)
        replies = [
            b"250 sender ok\r\n",
            b"%d recipient\r\n" % self.rcpt_code,
            b"%d data\r\n" % (self.data_code if self.rcpt_code == 250 else 554),
        ]
        if self.split:
            for reply in replies:
                writer.write(reply)
                await writer.drain()
                await asyncio.sleep(0.01)
        else:
            writer.write(b"".join(replies))
        if self.rcpt_code != 250 or self.data_code != 354:
            return
        body = b""
        while not body.endswith(b"\r\n.\r\n"):
            chunk = await reader.readline()
            if not chunk:
                return
            body += chunk
        self.messages.append(body)
        writer.write(b"250 2.0.0 queued\r\n")


Run = Callable[[Coroutine[Any, Any, T]], T]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """Every test here runs on both loops: the engine runs on uvloop, whose transports bind
    ``data_received`` once, so the pipelined reply reader must not rely on rebinding it."""
    return uvloop.run if request.param == "uvloop" else asyncio.run


async def _go() -> bool:
    return True


async def _transact(
    relay: PipeliningRelay, before_dot: Callable[[], Awaitable[bool]] = _go, times: int = 1
) -> list[TransactionResult]:
    port = await relay.start()
    conn = SmtpConnection(RelayConfig("127.0.0.1", port, timeout=5))
    results: list[TransactionResult] = []
    try:
        await conn.connect()
        for _ in range(times):
            body = stuff(b"Subject: hi\r\n\r\n.dot line\r\nbye\r\n")
            envelope = Envelope("from@example.com", "to@example.com")
            results.append(await conn.transact(envelope, body, before_dot))
            if not conn.is_connected:
                break
        await conn.quit()
    finally:
        await relay.stop()
    return results


@pytest.mark.parametrize("split", [False, True])
def test_pipelined_transactions(split: bool, run: Run[list[TransactionResult]]) -> None:
    relay = PipeliningRelay(split=split)
    results = run(_transact(relay, times=3))
    assert [r.delivered for r in results] == [True, True, True]
    # The envelope and DATA came in one write, three times over one connection.
    assert len(relay.reads) == 3
    assert relay.reads[0].startswith(b"MAIL FROM:<from@example.com>")
    assert b"\r\nRCPT TO:<to@example.com>\r\nDATA\r\n" in relay.reads[0]
    assert relay.messages[0].endswith(b"\r\n..dot line\r\nbye\r\n.\r\n")


def test_pipelined_refused_recipient(run: Run[list[TransactionResult]]) -> None:
    relay = PipeliningRelay(rcpt_code=550)
    (result,) = run(_transact(relay))
    assert result.reply is not None
    assert result.reply.code == 550 and result.stage == "rcpt"
    assert not result.dot_written
    assert relay.messages == []


def test_pipelined_refused_data(run: Run[list[TransactionResult]]) -> None:
    relay = PipeliningRelay(data_code=451)
    (result,) = run(_transact(relay))
    assert result.reply is not None
    assert result.reply.code == 451 and result.stage == "data"
    assert relay.messages == []


def test_pipelined_before_dot_refuses(run: Run[list[TransactionResult]]) -> None:
    async def no() -> bool:
        return False

    relay = PipeliningRelay()
    (result,) = run(_transact(relay, before_dot=no))
    assert result.aborted and not result.dot_written
    assert relay.messages == []
