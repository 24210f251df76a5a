"""Support for deliver tests: a scripted SMTP server (real aiosmtpd) and ledger helpers.

The server's behaviour for a recipient is chosen by the start of its local part:

- ``ok...`` (or anything else): accept;
- ``defer-once...``: ``451 4.3.0`` at RCPT the first time, accept afterwards;
- ``defer...``: ``451`` at RCPT every time;
- ``bounce...``: ``550 5.1.1`` at RCPT (a hard bounce);
- ``busy-once...``: ``421`` at RCPT and the connection closed, the first time;
- ``reject...``: ``554 5.7.1`` after the final dot (permanent, not a bad address);
- ``drop-before-dot-once...``: the first time, close the connection right after ``354``;
- ``drop-after-dot...``: read the whole message, final dot included, then close, never reply;
- ``slow...``: wait ``slow_seconds`` before ``250``;
- ``full452...``: ``452 4.5.3 Error: too many recipients`` at RCPT;
- ``many552...``: ``552 5.5.3 Too many recipients`` at RCPT (temporary despite the 5).

``banner_421`` makes the first that many connections get ``421`` as their greeting. ``commands``
counts EHLO, STARTTLS, AUTH, MAIL, NOOP, RSET and QUIT, and ``clear_commands`` lists the
commands that arrived before TLS was up (fail-closed tests). ``spans`` records, per accepted
recipient, the monotonic time of its RCPT and of the reply to its final dot (rate and
concurrency tests).

Every message that reached the end of DATA is kept in ``received`` (also the dropped-after-dot
ones: the server got them, which is why the engine must not send them again).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import itertools
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from engine.clock import Clock
from engine.config import Settings
from engine.deliver import DeliveryService, DeliveryTuning, RelayConfig
from engine.deliver.ledger_proxy import RemoteLedger
from engine.deliver.routes import RouteSpec
from engine.render import Renderer, TemplateSource
from engine.store import Store, schema
from engine.telemetry import Telemetry
from engine.unsubscribe import UnsubscribeTokens

TOKENS = UnsubscribeTokens(b"k" * 32)
PUBLIC_URL = "https://engine.example"
FAST = DeliveryTuning(
    poll_interval=0.05,
    renew_every=0.2,
    requeue_first=0.01,
    requeue_max=0.05,
    route_backoff_first=0.2,
    route_backoff_max=0.5,
    drain_timeout=5.0,
)


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message_id(self) -> str:
        head = BytesHeaderParser().parsebytes(self.data)
        return str(head["Message-ID"])

    def header(self, name: str) -> str:
        return str(BytesHeaderParser().parsebytes(self.data)[name])


@dataclass
class ScriptedSmtp:
    """A real SMTP server on a free port whose replies follow the recipient's local part."""

    slow_seconds: float = 1.0
    received: list[Received] = field(default_factory=list)
    rcpt_seen: Counter[str] = field(default_factory=Counter)
    data_seen: Counter[str] = field(default_factory=Counter)
    commands: Counter[str] = field(default_factory=Counter)
    on_data: Callable[[Envelope], None] | None = None  # runs when the final dot has arrived
    host: str = "127.0.0.1"
    port: int = 0
    tls_context: ssl.SSLContext | None = None  # STARTTLS offered (and required) with this
    implicit_tls: bool = False  # TLS from the first byte instead
    credentials: tuple[str, str] | None = None  # AUTH required, with these
    sessions: list[Session] = field(default_factory=list)
    banner_421: int = 0  # refuse this many connections with a 421 greeting
    banners_refused: int = 0
    clear_commands: list[str] = field(default_factory=list)  # commands sent before TLS
    spans: list[tuple[str, float, float]] = field(default_factory=list)  # rcpt, RCPT, reply
    _rcpt_at: dict[str, float] = field(default_factory=dict)
    _server: asyncio.base_events.Server | None = None
    _sessions: list[SMTPServer] = field(default_factory=list)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol,
            self.host,
            0,
            ssl=self.tls_context if self.implicit_tls else None,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for session in self._sessions:
            if session.transport is not None:
                session.transport.close()
        await self._server.wait_closed()
        tasks = [t for s in self._sessions if (t := getattr(s, "_handler_coroutine", None))]
        if tasks:
            await asyncio.wait(tasks, timeout=2)

    def relay(self, **kwargs: Any) -> RelayConfig:
        return RelayConfig(host=self.host, port=self.port, local_hostname="test.client", **kwargs)

    def _protocol(self) -> asyncio.Protocol:
        if self.banners_refused < self.banner_421:
            self.banners_refused += 1
            return _Refuse()
        starttls = self.tls_context if not self.implicit_tls else None
        session = _ScriptedSession(
            _Handler(self),
            hostname="scripted.test",
            ident="scripted",
            tls_context=starttls,
            require_starttls=starttls is not None,
            auth_required=self.credentials is not None,
            auth_require_tls=not self.implicit_tls,
            authenticator=self._authenticate if self.credentials else None,
        )
        session.script = self
        self._sessions.append(session)
        return session

    def _authenticate(
        self, server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and (
                data.login.decode(),
                data.password.decode(),
            )
            == self.credentials
        )
        if ok:
            self.sessions.append(session)
        return AuthResult(success=ok, handled=False)

    def copies(self, address: str) -> int:
        return sum(1 for r in self.received if address in r.rcpt_tos)


class _Refuse(asyncio.Protocol):
    """A server too busy to talk: 421 as the greeting, then close (RFC 5321 3.1)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(b"421 4.3.2 scripted.test Service not available, try later\r\n")
        transport.close()


class _Handler:
    def __init__(self, script: ScriptedSmtp) -> None:
        self.script = script

    async def handle_RCPT(
        self, server: SMTPServer, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        local = address.split("@")[0]
        self.script.rcpt_seen[address] += 1
        if local.startswith("busy-once") and self.script.rcpt_seen[address] == 1:
            assert server.transport is not None
            asyncio.get_running_loop().call_soon(server.transport.close)  # after the reply
            return "421 4.3.2 Service shutting down, closing channel"
        if local.startswith("bounce"):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if local.startswith("full452"):
            return "452 4.5.3 Error: too many recipients"
        if local.startswith("many552"):
            return "552 5.5.3 Too many recipients"
        if local.startswith("defer-once") and self.script.rcpt_seen[address] == 1:
            return "451 4.3.0 Try again later"
        if local.startswith("defer") and not local.startswith("defer-once"):
            return "451 4.3.0 Try again later"
        envelope.rcpt_tos.append(address)
        self.script._rcpt_at[address] = time.monotonic()
        return "250 2.1.5 Ok"


class _ScriptedSession(SMTPServer):
    line_length_limit = 1 << 20
    script: ScriptedSmtp

    def _seen(self, command: str) -> None:
        self.script.commands[command] += 1
        if self.session.ssl is None and not self.script.implicit_tls:
            self.script.clear_commands.append(command)

    async def smtp_EHLO(self, hostname: str) -> None:
        self._seen("EHLO")
        await super().smtp_EHLO(hostname)

    async def smtp_STARTTLS(self, arg: str) -> None:
        self._seen("STARTTLS")
        await super().smtp_STARTTLS(arg)

    async def smtp_AUTH(self, arg: str) -> None:
        self._seen("AUTH")
        await super().smtp_AUTH(arg)

    async def smtp_MAIL(self, arg: str) -> None:
        self._seen("MAIL")
        await super().smtp_MAIL(arg)

    async def smtp_NOOP(self, arg: str) -> None:
        self.script.commands["NOOP"] += 1
        await super().smtp_NOOP(arg)

    async def smtp_RSET(self, arg: str) -> None:
        self.script.commands["RSET"] += 1
        await super().smtp_RSET(arg)

    async def smtp_QUIT(self, arg: str) -> None:
        self.script.commands["QUIT"] += 1
        await super().smtp_QUIT(arg)

    async def smtp_DATA(self, arg: str) -> None:
        envelope = self.envelope
        assert envelope is not None and self.transport is not None
        if not envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        rcpt = envelope.rcpt_tos[0]
        local = rcpt.split("@")[0]
        self.script.data_seen[rcpt] += 1
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        if local.startswith("drop-before-dot-once") and self.script.data_seen[rcpt] == 1:
            self.transport.close()
            return
        try:
            raw = await self._reader.readuntil(b"\r\n.\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        data = raw[:-3].replace(b"\r\n.", b"\r\n")
        if data.startswith(b"."):
            data = data[1:]
        if self.script.on_data is not None:
            envelope.content = data
            self.script.on_data(envelope)
        self.script.received.append(
            Received(envelope.mail_from or "", list(envelope.rcpt_tos), data)
        )
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        if local.startswith("drop-after-dot"):
            self.transport.close()
            return
        if local.startswith("reject"):
            await self.push("554 5.7.1 Message rejected: content")
            return
        if local.startswith("slow"):
            await asyncio.sleep(self.script.slow_seconds)
        await self.push("250 2.0.0 Ok: queued")
        self.script.spans.append((rcpt, self.script._rcpt_at.pop(rcpt, 0.0), time.monotonic()))


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1/localhost and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


# -- ledger helpers ----------------------------------------------------------------------------

_seq = itertools.count(1)

TEMPLATES = [
    TemplateSource(
        id="welcome",
        version=1,
        name="Welcome",
        subject="Welcome, {{ contact.first_name }}",
        body=(
            "<p>Hello {{ contact.first_name }}, you looked at {{ properties.product }}.</p>"
            '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a> from {{ shop.name }}</p>'
        ),
    ),
    TemplateSource(
        id="broken",
        version=1,
        name="Broken at render time",
        subject="Broken",
        body="<p>{{ properties.count / 0 }}</p>",
    ),
]


def make_renderer() -> Renderer:
    return Renderer(TEMPLATES)


def add_contact(store: Store, contact_id: str, email: str, **fields: Any) -> None:
    row = {
        "id": contact_id,
        "email": email,
        "traits": fields.pop("traits", {"first_name": "Ada"}),
        "consent": fields.pop("consent", {}),
        "first_seen_at": 0.0,
        "last_seen_at": 0.0,
        "updated_at": 0.0,
        **fields,
    }
    with store.begin() as conn:
        conn.execute(schema.contacts.insert(), row)


def add_intent(store: Store, to_addr: str, *, now: float, **fields: Any) -> str:
    n = next(_seq)
    intent_id = fields.pop("id", f"{int(time.time() * 1000):012x}{n:020x}")
    row = {
        "id": intent_id,
        "dedup_key": f"dedup-{intent_id}",
        "workflow_id": "browse",
        "workflow_version": 1,
        "step_id": "email-1",
        "contact_id": fields.pop("contact_id", "c1"),
        "event_id": f"evt-{n}",
        "template_id": "welcome",
        "route": "default",
        "category": "marketing",
        "to_addr": to_addr,
        "domain": to_addr.rpartition("@")[2],
        "context": {"event": {"name": "Product Viewed", "properties": {"product": "Lamp"}}},
        "status": "queued",
        "attempts": 0,
        "next_attempt_at": now,
        "received_at": now - 0.5,
        "decided_at": now - 0.2,
        **fields,
    }
    with store.begin() as conn:
        conn.execute(schema.intents.insert(), row)
    return str(intent_id)


def intent_row(store: Store, intent_id: str) -> dict[str, Any]:
    with store.begin() as conn:
        row = conn.execute(sa.select(schema.intents).where(schema.intents.c.id == intent_id)).one()
    return dict(row._mapping)


def statuses(store: Store) -> dict[str, str]:
    with store.begin() as conn:
        rows = conn.execute(sa.select(schema.intents.c.id, schema.intents.c.status)).all()
    return {r.id: r.status for r in rows}


async def wait_for(
    predicate: Callable[[], bool], *, timeout: float = 10.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def wait_status(
    store: Store, intent_id: str, wanted: set[str], *, timeout: float = 10.0
) -> dict[str, Any]:
    holder: dict[str, Any] = {}

    def check() -> bool:
        holder.update(intent_row(store, intent_id))
        return holder["status"] in wanted

    await wait_for(check, timeout=timeout, what=f"intent {intent_id} to be {wanted}")
    return holder


def make_service(
    store: Store,
    relay: RelayConfig,
    *,
    clock: Clock,
    telemetry: Telemetry | None = None,
    node: str = "test-node",
    tuning: DeliveryTuning = FAST,
    renderer: Renderer | None = None,
    routes: dict[str, RouteSpec] | None = None,
    remote_ledger: RemoteLedger | None = None,
) -> DeliveryService:
    return DeliveryService(
        store=store,
        renderer=renderer or make_renderer(),
        settings=Settings(),
        telemetry=telemetry or Telemetry(node),
        clock=clock,
        node=node,
        tokens=TOKENS,
        public_url=PUBLIC_URL,
        relay=relay,
        tuning=tuning,
        routes=routes,
        remote_ledger=remote_ledger,
    )
