"""``LocalStack``: the engine the console starts for itself (``campaign-engine run``).

The engine runs as a child process (``<venv>/bin/campaign-engine run --data-dir DIR --http
127.0.0.1:0``) with a Linux parent-death signal, so if the console dies - even by SIGKILL -
nothing it started is left running (the engine then stops its own nats-server the same way).
Progress is read from the engine's output; the stack is ready when ``<data_dir>/engine.json``
names the child's pid. ``stop()`` sends SIGTERM (the engine drains and stops in order) and kills
after a timeout.

The console never imports the engine's runtime: ``engine.json`` is read here as plain JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from console.errors import StackFailed

log = logging.getLogger(__name__)

# Engine output -> what the operator reads while waiting. Checked in order, lower-cased.
_PROGRESS: tuple[tuple[str, str], ...] = (
    ("nats", "Starting NATS\u2026"),
    ("jetstream", "Starting NATS\u2026"),
    ("alembic", "Opening database\u2026"),
    ("migrat", "Opening database\u2026"),
    ("database", "Opening database\u2026"),
    ("sqlite", "Opening database\u2026"),
    ("inbox", "Starting the capture inbox\u2026"),
    ("is running", "Engine ready"),
)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGTERM this child when the console dies (PR_SET_PDEATHSIG survives exec)."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent already died between fork and prctl
            os._exit(1)


def engine_command() -> list[str]:
    """How to run the engine: the venv's ``campaign-engine`` script, else ``python -m``."""
    script = Path(sys.executable).parent / "campaign-engine"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "engine.cli"]


@dataclass(frozen=True)
class StackConnection:
    """How to reach the local stack (the fields of ``<data_dir>/engine.json``).

    ``nats_user``/``nats_password``: the stack's generated admin user (docs/access.md);
    ``nats_token`` is left for engines from before users (empty now)."""

    nats_url: str
    nats_token: str
    http_url: str
    inbox: str
    node: str
    pid: int
    nats_user: str = ""
    nats_password: str = ""

    @classmethod
    def load(cls, data_dir: Path) -> StackConnection | None:
        """Read ``engine.json``; None if missing or unreadable (it is written last at start)."""
        try:
            raw = json.loads((data_dir / "engine.json").read_bytes())
            return cls(
                nats_url=str(raw["nats_url"]),
                nats_token=str(raw.get("nats_token") or ""),
                http_url=str(raw.get("http_url") or ""),
                inbox=str(raw.get("inbox") or ""),
                node=str(raw.get("node") or ""),
                pid=int(raw["pid"]),
                nats_user=str(raw.get("nats_user") or ""),
                nats_password=str(raw.get("nats_password") or ""),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalStack(QObject):
    """Starts, watches and stops the local engine child process.

    ``await start()`` returns the :class:`StackConnection` once the engine is ready (or raises
    ``StackFailed``); ``nats_url``/``nats_token`` are then set. If an engine started by someone
    else already runs on ``data_dir``, the console uses it and ``owned`` is False (``stop()``
    then leaves it running).

    Signals:
        progress(str): a step of starting up, for the operator ("Starting NATS…",
            "Opening database…", "Engine ready").
        ready(): the engine is up and ``engine.json`` names it.
        failed(str): it could not start, or died after starting; the words say why.
        stopped(int): the child exited after ``stop()`` (its exit code).
    """

    progress = Signal(str)
    ready = Signal()
    failed = Signal(str)
    stopped = Signal(int)

    def __init__(
        self,
        data_dir: Path,
        *,
        http: str = "127.0.0.1:0",
        command: list[str] | None = None,
        extra_args: list[str] | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.data_dir = Path(data_dir)
        self.http = http
        self.command = command or engine_command()
        self.extra_args = list(extra_args or [])
        self.connection: StackConnection | None = None
        self.owned = True
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._output: deque[str] = deque(maxlen=40)
        self._last_progress = ""
        self._stopping = False

    @property
    def nats_url(self) -> str:
        return self.connection.nats_url if self.connection else ""

    @property
    def nats_token(self) -> str:
        return self.connection.nats_token if self.connection else ""

    @property
    def pid(self) -> int | None:
        """The child's pid (None when not started by this console)."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        if self._process is not None:
            return self._process.returncode is None
        return self.connection is not None and _pid_alive(self.connection.pid)

    def output(self) -> list[str]:
        """The engine's last lines of output (for error reports)."""
        return list(self._output)

    async def start(self, timeout: float = 60.0) -> StackConnection:
        """Start the engine (or adopt one already running on ``data_dir``) and wait for it."""
        existing = StackConnection.load(self.data_dir)
        if existing is not None and _pid_alive(existing.pid):
            self.owned = False
            self.connection = existing
            self._progress(f"Using the engine already running on {self.data_dir}")
            self.ready.emit()
            return existing
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / "engine.json").unlink()  # left by an engine that crashed
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        args = [
            *self.command,
            "run",
            "--data-dir",
            str(self.data_dir),
            "--http",
            self.http,
            *self.extra_args,
        ]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._progress("Starting the engine\u2026")
        log.info("starting local stack: %s", " ".join(args))
        try:
            self._process = await asyncio.create_subprocess_exec(
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                preexec_fn=_die_with_parent,
            )
        except OSError as exc:
            message = f"Could not run the engine ({args[0]}): {exc.strerror or exc}"
            self.failed.emit(message)
            raise StackFailed(message) from exc
        self._reader = asyncio.get_running_loop().create_task(self._read_output())
        try:
            connection = await self._wait_ready(timeout)
        except StackFailed as exc:
            self.failed.emit(str(exc))
            await self.stop()
            raise
        except asyncio.CancelledError:
            await self.stop()
            raise
        self.connection = connection
        self._progress("Engine ready")
        self.ready.emit()
        return connection

    async def _wait_ready(self, timeout: float) -> StackConnection:
        process = self._process
        assert process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise StackFailed(self._death_words(process.returncode))
            found = StackConnection.load(self.data_dir)
            if found is not None and found.pid == process.pid:
                return found
            await asyncio.sleep(0.1)
        raise StackFailed(f"The engine did not become ready within {timeout:.0f} s." + self._tail())

    def _death_words(self, code: int) -> str:
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        return f"The local engine {how}." + self._tail()

    def _tail(self) -> str:
        lines = [line for line in self._output if line.strip()][-3:]
        return (" Last output: " + " | ".join(lines)) if lines else ""

    async def _read_output(self) -> None:
        process = self._process
        assert process is not None and process.stdout is not None
        while True:
            raw = await process.stdout.readline()
            if not raw:
                break
            line = raw.decode("utf-8", "replace").rstrip()
            self._output.append(line)
            log.debug("engine: %s", line)
            if self.connection is not None:
                continue  # ready: later lines (e.g. while stopping) are not start-up progress
            lowered = line.lower()
            for needle, words in _PROGRESS:
                if needle in lowered:
                    if words != "Engine ready":  # ready is announced once engine.json is read
                        self._progress(words)
                    break
        code = await process.wait()
        if not self._stopping and self.connection is not None:
            self.failed.emit(self._death_words(code))

    def _progress(self, words: str) -> None:
        if words != self._last_progress:
            self._last_progress = words
            self.progress.emit(words)

    async def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM the engine, wait up to ``timeout`` s, then SIGKILL; returns its exit code.

        An engine this console did not start is left running.
        """
        process = self._process
        self._stopping = True
        if process is None:
            return None
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except TimeoutError:
                log.warning("engine did not stop within %.0f s; killing it", timeout)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        reader, self._reader = self._reader, None
        if reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        code = process.returncode if process.returncode is not None else -1
        self.stopped.emit(code)
        return code
