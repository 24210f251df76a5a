"""Why a first NATS connection failed, in words an operator can act on.

nats-py ends a failed first connection with ``NoServersError`` ("no servers available"), which
says nothing; the reasons arrive before that through its ``error_cb`` (a refused connection,
the server's ``-ERR 'Authorization Violation'``, a timeout, a name that does not resolve, a TLS
certificate that does not verify). :func:`unreachable_words` reads those and says the most
telling one. The words never contain a secret: nats-py's errors carry none, and the URL in a
profile holds no login (``console.profiles.parse_servers`` refuses one).
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Sequence
from urllib.parse import urlsplit

import nats.errors

AUTH_FAILED = "auth"
REFUSED = "refused"
TIMEOUT = "timeout"
NAME = "name"
TLS = "tls"
BAD_URL = "url"
OTHER = "other"


def _hosts(url: str) -> str:
    names = []
    for item in url.split(","):
        try:
            parts = urlsplit(item.strip())
            names.append(f"{parts.hostname}:{parts.port or 4222}" if parts.hostname else item)
        except ValueError:
            names.append(item.strip())
    return ", ".join(names)


def failure_kind(errors: Sequence[BaseException]) -> tuple[str, BaseException | None]:
    """The most telling reason among ``errors`` (auth beats TLS beats timeout beats refused)."""
    order = (AUTH_FAILED, TLS, NAME, TIMEOUT, REFUSED, BAD_URL, OTHER)
    found: dict[str, BaseException] = {}
    for exc in errors:
        found.setdefault(_kind(exc), exc)
    for kind in order:
        if kind in found:
            return kind, found[kind]
    return OTHER, None


def _kind(exc: BaseException) -> str:
    text = str(exc).lower()
    if isinstance(exc, nats.errors.AuthorizationError) or any(
        words in text
        for words in ("authorization violation", "authentication", "user authentication")
    ):
        return AUTH_FAILED
    if isinstance(exc, ssl.SSLError | ssl.CertificateError) or "tls" in text:
        return TLS
    if isinstance(exc, socket.gaierror):
        return NAME
    if isinstance(exc, TimeoutError | nats.errors.TimeoutError):
        return TIMEOUT
    if isinstance(exc, ConnectionRefusedError):
        return REFUSED
    if "invalid connect url" in text or isinstance(exc, ValueError):
        return BAD_URL
    return OTHER


def unreachable_words(
    url: str,
    exc: BaseException,
    errors: Sequence[BaseException] = (),
    timeout: float = 5.0,
) -> str:
    """One or two sentences: what failed connecting to ``url`` and what to check."""
    kind, cause = failure_kind([*errors, exc])
    where = _hosts(url)
    if kind == AUTH_FAILED:
        return (
            f"NATS at {where} refused the login (authorization violation): check the"
            " profile's login kind and its token, user and password, or nkey."
        )
    if kind == TLS:
        reason = getattr(cause, "verify_message", "") or getattr(cause, "reason", "") or ""
        detail = f" ({reason})" if reason else ""
        return (
            f"The TLS connection to {where} failed{detail}: check the TLS CA file, and that"
            " the server speaks TLS on that port."
        )
    if kind == NAME:
        return f"The host name in {url} could not be found (DNS): check the URL."
    if kind == TIMEOUT:
        return (
            f"NATS at {where} did not answer within {timeout:g} s (timeout): check the port,"
            " a firewall or VPN, and that the server is up."
        )
    if kind == REFUSED:
        return (
            f"Nothing accepts connections at {where} (connection refused): is NATS running"
            " there, and is the port right?"
        )
    if kind == BAD_URL:
        return f"{url!r} is not a usable NATS URL: write it as nats://host:4222."
    detail = str(cause or exc) or type(cause or exc).__name__
    return f"Cannot reach NATS at {where}: {detail}."
