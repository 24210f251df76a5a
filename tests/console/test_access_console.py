"""The console signed in as a team member on a real engine: the top bar shows the user and the
role the engine gave it, and a request outside that role comes back as a refusal in words."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from console import pages
from console.client import EngineClient
from console.errors import ControlRefused, describe
from console.main_window import MainWindow
from console.stack import StackConnection, engine_command
from tests.console.conftest import close_console, run, running_engine, save_screenshot, wait_until

PASSWORD = "viewer's own password"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("access-engine")


@pytest.fixture(scope="module")
def engine(data_dir: Path) -> Iterator[StackConnection]:
    with running_engine(data_dir) as connection:
        # The way an admin adds a person: the CLI, which has the running stack reload NATS.
        added = subprocess.run(
            [*engine_command(), "users", "add", "vic", "--role", "viewer", "--password-stdin",
             "--data-dir", str(data_dir)],
            input=PASSWORD, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert added.returncode == 0 and "reloaded its NATS users" in added.stdout, added
        yield connection


def test_a_viewer_sees_who_they_are_and_refusals_in_words(
    qloop: asyncio.AbstractEventLoop, qtbot: QtBot, engine: StackConnection
) -> None:
    pages.register_builtin_pages()
    client = EngineClient()

    async def scenario() -> MainWindow:
        await client.connect_to(engine.nats_url, user="vic", password=PASSWORD)
        window = MainWindow(client, target="Local stack", target_detail=engine.nats_url)
        window.resize(1400, 800)
        window.show()
        await wait_until(window.isVisible)
        return window

    window = run(qloop, scenario())
    try:
        assert client.role == "viewer"
        assert "vic" in window.top_bar.identity.text()
        assert "viewer" in window.top_bar.identity.text()

        async def refused() -> None:
            button = window.top_bar.pause_button
            await wait_until(button.isEnabled, timeout=10)
            qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
            await wait_until(lambda: "refused" in window.messages.text(), timeout=10)
            with pytest.raises(ControlRefused) as info:
                await client.request_one("queues.pause", {"all": True, "reason": "x"})
            words = describe(info.value)
            assert "support role needed to pause queues; you are viewer" in words

        run(qloop, refused())
        text = window.messages.text()
        assert "support role needed to pause all sending; you are viewer" in text, text
        assert window._pause_dialog is None  # nothing to confirm: the preview was refused
        save_screenshot(window, "access-viewer-refused")
    finally:
        run(qloop, close_console(window))


def test_the_local_stack_signs_in_as_its_admin(
    qloop: asyncio.AbstractEventLoop, engine: StackConnection
) -> None:
    client = EngineClient()

    async def scenario() -> str:
        await client.connect_to(
            engine.nats_url, user=engine.nats_user, password=engine.nats_password
        )
        try:
            who = await client.request("whoami")
            return f"{who['user']} {who['role']}"
        finally:
            await client.close()

    assert run(qloop, scenario()) == "admin admin"
    assert client.role == "admin"
