"""Where a route sends: the relay's address, TLS mode, credentials and pool size."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Literal, cast
from urllib.parse import parse_qs, unquote, urlsplit

from engine.errors import ConfigError

TlsMode = Literal["none", "starttls", "implicit"]
_TLS_MODES = ("none", "starttls", "implicit")


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address: the only place a login may go without TLS."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class RelayConfig:
    """One SMTP relay.

    ``tls``: ``none`` (plain SMTP), ``starttls`` (upgrade required; fails if not offered) or
    ``implicit`` (TLS from the first byte, usually port 465). ``connections`` is the size of the
    route's pool of persistent connections; ``timeout`` bounds every connect and reply.
    """

    host: str
    port: int = 25
    tls: TlsMode = "none"
    timeout: float = 30.0
    connections: int = 8
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    validate_certs: bool = True
    ca_file: str | None = None  # trust these CAs (PEM) instead of the system's
    local_hostname: str = ""  # the EHLO name; empty: this host's name

    def __post_init__(self) -> None:
        if self.tls not in _TLS_MODES:
            raise ConfigError(f"relay tls: expected none, starttls or implicit, got {self.tls!r}")
        if not 0 < self.port < 65536:
            raise ConfigError(f"relay port out of range: {self.port}")
        if self.connections < 1:
            raise ConfigError(f"relay connections must be at least 1, got {self.connections}")
        if self.timeout <= 0:
            raise ConfigError(f"relay timeout must be positive, got {self.timeout}")
        if self.username and self.tls == "none" and not is_loopback(self.host):
            raise ConfigError(
                f"relay {self.host}: a login needs TLS (tls=starttls or implicit); without it "
                "the password would cross the network in clear (allowed to loopback hosts only)"
            )

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def ehlo_name(self) -> str:
        # gethostname() never touches DNS; getfqdn() (aiosmtplib's default) may block for seconds.
        return self.local_hostname or socket.gethostname() or "localhost"

    @classmethod
    def from_url(cls, url: str, *, connections: int = 8, timeout: float = 30.0) -> RelayConfig:
        """Parse ``smtp://[user:pass@]host[:port][?tls=starttls]`` or ``smtps://...`` (implicit).

        ``smtp://`` defaults to port 25 without TLS, ``smtps://`` to port 465 with implicit TLS;
        ``?tls=none|starttls|implicit``, ``?verify=false``, ``?ca=/path/ca.pem`` and
        ``?ehlo=name`` override.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ConfigError(f"relay URL: expected smtp://HOST:PORT or smtps://HOST:PORT: {url!r}")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        tls = query.get("tls", "implicit" if parts.scheme == "smtps" else "none")
        if tls not in _TLS_MODES:
            raise ConfigError(f"relay URL: tls must be none, starttls or implicit, got {tls!r}")
        try:
            port = parts.port or (465 if tls == "implicit" else 25)
        except ValueError as exc:
            raise ConfigError(f"relay URL: bad port in {parts.netloc!r}") from exc
        return cls(
            host=parts.hostname,
            port=port,
            tls=cast(TlsMode, tls),
            timeout=timeout,
            connections=connections,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            validate_certs=query.get("verify", "true").lower() not in ("0", "false", "no"),
            ca_file=query.get("ca") or None,
            local_hostname=query.get("ehlo", ""),
        )
