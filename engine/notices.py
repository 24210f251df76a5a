"""Change notices between nodes: a core-NATS subject per kind of thing (``templates.changed``,
``segments.changed``, ``workflows.changed``) carrying a small JSON object, on which every node
reloads what changed from the shared store.

:func:`follow` subscribes and hands each readable notice to a handler; :func:`folded` turns a
reload into one that folds notices arriving while it runs into a single further reload.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

log = logging.getLogger(__name__)

Stop = Callable[[], Awaitable[None]]


async def follow(
    nc: NatsClient,
    subject: str,
    handle: Callable[[dict[str, Any]], Awaitable[None]],
    *,
    required: Sequence[str] = ("node",),
    errors: tuple[type[BaseException], ...] = (),
    what: str = "reload",
) -> Stop:
    """Subscribe to ``subject``; each notice that is a JSON object holding ``required`` goes to
    ``handle``. An unreadable notice is logged and dropped; ``errors`` raised by ``handle`` are
    logged (with ``what`` failed), so one bad reload never ends the subscription.

    Returns the coroutine function that unsubscribes (for the node's shutdown stack).
    """

    async def on_notice(msg: Msg) -> None:
        try:
            notice = orjson.loads(msg.data)
            readable = isinstance(notice, dict) and all(key in notice for key in required)
        except orjson.JSONDecodeError:
            readable = False
        if not readable:
            log.warning("unreadable %s notice ignored", subject)
            return
        try:
            await handle(notice)
        except errors:
            log.exception("could not %s", what)

    sub = await nc.subscribe(subject, cb=on_notice)

    async def stop() -> None:
        try:
            await sub.unsubscribe()
        except Exception:  # the connection may already be closed
            log.debug("unsubscribe failed", exc_info=True)

    return stop


def folded(reload: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """``reload`` as a call that, while a reload runs, only asks for one more: any number of
    notices during a reload cost one further reload, not one each."""
    pending = asyncio.Event()
    running = False

    async def run() -> None:
        nonlocal running
        pending.set()
        if running:
            return
        running = True
        try:
            while pending.is_set():
                pending.clear()
                await reload()
        finally:
            running = False

    return run
