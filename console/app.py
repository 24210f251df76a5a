"""``campaign-console``: the operations console's entry point.

By default it starts the local stack (``campaign-engine run`` as a child process) and connects to
it; ``--connect NATS_URL`` watches remote engines instead, with the NATS token taken from the OS
keyring (never from a plain file). ``make run`` calls this.

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
from console.errors import ConsoleError, KeyringUnavailable, describe
from console.main_window import MainWindow
from console.pages import register_builtin_pages
from console.stack import LocalStack

log = logging.getLogger("console")

APP_NAME = "Campaign Console"
ORG_NAME = "Campaign Console"
KEYRING_SERVICE = "campaign-console"


@dataclass
class Options:
    connect: str | None = None
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
    parser.add_argument(
        "--connect",
        metavar="NATS_URL",
        help="watch remote engines on this NATS (token from the OS keyring) instead of"
        " starting the local stack",
    )
    parser.add_argument(
        "--data-dir", metavar="DIR", type=Path, help="the local stack's data directory"
    )
    parser.add_argument(
        "--set-token",
        action="store_true",
        help="with --connect: ask for the NATS token and store it in the OS keyring, then exit",
    )
    parser.add_argument("--debug", action="store_true", help="verbose logs")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    ns = parser.parse_args(argv)
    if ns.set_token and not ns.connect:
        parser.error("--set-token needs --connect NATS_URL")
    return Options(connect=ns.connect, data_dir=ns.data_dir, debug=ns.debug, set_token=ns.set_token)


def _keyring_backend() -> object:
    import keyring
    from keyring.backends import fail

    backend = keyring.get_keyring()
    if isinstance(backend, fail.Keyring):
        raise KeyringUnavailable(
            "No OS keyring is available to hold the NATS token (install or unlock one, e.g."
            " GNOME Keyring, KWallet or the macOS Keychain). The console never reads the"
            " token from a plain file."
        )
    return backend


def read_token(url: str) -> str | None:
    """The NATS token for ``url`` from the OS keyring (None if none is stored for it).

    Raises ``KeyringUnavailable`` when there is no usable keyring backend.
    """
    import keyring
    import keyring.errors

    _keyring_backend()
    try:
        return keyring.get_password(KEYRING_SERVICE, url)
    except keyring.errors.KeyringError as exc:
        raise KeyringUnavailable(f"The OS keyring could not be read: {exc}") from exc


def store_token(url: str, token: str) -> None:
    """Keep the NATS token for ``url`` in the OS keyring."""
    import keyring
    import keyring.errors

    _keyring_backend()
    try:
        keyring.set_password(KEYRING_SERVICE, url, token)
    except keyring.errors.KeyringError as exc:
        raise KeyringUnavailable(f"The OS keyring could not be written: {exc}") from exc


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


async def run(app: QApplication, options: Options, token: str | None = None) -> int:
    """Run the console until the operator quits; returns the exit code."""
    loop = asyncio.get_running_loop()
    quit_event = asyncio.Event()
    app.aboutToQuit.connect(quit_event.set)
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, quit_event.set)

    register_builtin_pages()
    client = EngineClient()
    local = options.connect is None
    window = MainWindow(
        client,
        target="Local stack" if local else options.connect or "",
        target_detail="starting\u2026" if local else "",
    )
    window.close_requested.connect(quit_event.set)
    window.show()

    stack: LocalStack | None = None
    code = 0
    try:
        if local:
            data_dir = options.data_dir or default_data_dir()
            stack = LocalStack(data_dir)
            stack.progress.connect(window.show_progress)
            stack.failed.connect(lambda words: window.show_message(words, "failing"))
            connect = asyncio.ensure_future(stack.start())
            # Closing the window while the engine starts must not wait for it.
            await _first(connect, quit_event)
            if not quit_event.is_set():
                conn = connect.result()
                window.set_target("Local stack", conn.nats_url)
                await client.connect_to(
                    conn.nats_url,
                    conn.nats_token or None,
                    user=conn.nats_user or None,
                    password=conn.nats_password or None,
                )
                window.show_progress("Connected to the local stack.")
        else:
            assert options.connect is not None
            await client.connect_to(options.connect, token)
        await quit_event.wait()
    except ConsoleError as exc:
        code = 1
        log.error("%s", describe(exc))
        window.show_message(describe(exc), "failing")
        await quit_event.wait()  # keep the window (and the reason) until the operator quits
    finally:
        window.stop_timers()  # 1. stop intake
        await client.stop_intake()
        await client.close()  # 2. drain NATS
        await operations.cancel_all()  # 3. cancel tasks
        if stack is not None:  # 4. stop child processes
            await stack.stop()
        window.hide()
        window.deleteLater()
        with contextlib.suppress(RuntimeError, TypeError):
            app.aboutToQuit.disconnect(quit_event.set)
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
    return code


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


def run_app(app: QApplication, options: Options, token: str | None = None) -> int:
    """Run :func:`run` on a qasync loop until it returns.

    Python 3.11's ``asyncio.run`` has no ``loop_factory``; ``asyncio.Runner`` is its 3.11 form.
    If Qt leaves its event loop on its own (``QApplication.quit()``, a session ending),
    ``aboutToQuit`` has already set the quit event: the loop is re-entered so the orderly
    shutdown can finish instead of being cut off.
    """
    with asyncio.Runner(loop_factory=lambda: qasync.QEventLoop(app)) as runner:
        loop = runner.get_loop()
        task = loop.create_task(run(app, options, token))
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
    token: str | None = None
    if options.connect:
        # The keyring may block (D-Bus): read it before the event loop starts.
        try:
            if options.set_token:
                store_token(options.connect, getpass.getpass(f"NATS token for {options.connect}: "))
                print(f"Stored the NATS token for {options.connect} in the OS keyring.")
                return 0
            token = read_token(options.connect)
        except KeyringUnavailable as exc:
            print(f"campaign-console: {exc}", file=sys.stderr)
            return 2
    problem = display_problem()
    if problem:
        return run_headless(options, problem)
    app = make_app(sys.argv[:1])
    return run_app(app, options, token)


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
