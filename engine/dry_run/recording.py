"""The recorded events: the EVENTS stream read back from a start time, without acking.

Why the stream and not the ``activity`` table: the stream keeps each event whole (traits,
context, timezone, consent changes, ``receivedAt``) for ``nats.max_age_days``, which is what the
decide stage saw; ``activity`` keeps only names and properties. The reader is an ephemeral
consumer with no acks in memory, deleted when done (and by the server after a minute idle if
the reader dies), so the engines' durable ``decide`` consumer and the stream are left as they
were. It stops at the stream's last message as of the start, so a busy stream still ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import Error as JetStreamError
from nats.js.errors import NotFoundError

from engine.bus import EVENTS_STREAM
from engine.decide.batch import Delivery
from engine.decide.worker import delivery_of
from engine.errors import BusError, DryRunError

IDLE_S = 60.0  # the server deletes the reader's consumer after this long unused
FETCH_TIMEOUT_S = 2.0
NATS_ERRORS = (nats.errors.Error, JetStreamError)


@dataclass
class Recording:
    """An open reader over the stream from ``start`` (epoch seconds, the stream's clock)."""

    js: JetStreamContext
    start: float
    consumer: str
    total: int  # messages from ``start`` to ``last_seq`` (what the progress counts up to)
    last_seq: int
    first_at: float | None  # when the stream's oldest message was stored (None: empty)
    _sub: JetStreamContext.PullSubscription | None = None

    @classmethod
    async def open(cls, js: JetStreamContext, start: float, *, max_events: int) -> Recording:
        """Start reading at ``start``; ``DryRunError`` when more than ``max_events`` messages
        were recorded since then (nothing is read in that case)."""
        try:
            info = await js.stream_info(EVENTS_STREAM)
        except NotFoundError as exc:
            raise DryRunError(f"there is no {EVENTS_STREAM} stream: nothing was recorded") from exc
        except NATS_ERRORS as exc:
            raise BusError(f"cannot read the {EVENTS_STREAM} stream: {exc}") from exc
        last_seq = int(info.state.last_seq or 0)
        first_at = None
        if info.state.messages:
            with contextlib.suppress(*NATS_ERRORS):
                first = await js.get_msg(EVENTS_STREAM, seq=int(info.state.first_seq))
                first_at = first.time.timestamp() if first.time is not None else None
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_TIME,
            opt_start_time=datetime.fromtimestamp(start, UTC),
            ack_policy=AckPolicy.NONE,
            inactive_threshold=IDLE_S,
            mem_storage=True,
            num_replicas=1,
            max_waiting=1,
        )
        try:
            consumer = await js.add_consumer(EVENTS_STREAM, config)
        except NATS_ERRORS as exc:
            raise BusError(f"cannot read back the {EVENTS_STREAM} stream: {exc}") from exc
        recording = cls(js, start, consumer.name, 0, last_seq, first_at)
        pending = int(consumer.num_pending or 0)
        if pending > max_events:
            await recording.close()
            raise DryRunError(
                f"{pending:,} events were recorded in this window, more than the {max_events:,} "
                "a dry run may scan: choose a shorter window (or raise max_events)"
            )
        recording.total = pending
        if pending:
            recording._sub = await js.pull_subscribe_bind(
                consumer=consumer.name, stream=EVENTS_STREAM
            )
        return recording

    async def chunks(self, size: int = 500) -> AsyncIterator[list[Delivery]]:
        """The recorded messages in stream order, ``size`` at a time, up to ``last_seq``."""
        if self._sub is None:
            return
        read = 0
        while read < self.total:
            try:
                msgs = await self._sub.fetch(min(size, self.total - read), timeout=FETCH_TIMEOUT_S)
            except nats.errors.TimeoutError:
                return  # nothing more (messages aged out of the stream meanwhile)
            except NATS_ERRORS as exc:
                raise BusError(f"reading the {EVENTS_STREAM} stream failed: {exc}") from exc
            batch = [delivery_of(m) for m in msgs]
            kept = [d for d in batch if d.stream_seq <= self.last_seq]
            read += len(batch)
            if kept:
                yield kept
            if len(kept) < len(batch):
                return

    async def close(self) -> None:
        """Stop reading and delete the consumer (idempotent)."""
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(*NATS_ERRORS):
                await sub.unsubscribe()
        with contextlib.suppress(*NATS_ERRORS):
            await self.js.delete_consumer(EVENTS_STREAM, self.consumer)
