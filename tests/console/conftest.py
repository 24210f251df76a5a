"""Console test helpers: a qasync loop on pytest-qt's QApplication, a real engine, leak checks.

- ``qloop``: a ``qasync.QEventLoop`` on ``qapp``; ``run(qloop, coro)`` runs a coroutine on it
  while Qt processes its events (timers, paints), as in the app. Tests are plain functions.
- ``engine``: a real ``campaign-engine run`` child process (embedded nats-server, SQLite,
  capture inbox) on a temporary data directory, shared by a test module.
- ``memory_keyring``: a real keyring backend holding secrets in this process, set for the test.
- Every test must leave no new child process behind (checked after each test), and no task
  pending on its loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import keyring
import keyring.errors
import nats
import numpy as np
import orjson
import pytest
import qasync
from keyring.backend import KeyringBackend
from PySide6.QtCore import QEventLoop, QTimer
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QApplication

from console import pages
from console.client import EngineClient
from console.main_window import MainWindow
from console.stack import StackConnection, engine_command
from engine.bus import settle
from tests.screens import screenshot_dir
from widgets import theme

T = TypeVar("T")

ENGINE_START_TIMEOUT_S = 60.0


def run(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
    """Run ``coro`` on the qasync ``loop`` by spinning a nested Qt event loop until it is done.

    The loop is "already running" for the whole test (see ``qloop``), so NATS socket events
    that Qt delivers at any time - also inside pytest-qt waits - run with it as asyncio's
    running loop, exactly as in the app.
    """
    task = loop.create_task(coro)
    if not task.done():
        spin = QEventLoop()
        task.add_done_callback(lambda _task: spin.quit())
        timer = QTimer()
        timer.setSingleShot(True)
        timer.timeout.connect(spin.quit)
        timer.start(round(timeout * 1000))
        spin.exec()
        timer.stop()
    if not task.done():
        task.cancel()
        spin = QEventLoop()
        task.add_done_callback(lambda _task: spin.quit())
        spin.exec()
        raise AssertionError(f"{coro!r} did not finish within {timeout:g} s")
    return task.result()


async def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> None:
    """Poll ``predicate()`` on the running loop until true, else fail with a timeout."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout:g} s: {predicate}")
        await asyncio.sleep(interval)


@pytest.fixture
def qloop(qapp: QApplication) -> Iterator[asyncio.AbstractEventLoop]:
    """A qasync loop on the test QApplication, registered as asyncio's running loop for the test.

    ``already_running=True``: Qt drives it whenever events are processed (``run``, pytest-qt
    waits). On teardown, tasks still pending are cancelled (and fail the test), and the running
    loop is unset so other tests' ``asyncio.run`` works. Light theme for stable screenshots.
    """
    theme.apply_theme(qapp, dark=False)
    loop = qasync.QEventLoop(qapp, already_running=True)
    pending: list[asyncio.Task[Any]] = []
    try:
        yield loop
    finally:
        try:
            # Closed NATS clients cancel their own tasks; let those cancellations land first.
            run(loop, asyncio.sleep(0.1))
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                run(loop, asyncio.wait(pending, timeout=5), timeout=10)
            run(loop, loop.shutdown_asyncgens(), timeout=10)
        finally:
            # Not loop.stop(): it calls QApplication.exit(), which would make every later
            # nested event loop (pytest-qt waits, run()) return at once.
            loop._QEventLoop__is_running = False  # type: ignore[attr-defined]
            asyncio.events._set_running_loop(None)
            loop.close()
        assert not pending, f"test left tasks pending: {pending}"


async def serve_control(url: str, token: str, node: str, replies: dict[str, Any]) -> Any:
    """A control responder with canned replies; records every request body it receives.
    It answers ``whoami`` (the console asks after connecting) as the engine would for the
    subject's user, an admin, unless ``replies`` says otherwise."""
    nc = await nats.connect(url, token=token)
    replies.setdefault("whoami", {"ok": True, "result": {"user": "admin", "role": "admin"}})
    seen: list[dict[str, Any]] = []

    async def on_request(msg: Any) -> None:
        verb = msg.subject.split(".", 3)[3]  # control.<user>.<node>.<verb>
        seen.append({"subject": msg.subject, **orjson.loads(msg.data)})
        if verb in replies:
            await msg.respond(orjson.dumps(replies[verb]))

    await nc.subscribe(f"control.*.{node}.>", cb=on_request)
    await nc.subscribe("control.*.all.>", cb=on_request)
    await settle(nc)
    return nc, seen


def descendants(pid: int | None = None) -> set[int]:
    """Every live descendant process of ``pid`` (default: this test process)."""
    root = os.getpid() if pid is None else pid
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ..." - comm may hold spaces and parentheses.
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    out: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line mentions ``text`` (e.g. a test's data directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


@pytest.fixture(autouse=True)
def _no_leaked_processes() -> Iterator[None]:
    """A test that leaves a child process running fails (module fixtures' children excepted)."""
    before = descendants()
    yield
    deadline = time.monotonic() + 10
    leaked = descendants() - before
    while leaked and time.monotonic() < deadline:
        time.sleep(0.1)
        leaked = descendants() - before
    assert not leaked, f"test left processes running: {sorted(leaked)}"


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    import ctypes

    ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)


async def connect_as_engine(engine: StackConnection) -> Any:
    """A NATS connection as the engines' own user (its password is in the data directory), for
    tests that publish events straight to the stream as a producer would; the console's admin
    user may publish control requests only."""
    secret = await asyncio.to_thread(_engine_secret, engine.pid)
    return await nats.connect(engine.nats_url, user="engine", password=secret)


def _engine_secret(pid: int) -> str:
    """The engines' NATS password, from the data directory the engine ``pid`` was started on."""
    args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    data_dir = Path(args[args.index("--data-dir") + 1])
    return (data_dir / "nats-engine.secret").read_text().strip()


@contextlib.contextmanager
def running_engine(data_dir: Path, *extra_args: str) -> Iterator[StackConnection]:
    """A real engine (``campaign-engine run``) on ``data_dir``; stopped with SIGTERM after.

    ``extra_args``: more ``run`` options, e.g. ``--config FILE`` for named routes.
    """
    log_path = data_dir / "engine.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                *engine_command(),
                "run",
                "--data-dir",
                str(data_dir),
                "--http",
                "127.0.0.1:0",
                *extra_args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
            preexec_fn=_die_with_parent,
        )
    try:
        deadline = time.monotonic() + ENGINE_START_TIMEOUT_S
        connection = None
        while connection is None or connection.pid != process.pid:
            if process.poll() is not None or time.monotonic() > deadline:
                output = log_path.read_text(errors="replace")[-3000:]
                pytest.fail(f"the engine did not start (code {process.returncode}):\n{output}")
            time.sleep(0.1)
            connection = StackConnection.load(data_dir)
        yield connection
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        # Its nats-server stops with it (the engine stops it; PR_SET_PDEATHSIG otherwise).
        deadline = time.monotonic() + 10
        while processes_mentioning(str(data_dir)) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in processes_mentioning(str(data_dir)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackConnection]:
    """A real engine (``campaign-engine run``) for a test module; stopped with SIGTERM after."""
    with running_engine(tmp_path_factory.mktemp("engine")) as connection:
        yield connection


# -- the console window on a real engine, and screenshots (shared by the page tests) ----------

SCREENSHOTS = screenshot_dir("console")


def save_screenshot(widget: object, name: str) -> Path:
    """Grab ``widget`` into docs/screenshots/console/NAME.png and check it is not blank."""
    from PySide6.QtWidgets import QWidget

    assert isinstance(widget, QWidget)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    pixmap = widget.grab()
    assert pixmap.save(str(path)), f"could not write {path}"
    image = pixmap.toImage().convertToFormat(QImage.Format.Format_RGB32)
    data = np.frombuffer(image.constBits(), dtype=np.uint32, count=image.width() * image.height())
    assert np.unique(data).size > 60, f"{name} looks blank"
    return path


async def open_console(client: EngineClient, engine: StackConnection) -> MainWindow:
    """Connect ``client`` to the engine and show the window on the Live page.

    Not qtbot.addWidget: pytest-qt would delete the window before the fixture's teardown
    stops its timers and drains NATS (``close_console``).
    """
    await client.connect_to(engine.nats_url, user=engine.nats_user, password=engine.nats_password)
    window = MainWindow(client, target="Local stack", target_detail=engine.nats_url)
    window.resize(1600, 1000)
    window.show()
    await wait_until(window.isVisible)
    return window


async def close_console(window: MainWindow, settle: float = 0.0) -> None:
    """Stop timers, drain NATS, close; ``settle`` lets a page's browser process end."""
    window.stop_timers()
    await window.client.stop_intake()
    await window.client.close()
    window.close()
    window.deleteLater()
    await asyncio.sleep(settle)


@pytest.fixture
def console(qloop: asyncio.AbstractEventLoop, engine: StackConnection) -> Iterator[MainWindow]:
    """The console window connected to the module's real engine, Live page showing.

    Everything touching Qt or NATS runs inside ``run(qloop, ...)`` (see conftest).
    """
    pages.register_builtin_pages()
    window = run(qloop, open_console(EngineClient(), engine))
    try:
        yield window
    finally:
        run(qloop, close_console(window))


# -- a keyring for tests about secrets ----------------------------------------------------


class MemoryKeyring(KeyringBackend):
    """A real keyring backend that keeps secrets in this process (tests only)."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.secrets: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.secrets.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.secrets[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        if (service, username) not in self.secrets:
            raise keyring.errors.PasswordDeleteError(username)
        del self.secrets[(service, username)]


@pytest.fixture
def memory_keyring() -> Iterator[MemoryKeyring]:
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    try:
        yield backend
    finally:
        keyring.set_keyring(previous)
