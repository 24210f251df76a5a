"""Operation objects: every UI-to-engine call, with success/failure handlers and a task handle.

Anki's ``aqt/operations`` habit: a page never fires and forgets a coroutine. It writes::

    Operation(self, lambda: client.request_one("demo.start", {"rate": 50}))
        .success(lambda result: ...)
        .failure(lambda exc: ...)      # optional: the default shows describe(exc)
        .run()

The operation keeps its ``asyncio.Task`` (``task``), can be cancelled (``cancel()``), and is
cancelled when its parent widget is destroyed. Failures are described by
``console.errors.describe`` and shown in the window's message area (any window with a
``show_message(text, status)`` method), unless a failure handler takes them.
Handlers run on the GUI thread (the qasync loop); never ``exec()`` a modal dialog in one — use
``open()`` and ``finished``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QWidget

from console.errors import describe

log = logging.getLogger(__name__)

T = TypeVar("T")

_running: set[Operation[Any]] = set()


@runtime_checkable
class MessageSink(Protocol):
    """A window that can show a message to the operator (the main window does)."""

    def show_message(self, text: str, status: str = "failing") -> None: ...


def show_message(parent: QWidget | None, text: str, status: str = "failing") -> None:
    """Show ``text`` in the message area of ``parent``'s window (logged if there is none)."""
    window = parent.window() if parent is not None else None
    if isinstance(window, MessageSink):
        window.show_message(text, status)
    else:
        log.warning("%s", text)


class OperationSignals(QObject):
    """Qt signals of an operation (an ``Operation`` is not itself a QObject, for typing).

    Signals:
        finished(): the operation ended (success, failure or cancellation).
    """

    finished = Signal()


class Operation(Generic[T]):
    """One call to the engine, run on the event loop, with handlers and a kept task."""

    def __init__(
        self,
        parent: QWidget | None,
        coro_factory: Callable[[], Coroutine[Any, Any, T]],
        *,
        label: str = "",
    ) -> None:
        self.parent = parent
        self.label = label
        self._factory = coro_factory
        self._on_success: Callable[[T], None] | None = None
        self._on_failure: Callable[[BaseException], None] | None = None
        self.task: asyncio.Task[None] | None = None
        self.result: T | None = None
        self.error: BaseException | None = None
        self.signals = OperationSignals()
        if parent is not None:
            parent.destroyed.connect(self.cancel)

    def success(self, callback: Callable[[T], None]) -> Operation[T]:
        """Call ``callback(result)`` on the GUI thread when the call succeeds."""
        self._on_success = callback
        return self

    def failure(self, callback: Callable[[BaseException], None]) -> Operation[T]:
        """Call ``callback(exc)`` instead of showing ``describe(exc)`` in the message area."""
        self._on_failure = callback
        return self

    def run(self) -> Operation[T]:
        """Start the call on the running event loop; returns self (``task`` is set)."""
        if self.task is not None:
            raise RuntimeError("an operation runs once")
        self.task = asyncio.get_running_loop().create_task(self._run(), name=self.label or None)
        _running.add(self)
        return self

    async def _run(self) -> None:
        # The task never ends in an exception: failures go to the handler (or the message
        # area) and are kept in ``error``, so no "exception was never retrieved" is logged.
        try:
            self.result = await self._factory()
        except asyncio.CancelledError:
            _running.discard(self)
            self.signals.finished.emit()
            raise
        except Exception as exc:
            _running.discard(self)
            self.error = exc
            try:
                if self._on_failure is not None:
                    self._on_failure(exc)
                else:
                    text = describe(exc)
                    show_message(self.parent, f"{self.label}: {text}" if self.label else text)
            finally:
                self.signals.finished.emit()
            return
        _running.discard(self)
        if self._on_success is not None:
            try:
                self._on_success(self.result)
            except Exception as exc:  # a handler bug is shown, not swallowed
                log.exception("success handler of %s failed", self.label or "operation")
                show_message(self.parent, describe(exc))
        self.signals.finished.emit()

    def cancel(self) -> None:
        """Cancel the call if it is still running."""
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def done(self) -> bool:
        return self.task is not None and self.task.done()

    async def wait(self) -> T:
        """Await the result (raises what the call raised)."""
        if self.task is None:
            raise RuntimeError("operation not started")
        await self.task
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]


def running() -> list[Operation[Any]]:
    """Operations still in flight."""
    return list(_running)


async def cancel_all(timeout: float = 5.0) -> None:
    """Cancel every operation in flight and wait for them to end (shutdown)."""
    tasks = [op.task for op in list(_running) if op.task is not None and not op.task.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=timeout)
    _running.clear()
