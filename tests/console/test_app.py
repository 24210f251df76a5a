"""The window (pages, shortcuts, placeholders), the page registry, the local stack and the app."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QWidget
from pytestqt.qtbot import QtBot

from console import app as console_app
from console import pages
from console.client import EngineClient
from console.errors import KeyringUnavailable, StackFailed
from console.main_window import PAUSE_UNAVAILABLE, MainWindow
from console.stack import LocalStack, StackConnection
from engine.natsserver import NatsServer
from tests.console.conftest import processes_mentioning, run, serve_control, wait_until
from widgets.empty_state import EmptyState


class ReportsPage(QLabel):
    """A page named by a "module:attribute" string."""

    def __init__(self, client: EngineClient) -> None:
        super().__init__("reports")
        self.client = client


@pytest.fixture
def window(qtbot: QtBot, qloop: asyncio.AbstractEventLoop) -> MainWindow:
    pages.register_builtin_pages()
    win = MainWindow(EngineClient(), target="Local stack", target_detail="nats://127.0.0.1:4222")
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    win.activateWindow()
    return win


def test_pages_switch_with_ctrl_and_a_number(qtbot: QtBot, window: MainWindow) -> None:
    assert window.page_keys() == [
        "live",
        "queues",
        "workflows",
        "segments",
        "templates",
        "contacts",
        "inbox",
        "audit",
        "dead_letters",
        "experiments",  # registered pages outside NAV come before Settings
        "nodes",
        "settings",
    ]
    assert window.current_page() == "live"
    expected = {
        Qt.Key.Key_2: "queues",
        Qt.Key.Key_7: "inbox",
        Qt.Key.Key_8: "audit",
        Qt.Key.Key_9: "settings",
        Qt.Key.Key_0: "dead_letters",
        Qt.Key.Key_1: "live",
    }
    for key, page in expected.items():
        with qtbot.waitSignal(window.page_changed, timeout=2000) as changed:
            qtbot.keyClick(window, key, Qt.KeyboardModifier.ControlModifier)
        assert changed.args == [page]
        assert window.current_page() == page


def test_pages_not_built_yet_say_what_will_be_there(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every slot has its page now: take one away to see the rail's promise for it.
    pages.register_builtin_pages()
    monkeypatch.delitem(pages._registered, "workflows")
    window = MainWindow(EngineClient(), target="Local stack", target_detail="nats://x:4222")
    qtbot.addWidget(window)
    page = window.show_page("workflows")
    assert isinstance(page, EmptyState)
    assert page.sentence() == "The Workflows page is not built yet"
    detail = " ".join(label.text() for label in page.findChildren(QLabel))
    assert "It will show each workflow as a graph" in detail


def test_a_page_is_registered_with_one_line(qtbot: QtBot, qloop: asyncio.AbstractEventLoop) -> None:
    built: list[EngineClient] = []

    def factory(client: EngineClient) -> QWidget:
        built.append(client)
        label = QLabel("inbox page")
        label.setObjectName("inbox-page")
        return label

    pages.register_page("inbox", "Inbox", "mdi6.inbox", factory)
    pages.register_page(
        "reports", "Reports", "mdi6.file-chart", "tests.console.test_app:ReportsPage"
    )
    try:
        client = EngineClient()
        win = MainWindow(client)
        qtbot.addWidget(win)
        keys = win.page_keys()  # pages outside NAV (Experiments, Reports) come before Settings
        assert keys[-2:] == ["reports", "settings"]
        assert keys.index("dead_letters") < keys.index("reports")
        assert win.show_page("inbox").objectName() == "inbox-page"
        assert built == [client]
        assert win.show_page("inbox") is win.page("inbox")  # built once
        reports = win.show_page("reports")  # a "module:attribute" factory, imported now
        assert type(reports).__name__ == "ReportsPage" and reports.client is client  # type: ignore[attr-defined]
    finally:
        pages._registered.pop("inbox", None)
        pages._registered.pop("reports", None)


def test_pause_all_sending_waits_for_the_queue_api(window: MainWindow) -> None:
    button = window.top_bar.pause_button
    assert not button.isEnabled()
    assert button.toolTip() == PAUSE_UNAVAILABLE
    assert "queue control API" in PAUSE_UNAVAILABLE


def test_operation_failures_land_in_the_message_area(
    window: MainWindow, qloop: asyncio.AbstractEventLoop
) -> None:
    from console.operations import Operation

    async def refuse() -> None:
        raise StackFailed("The local engine exited with code 2.")

    async def scenario() -> None:
        op = Operation(window, refuse, label="Start demo traffic").run()
        await op.task
        assert isinstance(op.error, StackFailed)

    run(qloop, scenario())
    assert window.messages.text() == "Start demo traffic: The local engine exited with code 2."


def test_local_stack_starts_the_engine_and_stop_leaves_nothing(
    qloop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    stack = LocalStack(tmp_path / "data")
    steps: list[str] = []
    stack.progress.connect(steps.append)

    async def scenario() -> StackConnection:
        connection = await stack.start()
        assert stack.running and connection.pid == stack.pid
        assert connection.nats_url.startswith("nats://127.0.0.1:")
        assert connection.nats_user == "admin" and connection.nats_password
        client = EngineClient()
        await client.connect_to(
            connection.nats_url, user=connection.nats_user, password=connection.nats_password
        )
        assert client.role == "admin"
        health = await client.request("ping")
        assert health["node"] == connection.node
        await wait_until(lambda: client.nodes() == [connection.node], timeout=10)
        await client.close()
        assert await stack.stop() == 0
        return connection

    connection = run(qloop, scenario(), timeout=120)
    assert steps[0] == "Starting the engine\u2026" and steps[-1] == "Engine ready", steps
    assert "Opening database\u2026" in steps, steps
    assert not stack.running
    assert processes_mentioning(str(tmp_path / "data")) == []
    assert not (tmp_path / "data" / "engine.json").exists()
    assert connection.pid not in [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def test_local_stack_failure_is_reported(qloop: asyncio.AbstractEventLoop, tmp_path: Path) -> None:
    stack = LocalStack(
        tmp_path, command=[sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"]
    )
    failures: list[str] = []
    stack.failed.connect(failures.append)
    with pytest.raises(StackFailed) as failed:
        run(qloop, stack.start())
    assert "exited with code 3" in str(failed.value) and "boom" in str(failed.value)
    assert failures == [str(failed.value)]


def test_quitting_the_console_stops_the_local_stack(
    qloop: asyncio.AbstractEventLoop, qapp: object, tmp_path: Path
) -> None:
    """The app's run(): start the stack, connect, quit (as closing the window does)."""
    from PySide6.QtWidgets import QApplication

    data_dir = tmp_path / "stack"
    options = console_app.Options(data_dir=data_dir)
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    seen: dict[str, object] = {}

    async def scenario() -> int:
        main = asyncio.ensure_future(console_app.run(app, options))
        await wait_until(lambda: StackConnection.load(data_dir) is not None, timeout=60)
        connection = StackConnection.load(data_dir)
        assert connection is not None
        seen["pid"] = connection.pid
        window = next(w for w in app.topLevelWidgets() if isinstance(w, MainWindow))
        await wait_until(lambda: window.client.nodes() != [], timeout=15)
        seen["target"] = window.top_bar.target_text()
        window.close()  # what the operator does
        return await main

    assert run(qloop, scenario(), timeout=120) == 0
    assert "Local stack" in str(seen["target"])
    assert processes_mentioning(str(data_dir)) == []


def test_a_killed_console_leaves_no_engine_running(tmp_path: Path) -> None:
    """SIGKILL the console process: the engine (and its nats-server) die with it."""
    data_dir = tmp_path / "stack"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    console = subprocess.Popen(
        [sys.executable, "-m", "console.app", "--data-dir", str(data_dir)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        deadline = time.monotonic() + 60
        while StackConnection.load(data_dir) is None:
            assert console.poll() is None, "the console exited early"
            assert time.monotonic() < deadline, "the local stack did not start"
            time.sleep(0.1)
        assert len(processes_mentioning(str(data_dir))) >= 2  # the engine and its nats-server
        console.send_signal(signal.SIGKILL)
        console.wait()
        deadline = time.monotonic() + 20
        while processes_mentioning(str(data_dir)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert processes_mentioning(str(data_dir)) == []
    finally:
        if console.poll() is None:
            console.kill()
            console.wait()


def test_sigterm_quits_the_console_in_order(tmp_path: Path) -> None:
    data_dir = tmp_path / "stack"
    console = subprocess.Popen(
        [sys.executable, "-m", "console.app", "--data-dir", str(data_dir)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=dict(os.environ, QT_QPA_PLATFORM="offscreen"),
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        deadline = time.monotonic() + 60
        while StackConnection.load(data_dir) is None:
            assert console.poll() is None, "the console exited early"
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(1.0)
        console.send_signal(signal.SIGTERM)
        _, err = console.communicate(timeout=40)
        assert console.returncode == 0, err.decode(errors="replace")[-2000:]
        assert processes_mentioning(str(data_dir)) == []
    finally:
        if console.poll() is None:
            console.kill()
            console.wait()


def test_connect_needs_a_keyring(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import keyring
    from keyring.backends import fail

    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    try:
        with pytest.raises(KeyringUnavailable) as missing:
            console_app.read_token("nats://cluster:4222")
        assert "never keeps a token or password in a plain file" in str(missing.value)
        assert console_app.main(["--connect", "nats://cluster:4222"]) == 2
        assert "No OS keyring is available" in capsys.readouterr().err
    finally:
        keyring.set_keyring(previous)


def test_arguments() -> None:
    options = console_app.parse_args(["--connect", "nats://a:4222", "--data-dir", "/tmp/x"])
    assert options.connect == "nats://a:4222" and options.data_dir == Path("/tmp/x")
    assert console_app.parse_args([]).connect is None
    with pytest.raises(SystemExit):
        console_app.parse_args(["--set-token"])


def test_the_command_palette_goes_to_a_page(qtbot: QtBot, window: MainWindow) -> None:
    qtbot.keyClick(window, Qt.Key.Key_K, Qt.KeyboardModifier.ControlModifier)
    palette = window._palette
    assert palette is not None and palette.isVisible()
    qtbot.keyClicks(palette._filter, "audit")
    with qtbot.waitSignal(window.page_changed, timeout=2000) as changed:
        qtbot.keyClick(palette._filter, Qt.Key.Key_Return)
    assert changed.args == ["audit"]
    assert not palette.isVisible()


def test_pause_all_sending_asks_first_then_pauses(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop, nats_server: NatsServer
) -> None:
    """With an engine offering ``sending.pause`` (a stand-in responder), the button is enabled,
    previews on ONE node, shows the engine's impact sentence, and sends the operator's reason
    to that node (never ``control.all``: every node would run it)."""
    pages.register_builtin_pages()

    async def scenario() -> None:
        responder, seen = await serve_control(
            nats_server.url,
            nats_server.token,
            "n1",
            {
                "ping": {"ok": True, "result": {"node": "n1", "verbs": ["ping", "sending.pause"]}},
                "sending.pause": {
                    "ok": True,
                    "result": {"summary": "Pause all queues: 12 queued intents held"},
                },
                "demo.status": {"ok": True, "result": {"running": False}},
            },
        )
        client = EngineClient()
        window = MainWindow(client)
        window.show()
        try:
            await client.connect_to(nats_server.url, nats_server.token)
            button = window.top_bar.pause_button
            await wait_until(button.isEnabled, timeout=5)
            qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
            await wait_until(lambda: window._pause_dialog is not None, timeout=5)
            dialog = window._pause_dialog
            assert dialog is not None and dialog.isVisible()
            assert dialog.impact() == "Pause all queues: 12 queued intents held"
            pauses = [s for s in seen if s["subject"].endswith("sending.pause")]
            assert [p["args"] for p in pauses] == [{"preview": True}]  # asks first
            dialog.reason_field().setText("relay-a returns 421")
            qtbot.mouseClick(dialog.confirm_button(), Qt.MouseButton.LeftButton)
            await wait_until(lambda: "Pause all queues" in window.messages.text(), timeout=5)
            pauses = [s for s in seen if s["subject"].endswith("sending.pause")]
            assert [p["subject"] for p in pauses] == ["control.admin.n1.sending.pause"] * 2
            assert pauses[1]["args"] == {"reason": "relay-a returns 421"}
        finally:
            window.stop_timers()
            await client.close()
            await responder.drain()
            window.close()
            window.deleteLater()

    run(qloop, scenario())


def test_no_usable_display_is_named_before_qt_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Qt aborts the process when no platform plugin loads; the console checks first."""
    from console.app import display_problem

    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)
    assert display_problem() == "no display found (DISPLAY/WAYLAND_DISPLAY unset)"
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    assert display_problem() == ""
