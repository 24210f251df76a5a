"""What the console is connected to, and switching it at run time.

A :class:`Target` is either the local stack (the engine the console starts for itself) or
remote engines behind a NATS URL with a login (a saved profile, or ``--nats URL``).
:func:`probe` answers "Test connection": it logs in with a throw-away NATS connection and asks
every engine for a ``ping``. :class:`ConnectionManager` owns the one ``EngineClient``'s
connection and the local stack, and switches between targets: a remote target is probed first,
so a wrong token or a typo leaves the current connection as it was; only then is the old
connection drained, the window told to forget what it showed, the local stack stopped when the
console leaves it, and the new target connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import nats.errors
import orjson
from PySide6.QtCore import QObject, Signal

from console.client import EngineClient
from console.errors import EngineUnreachable
from console.nats_errors import unreachable_words
from console.profiles import NatsLogin, Profile, login_for
from console.stack import LocalStack, StackConnection
from engine.access import LOCAL_ADMIN, control_subject, inbox_prefix

log = logging.getLogger(__name__)

LOCAL = "local"
REMOTE = "remote"
LOCAL_TITLE = "Local stack"
PING_WAIT_S = 0.8
"""How long "Test connection" gathers ``ping`` answers (every engine node answers at once)."""


@dataclass(frozen=True)
class Target:
    """Where to connect: the local stack, or remote engines (``url`` and ``login``)."""

    kind: str
    title: str
    url: str = ""
    login: NatsLogin = field(default_factory=NatsLogin)
    profile: str = ""
    """The saved profile's name ("" for the local stack and for ``--nats URL``)."""

    @classmethod
    def local(cls) -> Target:
        return cls(LOCAL, LOCAL_TITLE)

    @classmethod
    def remote(cls, url: str, login: NatsLogin | None = None, *, title: str = "") -> Target:
        return cls(REMOTE, title or url, url=url, login=login or NatsLogin())

    @classmethod
    def of_profile(cls, profile: Profile, secret: str) -> Target:
        """The target of a profile, with its secret (``SecretMissing`` when one is needed)."""
        return cls(
            REMOTE,
            profile.name,
            url=",".join(profile.servers),
            login=login_for(profile, secret),
            profile=profile.name,
        )

    @property
    def is_local(self) -> bool:
        return self.kind == LOCAL


@dataclass(frozen=True)
class ProbeResult:
    """What "Test connection" found."""

    url: str
    server: str
    """The NATS server's name and version, e.g. "nats-server 2.10.22"."""
    nodes: list[str]
    """Engine nodes that answered ``ping``, sorted."""

    @property
    def status(self) -> str:
        """``healthy`` when an engine answered, ``degraded`` when only NATS did."""
        return "healthy" if self.nodes else "degraded"

    def words(self) -> str:
        where = f"Connected to {self.server} at {self.url}"
        if not self.nodes:
            return (
                f"{where}, but no engine answered: is an engine running against this NATS"
                " (subject control.<user>.all.ping)?"
            )
        noun = "engine node" if len(self.nodes) == 1 else "engine nodes"
        return f"{where}; {len(self.nodes)} {noun} answered: {', '.join(self.nodes)}."


def login_actor(login: NatsLogin) -> str:
    """The user a login's control requests go out as: its user name, else the local stack's
    admin (a token or creds login names nobody; docs/access.md)."""
    return login.user or LOCAL_ADMIN


async def open_nats(url: str, login: NatsLogin, *, timeout: float = 5.0) -> Any:
    """A NATS connection that tries each server once, or ``EngineUnreachable`` in words."""
    options = login.connect_options()
    options["inbox_prefix"] = inbox_prefix(login_actor(login))
    errors: list[BaseException] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    try:
        return await nats.connect(
            servers=[s.strip() for s in url.split(",") if s.strip()],
            **options,
            name=f"campaign-console test ({login_actor(login)})",
            connect_timeout=max(1, round(timeout)),
            allow_reconnect=True,
            max_reconnect_attempts=1,  # 0 or no reconnects hang nats-py on a refusal
            reconnect_time_wait=0.2,
            error_cb=on_error,
        )
    except (TimeoutError, nats.errors.Error, OSError, ValueError) as exc:
        raise EngineUnreachable(unreachable_words(url, exc, errors, timeout)) from exc


async def probe(url: str, login: NatsLogin, *, timeout: float = 5.0) -> ProbeResult:
    """Log in to NATS at ``url`` and ask every engine for ``ping``; close again.

    Raises ``EngineUnreachable`` (bad URL, refused, auth failed, timeout, TLS) in words, or
    ``ProfileInvalid`` when a file the login names is missing.
    """
    nc = await open_nats(url, login, timeout=timeout)
    try:
        info = getattr(nc, "_server_info", {}) or {}
        server = f"nats-server {info['version']}" if info.get("version") else "NATS"
        inbox = nc.new_inbox()
        nodes: set[str] = set()

        async def on_reply(msg: Any) -> None:
            with contextlib.suppress(orjson.JSONDecodeError, AttributeError, TypeError):
                reply = orjson.loads(msg.data)
                node = (reply.get("result") or {}).get("node") or reply.get("node")
                if node:
                    nodes.add(str(node))

        sub = await nc.subscribe(inbox, cb=on_reply)
        body = orjson.dumps({"args": {}})
        await nc.publish(control_subject(login_actor(login), "all", "ping"), body, reply=inbox)
        await nc.flush(timeout=max(1, round(timeout)))
        await asyncio.sleep(PING_WAIT_S)
        await sub.unsubscribe()
        return ProbeResult(url=url.replace(",", ", "), server=server, nodes=sorted(nodes))
    finally:
        with contextlib.suppress(Exception):
            await nc.close()


class ConnectionManager(QObject):
    """Connects the console's ``EngineClient`` to a :class:`Target` and switches targets.

    ``await switch(target)`` returns once connected (or raises ``ConsoleError`` in words; for
    a remote target the current connection then stays as it was). ``await close()`` ends it
    all in order: intake, NATS drain, the local stack.

    Signals:
        switching(object): the old connection is being dropped for the target given; views
            forget what they showed of the old engines.
        target_changed(str, str): connected; the title ("Local stack", a profile's name or
            a URL) and the detail (the NATS URL).
        progress(str): a step of starting the local stack, for the operator.
        failed(str): the local stack died, in words.
    """

    switching = Signal(object)
    target_changed = Signal(str, str)
    progress = Signal(str)
    failed = Signal(str)

    def __init__(
        self,
        client: EngineClient,
        *,
        data_dir: Path,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.client = client
        self.data_dir = data_dir
        self.stack: LocalStack | None = None
        self.target: Target | None = None
        self._lock = asyncio.Lock()

    async def switch(self, target: Target) -> None:
        """Connect to ``target`` (see the class docstring)."""
        async with self._lock:
            if target.is_local:
                connection = await self._start_stack()
                url = connection.nats_url
                login = NatsLogin(
                    token=connection.nats_token,
                    user=connection.nats_user,
                    password=connection.nats_password,
                )
            else:
                await probe(target.url, target.login)  # keep the current one if this fails
                url, login = target.url, target.login
            await self._drop(target)
            if not target.is_local and self.stack is not None:
                await self._stop_stack()
            await self.client.connect_to(url, login=login)
            self.target = target
            self.target_changed.emit(target.title, url.replace(",", ", "))

    async def _start_stack(self) -> StackConnection:
        """The running local stack's connection, starting it first when needed."""
        stack = self.stack
        if stack is not None and stack.connection is not None and stack.running:
            return stack.connection
        stack = self.stack = LocalStack(self.data_dir, parent=self)
        stack.progress.connect(self.progress)
        stack.failed.connect(self.failed)
        try:
            return await stack.start()
        except BaseException:  # it stopped what it started; a retry makes a new one
            self.stack = None
            stack.deleteLater()
            raise

    async def _drop(self, target: Target) -> None:
        if self.client.is_connected or self.client.url:
            self.switching.emit(target)
            await self.client.stop_intake()
            await self.client.close()
            self.client.forget_engines()

    async def _stop_stack(self) -> None:
        stack, self.stack = self.stack, None
        if stack is not None:
            await stack.stop()
            stack.deleteLater()

    async def close(self) -> None:
        """Stop intake, drain NATS, stop the local stack this console started."""
        await self.client.stop_intake()
        await self.client.close()
        await self._stop_stack()
