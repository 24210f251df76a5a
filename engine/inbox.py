"""The local capture inbox: an SMTP server that keeps every message it receives.

It is the default route when no relay is configured. Each message is stored as a raw ``.eml``
file under ``<data_dir>/inbox/`` and indexed in ``<data_dir>/inbox/index.sqlite3``; beyond
``keep`` messages the oldest are pruned.

A message is written (file and index row, handed to the OS) *before* the server answers ``250``,
so a message the engine records as sent is in the inbox even if the process is killed right
after. Writes are group-committed on one writer thread: every message that arrives while a batch
is being written goes into the next batch, so the event loop never waits on the disk and the cost
of a commit is shared (measured: well above 1,000 messages/s on one core).

The read side (:func:`list_messages`, :func:`get_message`, :func:`count_messages`) opens the
index read-only and works without a running server, e.g. from the CLI while the engine runs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sqlite3
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session, syntax

from engine.errors import EngineError
from engine.ids import new_id

log = logging.getLogger(__name__)

INDEX_NAME = "index.sqlite3"
DEFAULT_MAX_MESSAGE_SIZE = 32 * 1024 * 1024  # advertised as SIZE; larger messages get 552

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    received_at REAL NOT NULL,
    mail_from TEXT NOT NULL,
    rcpt_tos TEXT NOT NULL,
    subject TEXT NOT NULL,
    message_id TEXT NOT NULL,
    size INTEGER NOT NULL,
    path TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_messages_received ON messages (received_at);
"""
_COLUMNS = "id, received_at, mail_from, rcpt_tos, subject, message_id, size, path"
# A plain ``<local@domain>`` path; anything else goes to aiosmtpd's full RFC 5321 parser.
_SIMPLE_PATH = re.compile(r"<([A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+)>\s*(.*)", re.S)


OnMessage = Callable[[bytes, tuple[str, ...]], Awaitable[object]]


class InboxMessageNotFound(EngineError, LookupError):
    """No message with that id is in the capture inbox (never received, or pruned)."""


@dataclass(frozen=True, slots=True)
class InboxEntry:
    """One captured message as indexed; ``path`` is relative to the inbox directory."""

    id: str
    received_at: float
    mail_from: str
    rcpt_tos: tuple[str, ...]
    subject: str
    message_id: str
    size: int
    path: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for the control API and the console)."""
        return {
            "id": self.id,
            "received_at": self.received_at,
            "mail_from": self.mail_from,
            "rcpt_tos": list(self.rcpt_tos),
            "subject": self.subject,
            "message_id": self.message_id,
            "size": self.size,
            "path": self.path,
        }


@dataclass(slots=True)
class _Pending:
    entry: InboxEntry
    raw: bytes
    done: asyncio.Future[None]


def _decode_header_value(value: bytes) -> str:
    text = value.decode("utf-8", "replace")  # SMTPUTF8 messages carry raw UTF-8 headers
    if "=?" not in text:
        return text
    try:
        return str(make_header(decode_header(text)))
    except (HeaderParseError, LookupError, UnicodeError, ValueError):
        return text


def _headers(raw: bytes) -> tuple[str, str]:
    """Subject (decoded) and Message-ID, read from the header block only.

    A hand-rolled scan: ``email.parser`` with the default policy costs ~250 µs a message,
    this ~10 µs, and the inbox only needs these two fields.
    """
    end = raw.find(b"\r\n\r\n")
    head = raw[:end] if end >= 0 else raw
    head = head.replace(b"\r\n ", b" ").replace(b"\r\n\t", b"\t")  # unfold
    subject: str | None = None
    message_id: str | None = None
    for line in head.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        key = name.strip().lower()
        if key == b"subject" and subject is None:
            subject = _decode_header_value(value.strip())
        elif key == b"message-id" and message_id is None:
            message_id = value.strip().decode("ascii", "replace")
        if subject is not None and message_id is not None:
            break
    return subject or "", message_id or ""


def _row_to_entry(row: tuple[Any, ...]) -> InboxEntry:
    return InboxEntry(
        id=row[0],
        received_at=row[1],
        mail_from=row[2],
        rcpt_tos=tuple(json.loads(row[3])),
        subject=row[4],
        message_id=row[5],
        size=row[6],
        path=row[7],
    )


class _IndexWriter:
    """Owns the index connection and the files; every method runs on the writer thread."""

    def __init__(self, directory: Path, keep: int) -> None:
        self.directory = directory
        self.keep = keep
        self._db: sqlite3.Connection | None = None
        self._count = 0

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.directory / INDEX_NAME, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=10000")
        db.executescript(_SCHEMA)
        self._db = db
        self._count = db.execute("SELECT count(*) FROM messages").fetchone()[0]
        self._remove_orphans()
        self._prune()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def write(self, batch: list[_Pending]) -> None:
        """Write the files, then index them in one transaction, then prune."""
        db = self._db
        assert db is not None
        rows = []
        for item in batch:
            entry = item.entry
            subject, message_id = _headers(item.raw)
            (self.directory / entry.path).write_bytes(item.raw)
            rows.append(
                (
                    entry.id,
                    entry.received_at,
                    entry.mail_from,
                    json.dumps(list(entry.rcpt_tos), ensure_ascii=False),
                    subject,
                    message_id,
                    entry.size,
                    entry.path,
                )
            )
        db.execute("BEGIN")
        try:
            db.executemany(f"INSERT INTO messages ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)", rows)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._count += len(rows)
        self._prune()

    def _prune(self) -> None:
        excess = self._count - self.keep
        if excess <= 0:
            return
        db = self._db
        assert db is not None
        db.execute("BEGIN")
        try:
            paths = db.execute(
                "DELETE FROM messages WHERE id IN "
                "(SELECT id FROM messages ORDER BY received_at, id LIMIT ?) RETURNING path",
                (excess,),
            ).fetchall()
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._count -= len(paths)
        # Files go after the commit: a crash in between leaves orphans, removed at the next start.
        for (path,) in paths:
            (self.directory / path).unlink(missing_ok=True)

    def _remove_orphans(self) -> None:
        """Delete .eml files the index does not know (a crash between file write and commit)."""
        db = self._db
        assert db is not None
        known = {row[0] for row in db.execute("SELECT path FROM messages")}
        for file in self.directory.glob("*.eml"):
            if file.name not in known:
                file.unlink(missing_ok=True)


def _unstuff(data: bytes) -> bytes:
    """Undo RFC 5321 dot-stuffing: drop the first dot of every line that starts with one."""
    data = data.replace(b"\r\n.", b"\r\n")
    return data[1:] if data.startswith(b".") else data


class _CaptureSMTP(SMTPServer):
    """aiosmtpd's server with a DATA reader that takes the message in chunks, not lines.

    The stock reader awaits once per line (a 13 kB HTML email: ~150 awaits), which made the
    inbox the bottleneck at a few hundred messages/s; reading up to each ``.<CRLF>`` is an
    order of magnitude cheaper. Long lines are accepted as Postfix does; oversize messages
    still get 552.
    """

    # The stream limit bounds one read; command lines are still held to command_size_limit.
    line_length_limit = 64 * 1024

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # The inherited parser builds a typing.Protocol class on every call (~250 µs).
        match = _SIMPLE_PATH.fullmatch(arg.strip())
        if match is None:
            return super()._getaddr(arg)
        address, rest = match.group(1), match.group(2).strip()
        local = address.rpartition("@")[0]
        if self.local_part_limit and len(local) > self.local_part_limit:
            return None, None
        return address, rest

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        parts: list[bytes] = []
        size = 0
        tail = b""
        limit = self.data_size_limit
        too_much = False
        while True:
            try:
                chunk = await self._reader.readuntil(b".\r\n")
            except asyncio.LimitOverrunError as exc:
                chunk = await self._reader.read(exc.consumed)
            except asyncio.IncompleteReadError:
                return  # the client went away mid-message
            size += len(chunk)
            tail = (tail + chunk)[-5:]
            end = tail.endswith(b"\r\n.\r\n") or (size == 3 and chunk == b".\r\n")
            if limit and size > limit + 3:
                too_much = True
                parts.clear()
            elif not too_much:
                parts.append(chunk)
            if end:
                break
        if too_much:
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            await self.push("552 5.3.4 Error: message too big")
            return
        self.envelope.original_content = self.envelope.content = _unstuff(b"".join(parts)[:-3])
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push(status if isinstance(status, str) else "250 OK")


class _Handler:
    """aiosmtpd handler: hands each message to the inbox and answers once it is stored."""

    def __init__(self, inbox: CaptureInbox) -> None:
        self._inbox = inbox

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        try:
            ident = await self._inbox.store(envelope.mail_from or "", tuple(envelope.rcpt_tos), raw)
        except (OSError, sqlite3.Error, RuntimeError) as exc:
            # Transient on purpose: a full disk must defer the sender's mail, not bounce it.
            log.error("capture inbox: could not store a message: %s", exc)
            return "451 4.3.0 Error: could not store the message, try again later"
        await self._inbox.notify(raw, tuple(envelope.rcpt_tos))
        return f"250 2.0.0 Ok: queued as {ident}"


class CaptureInbox:
    """An SMTP server on the running event loop that stores every message it receives."""

    def __init__(
        self,
        directory: Path,
        keep: int,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        hostname: str = "capture.inbox.local",
        on_message: OnMessage | None = None,
    ) -> None:
        """``on_message(raw, rcpt_tos)`` is awaited for every stored message, before the 250
        (e.g. to apply a bounce report mailed to the bounce domain); its errors are logged."""
        self.on_message = on_message
        self.directory = Path(directory)
        self.keep = max(1, keep)
        self.max_message_size = max_message_size
        self.hostname = hostname
        self._writer = _IndexWriter(self.directory, self.keep)
        self._executor: ThreadPoolExecutor | None = None
        self._server: asyncio.Server | None = None
        self._pending: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._closing = False
        self._sessions: weakref.WeakSet[SMTPServer] = weakref.WeakSet()
        self.address: tuple[str, int] | None = None
        self.received = 0  # messages stored since start

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Open the index and listen on ``host:port`` (0: a free port); return the address."""
        # aiosmtpd logs every command and connection at INFO: thousands of lines a second
        # under load. Quiet it unless someone configured that logger on purpose.
        smtpd_log = logging.getLogger("mail.log")
        if smtpd_log.level == logging.NOTSET:
            smtpd_log.setLevel(logging.WARNING)
        loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inbox-writer")
        try:
            await loop.run_in_executor(self._executor, self._writer.open)
            self._server = await loop.create_server(self._make_protocol, host, port)
        except BaseException:
            await self._shutdown_executor()
            raise
        self._closing = False
        self._flusher = asyncio.create_task(self._flush_loop(), name="inbox-flusher")
        sockname = self._server.sockets[0].getsockname()
        self.address = (str(sockname[0]), int(sockname[1]))
        log.info("capture inbox listening on %s:%d, storing in %s", *self.address, self.directory)
        return self.address

    async def stop(self) -> None:
        """Stop listening, close open sessions, write what is pending, close the index."""
        if self._server is not None:
            self._server.close()
            sessions = list(self._sessions)
            for session in sessions:
                if session.transport is not None:
                    session.transport.close()
            await self._server.wait_closed()
            # Python 3.11's wait_closed() does not wait for the sessions; their handler tasks
            # end once connection_lost() cancels them.
            handlers = [t for s in sessions if (t := getattr(s, "_handler_coroutine", None))]
            if handlers:
                await asyncio.wait(handlers, timeout=5)
            self._server = None
        self._closing = True
        self._wakeup.set()
        if self._flusher is not None:
            await self._flusher
            self._flusher = None
        await self._shutdown_executor()

    async def _shutdown_executor(self) -> None:
        if self._executor is None:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._writer.close)
        self._executor.shutdown(wait=True)
        self._executor = None

    def _make_protocol(self) -> SMTPServer:
        session = _CaptureSMTP(
            _Handler(self),
            data_size_limit=self.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,  # keep the bytes as sent: 8BITMIME bodies stay untouched
            hostname=self.hostname,
            ident="Campaign Console capture inbox",
        )
        self._sessions.add(session)
        return session

    async def store(self, mail_from: str, rcpt_tos: tuple[str, ...], raw: bytes) -> str:
        """Queue one message for the writer, wait until it is on disk and indexed; its id."""
        if self._closing or self._executor is None:
            raise RuntimeError("the capture inbox is not running")
        ident = new_id()
        entry = InboxEntry(
            id=ident,
            received_at=time.time(),
            mail_from=mail_from,
            rcpt_tos=rcpt_tos,
            subject="",
            message_id="",
            size=len(raw),
            path=f"{ident}.eml",
        )
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(entry, raw, done))
        self._wakeup.set()
        await done
        return ident

    async def notify(self, raw: bytes, rcpt_tos: tuple[str, ...]) -> None:
        """Run the ``on_message`` hook for one stored message; never raises."""
        hook = self.on_message
        if hook is None:
            return
        try:
            await hook(raw, rcpt_tos)
        except Exception:  # the message is stored: the sender still gets its 250
            log.exception("capture inbox: the on_message hook failed")

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            batch, self._pending = self._pending, []
            if batch:
                assert self._executor is not None
                try:
                    await loop.run_in_executor(self._executor, self._writer.write, batch)
                except Exception as exc:
                    log.exception("capture inbox: writing %d messages failed", len(batch))
                    for item in batch:
                        if not item.done.done():
                            item.done.set_exception(exc)
                else:
                    self.received += len(batch)
                    for item in batch:
                        if not item.done.done():
                            item.done.set_result(None)
            if self._closing and not self._pending:
                return


# --- the read side: usable without a running server -------------------------------------------


@contextmanager
def _read_index(directory: Path) -> Iterator[sqlite3.Connection | None]:
    path = Path(directory) / INDEX_NAME
    if not path.exists():
        yield None
        return
    with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
        db.execute("PRAGMA busy_timeout=5000")
        yield db


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def list_messages(directory: Path, limit: int = 50, query: str | None = None) -> list[InboxEntry]:
    """The newest ``limit`` messages; ``query`` matches subject, sender or recipients."""
    with _read_index(directory) as db:
        if db is None:
            return []
        sql = f"SELECT {_COLUMNS} FROM messages"
        params: list[Any] = []
        if query:
            sql += (
                " WHERE subject LIKE ? ESCAPE '\\' OR mail_from LIKE ? ESCAPE '\\'"
                " OR rcpt_tos LIKE ? ESCAPE '\\' OR message_id LIKE ? ESCAPE '\\'"
            )
            params.extend([_like(query)] * 4)
        sql += " ORDER BY received_at DESC, id DESC LIMIT ?"
        params.append(max(0, limit))
        return [_row_to_entry(row) for row in db.execute(sql, params)]


def count_messages(directory: Path) -> int:
    """How many messages the inbox holds."""
    with _read_index(directory) as db:
        if db is None:
            return 0
        count: int = db.execute("SELECT count(*) FROM messages").fetchone()[0]
        return count


def get_message(directory: Path, id: str) -> tuple[InboxEntry, bytes]:
    """One message's index entry and raw bytes; raises :class:`InboxMessageNotFound`."""
    with _read_index(directory) as db:
        row = None
        if db is not None:
            row = db.execute(f"SELECT {_COLUMNS} FROM messages WHERE id = ?", (id,)).fetchone()
    if row is None:
        raise InboxMessageNotFound(f"no message {id!r} in the capture inbox")
    entry = _row_to_entry(row)
    try:
        raw = (Path(directory) / Path(entry.path).name).read_bytes()
    except FileNotFoundError as exc:  # pruned between the lookup and the read
        raise InboxMessageNotFound(f"message {id!r} was pruned from the capture inbox") from exc
    return entry, raw
