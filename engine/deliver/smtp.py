"""One SMTP connection and the mail transaction with a gate before the final dot.

aiosmtplib does connect, EHLO, STARTTLS and AUTH. The transaction itself runs on its protocol
layer, so DATA can be split: the envelope and the dot-stuffed body go out, then ``before_dot``
is awaited (the deliver stage commits "this message is on the far side of the dot" there), and
only then is the terminating ``.<CRLF>`` written and the reply read. Whatever goes wrong, the
result says on which side of the dot it went wrong, which is what decides between "resend"
and "uncertain".

This transport makes one round trip per command. :class:`Transport` is the seam for a
PIPELINING (RFC 2920) transport that sends MAIL, RCPT and DATA in one write.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import aiosmtplib
from aiosmtplib.errors import (
    SMTPAuthenticationError,
    SMTPConnectTimeoutError,
    SMTPException,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)
from aiosmtplib.protocol import SMTPProtocol

from engine.deliver.model import Reply
from engine.deliver.relay import RelayConfig
from engine.errors import RelayTimeout, RelayUnavailable

log = logging.getLogger(__name__)

DOT = b".\r\n"
# Errors that mean the connection is gone or out of step; the connection is closed after them.
_LOST = (SMTPServerDisconnected, SMTPTimeoutError, ConnectionError, OSError)


def stuff(message: bytes) -> bytes:
    """Dot-stuff a CRLF message for DATA (RFC 5321 4.5.2), ending in CRLF, without the dot."""
    if message.startswith(b"."):
        message = b"." + message
    message = message.replace(b"\r\n.", b"\r\n..")
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    return message


@dataclass(frozen=True, slots=True)
class Envelope:
    """MAIL FROM and RCPT TO of one transaction, and the ESMTP parameters it needs."""

    sender: str
    recipient: str
    size: int = 0
    eight_bit: bool = False


@dataclass(frozen=True, slots=True)
class TransactionResult:
    """How a transaction ended.

    ``reply`` is the reply that decided it (the first non-success, or the reply to the final
    dot), or ``None`` when the connection was lost or timed out (``error`` says how).
    ``dot_written`` tells whether the final dot was handed to the socket; ``aborted`` that
    ``before_dot`` refused, so nothing was sent past the body.
    """

    reply: Reply | None
    stage: str  # "mail", "rcpt", "data", "dot"
    dot_written: bool
    error: str | None = None
    aborted: bool = False
    data_started: float = 0.0  # perf_counter when DATA was sent

    @property
    def delivered(self) -> bool:
        return self.reply is not None and self.stage == "dot" and self.reply.positive


class Transport(Protocol):
    """What a route needs from a connection (a pipelined transport implements the same)."""

    last_used: float  # monotonic time of the last completed command

    @property
    def is_connected(self) -> bool: ...

    async def connect(self) -> None: ...

    async def transact(
        self, envelope: Envelope, body: bytes, before_dot: Callable[[], Awaitable[bool]]
    ) -> TransactionResult: ...

    async def reset(self) -> None: ...

    async def ping(self) -> bool: ...

    async def quit(self) -> None: ...

    def close(self) -> None: ...


class SmtpConnection:
    """One persistent connection to a relay, per-command round trips."""

    def __init__(self, relay: RelayConfig, *, tls_context: ssl.SSLContext | None = None) -> None:
        self.relay = relay
        self._tls_context = tls_context
        self._smtp: aiosmtplib.SMTP | None = None
        self._eight_bit = False
        self._size = False
        self.last_used = 0.0  # monotonic time of the last completed command

    @property
    def is_connected(self) -> bool:
        return self._smtp is not None and self._smtp.is_connected

    async def connect(self) -> None:
        """Connect, EHLO, STARTTLS and AUTH as configured; ``RelayUnavailable`` otherwise."""
        self.close()
        relay = self.relay
        smtp = aiosmtplib.SMTP(
            hostname=relay.host,
            port=relay.port,
            timeout=relay.timeout,
            use_tls=relay.tls == "implicit",
            start_tls=relay.tls == "starttls",
            validate_certs=relay.validate_certs,
            tls_context=self._tls_context,
            local_hostname=relay.ehlo_name,
            username=relay.username,
            password=relay.password,
        )
        try:
            await smtp.connect()
            if smtp.is_ehlo_or_helo_needed:
                await smtp.ehlo()
        except SMTPConnectTimeoutError as exc:
            smtp.close()
            raise RelayTimeout(f"relay {relay.address}: {exc}") from exc
        except SMTPAuthenticationError as exc:
            smtp.close()
            raise RelayUnavailable(f"relay {relay.address}: login refused: {exc}") from exc
        except (SMTPException, OSError) as exc:
            smtp.close()
            raise RelayUnavailable(f"relay {relay.address}: {exc}") from exc
        self._smtp = smtp
        self._eight_bit = smtp.supports_extension("8bitmime")
        self._size = smtp.supports_extension("size")
        self.last_used = time.monotonic()

    def _protocol(self) -> SMTPProtocol:
        smtp = self._smtp
        if smtp is None or smtp.protocol is None:
            raise SMTPServerDisconnected("not connected")
        return smtp.protocol

    async def transact(
        self, envelope: Envelope, body: bytes, before_dot: Callable[[], Awaitable[bool]]
    ) -> TransactionResult:
        """Run one mail transaction; ``body`` is dot-stuffed and ends in CRLF (see :func:`stuff`).

        Never raises for relay behaviour: every way it can end is a :class:`TransactionResult`.
        Exceptions from ``before_dot`` propagate (after closing the connection, since a
        connection stuck inside DATA cannot be reused).
        """
        timeout = self.relay.timeout
        stage = "mail"
        data_started = 0.0
        try:
            protocol = self._protocol()
            params = []
            if self._size and envelope.size:
                params.append(b"SIZE=%d" % envelope.size)
            if envelope.eight_bit and self._eight_bit:
                params.append(b"BODY=8BITMIME")
            mail_from = b"FROM:<" + envelope.sender.encode("ascii") + b">"
            response = await protocol.execute_command(b"MAIL", mail_from, *params, timeout=timeout)
            if response.code != 250:
                return TransactionResult(Reply(response.code, response.message), stage, False)
            stage = "rcpt"
            rcpt_to = b"TO:<" + envelope.recipient.encode("ascii") + b">"
            response = await protocol.execute_command(b"RCPT", rcpt_to, timeout=timeout)
            if response.code not in (250, 251):
                return TransactionResult(Reply(response.code, response.message), stage, False)
            stage = "data"
            data_started = time.perf_counter()
            response = await protocol.execute_command(b"DATA", timeout=timeout)
            if response.code != 354:
                return TransactionResult(
                    Reply(response.code, response.message), stage, False, data_started=data_started
                )
            protocol.write(body)
        except (*_LOST, SMTPResponseException) as exc:
            self.close()
            return TransactionResult(None, stage, False, _describe(exc), data_started=data_started)

        try:
            go = await before_dot()
        except BaseException:
            self.close()
            raise
        if not go:
            self.close()  # the only way out of DATA without the dot
            return TransactionResult(None, "dot", False, aborted=True, data_started=data_started)

        try:
            protocol.write(DOT)
        except _LOST as exc:
            self.close()
            return TransactionResult(None, "dot", False, _describe(exc), data_started=data_started)
        try:
            response = await protocol.read_response(timeout=timeout)
        except (*_LOST, SMTPResponseException) as exc:
            self.close()
            return TransactionResult(None, "dot", True, _describe(exc), data_started=data_started)
        self.last_used = time.monotonic()
        return TransactionResult(
            Reply(response.code, response.message), "dot", True, data_started=data_started
        )

    async def _command(self, *args: bytes) -> Reply | None:
        try:
            response = await self._protocol().execute_command(*args, timeout=self.relay.timeout)
        except _LOST:
            self.close()
            return None
        self.last_used = time.monotonic()
        if response.code == 421:  # the server is closing this connection
            self.close()
        return Reply(response.code, response.message)

    async def reset(self) -> None:
        """RSET after a failed transaction; a connection that will not reset is closed."""
        if self.is_connected:
            reply = await self._command(b"RSET")
            if reply is None or reply.code != 250:
                self.close()

    async def ping(self) -> bool:
        """NOOP: is this (idle) connection still usable?"""
        if not self.is_connected:
            return False
        reply = await self._command(b"NOOP")
        if reply is None or reply.code != 250:
            self.close()
            return False
        return True

    async def quit(self) -> None:
        """Say goodbye politely (bounded by the timeout), then close."""
        if self.is_connected:
            try:
                await asyncio.wait_for(self._protocol().execute_command(b"QUIT"), 2.0)
            except (*_LOST, SMTPResponseException, TimeoutError):
                pass
        self.close()

    def close(self) -> None:
        if self._smtp is not None:
            self._smtp.close()
            self._smtp = None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SMTPTimeoutError | TimeoutError):
        return f"timed out: {exc}"
    return f"connection lost: {exc}" if str(exc) else f"connection lost: {type(exc).__name__}"
