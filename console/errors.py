"""The console's errors and the one function that turns any error into words for the operator.

Every failure an operator can see goes through :func:`describe` (Anki's ``aqt/errors.py`` habit):
pages and operation objects never format exceptions themselves.
"""

from __future__ import annotations

import asyncio
import errno


class ConsoleError(Exception):
    """Base of every error the console raises on purpose; ``str()`` is already readable."""


class ControlRefused(ConsoleError, RuntimeError):
    """An engine answered a control request with ``{"ok": false}``; the message is the engine's."""

    def __init__(self, message: str, *, node: str | None = None, verb: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.node = node
        self.verb = verb


class NotConnected(ConsoleError, ConnectionError):
    """There is no NATS connection to send a request over."""


class EngineUnreachable(ConsoleError, ConnectionError):
    """NATS could not be reached (first connection failed)."""


class NoEngineAnswered(ConsoleError, ConnectionError):
    """NATS is up but no engine listens on the control subject (no responders)."""

    def __init__(self, verb: str, node: str) -> None:
        target = "any engine" if node == "all" else f"engine node {node!r}"
        super().__init__(f"No answer from {target} to {verb!r}: is the engine running?")
        self.verb = verb
        self.node = node


class RequestTimedOut(ConsoleError, TimeoutError):
    """An engine did not answer a control request in time."""

    def __init__(self, verb: str, node: str, timeout: float) -> None:
        target = "the engines" if node == "all" else f"engine node {node!r}"
        super().__init__(f"{target.capitalize()} did not answer {verb!r} within {timeout:g} s.")
        self.verb = verb
        self.node = node
        self.timeout = timeout


class StackFailed(ConsoleError, RuntimeError):
    """The local stack (the ``campaign-engine`` child process) could not start or died."""


class KeyringUnavailable(ConsoleError, RuntimeError):
    """No usable OS keyring, so the NATS token for ``--connect`` cannot be read safely."""


def describe(exc: BaseException) -> str:
    """One plain sentence (or two) saying what went wrong, for the message area or a dialog.

    Console errors carry their own words; a few well-known built-ins get a sentence; anything
    else is named by its type so a bug report has something to search for.
    """
    if isinstance(exc, ControlRefused):
        where = f" (node {exc.node})" if exc.node else ""
        action = f"{exc.verb!r}" if exc.verb else "The request"
        return f"{action} was refused{where}: {exc.message}"
    if isinstance(exc, ConsoleError):
        return str(exc) or type(exc).__name__
    if isinstance(exc, asyncio.CancelledError):
        return "Cancelled."
    if isinstance(exc, TimeoutError):
        return "The operation timed out." + (f" ({exc})" if str(exc) else "")
    if isinstance(exc, ConnectionRefusedError):
        return "The connection was refused: is the server running and the address right?"
    if isinstance(exc, PermissionError):
        return f"Permission denied: {exc.filename or exc}"
    if isinstance(exc, FileNotFoundError):
        return f"File not found: {exc.filename or exc}"
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "The disk is full."
    if isinstance(exc, ConnectionError | OSError):
        return f"A connection or system error occurred: {exc}"
    text = str(exc)
    return f"Unexpected error ({type(exc).__name__}){': ' + text if text else ''}."
