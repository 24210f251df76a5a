"""The decide -> deliver hand-off between processes: ``intents.ready`` on core NATS.

In one process decide hands the ids of the intents it just committed straight to the delivery
service (``DeliveryService.notify``). When deliver runs elsewhere (``--role deliver`` nodes, or
the local node's deliver processes) decide publishes the ids instead, and one deliver node of the
queue group claims them at once. Core NATS, not JetStream: a lost notice costs only latency,
since every deliver node also polls the store for due intents.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

log = logging.getLogger(__name__)

INTENTS_READY = "intents.ready"
DELIVER_GROUP = "deliver"


class ReadyAnnouncer:
    """Publishes committed intent ids on ``intents.ready``; callable from any thread."""

    def __init__(self, nc: NatsClient) -> None:
        self._nc = nc
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._pending: set[asyncio.Task[None]] = set()

    def __call__(self, intent_ids: Sequence[str]) -> None:
        if not intent_ids:
            return
        if threading.get_ident() != self._thread:
            self._loop.call_soon_threadsafe(self, list(intent_ids))
            return
        payload = "\n".join(intent_ids).encode("ascii")
        task = self._loop.create_task(self._publish(payload))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _publish(self, payload: bytes) -> None:
        try:
            await self._nc.publish(INTENTS_READY, payload)
        except Exception as exc:  # reconnecting or closed: the deliver nodes' poll finds them
            log.debug("intents.ready not published: %s", exc)


async def listen_for_ready(nc: NatsClient, notify: Callable[[list[str]], None]) -> Subscription:
    """Subscribe this deliver node to ``intents.ready`` (one node of the group gets each notice)."""

    async def received(msg: Msg) -> None:
        ids = [part for part in msg.data.decode("ascii", "replace").split("\n") if part]
        if ids:
            notify(ids)

    return await nc.subscribe(INTENTS_READY, queue=DELIVER_GROUP, cb=received)
