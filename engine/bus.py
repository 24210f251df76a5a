"""NATS and JetStream: the connection, the EVENTS stream and its consumers.

Subjects:
- ``events.<type>``: Segment events (track, identify, page, ...); captured by the EVENTS stream.
- ``metrics.<node>``: telemetry snapshots, four times a second (core NATS, not stored).
- ``control.<user>.<node>.<verb>`` / ``control.<user>.all.<verb>``: the request/reply control
  API; each user may publish only under its own name (engine/access.py, docs/access.md).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

from engine.access import inbox_prefix
from engine.errors import BusError

log = logging.getLogger(__name__)

EVENTS_STREAM = "EVENTS"
EVENTS_SUBJECTS = ["events.>"]
DECIDE_CONSUMER = "decide"
# How long JetStream remembers a Nats-Msg-Id to drop duplicates at publish time. The decide stage
# also keeps every processed messageId, so duplicates outside this window are dropped there.
DUPLICATE_WINDOW_S = 10 * 60


def events_subject(event_type: str) -> str:
    return f"events.{event_type}"


async def connect(
    url: str,
    *,
    token: str | None = None,
    user: str | None = None,
    password: str | None = None,
    nkey_seed: str | None = None,
    control_user: str | None = None,
    name: str = "campaign-engine",
    on_state: Callable[[str], Awaitable[None]] | None = None,
) -> NatsClient:
    """Connect with reconnects forever; a first connection failure is a ``BusError``.

    Sign in with a ``token``, a ``user`` and ``password``, or an ``nkey_seed`` (the seed text).
    Replies come back under the user's own inbox prefix (``control_user``, default ``user``: an
    nkey user has to name itself), the only inbox a console user may read.
    """

    client = NatsClient()

    async def _disconnected() -> None:
        if client.is_closed or client.is_draining:
            return  # our own drain/close, not trouble
        log.warning("NATS disconnected; reconnecting")
        if on_state:
            await on_state("disconnected")

    async def _reconnected() -> None:
        log.info("NATS reconnected")
        if on_state:
            await on_state("connected")

    async def _error(exc: Exception) -> None:
        log.debug("NATS error: %s", exc)

    options: dict[str, Any] = {
        "servers": [u.strip() for u in url.split(",") if u.strip()],
        "name": name,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.25,
        "connect_timeout": 3,
        "allow_reconnect": True,
        "disconnected_cb": _disconnected,
        "reconnected_cb": _reconnected,
        "error_cb": _error,
        # Buffer publishes while reconnecting rather than failing them at once.
        "pending_size": 64 * 1024 * 1024,
    }
    if token:
        options["token"] = token
    if user:
        options.update(user=user, password=password or "")
    if nkey_seed:
        options["nkeys_seed_str"] = nkey_seed
    if control_user or user:
        options["inbox_prefix"] = inbox_prefix(control_user or user or "")
    try:
        await client.connect(**options)
    except Exception as exc:  # nats raises several unrelated types here
        raise BusError(f"cannot connect to NATS at {url}: {exc}") from exc
    return client


async def ensure_streams(
    js: JetStreamContext,
    *,
    replicas: int = 1,
    max_age_days: float = 7.0,
    ack_wait: float = 30.0,
) -> None:
    """Create or update the EVENTS stream and the shared decide consumer."""
    config = StreamConfig(
        name=EVENTS_STREAM,
        subjects=EVENTS_SUBJECTS,
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=max_age_days * 86_400,
        duplicate_window=DUPLICATE_WINDOW_S,
        num_replicas=replicas,
    )
    try:
        await js.stream_info(EVENTS_STREAM)
        await js.update_stream(config)
    except NotFoundError:
        await js.add_stream(config)
    try:
        info = await js.consumer_info(EVENTS_STREAM, DECIDE_CONSUMER)
    except NotFoundError:
        info = None
    if info is not None and info.config.ack_wait == ack_wait:
        return
    await js.add_consumer(
        EVENTS_STREAM,
        ConsumerConfig(
            durable_name=DECIDE_CONSUMER,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            # Messages a crashed decide node held come back after this long.
            ack_wait=ack_wait,
            max_deliver=-1,
            max_ack_pending=20_000,
            max_waiting=512,
        ),
    )
