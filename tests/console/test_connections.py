"""Connecting to remote engines: profiles with secrets in the keyring, "Test connection" in
words, the chooser, switching at run time and ``campaign-console --profile``; all against a
real engine and real nats-servers (token, user and password, nkey)."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys
import pytest
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from console import app as console_app
from console import pages
from console.client import EngineClient
from console.connection import ProbeResult, Target, probe
from console.connection_dialog import LOCAL_KEY, ConnectionDialog
from console.errors import EngineUnreachable
from console.main_window import MainWindow
from console.operations import Operation
from console.profiles import (
    AUTH_NKEY,
    AUTH_USER,
    NatsLogin,
    Profile,
    ProfileStore,
    login_for,
)
from console.stack import StackConnection
from engine.natsserver import NatsServer, free_port
from tests.console.conftest import MemoryKeyring, run, save_screenshot, wait_until


@dataclass
class LoginNatsServer(NatsServer):
    """A real nats-server whose ``authorization`` block is given (users, nkeys)."""

    authorization: str = ""

    def _config(self) -> str:
        return super()._config().split("authorization {")[0] + self.authorization


async def settle(op: Operation[Any]) -> None:
    """Wait for an operation to end, whatever its outcome (the dialog shows it)."""
    assert op.task is not None
    await op.task


@pytest.fixture
def profiles(tmp_path: Path) -> ProfileStore:
    return ProfileStore(tmp_path / "config" / "connections.toml")


@pytest.fixture
def blackhole() -> Iterator[str]:
    """A port that accepts TCP connections and never says a word (a NATS that hangs)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"nats://127.0.0.1:{sock.getsockname()[1]}"


# ------------------------------------------------------------------------------ probe


async def test_test_connection_says_what_failed_in_words(
    nats_server: NatsServer, blackhole: str
) -> None:
    found = await probe(nats_server.url, NatsLogin(token=nats_server.token))
    assert found.server.startswith("nats-server 2.") and found.nodes == []
    assert found.status == "degraded"
    assert "but no engine answered" in found.words()

    cases = [
        (nats_server.url, NatsLogin(token="wrong-token"), "refused the login"),
        (nats_server.url, NatsLogin(), "refused the login"),
        (f"nats://127.0.0.1:{free_port()}", NatsLogin(), "(connection refused)"),
        (blackhole, NatsLogin(), "did not answer within 1 s (timeout)"),
        ("nats://no-such-host.invalid:4222", NatsLogin(), "could not be found (DNS)"),
    ]
    for url, login, words in cases:
        with pytest.raises(EngineUnreachable) as failed:
            await probe(url, login, timeout=1)
        assert words in str(failed.value), (url, str(failed.value))
        assert "wrong-token" not in str(failed.value)


async def test_user_password_and_nkey_logins(tmp_path: Path) -> None:
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER).decode()
    public = nkeys.from_seed(seed.encode()).public_key.decode()
    server = LoginNatsServer(
        store_dir=tmp_path / "nats",
        authorization=(
            "authorization {\n"
            '  users = [ {user: "ops", password: "pa55-word"}, {nkey: "' + public + '"} ]\n'
            "}\n"
        ),
    )
    server.start()
    try:
        user = Profile("u", [server.url], auth=AUTH_USER, user="ops")
        assert isinstance(await probe(server.url, login_for(user, "pa55-word")), ProbeResult)
        with pytest.raises(EngineUnreachable) as refused:
            await probe(server.url, login_for(user, "wrong"), timeout=1)
        assert "refused the login" in str(refused.value)
        nkey = Profile("n", [server.url], auth=AUTH_NKEY, user="nia")
        assert isinstance(await probe(server.url, login_for(nkey, seed)), ProbeResult)
        other = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER).decode()
        with pytest.raises(EngineUnreachable) as unknown:
            await probe(server.url, login_for(nkey, other), timeout=1)
        assert "refused the login" in str(unknown.value)
    finally:
        server.stop()


def test_test_connection_finds_the_engine(
    qloop: asyncio.AbstractEventLoop, engine: StackConnection
) -> None:
    found = run(
        qloop,
        probe(
            engine.nats_url,
            NatsLogin(user=engine.nats_user, password=engine.nats_password),
        ),
    )
    assert found.nodes == [engine.node] and found.status == "healthy"
    assert found.words().endswith(f"1 engine node answered: {engine.node}.")


# ------------------------------------------------------------------------------ the chooser


def test_connection_chooser_screenshot_adds_tests_and_connects_a_profile(
    qtbot: QtBot,
    qloop: asyncio.AbstractEventLoop,
    engine: StackConnection,
    profiles: ProfileStore,
    memory_keyring: MemoryKeyring,
) -> None:
    dialog = ConnectionDialog(profiles, current=LOCAL_KEY, data_dir=Path("/srv/campaign"))
    qtbot.addWidget(dialog)
    dialog.open()
    qtbot.waitExposed(dialog)
    assert dialog.names() == ["Local stack"]

    dialog.new_profile()
    dialog.name.setText("Production EU")
    dialog.servers.setText(f"{engine.nats_url}")
    dialog.auth.setCurrentIndex(dialog.auth.findData("token"))
    assert dialog.secret.isVisible() and not dialog.user.isVisible()
    dialog.auth.setCurrentIndex(dialog.auth.findData("nkey"))
    assert dialog.secret.isVisible() and dialog.user.isVisible()  # the engines know names
    dialog.auth.setCurrentIndex(dialog.auth.findData("user"))
    assert dialog.secret.isVisible() and dialog.user.isVisible()
    qtbot.keyClicks(dialog.user, engine.nats_user)
    qtbot.keyClicks(dialog.secret, "wrong-password")
    op = dialog.test_connection()
    assert op is not None
    run(qloop, settle(op))
    assert "refused the login (authorization violation)" in dialog.status_text()

    dialog.secret.clear()
    qtbot.keyClicks(dialog.secret, engine.nats_password)
    assert dialog.save()
    assert dialog.names() == ["Local stack", "Production EU"]
    text = profiles.path.read_text()
    assert engine.nats_password not in text and "Production EU" in text
    assert list(memory_keyring.secrets.values()) == [engine.nats_password]
    assert dialog.secret.text() == "" and "stored in the OS keyring" in (
        dialog.secret.placeholderText()
    )

    op = dialog.test_connection()  # the stored password, nothing typed
    assert op is not None
    run(qloop, settle(op))
    assert f"1 engine node answered: {engine.node}" in dialog.status_text()
    assert dialog.test_button.isEnabled() and dialog.connect_button.isEnabled()
    save_screenshot(dialog, "connections")

    with qtbot.waitSignal(dialog.connect_requested, timeout=10_000) as chosen:
        op = dialog.connect_selected()
        assert op is not None
        run(qloop, settle(op))
    target = chosen.args[0]
    assert isinstance(target, Target) and target.profile == "Production EU"
    assert target.login.user == engine.nats_user and target.url == engine.nats_url
    assert target.login.password == engine.nats_password


def test_the_chooser_refuses_bad_input_in_words(
    qtbot: QtBot, profiles: ProfileStore, memory_keyring: MemoryKeyring
) -> None:
    dialog = ConnectionDialog(profiles)
    qtbot.addWidget(dialog)
    dialog.open()
    dialog.new_profile()
    dialog.servers.setText("nats.example.com:4222")
    assert not dialog.save()
    assert "needs a scheme" in dialog.status_text()
    dialog.servers.setText("nats://nats.example.com:4222")
    dialog.auth.setCurrentIndex(dialog.auth.findData("token"))
    assert not dialog.save()
    assert "Type the token" in dialog.status_text()
    assert not profiles.path.exists() and memory_keyring.secrets == {}
    with pytest.raises(RuntimeError):
        dialog.exec()


def test_deleting_a_profile_asks_first_and_forgets_its_secret(
    qtbot: QtBot, profiles: ProfileStore, memory_keyring: MemoryKeyring
) -> None:
    profiles.save(Profile("prod", ["nats://10.1.2.3:4222"], auth="token"), "t0ken")
    profiles.save(Profile("staging", ["nats://10.1.2.4:4222"]))
    dialog = ConnectionDialog(profiles, current="prod")
    qtbot.addWidget(dialog)
    dialog.open()
    assert dialog.editing == "prod" and dialog.name.text() == "prod"
    confirm = dialog.delete_profile()
    assert confirm is not None and confirm.isVisible()
    assert "Its token is removed from the OS keyring." in confirm._details.text()
    assert profiles.names() == ["prod", "staging"]  # nothing yet
    confirm.confirm_button().click()
    assert profiles.names() == ["staging"] and memory_keyring.secrets == {}
    assert dialog.names() == ["Local stack", "staging"]
    assert "Deleted the profile \u201cprod\u201d" in dialog.status_text()
    # An unsaved new profile, left and selected again, starts from an empty form.
    dialog.new_profile()
    dialog.select("staging")
    dialog.list.setCurrentRow(dialog.list.count() - 1)
    assert dialog.editing == "" and dialog.servers.text() == ""


# ------------------------------------------------------------------------------ the app


def test_the_console_connects_with_a_profile_and_switches_at_run_time(
    qloop: asyncio.AbstractEventLoop,
    engine: StackConnection,
    nats_server: NatsServer,
    profiles: ProfileStore,
    memory_keyring: MemoryKeyring,
    tmp_path: Path,
) -> None:
    """``campaign-console --profile prod`` (its user and password): connect; a wrong password
    keeps the connection; switch to another NATS (no engine there) and back; quitting leaves
    nothing running."""
    admin = engine.nats_user
    profiles.save(Profile("prod", [engine.nats_url], auth="user", user=admin), engine.nats_password)
    profiles.save(Profile("bare", [nats_server.url], auth="token"), nats_server.token)
    profiles.save(Profile("bad", [engine.nats_url], auth="user", user=admin), "not-the-password")
    options = console_app.parse_args(
        ["--profile", "prod", "--profiles", str(profiles.path), "--data-dir", str(tmp_path)]
    )
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    target = console_app.resolve_target(options)
    assert target.profile == "prod" and target.login.user == admin

    async def scenario() -> int:
        main = asyncio.ensure_future(console_app.run(app, options, target))
        await wait_until(
            lambda: any(isinstance(w, MainWindow) for w in app.topLevelWidgets()), timeout=10
        )
        window = next(w for w in app.topLevelWidgets() if isinstance(w, MainWindow))
        client = window.client
        await wait_until(lambda: client.nodes() == [engine.node], timeout=15)
        assert "prod" in window.top_bar.target_text()
        assert window.connected_profile == "prod"
        # The profile's user signed in: the top bar says who, with the role the engine gives.
        signed_in = f"<b>{admin}</b>&nbsp;·&nbsp;admin"
        await wait_until(lambda: window.top_bar.identity.text() == signed_in)

        window.connect_profile("bad")
        await wait_until(lambda: "Could not connect to bad" in window.messages.text())
        assert "refused the login" in window.messages.text()
        assert "Still connected to prod." in window.messages.text()
        assert client.is_connected and client.url == engine.nats_url
        assert "prod" in window.top_bar.target_text()

        window.show_page("queues")
        window.connect_profile("bare")
        await wait_until(lambda: client.url == nats_server.url and client.is_connected)
        assert client.nodes() == [] and "bare" in window.top_bar.target_text()
        assert window.current_page() == "queues" and window.page("queues") is not None
        await asyncio.sleep(1.0)
        assert client.nodes() == []  # nothing of the old engine shows up on the new NATS

        window.connect_profile("prod")
        await wait_until(lambda: client.nodes() == [engine.node], timeout=15)
        assert window.connected_profile == "prod"
        window.close()
        return await main

    assert run(qloop, scenario(), timeout=90) == 0


def test_the_command_line_names_what_is_wrong(
    profiles: ProfileStore, capsys: pytest.CaptureFixture[str]
) -> None:
    assert console_app.main(["--profile", "nope", "--profiles", str(profiles.path)]) == 2
    assert "There is no connection profile 'nope'" in capsys.readouterr().err
    assert console_app.main(["--nats", "nats//broken"]) == 2
    assert "needs a scheme" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        console_app.parse_args(["--profile", "a", "--nats", "nats://b:4222"])


def test_the_top_bar_menu_lists_the_profiles(
    qtbot: QtBot,
    qloop: asyncio.AbstractEventLoop,
    profiles: ProfileStore,
    memory_keyring: MemoryKeyring,
) -> None:
    profiles.save(Profile("prod", ["nats://10.1.2.3:4222"], auth="token"), "t0ken")
    pages.register_builtin_pages()
    window = MainWindow(EngineClient(), profiles=profiles)
    qtbot.addWidget(window)
    window.show()
    menu = window.top_bar.connection_menu
    menu.aboutToShow.emit()
    words = [a.text() for a in menu.actions() if not a.isSeparator()]
    assert words == ["Local stack", "prod", "Manage connections\u2026"]
    assert menu.actions()[0].isChecked()
    with qtbot.waitSignal(window.connection_requested) as requested:
        menu.actions()[1].trigger()
    assert requested.args[0].profile == "prod" and requested.args[0].login.token == "t0ken"
    dialog = window.open_connections()
    assert dialog.isVisible() and dialog.names() == ["Local stack", "prod"]
    dialog.reject()
