"""Bounces and complaints from an IMAP mailbox, against a real IMAP server (pymap, in-memory
backend, STARTTLS with a test certificate) and the store on SQLite and PostgreSQL.

The password comes through the ``keyring`` API from an in-memory keyring backend set for the
test (the OS keyring of a CI machine is not there to use)."""

from __future__ import annotations

import asyncio
import imaplib
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import keyring
import pytest
import sqlalchemy as sa
from keyring.backend import KeyringBackend
from test_feedback_apply import add_intent
from test_feedback_parse import ARF, DSN, DSN_RFC822_ONLY, INTENT, OTHER

from engine.clock import ManualClock
from engine.config import FeedbackSettings, load_settings
from engine.errors import ConfigError
from engine.feedback.imap import ImapPoller
from engine.feedback.intake import FeedbackIntake
from engine.store import Store, schema
from engine.telemetry import Telemetry
from tests.engine.deliver.deliver_support import self_signed_certificate

USER, PASSWORD = "bounces", "imap-pw-5e1f"
NOT_A_REPORT = b"From: someone@example.net\r\nSubject: hello\r\n\r\nJust saying hi.\r\n"


class MemoryKeyring(KeyringBackend):
    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.entries: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.entries.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.entries[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.entries.pop((service, username), None)


@pytest.fixture
def memory_keyring() -> Iterator[MemoryKeyring]:
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    try:
        yield backend
    finally:
        keyring.set_keyring(previous)


@dataclass
class ImapServer:
    port: int
    cert: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_pymap(tmp_path: Path, *, tls: bool) -> Iterator[ImapServer]:
    cert, key = self_signed_certificate(tmp_path)
    port = _free_port()
    pymap = Path(sys.executable).parent / "pymap"
    args = [str(pymap), "--host", "127.0.0.1", "--port", str(port), "--cert", str(cert)]
    args += ["--key", str(key), *([] if tls else ["--no-tls"])]
    args += ["dict", "--demo-user", USER, "--demo-password", PASSWORD]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    assert process.stderr is not None
                    pytest.fail(f"pymap did not start: {process.stderr.read().decode()[-500:]}")
                time.sleep(0.1)
        yield ImapServer(port, cert)
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()


@pytest.fixture
def imap_server(tmp_path: Path) -> Iterator[ImapServer]:
    yield from _start_pymap(tmp_path, tls=True)


@pytest.fixture
def plain_imap_server(tmp_path: Path) -> Iterator[ImapServer]:
    (tmp_path / "plain").mkdir()
    yield from _start_pymap(tmp_path / "plain", tls=False)


def client(server: ImapServer) -> imaplib.IMAP4:
    conn = imaplib.IMAP4("127.0.0.1", server.port, timeout=10)
    conn.starttls(ssl_context=ssl.create_default_context(cafile=str(server.cert)))
    conn.login(USER, PASSWORD)
    return conn


def append(server: ImapServer, *messages: bytes, flags: str | None = None) -> None:
    conn = client(server)
    try:
        for message in messages:
            typ, data = conn.append("INBOX", flags, None, message)
            assert typ == "OK", data
    finally:
        conn.logout()


def folder(server: ImapServer, name: str) -> list[tuple[bytes, bool]]:
    """(first header line, seen) of each message in a folder."""
    conn = client(server)
    try:
        typ, data = conn.select(f'"{name}"', readonly=True)
        assert typ == "OK", data
        typ, data = conn.uid("SEARCH", "ALL")
        found = []
        for uid in (data[0] or b"").split():
            typ, parts = conn.uid("FETCH", uid, "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            head = next(p for p in parts if isinstance(p, tuple))
            found.append((head[1].strip(), b"\\Seen" in head[0]))
        return sorted(found)
    finally:
        conn.logout()


def settings(server: ImapServer, **changes: object) -> FeedbackSettings:
    base = FeedbackSettings(
        imap_host="127.0.0.1",
        imap_port=server.port,
        imap_tls="starttls",
        imap_ca_file=str(server.cert),
        imap_user=USER,
        imap_interval=0.2,
        imap_timeout=5.0,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def poller_for(store: Store, feedback: FeedbackSettings, telemetry: Telemetry) -> ImapPoller:
    intake = FeedbackIntake(store, ManualClock(1_715_090_000.0), telemetry)
    return ImapPoller(feedback, intake, telemetry)


def ledger(store: Store) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    with store.begin() as conn:
        intents = dict(conn.execute(sa.select(schema.intents.c.id, schema.intents.c.status)).all())
        table = schema.suppressions
        rows = conn.execute(sa.select(table.c.address, table.c.scope, table.c.reason)).all()
    return intents, {r.address: (r.scope, r.reason) for r in rows}


async def test_reports_are_applied_and_moved(
    any_store: Store, imap_server: ImapServer, memory_keyring: MemoryKeyring
) -> None:
    memory_keyring.set_password("campaign-console-imap", USER, PASSWORD)
    add_intent(any_store, INTENT, "Ann@example.org", "user-ann")
    add_intent(any_store, OTHER, "carl@example.net", "user-carl")
    old = b"From: x@example.net\r\nSubject: read already\r\n\r\n" + DSN.split(b"\r\n\r\n", 1)[1]
    append(imap_server, old, flags=r"(\Seen)")  # seen: not ours to process
    append(imap_server, DSN, ARF, DSN_RFC822_ONLY, NOT_A_REPORT)
    telemetry = Telemetry("t")
    poller = poller_for(any_store, settings(imap_server, imap_after="move"), telemetry)
    try:
        result = await poller.poll()
        again = await poller.poll()
    finally:
        await poller.stop()

    assert result is not None, poller.last_error
    assert (result.fetched, result.applied, result.invalid, result.kept) == (4, 3, 1, 0)
    assert again is not None and again.fetched == 0  # moved away: nothing twice
    intents, suppressed = ledger(any_store)
    assert intents == {INTENT: "bounced", OTHER: "bounced"}  # DSN via VERP, other via Message-ID
    assert suppressed == {
        "ann@example.org": ("all", "hard_bounce"),  # the hard bounce wins over the complaint
        "carl@example.net": ("all", "hard_bounce"),
    }
    with any_store.begin() as conn:
        complaints = conn.execute(
            sa.select(sa.func.count()).where(schema.audit_log.c.action == "complaint")
        ).scalar_one()
    assert complaints == 1
    assert folder(imap_server, "INBOX") == [(b"Subject: read already", True)]
    moved = [subject for subject, _ in folder(imap_server, "Processed")]
    assert moved == sorted(
        [
            b"Subject: Undelivered Mail Returned to Sender",
            b"Subject: FW: Earn money",
            b"Subject: Delivery Status Notification (Failure)",
            b"Subject: hello",
        ]
    )
    counters = telemetry.counters
    assert counters['feedback_total{kind="hard_bounce",source="dsn"}'] == 2
    assert counters['feedback_total{kind="complaint",source="arf"}'] == 1
    assert counters['feedback_invalid_total{source="imap"}'] == 1
    assert counters["feedback_imap_polls_total"] == 2
    assert counters["feedback_imap_messages_total"] == 4
    assert not any(k.startswith("feedback_imap_errors_total") for k in counters)


@pytest.mark.parametrize("after", ["seen", "delete"])
async def test_processed_messages_are_marked_seen_or_deleted(
    store: Store, imap_server: ImapServer, memory_keyring: MemoryKeyring, after: str
) -> None:
    memory_keyring.set_password("campaign-console-imap", USER, PASSWORD)
    add_intent(store, INTENT, "Ann@example.org", "user-ann")
    append(imap_server, DSN, NOT_A_REPORT)
    poller = poller_for(store, settings(imap_server, imap_after=after), Telemetry("t"))
    try:
        first = await poller.poll()
        second = await poller.poll()
    finally:
        await poller.stop()
    assert first is not None and (first.applied, first.invalid) == (1, 1)
    assert second is not None and second.fetched == 0
    assert ledger(store)[0] == {INTENT: "bounced"}
    inbox = folder(imap_server, "INBOX")
    if after == "seen":
        assert inbox == [
            (b"Subject: Undelivered Mail Returned to Sender", True),
            (b"Subject: hello", True),
        ]
    else:
        assert inbox == []


async def test_failures_are_named_counted_and_survived(
    store: Store,
    imap_server: ImapServer,
    plain_imap_server: ImapServer,
    memory_keyring: MemoryKeyring,
) -> None:
    telemetry = Telemetry("t")
    closed = _free_port()
    cases = [
        ("password", settings(imap_server), "no IMAP password in the OS keyring"),
        ("auth", settings(imap_server, imap_user="nobody"), "login as 'nobody'"),
        ("folder", settings(imap_server, imap_folder="Bounces"), "cannot open folder 'Bounces'"),
        ("tls", settings(plain_imap_server), "does not offer STARTTLS"),
        ("tls", settings(imap_server, imap_ca_file=""), "certificate verify failed"),
        ("tls", settings(imap_server, imap_tls="implicit"), "TLS with 127.0.0.1"),
        ("connect", settings(imap_server, imap_port=closed), "cannot connect to 127.0.0.1"),
    ]
    for n, (reason, feedback, message) in enumerate(cases):
        if n == 1:
            memory_keyring.set_password("campaign-console-imap", USER, PASSWORD)
            memory_keyring.set_password("campaign-console-imap", "nobody", "wrong")
        poller = poller_for(store, feedback, telemetry)
        try:
            assert await poller.poll() is None
        finally:
            await poller.stop()
        assert poller.last_error is not None
        assert poller.last_error.startswith(f"{reason}: "), poller.last_error
        assert message in poller.last_error, poller.last_error
        assert PASSWORD not in poller.last_error
    counters = telemetry.counters
    assert counters['feedback_imap_errors_total{reason="tls"}'] == 3
    for reason in ("password", "auth", "folder", "connect"):
        assert counters[f'feedback_imap_errors_total{{reason="{reason}"}}'] == 1

    # Running, a failing mailbox is retried every interval and never stops the loop; once the
    # folder exists the next poll succeeds.
    poller = poller_for(store, settings(imap_server, imap_folder="Bounces"), telemetry)
    await poller.start()
    try:
        key = 'feedback_imap_errors_total{reason="folder"}'
        deadline = time.monotonic() + 10
        while counters[key] < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert counters[key] >= 3  # 1 from above, then at least two polls of the loop
        conn = client(imap_server)
        conn.create('"Bounces"')
        conn.logout()
        deadline = time.monotonic() + 5
        while poller.last_error is not None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert poller.last_error is None and poller.last_poll_at is not None
    finally:
        await poller.stop()


def test_clear_text_only_on_loopback_and_settings_are_checked(store: Store) -> None:
    intake = FeedbackIntake(store, ManualClock(), Telemetry("t"))
    remote = FeedbackSettings(imap_host="imap.example.net", imap_user=USER, imap_tls="none")
    with pytest.raises(ConfigError, match="allowed for loopback test servers only"):
        ImapPoller(remote, intake, Telemetry("t"))
    ImapPoller(replace(remote, imap_host="127.0.0.1"), intake, Telemetry("t"))
    example = Path(__file__).parents[3] / "docs" / "config.example.toml"
    assert load_settings(example, environ={}).feedback == FeedbackSettings()
