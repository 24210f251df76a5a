"""``campaign-console``: the operations console's entry point.

By default it starts the local stack (``campaign-engine run`` as a child process) and connects to
it. ``--profile NAME`` connects to the remote engines of a saved connection profile instead
(``console/profiles.py``: profiles in ``connections.toml`` under the user's config directory,
their secrets in the OS keyring), and ``--nats URL`` to a NATS URL with the token stored for it
in the keyring (``--set-token``). The connection can be switched at run time from the top bar
(the connection chooser, ``console/connection_dialog.py``). ``make run`` calls this.

The Qt and asyncio loops are one (qasync). ``aboutToQuit``, closing the window, Ctrl-C and
SIGTERM all set one ``asyncio.Event``; shutdown then runs in order: stop intake (timers, the
metrics subscription), drain NATS, cancel operations still in flight, stop the local stack.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import qasync
import qtawesome as qta
from PySide6.QtWidgets import QApplication

from console import __version__, operations
from console.client import EngineClient
from console.connection import ConnectionManager, Target
from console.connection_dialog import LOCAL_KEY
from console.errors import ConsoleError, KeyringUnavailable, describe
from console.main_window import MainWindow
from console.operations import Operation
from console.pages import register_builtin_pages
from console.profiles import (
    KEYRING_SERVICE,
    NatsLogin,
    ProfileStore,
    keyring_backend,
    parse_servers,
    read_secret,
)

log = logging.getLogger("console")

APP_NAME = "Campaign Console"
ORG_NAME = "Campaign Console"


@dataclass
class Options:
    connect: str | None = None
    """``--nats URL``: remote engines on this NATS (token from the keyring)."""
    profile: str | None = None
    """``--profile NAME``: a saved connection profile."""
    profiles_file: Path | None = None
    data_dir: Path | None = None
    debug: bool = False
    set_token: bool = False


def default_data_dir() -> Path:
    """Where the local stack keeps its data: the same place the engine uses by default."""
    import platformdirs

    return Path(platformdirs.user_data_dir("campaign-console", appauthor=False))


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="campaign-console",
        description="The operations console for campaign engines.",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--profile",
        metavar="NAME",
        help="connect to the engines of this saved connection profile instead of starting"
        " the local stack (profiles are made in the console's connection chooser)",
    )
    where.add_argument(
        "--nats",
        "--connect",
        dest="connect",
        metavar="NATS_URL",
        help="watch remote engines on this NATS (token from the OS keyring, see --set-token)"
        " instead of starting the local stack",
    )
    parser.add_argument(
        "--profiles",
        metavar="FILE",
        type=Path,
        help="the connection profiles file (default: connections.toml in the user's config"
        " directory)",
    )
    parser.add_argument(
        "--data-dir", metavar="DIR", type=Path, help="the local stack's data directory"
    )
    parser.add_argument(
        "--set-token",
        action="store_true",
        help="with --nats: ask for the NATS token and store it in the OS keyring, then exit",
    )
    parser.add_argument("--debug", action="store_true", help="verbose logs")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    ns = parser.parse_args(argv)
    if ns.set_token and not ns.connect:
        parser.error("--set-token needs --nats NATS_URL")
    return Options(
        connect=ns.connect,
        profile=ns.profile,
        profiles_file=ns.profiles,
        data_dir=ns.data_dir,
        debug=ns.debug,
        set_token=ns.set_token,
    )


def read_token(url: str) -> str | None:
    """The NATS token for ``url`` from the OS keyring (None if none is stored for it).

    Raises ``KeyringUnavailable`` when there is no usable keyring backend.
    """
    backend = keyring_backend()
    try:
        value = backend.get_password(KEYRING_SERVICE, url)
    except Exception as exc:  # a locked or broken keyring: say which, never what it held
        raise KeyringUnavailable(
            f"The OS keyring could not be read ({type(exc).__name__}); unlock it and try again."
        ) from None
    return str(value) if value else None


def store_token(url: str, token: str) -> None:
    """Keep the NATS token for ``url`` in the OS keyring."""
    backend = keyring_backend()
    try:
        backend.set_password(KEYRING_SERVICE, url, token)
    except Exception as exc:
        raise KeyringUnavailable(
            f"The OS keyring could not be written ({type(exc).__name__})."
        ) from None


def resolve_target(options: Options) -> Target:
    """Where ``options`` say to connect, secrets read from the keyring (which may block on
    D-Bus: call it before the event loop starts). Raises ``ConsoleError`` in words."""
    if options.profile is not None:
        store = ProfileStore(options.profiles_file)
        profile = store.get(options.profile)
        secret = read_secret(profile.name) if profile.needs_secret else ""
        return Target.of_profile(profile, secret)
    if options.connect:
        url = ",".join(parse_servers(options.connect))
        return Target.remote(url, NatsLogin(token=read_token(url) or ""))
    return Target.local()


def make_app(argv: Sequence[str] | None = None) -> QApplication:
    """The QApplication with names, icon and the theme (following the OS colour scheme)."""
    from widgets import theme

    existing = QApplication.instance()
    app = existing if isinstance(existing, QApplication) else QApplication(list(argv or ["x"]))
    app.setOrganizationName(ORG_NAME)
    app.setApplicationName(APP_NAME)
    app.setApplicationDisplayName(APP_NAME)
    app.setApplicationVersion(__version__)
    app.setDesktopFileName("campaign-console")
    app.setWindowIcon(qta.icon("mdi6.email-fast-outline", color="#2563eb"))
    theme.apply_theme(app)
    # The window's close button asks for an orderly shutdown instead of ending the loop.
    app.setQuitOnLastWindowClosed(False)
    return app


async def run(app: QApplication, options: Options, target: Target | None = None) -> int:
    """Run the console until the operator quits; returns the exit code."""
    loop = asyncio.get_running_loop()
    quit_event = asyncio.Event()
    app.aboutToQuit.connect(quit_event.set)
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, quit_event.set)

    register_builtin_pages()
    client = EngineClient()
    data_dir = options.data_dir or default_data_dir()
    window = MainWindow(
        client,
        target="Local stack",
        target_detail="",
        profiles=ProfileStore(options.profiles_file),
        data_dir=data_dir,
    )
    window.close_requested.connect(quit_event.set)
    manager = ConnectionManager(client, data_dir=data_dir, parent=window)
    manager.progress.connect(window.show_progress)
    manager.failed.connect(lambda words: window.show_message(words, "failing"))
    manager.switching.connect(window.forget_engines)
    manager.target_changed.connect(window.set_target)
    switches: list[Operation[None]] = []

    def switch(to: Target) -> None:
        """Switch connection at run time (from the top bar or the chooser)."""
        window.set_target(to.title, "connecting\u2026")
        operation = Operation(window, lambda: manager.switch(to), label=f"Connect to {to.title}")
        operation.success(lambda _r: window.show_progress(f"Connected to {to.title}."))
        operation.failure(lambda exc: _switch_failed(window, manager, to, exc))
        switches.append(operation.run())

    window.connection_requested.connect(switch)
    window.show()

    code = 0
    try:
        if target is None:
            target = resolve_target(options)
        window.forget_engines(target)
        if target.is_local:
            window.set_target(target.title, "starting\u2026")
        connect = asyncio.ensure_future(manager.switch(target))
        # Closing the window while the engine starts must not wait for it.
        await _first(connect, quit_event)
        if not quit_event.is_set():
            window.show_progress(f"Connected to {target.title}.")
        await quit_event.wait()
    except ConsoleError as exc:
        code = 1
        log.error("%s", describe(exc))
        window.set_target(target.title if target else "Not connected", "not connected")
        window.show_message(
            describe(exc) + " Choose another connection from the top bar (Ctrl+Shift+O).",
            "failing",
        )
        await quit_event.wait()  # keep the window (and the reason) until the operator quits
        code = 0 if manager.target is not None else 1  # connected elsewhere meanwhile
    finally:
        window.stop_timers()  # 1. stop intake
        # A switch under way must not connect after the drain: cancel it and let it unwind.
        under_way = [op.task for op in switches if op.task is not None and not op.task.done()]
        for operation in switches:
            operation.cancel()
        if under_way:
            await asyncio.wait(under_way, timeout=30)
        await client.stop_intake()
        await client.close()  # 2. drain NATS
        await operations.cancel_all()  # 3. cancel tasks
        await manager.close()  # 4. stop child processes
        window.hide()
        window.deleteLater()
        with contextlib.suppress(RuntimeError, TypeError):
            app.aboutToQuit.disconnect(quit_event.set)
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
    return code


def _switch_failed(
    window: MainWindow, manager: ConnectionManager, to: Target, exc: BaseException
) -> None:
    """A switch failed: say why; the top bar names what the console is still connected to."""
    current = manager.target
    if current is not None and manager.client.is_connected:
        window.set_target(current.title, manager.client.url.replace(",", ", "))
        window.connected_profile = current.profile or (LOCAL_KEY if current.is_local else None)
        still = f" Still connected to {current.title}."
    else:
        window.set_target(to.title, "not connected")
        still = ""
    window.show_message(f"Could not connect to {to.title}: {describe(exc)}{still}")


async def _first(future: asyncio.Future[Any], event: asyncio.Event) -> None:
    """Wait until ``future`` is done or ``event`` is set (then cancel ``future``)."""
    waiter: asyncio.Future[Any] = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({future, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter
    if not future.done():
        future.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConsoleError):
            await future
    else:
        error = future.exception()
        if error is not None:
            raise error


def run_app(app: QApplication, options: Options, target: Target | None = None) -> int:
    """Run :func:`run` on a qasync loop until it returns.

    Python 3.11's ``asyncio.run`` has no ``loop_factory``; ``asyncio.Runner`` is its 3.11 form.
    If Qt leaves its event loop on its own (``QApplication.quit()``, a session ending),
    ``aboutToQuit`` has already set the quit event: the loop is re-entered so the orderly
    shutdown can finish instead of being cut off.
    """
    with asyncio.Runner(loop_factory=lambda: qasync.QEventLoop(app)) as runner:
        loop = runner.get_loop()
        task = loop.create_task(run(app, options, target))
        for _attempt in range(5):
            try:
                return loop.run_until_complete(task)
            except RuntimeError:
                if task.done():
                    raise
                log.debug("Qt left its event loop; finishing the shutdown")
        task.cancel()
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    """The ``campaign-console`` command."""
    options = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if options.debug else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # The keyring may block (D-Bus): read it before the event loop starts.
    try:
        if options.set_token and options.connect:
            url = ",".join(parse_servers(options.connect))
            store_token(url, getpass.getpass(f"NATS token for {url}: "))
            print(f"Stored the NATS token for {url} in the OS keyring.")
            return 0
        target = resolve_target(options)
    except ConsoleError as exc:
        print(f"campaign-console: {describe(exc)}", file=sys.stderr)
        return 2
    problem = display_problem()
    if problem and not target.is_local:
        print(
            f"campaign-console: {problem}; the console needs a screen to watch {target.title}.",
            file=sys.stderr,
        )
        return 2
    if problem:
        return run_headless(options, problem)
    webengine_flags()
    app = make_app(sys.argv[:1])
    return run_app(app, options, target)


def webengine_flags(environ: dict[str, str] | None = None) -> None:
    """As root, QtWebEngine's Chromium refuses to start with its sandbox (and containers have
    no GPU): turn both off unless the user chose flags. Must run before QtWebEngine loads."""
    env = os.environ if environ is None else environ
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        env.setdefault("QTWEBENGINE_CHROMIUM_FLAGS", "--no-sandbox --disable-gpu")


def display_problem() -> str:
    """Why Qt could not open a window here, in words; empty when it can.

    Checked before Qt starts, because Qt aborts the process when no platform plugin loads.
    """
    if os.environ.get("QT_QPA_PLATFORM") or not sys.platform.startswith("linux"):
        return ""
    if os.environ.get("WAYLAND_DISPLAY"):
        return ""
    if not os.environ.get("DISPLAY"):
        return "no display found (DISPLAY/WAYLAND_DISPLAY unset)"
    return _xcb_problem()


def _xcb_problem() -> str:
    """Load Qt's X11 platform library as Qt would: a missing system library (libxcb-cursor0,
    libxcb-icccm4, ...) is named here instead of Qt aborting the process."""
    import ctypes

    import PySide6

    qpa = Path(PySide6.__file__).parent / "Qt" / "lib" / "libQt6XcbQpa.so.6"
    if not qpa.exists():
        return ""
    try:
        ctypes.CDLL(str(qpa))
    except OSError as exc:
        missing = str(exc).split(":", 1)[0]
        return (
            f"Qt's X11 plugin cannot load ({missing} is missing: install the system's xcb "
            "libraries, e.g. 'sudo apt install libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1')"
        )
    import ctypes.util

    if ctypes.util.find_library("xcb-cursor") is None:  # loaded by Qt at run time (Qt >= 6.5)
        return "Qt's X11 plugin needs libxcb-cursor0 (e.g. 'sudo apt install libxcb-cursor0')"
    return ""


def run_headless(options: Options, problem: str) -> int:
    """No usable screen (a server, CI, SSH): say why and run the local engine with demo
    traffic instead, so ``make run`` still gives a working system to use over HTTP and the CLI."""
    print(
        f"campaign-console: {problem}; starting the local engine with demo traffic instead. "
        "Set QT_QPA_PLATFORM to force a Qt platform.",
        file=sys.stderr,
        flush=True,
    )
    engine = Path(sys.executable).parent / "campaign-engine"
    argv = [str(engine), "run", "--demo-rate", "20"]
    if options.data_dir:
        argv += ["--data-dir", str(options.data_dir)]
    os.execv(argv[0], argv)
    return 0  # pragma: no cover - execv does not return


if __name__ == "__main__":
    sys.exit(main())
