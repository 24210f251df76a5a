"""``PollingPage``: a page that asks an engine for a list while it is visible.

Inbox, Audit and Dead letters share the same habit: a timer asks again every few seconds while
the page is shown, never while it is hidden; a request still on its way is not doubled; nothing
is asked while NATS is not connected. A page subclasses this, sets ``refresh_ms`` and writes
``request_list()``, which starts the request (an :class:`~console.operations.Operation`).
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QWidget

from console.client import CONNECTED, EngineClient
from console.operations import Operation


class PollingPage(QWidget):
    """Base of pages refreshed by polling (see the module docstring).

    Subclasses override ``request_list()``, and ``on_shown()`` / ``on_hidden()`` for their own
    timers (freshness labels, search delays).

    Signals: none of its own.
    """

    refresh_ms = 5000

    def __init__(self, client: EngineClient, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.client = client
        self._list_op: Operation[Any] | None = None
        self._timer = QTimer(self)
        self._timer.setInterval(self.refresh_ms)
        self._timer.timeout.connect(self.refresh)

    # ---------------------------------------------------------------- page hooks

    def page_shown(self) -> None:
        """Refresh now and every ``refresh_ms`` while visible."""
        self._timer.start()
        self.on_shown()
        self.refresh()

    def page_hidden(self) -> None:
        """Stop asking while hidden."""
        self._timer.stop()
        self.on_hidden()

    def on_shown(self) -> None:
        """The page became visible (before the first refresh)."""

    def on_hidden(self) -> None:
        """The page was hidden."""

    # ---------------------------------------------------------------- polling

    def refresh(self, force: bool = False) -> None:
        """Ask for the list again; skipped while a request is on its way unless ``force``
        (which cancels that request first), and while not connected."""
        if self._list_op is not None and not self._list_op.done():
            if not force:
                return
            self._list_op.cancel()
        if self.client.state != CONNECTED:
            return
        self._list_op = self.request_list()

    def request_list(self) -> Operation[Any]:
        """Start the request for the page's list and return its running operation."""
        raise NotImplementedError
