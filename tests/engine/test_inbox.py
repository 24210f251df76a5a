"""The local capture inbox: a real SMTP server that stores, indexes and prunes what it receives."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import aiosmtplib
import pytest

from engine.inbox import (
    CaptureInbox,
    InboxMessageNotFound,
    count_messages,
    get_message,
    list_messages,
)


def message(subject: str, body: str = "Hello.\r\n", *, to: str = "ada@example.com") -> bytes:
    return (
        f"From: Shop <shop@shop.example>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{abs(hash(subject))}@shop.example>\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}"
    ).encode()


async def send(
    address: tuple[str, int], raw: bytes, *, to: str = "ada@example.com", **options: object
) -> None:
    host, port = address
    await aiosmtplib.send(
        raw,
        sender="bounce+1@bounces.shop.example",
        recipients=[to],
        hostname=host,
        port=port,
        start_tls=False,
        local_hostname="test.client",
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture
async def inbox(tmp_path: Path) -> AsyncIterator[CaptureInbox]:
    box = CaptureInbox(tmp_path / "inbox", keep=100)
    await box.start("127.0.0.1", 0)
    try:
        yield box
    finally:
        await box.stop()


async def test_stores_lists_and_shows_messages(inbox: CaptureInbox) -> None:
    assert inbox.address is not None
    await send(inbox.address, message("First"))
    # An encoded subject, a line that starts with a dot, an 8-bit UTF-8 body.
    body = "Grüße!\r\n.a line that starts with a dot\r\n..two\r\n"
    raw = message("=?utf-8?q?Gr=C3=BC=C3=9Fe?=", body)
    await send(inbox.address, raw)
    await send(
        inbox.address,
        message("Third", to="Üser@exämple.com"),
        to="Üser@exämple.com",
        mail_options=["SMTPUTF8"],
    )

    entries = list_messages(inbox.directory)
    assert [e.subject for e in entries] == ["Third", "Grüße", "First"]  # newest first
    third, second, _ = entries
    assert second.mail_from == "bounce+1@bounces.shop.example"
    assert second.rcpt_tos == ("ada@example.com",)
    assert second.size == len(raw)
    assert second.message_id.startswith("<") and second.message_id.endswith("@shop.example>")
    assert third.rcpt_tos == ("Üser@exämple.com",)
    assert second.to_dict()["rcpt_tos"] == ["ada@example.com"]

    entry, stored = get_message(inbox.directory, second.id)
    assert entry == second
    assert stored == raw  # byte for byte, dots unstuffed
    assert count_messages(inbox.directory) == 3
    assert [e.subject for e in list_messages(inbox.directory, query="grü")] == ["Grüße"]
    assert [e.subject for e in list_messages(inbox.directory, query="exämple")] == ["Third"]
    assert list_messages(inbox.directory, query="100%") == []
    assert len(list_messages(inbox.directory, limit=2)) == 2


async def test_prunes_beyond_keep(tmp_path: Path) -> None:
    box = CaptureInbox(tmp_path / "inbox", keep=3)
    address = await box.start()
    try:
        for i in range(5):
            await send(address, message(f"m{i}"))
        first_ids = [e.id for e in list_messages(box.directory)]
    finally:
        await box.stop()
    assert [e.subject for e in list_messages(box.directory)] == ["m4", "m3", "m2"]
    assert len(list(box.directory.glob("*.eml"))) == 3
    assert count_messages(box.directory) == 3
    with pytest.raises(InboxMessageNotFound):
        get_message(box.directory, "0" * 32)
    assert len(first_ids) == 3


async def test_restart_keeps_messages_and_drops_orphans(tmp_path: Path) -> None:
    directory = tmp_path / "inbox"
    box = CaptureInbox(directory, keep=10)
    address = await box.start()
    await send(address, message("kept"))
    await box.stop()
    (directory / "feedfeedfeedfeedfeedfeedfeedfeed.eml").write_bytes(b"half-written")

    box = CaptureInbox(directory, keep=10)
    address = await box.start()
    try:
        await send(address, message("after restart"))
    finally:
        await box.stop()
    assert [e.subject for e in list_messages(directory)] == ["after restart", "kept"]
    assert len(list(directory.glob("*.eml"))) == 2


async def test_oversize_message_is_refused(tmp_path: Path) -> None:
    box = CaptureInbox(tmp_path / "inbox", keep=10, max_message_size=2_000)
    address = await box.start()
    try:
        with pytest.raises(aiosmtplib.SMTPResponseException) as info:
            await send(address, message("big", "x" * 70 + "\r\n" * 1) * 40)
        assert info.value.code == 552
        await send(address, message("small"))  # the session goes on
    finally:
        await box.stop()
    assert [e.subject for e in list_messages(box.directory)] == ["small"]


async def test_read_side_without_an_inbox(tmp_path: Path) -> None:
    assert list_messages(tmp_path / "nothing") == []
    assert count_messages(tmp_path / "nothing") == 0
    with pytest.raises(InboxMessageNotFound, match="no message"):
        get_message(tmp_path / "nothing", "abc")


async def test_many_concurrent_senders(inbox: CaptureInbox) -> None:
    assert inbox.address is not None
    host, port = inbox.address
    clients = [
        aiosmtplib.SMTP(hostname=host, port=port, start_tls=False, local_hostname="t")
        for _ in range(8)
    ]
    for client in clients:
        await client.connect()

    async def run(client: aiosmtplib.SMTP, n: int) -> None:
        for i in range(n):
            await client.sendmail("a@x.example", [f"r{i}@example.com"], message(f"s{i}"))

    await asyncio.gather(*(run(c, 10) for c in clients))
    for client in clients:
        await client.quit()
    assert count_messages(inbox.directory) == 80
    assert inbox.received == 80


async def test_stop_with_a_client_still_connected(tmp_path: Path) -> None:
    box = CaptureInbox(tmp_path / "inbox", keep=10)
    host, port = await box.start()
    client = aiosmtplib.SMTP(hostname=host, port=port, start_tls=False, local_hostname="t")
    await client.connect()
    await client.sendmail("a@x.example", ["b@example.com"], message("before stop"))
    await box.stop()
    client.close()
    assert count_messages(box.directory) == 1


async def test_a_storage_failure_defers_instead_of_bouncing(tmp_path: Path) -> None:
    box = CaptureInbox(tmp_path / "inbox", keep=10)
    address = await box.start()
    try:
        shutil.rmtree(box.directory)  # the disk went away under the inbox
        with pytest.raises(aiosmtplib.SMTPResponseException) as info:
            await send(address, message("lost?"))
        assert info.value.code == 451
    finally:
        await box.stop()
