"""NATS and JetStream: the connection, the EVENTS stream and its consumers.

Subjects:
- ``events.<type>.<contact>``: Segment events (track, identify, page, ...) captured by the EVENTS
  stream; ``<contact>`` is :func:`contact_token` of the event's contact. With more than one
  partition the stream stores them as ``events.<type>.<contact>.<partition>`` (a subject
  transform, ``{{partition(N,2)}}``: NATS hashes the contact token), and each partition has its
  own durable consumer ``decide-<p>`` (docs/cluster.md). ``events.<type>`` without a contact
  (an outside producer that does not name one) is still accepted and goes to partition 0.
- ``metrics.<node>``: telemetry snapshots, four times a second (core NATS, not stored).
- ``control.<user>.<node>.<verb>`` / ``control.<user>.all.<verb>``: the request/reply control
  API; each user may publish only under its own name (engine/access.py, docs/access.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    ConsumerInfo,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    SubjectTransform,
)
from nats.js.errors import APIError as JetStreamAPIError
from nats.js.errors import NotFoundError, ServiceUnavailableError

from engine.access import inbox_prefix
from engine.errors import BusError

log = logging.getLogger(__name__)

T = TypeVar("T")

EVENTS_STREAM = "EVENTS"
EVENTS_SUBJECTS = ["events.>"]
DECIDE_CONSUMER = "decide"
# How long JetStream remembers a Nats-Msg-Id to drop duplicates at publish time. The decide stage
# also keeps every processed messageId, so duplicates outside this window are dropped there.
DUPLICATE_WINDOW_S = 10 * 60


MAX_PARTITIONS = 64


def events_subject(event_type: str, contact: str | None = None) -> str:
    """Where an event of ``event_type`` is published; ``contact`` (its contact key) adds the
    token that decides its partition, so one contact's events stay in order in a cluster."""
    if contact is None:
        return f"events.{event_type}"
    return f"events.{event_type}.{contact_token(contact)}"


def contact_token(contact: str) -> str:
    """A subject token for a contact key (any text: ids may hold dots or spaces): 16 hex
    digits of its BLAKE2b hash. Outside producers compute the same to keep per-contact order."""
    return hashlib.blake2b(contact.encode("utf-8"), digest_size=8).hexdigest()


def wire_contact_key(event: dict[str, Any]) -> str | None:
    """The contact key of a wire-form event (as ``engine.events.Event.contact_key``): the
    userId, else ``anon:<anonymousId>``; None when it names neither."""
    user = _id_text(event.get("userId"))
    if user:
        return user
    anonymous = _id_text(event.get("anonymousId"))
    return f"anon:{anonymous}" if anonymous else None


def _id_text(value: object) -> str | None:
    if isinstance(value, str):
        return value or None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return None


def event_subject(event: dict[str, Any]) -> str:
    """The subject of a wire-form event: ``events.<type>.<contact token>``."""
    return events_subject(str(event.get("type")), wire_contact_key(event))


def decide_consumer(partition: int, partitions: int) -> str:
    """The durable consumer of one partition: ``decide`` when there is only one."""
    return DECIDE_CONSUMER if partitions == 1 else f"{DECIDE_CONSUMER}-{partition}"


def partition_filters(partition: int, partitions: int) -> list[str]:
    """The stored subjects one partition's consumer reads. Partition 0 also takes what the
    transform does not partition: events without a contact token, and any longer subject."""
    if partitions == 1:
        return ["events.>"]
    if partition == 0:
        return ["events.*", "events.*.*.0", "events.*.*.*.*.>"]
    return [f"events.*.*.{partition}"]


def partition_transform(partitions: int) -> SubjectTransform | None:
    if partitions == 1:
        return None
    return SubjectTransform(
        src="events.*.*",
        dest=f"events.{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}.{{{{partition({partitions},2)}}}}",
    )


_PARTITION_DEST = re.compile(r"\{\{\s*partition\(\s*(\d+)\s*,")


async def stream_partitions(js: JetStreamContext) -> int | None:
    """The partition layout the EVENTS stream already has (1 without a transform), or None
    when there is no stream yet: a node on "automatic" joins the layout it finds rather than
    re-laying the decide consumers under the nodes already running."""
    try:
        info = await js.stream_info(EVENTS_STREAM)
    except NotFoundError:
        return None
    transform = info.config.subject_transform
    dest = transform.dest if transform is not None else ""
    found = _PARTITION_DEST.search(dest or "")
    return int(found.group(1)) if found else 1


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


async def settle(nc: NatsClient, timeout: float = 5.0) -> None:
    """Return once the server has processed everything sent on ``nc`` so far.

    ``flush()`` alone does not promise that: nats-py (2.16) writes its PING straight to the
    socket while a SUB from ``subscribe()`` may still wait in the client's pending buffer, so the
    PONG can come back before the server knows the subscription, and another client's request
    meets "no responders". By the first PONG the flusher has written the pending buffer; the
    second PING goes out behind it.
    """
    await nc.flush(timeout=max(1, round(timeout)))
    await nc.flush(timeout=max(1, round(timeout)))


# How long a starting node waits for a JetStream cluster that is settling.
JETSTREAM_WAIT_S = 60.0
# What a JetStream cluster answers while it elects a leader or a restarted server catches up.
JETSTREAM_SETTLING = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    ServiceUnavailableError,
)


async def when_jetstream_answers(
    step: Callable[[], Awaitable[T]], *, within: float, what: str
) -> T:
    """Run ``step`` (JetStream API calls), again while the cluster is settling, for up to
    ``within`` seconds: a node started while a NATS server restarts or a meta leader is being
    elected waits for it instead of exiting. Other errors, and the last one, go through."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    told = False
    while True:
        try:
            return await step()
        except JETSTREAM_SETTLING as exc:
            if loop.time() >= deadline:
                raise BusError(f"{what}: JetStream did not answer within {within:.0f} s") from exc
            if not told:
                log.warning("%s: JetStream is not answering yet (%s); waiting", what, exc)
                told = True
            await asyncio.sleep(0.5)


async def ensure_streams(
    js: JetStreamContext,
    *,
    replicas: int = 1,
    max_age_days: float = 7.0,
    ack_wait: float = 30.0,
    partitions: int = 1,
) -> None:
    """Create or update the EVENTS stream and the decide consumers, one per partition.

    A consumer created for a new partition layout starts where the old layout's consumers had
    all acknowledged (their lowest ack floor), so changing ``partitions`` neither skips events
    nor replays the whole stream (decide drops the few it already processed by messageId).
    Consumers of another layout are deleted. Change the number only with decide nodes stopped.
    """
    if not 1 <= partitions <= MAX_PARTITIONS:
        raise BusError(f"partitions: expected 1 to {MAX_PARTITIONS}, got {partitions}")
    config = StreamConfig(
        name=EVENTS_STREAM,
        subjects=EVENTS_SUBJECTS,
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=max_age_days * 86_400,
        duplicate_window=DUPLICATE_WINDOW_S,
        num_replicas=replicas,
        subject_transform=partition_transform(partitions),
    )
    try:
        await js.stream_info(EVENTS_STREAM)
        await js.update_stream(config)
    except NotFoundError:
        await js.add_stream(config)
    wanted = {decide_consumer(p, partitions): p for p in range(partitions)}
    existing = await _decide_consumers(js)
    start: int | None = None
    if any(name not in existing for name in wanted) and existing:
        start = min(_ack_floor(info) for info in existing.values()) + 1
    for name, partition in wanted.items():
        info = existing.get(name)
        if info is not None and info.config.ack_wait == ack_wait:
            continue
        consumer = _decide_config(name, partition, partitions, ack_wait)
        if info is None and start is not None:
            consumer.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
            consumer.opt_start_seq = start
        try:
            await js.add_consumer(EVENTS_STREAM, consumer)
        except JetStreamAPIError as exc:
            # Another node created it a moment ago (with its own start): that one stands.
            log.debug("decide consumer %s: %s", name, exc)
            await js.consumer_info(EVENTS_STREAM, name)
    for name in existing.keys() - wanted.keys():
        log.info("deleting decide consumer %s (partitions are now %d)", name, partitions)
        with contextlib.suppress(NotFoundError):
            await js.delete_consumer(EVENTS_STREAM, name)


def _decide_config(name: str, partition: int, partitions: int, ack_wait: float) -> ConsumerConfig:
    filters = partition_filters(partition, partitions)
    return ConsumerConfig(
        durable_name=name,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        # Messages a crashed decide node held come back after this long (or at once: the
        # partition's next owner restarts the consumer at its ack floor, see decide/partitions).
        ack_wait=ack_wait,
        max_deliver=-1,
        max_ack_pending=20_000,
        max_waiting=512,
        filter_subjects=filters if len(filters) > 1 else None,
        filter_subject=filters[0] if len(filters) == 1 and partitions > 1 else None,
    )


async def restart_consumer(js: JetStreamContext, name: str) -> int:
    """Recreate a decide consumer at its ack floor, so messages a dead owner held come back
    now and in stream order (instead of after ack_wait, behind newer ones). Returns the
    sequence it restarts at."""
    info = await js.consumer_info(EVENTS_STREAM, name)
    start = _ack_floor(info) + 1
    config = info.config
    await js.delete_consumer(EVENTS_STREAM, name)
    config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
    config.opt_start_seq = start
    await js.add_consumer(EVENTS_STREAM, config)
    return start


def _ack_floor(info: ConsumerInfo) -> int:
    """The last stream sequence below which the consumer has every message acknowledged."""
    floor = info.ack_floor
    return int(floor.stream_seq) if floor is not None else 0


async def _decide_consumers(js: JetStreamContext) -> dict[str, ConsumerInfo]:
    """The decide consumers of any partition layout, by name."""
    found: dict[str, ConsumerInfo] = {}
    for info in await js.consumers_info(EVENTS_STREAM):
        name = info.name
        suffix = name[len(DECIDE_CONSUMER) + 1 :]
        if name == DECIDE_CONSUMER or (name.startswith(f"{DECIDE_CONSUMER}-") and suffix.isdigit()):
            found[name] = info
    return found
