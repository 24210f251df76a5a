"""``KeyedRequests``: one engine request per key at a time, the latest asked always runs.

The Contacts and Segments pages ask for many things as the user types or clicks; a newer ask
of the same key (a new search, a new draft) waits for the one in flight and then runs with the
newest arguments, so answers never arrive out of order and nothing is asked twice at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtWidgets import QWidget

from console.client import CONNECTED, EngineClient
from console.operations import Operation


class KeyedRequests:
    """Requests made on behalf of ``owner`` (their operations die with it)."""

    def __init__(self, owner: QWidget, client: EngineClient) -> None:
        self.owner = owner
        self.client = client
        self._ops: dict[str, Operation[Any]] = {}
        self._waiting: dict[str, tuple[Any, ...]] = {}

    def ask(
        self,
        key: str,
        verb: str,
        args: dict[str, Any],
        on_success: Callable[[Any], None],
        on_failure: Callable[[BaseException], None] | None = None,
        timeout: float = 10,
    ) -> bool:
        """Start ``verb`` now, or after the request of ``key`` in flight (latest wins).
        False when not connected (nothing is asked)."""
        if self.client.state != CONNECTED:
            return False
        running = self._ops.get(key)
        if running is not None and not running.done():
            self._waiting[key] = (verb, args, on_success, on_failure, timeout)
            return True
        op: Operation[Any] = Operation(
            self.owner,
            lambda: self.client.request_one(verb, args, timeout=timeout),
            label=verb,
        ).success(on_success)
        if on_failure is not None:
            op.failure(on_failure)
        op.signals.finished.connect(lambda: self._finished(key))
        self._ops[key] = op.run()
        return True

    def _finished(self, key: str) -> None:
        waiting = self._waiting.pop(key, None)
        if waiting is not None:
            self.ask(key, *waiting)

    def busy(self) -> bool:
        """Whether anything is in flight or waiting (tests wait for quiet)."""
        return any(not op.done() for op in self._ops.values()) or bool(self._waiting)
