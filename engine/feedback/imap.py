"""Bounces and complaints fetched from an IMAP mailbox (the ``[feedback]`` ``imap_*`` settings).

Every ``imap_interval`` seconds the poller connects (implicit TLS by default, or STARTTLS;
certificates validated), logs in with the password from the OS keyring, selects
``imap_folder``, fetches up to ``imap_batch`` unseen messages without marking them, feeds each
through ``FeedbackIntake.handle_report`` (DSN / ARF parsing, VERP or Message-ID tie to the
intent, outcome update, suppression), and only then marks them ``\\Seen``, moves them to
``imap_move_to`` or deletes them. A message whose report cannot be applied (the store is
down) is left unseen and fetched again at the next poll; one that does not parse is counted
and put away like the others, or it would be fetched forever.

Why ``imaplib`` in a thread rather than an asyncio client: it is the standard library's
mature client (TLS, STARTTLS, UID commands), a poll a minute moves a few messages, and one
dedicated thread (``feedback-imap``) keeps the blocking socket off the event loop; an asyncio
IMAP client would be a new dependency for no measurable gain here.

Failures never stop the node: each poll's error is one ``ImapError`` subclass (``ImapAuthFailed``,
``ImapTlsFailed``, ``ImapFolderMissing``, ``ImapUnavailable``, ``ImapPasswordMissing``,
``ImapProtocolError``), logged in one line and counted as
``feedback_imap_errors_total{reason}``; the next poll tries again. The password is never
logged, and errors quote the server's reply, not the commands sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import ipaddress
import logging
import re
import socket
import ssl
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from engine.config import FeedbackSettings
from engine.errors import ConfigError, EngineError
from engine.feedback import MAX_REPORT_BYTES
from engine.feedback.intake import FeedbackIntake
from engine.telemetry import Telemetry

__all__ = [
    "ImapAuthFailed",
    "ImapError",
    "ImapFolderMissing",
    "ImapPasswordMissing",
    "ImapPoller",
    "ImapProtocolError",
    "ImapTlsFailed",
    "ImapUnavailable",
    "PollResult",
    "keyring_password",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
_SIZE = re.compile(rb"UID (\d+)\D.*?RFC822\.SIZE (\d+)|RFC822\.SIZE (\d+)\D.*?UID (\d+)")


class ImapError(EngineError):
    """One poll failed; ``reason`` is the label of ``feedback_imap_errors_total``."""

    reason = "protocol"


class ImapAuthFailed(ImapError, PermissionError):
    reason = "auth"


class ImapTlsFailed(ImapError, ConnectionError):
    reason = "tls"


class ImapFolderMissing(ImapError, LookupError):
    reason = "folder"


class ImapUnavailable(ImapError, ConnectionError):
    reason = "connect"


class ImapPasswordMissing(ImapError, LookupError):
    reason = "password"


class ImapProtocolError(ImapError):
    reason = "protocol"


@dataclass
class PollResult:
    fetched: int = 0  # messages read from the folder
    applied: int = 0  # reports that parsed and were applied
    invalid: int = 0  # messages that were not usable reports (put away all the same)
    kept: int = 0  # left unseen for the next poll (applying failed)
    too_large: int = 0  # over the report size limit, put away unread


def keyring_password(service: str, user: str) -> Callable[[], str]:
    """The IMAP password from the OS keyring; ``ImapPasswordMissing`` when there is no
    backend or no entry (never a plaintext fallback)."""

    def lookup() -> str:
        import keyring  # slow to import: only when an IMAP mailbox is configured
        from keyring.errors import KeyringError

        try:
            value = keyring.get_password(service, user)
        except KeyringError as exc:
            raise ImapPasswordMissing(
                f"no usable OS keyring for the IMAP password ({type(exc).__name__}: {exc})"
            ) from None
        if value is None:
            raise ImapPasswordMissing(
                f"no IMAP password in the OS keyring for service {service!r}, user {user!r} "
                f"(set it with: keyring set {service} {user})"
            )
        return value

    return lookup


def _quote(mailbox: str) -> str:
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _text(data: Any) -> str:
    """The server's reply lines as one short string (for errors and logs)."""
    parts = data if isinstance(data, list) else [data]
    out = []
    for part in parts:
        if isinstance(part, bytes):
            out.append(part.decode("utf-8", "replace"))
        elif isinstance(part, tuple):
            continue
        elif part is not None:
            out.append(str(part))
    return " ".join(out)[:300]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ImapPoller:
    """Polls one IMAP folder for reports; ``start()``/``stop()``, or ``poll()`` once."""

    def __init__(
        self,
        settings: FeedbackSettings,
        intake: FeedbackIntake,
        telemetry: Telemetry,
        *,
        password: Callable[[], str] | None = None,
    ) -> None:
        if not settings.imap_host or not settings.imap_user:
            raise ConfigError("feedback.imap_host and feedback.imap_user are required")
        if settings.imap_tls == "none" and not _is_loopback(settings.imap_host):
            raise ConfigError(
                "feedback.imap_tls = 'none' sends the password in clear; it is allowed for "
                f"loopback test servers only, not {settings.imap_host!r}"
            )
        self.settings = settings
        self._intake = intake
        self._telemetry = telemetry
        self._password = password or keyring_password(
            settings.imap_keyring_service, settings.imap_user
        )
        port = settings.imap_port or (993 if settings.imap_tls == "implicit" else 143)
        self.address = f"{settings.imap_host}:{port}"
        self._port = port
        self._conn: imaplib.IMAP4 | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.last_error: str | None = None
        self.last_poll_at: float | None = None

    def __repr__(self) -> str:
        return f"ImapPoller({self.settings.imap_user}@{self.address}/{self.settings.imap_folder})"

    # -- running --------------------------------------------------------------------------

    async def start(self) -> None:
        """Poll now and then every ``imap_interval`` seconds, until ``stop()``."""
        if self._task is not None:
            return
        if not self.settings.imap_verify:
            log.warning("feedback: IMAP certificate checks are off for %s", self.address)
        self._stop.clear()
        self._task = asyncio.create_task(self._run(), name="feedback-imap")
        log.info("feedback: polling IMAP %r every %gs", self, self.settings.imap_interval)

    async def stop(self) -> None:
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            # A poll in progress finishes (its thread cannot be interrupted; the socket
            # timeout bounds it), so nothing applied is left unmarked.
            await asyncio.gather(task, return_exceptions=True)
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)

    async def _run(self) -> None:
        while not self._stop.is_set():
            await self.poll()
            try:
                await asyncio.wait_for(self._stop.wait(), self.settings.imap_interval)
            except TimeoutError:
                pass

    async def poll(self) -> PollResult | None:
        """One poll; None when it failed (the error is logged, counted and kept in
        ``last_error``)."""
        started = time.monotonic()
        try:
            result = await self._poll()
        except ImapError as exc:
            self._telemetry.count("feedback_imap_errors_total", reason=exc.reason)
            self.last_error = f"{exc.reason}: {exc}"
            log.error("feedback: IMAP poll of %r failed: %s", self, exc)
            await self._blocking(self._logout)
            return None
        except Exception as exc:  # a bug must not end the polling
            self._telemetry.count("feedback_imap_errors_total", reason="internal")
            self.last_error = f"internal: {type(exc).__name__}: {exc}"
            log.exception("feedback: IMAP poll of %r failed", self)
            await self._blocking(self._logout)
            return None
        self.last_error = None
        self.last_poll_at = time.time()
        self._telemetry.count("feedback_imap_polls_total")
        if result.fetched:
            self._telemetry.count("feedback_imap_messages_total", result.fetched)
            log.info(
                "feedback: IMAP %r: %d fetched, %d applied, %d invalid, %d kept (%.2fs)",
                self,
                result.fetched,
                result.applied,
                result.invalid,
                result.kept,
                time.monotonic() - started,
            )
        return result

    async def _blocking(self, work: Callable[[], T]) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feedback-imap")
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    async def _poll(self) -> PollResult:
        result = PollResult()
        messages, too_large = await self._blocking(self._fetch)
        result.fetched = len(messages) + len(too_large)
        result.too_large = len(too_large)
        result.invalid += len(too_large)
        for uid in too_large:
            self._telemetry.count("feedback_invalid_total", source="imap")
            log.warning(
                "feedback: IMAP message %s is over %d bytes; not a report, put away", uid,
                MAX_REPORT_BYTES,
            )  # fmt: skip
        done = list(too_large)
        for uid, raw in messages:
            try:
                applied = await self._intake.handle_report(raw, source="imap")
            except Exception as exc:
                result.kept += 1
                log.error("feedback: applying IMAP message %s failed, kept for later: %s", uid,
                          exc)  # fmt: skip
                continue
            done.append(uid)
            if applied is None:
                result.invalid += 1
            else:
                result.applied += 1
        await self._blocking(lambda: self._put_away(done))
        return result

    # -- the IMAP conversation (in the poller's thread) -----------------------------------

    def _context(self) -> ssl.SSLContext:
        s = self.settings
        try:
            context = ssl.create_default_context(cafile=s.imap_ca_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise ImapTlsFailed(
                f"cannot load feedback.imap_ca_file {s.imap_ca_file}: {exc}"
            ) from None
        if not s.imap_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _connect(self) -> imaplib.IMAP4:
        s = self.settings
        host, port, timeout = s.imap_host, self._port, s.imap_timeout
        context = self._context() if s.imap_tls != "none" else None
        try:
            if s.imap_tls == "implicit":
                return imaplib.IMAP4_SSL(host, port, ssl_context=context, timeout=timeout)
            conn = imaplib.IMAP4(host, port, timeout=timeout)
        except ssl.SSLError as exc:
            raise ImapTlsFailed(f"TLS with {self.address} failed: {exc}") from None
        except (OSError, imaplib.IMAP4.error) as exc:
            raise ImapUnavailable(f"cannot connect to {self.address}: {exc}") from None
        if s.imap_tls == "starttls":
            if "STARTTLS" not in conn.capabilities:
                _close(conn)
                raise ImapTlsFailed(
                    f"{self.address} does not offer STARTTLS; not logging in without TLS"
                )
            try:
                conn.starttls(ssl_context=context)
            except (ssl.SSLError, imaplib.IMAP4.error, OSError) as exc:
                _close(conn)
                raise ImapTlsFailed(f"STARTTLS with {self.address} failed: {exc}") from None
        return conn

    def _fetch(self) -> tuple[list[tuple[str, bytes]], list[str]]:
        s = self.settings
        password = self._password()  # before connecting: a missing password is its own error
        conn = self._connect()
        self._conn = conn
        try:
            conn.login(s.imap_user, password)
        except imaplib.IMAP4.error as exc:
            reply = _text(exc.args[0] if exc.args else "")
            raise ImapAuthFailed(
                f"login as {s.imap_user!r} at {self.address} refused: {reply}"
            ) from None
        except OSError as exc:
            raise ImapUnavailable(f"connection to {self.address} lost at login: {exc}") from None
        try:
            typ, data = conn.select(_quote(s.imap_folder))
            if typ != "OK":
                raise ImapFolderMissing(
                    f"cannot open folder {s.imap_folder!r} at {self.address}: {_text(data)}"
                )
            typ, data = conn.uid("SEARCH", "UNSEEN")
            _ok(typ, data, "SEARCH UNSEEN")
            uids = [u.decode("ascii") for u in (data[0] or b"").split()][: s.imap_batch]
            if not uids:
                return [], []
            typ, data = conn.uid("FETCH", ",".join(uids), "(RFC822.SIZE)")
            _ok(typ, data, "FETCH RFC822.SIZE")
            sizes = _sizes(data)
            too_large = [u for u in uids if sizes.get(u, 0) > MAX_REPORT_BYTES]
            messages: list[tuple[str, bytes]] = []
            for uid in uids:
                if uid in too_large:
                    continue
                typ, data = conn.uid("FETCH", uid, "(BODY.PEEK[])")  # PEEK: not marked seen
                _ok(typ, data, f"FETCH {uid}")
                for part in data:
                    if isinstance(part, tuple) and len(part) > 1 and isinstance(part[1], bytes):
                        messages.append((uid, part[1]))
                        break
            return messages, too_large
        except (OSError, imaplib.IMAP4.abort) as exc:
            raise ImapUnavailable(f"connection to {self.address} lost: {exc}") from None
        except imaplib.IMAP4.error as exc:
            raise ImapProtocolError(f"{self.address}: {exc}") from None

    def _put_away(self, uids: list[str]) -> None:
        conn = self._conn
        try:
            if conn is None or not uids:
                return
            s = self.settings
            where = ",".join(uids)
            if s.imap_after == "seen":
                _ok(*conn.uid("STORE", where, "+FLAGS.SILENT", r"(\Seen)"), "STORE \\Seen")
                return
            if s.imap_after == "move":
                target = _quote(s.imap_move_to)
                conn.create(target)  # NO when it exists already: fine
                if _has(conn, "MOVE"):
                    _ok(*conn.uid("MOVE", where, target), f"MOVE to {s.imap_move_to!r}")
                    return
                _ok(*conn.uid("COPY", where, target), f"COPY to {s.imap_move_to!r}")
            _ok(*conn.uid("STORE", where, "+FLAGS.SILENT", r"(\Seen \Deleted)"), "STORE \\Deleted")
            if _has(conn, "UIDPLUS"):
                _ok(*conn.uid("EXPUNGE", where), "UID EXPUNGE")
            else:
                _ok(*conn.expunge(), "EXPUNGE")
        except (OSError, imaplib.IMAP4.abort) as exc:
            raise ImapUnavailable(f"connection to {self.address} lost: {exc}") from None
        except imaplib.IMAP4.error as exc:
            raise ImapProtocolError(f"{self.address}: {exc}") from None
        finally:
            self._logout()

    def _logout(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            _close(conn)


def _has(conn: imaplib.IMAP4, capability: str) -> bool:
    """Capabilities are often announced again after login (imaplib keeps the first list)."""
    if capability in conn.capabilities:
        return True
    with contextlib.suppress(imaplib.IMAP4.error, OSError):
        typ, data = conn.capability()
        if typ == "OK" and data and isinstance(data[0], bytes):
            conn.capabilities = tuple(data[0].decode("ascii", "replace").upper().split())
    return capability in conn.capabilities


def _ok(typ: str, data: Any, what: str) -> None:
    if typ != "OK":
        raise ImapProtocolError(f"{what} refused: {_text(data)}")


def _sizes(data: list[Any]) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for part in data:
        line = part[0] if isinstance(part, tuple) else part
        if not isinstance(line, bytes):
            continue
        match = _SIZE.search(line)
        if match:
            uid, size = (match.group(1), match.group(2)) if match.group(1) else (
                match.group(4), match.group(3))  # fmt: skip
            sizes[uid.decode("ascii")] = int(size)
    return sizes


def _close(conn: imaplib.IMAP4) -> None:
    with contextlib.suppress(imaplib.IMAP4.error, OSError, socket.timeout, ValueError):
        conn.logout()
    with contextlib.suppress(OSError):
        conn.shutdown()
