"""Which decide node processes which partition of the EVENTS stream: leases in a KV bucket.

The EVENTS stream is split by contact into ``partitions`` (engine/bus.py), each read through its
own durable consumer. Every decide node runs :class:`DecidePartitions`, which

- keeps ``member.<node>`` alive in the JetStream KV bucket ``decide_leases`` (created with a
  TTL: a key not renewed within ``ttl`` seconds disappears, so a dead node drops out by itself);
- every ``interval`` seconds lists the live members and picks its fair share by rendezvous
  hashing with bounded loads (:func:`assignment`): every node computes the same answer, each
  gets its fair share, and a node joining or leaving moves little besides its own share;
- holds ``partition.<p>`` for each partition it processes: taken with ``create`` (fails while
  another node holds it), renewed with a revision-checked ``update`` (fails if the lease lapsed
  and someone else took it), released with a revision-checked ``delete``;
- runs one :class:`~engine.decide.worker.DecideWorker` per partition it holds.

Handing a partition over: the old owner stops fetching and finishes the batch in hand (commit,
ack) before it releases the lease; the new owner takes the lease only once it is free. A
partition whose last owner died with messages unacknowledged has its consumer restarted at the
ack floor by the new owner, so those messages come back at once and in stream order (decide
drops the ones already committed by messageId). A node that cannot renew its leases for
``ttl - 2 * interval`` seconds stops its workers on its own, before the leases lapse.

A single node owns every partition (the local stack has one partition: the consumer ``decide``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import nats.errors
import orjson
from nats.aio.client import Client as NatsClient
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import Error as JetStreamError
from nats.js.errors import KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from engine import bus
from engine.telemetry import Telemetry

if TYPE_CHECKING:
    from engine.decide.worker import DecideWorker

log = logging.getLogger(__name__)

LEASE_BUCKET = "decide_leases"
MEMBER_PREFIX = "member."
LEASE_PREFIX = "partition."
_TROUBLE = (nats.errors.Error, JetStreamError, TimeoutError, OSError)


def assignment(members: list[str], partitions: int) -> dict[int, str]:
    """Who processes each partition: rendezvous hashing with bounded loads. Each partition
    goes to the member with the highest hash of ``member/partition`` that has fewer than its
    fair share (``ceil(partitions / members)``) so far. Every node computes the same answer from
    the same members, and a member joining or leaving moves few partitions besides its own."""
    members = sorted(set(members))
    cap = -(-partitions // len(members))
    load = dict.fromkeys(members, 0)
    owners: dict[int, str] = {}
    for partition in range(partitions):

        def score(member: str, p: int = partition) -> bytes:
            return hashlib.blake2b(f"{member}/{p}".encode(), digest_size=8).digest()

        for member in sorted(members, key=score, reverse=True):
            if load[member] < cap:
                owners[partition] = member
                load[member] += 1
                break
    return owners


def share_of(node: str, members: list[str], partitions: int) -> set[int]:
    """The partitions ``node`` should process among the live ``members``."""
    if node not in members:
        members = [*members, node]
    return {p for p, owner in assignment(members, partitions).items() if owner == node}


def member_key(node: str) -> str:
    """A KV key for a node name (keys allow letters, digits and ``-_=./``)."""
    safe = all((ch.isalnum() and ch.isascii()) or ch in "-_" for ch in node)
    return MEMBER_PREFIX + (node if safe and node else "=" + node.encode().hex())


@dataclass
class _Held:
    worker: DecideWorker
    revision: int
    renewed_at: float


class DecidePartitions:
    """This node's share of the decide partitions, each run by its own ``DecideWorker``.

    ``make_worker(consumer, executor)`` builds a worker for one partition's consumer; all of
    them share one database thread (``executor``), so batches of different partitions are
    decided one after another as before, never concurrently.
    """

    def __init__(
        self,
        *,
        nc: NatsClient,
        node: str,
        partitions: int,
        make_worker: Callable[[str, ThreadPoolExecutor], DecideWorker],
        telemetry: Telemetry,
        replicas: int = 1,
        ttl: float = 5.0,
        interval: float = 1.0,
        lag_interval: float = 2.0,
    ) -> None:
        if ttl < 3 * interval:
            raise ValueError(f"lease ttl {ttl:g} s must be at least 3 renewals ({interval:g} s)")
        self.nc = nc
        self.js = nc.jetstream(timeout=min(1.0, interval))
        self.node = node
        self.partitions = partitions
        self.make_worker = make_worker
        self.telemetry = telemetry
        self.replicas = replicas
        self.ttl = ttl
        self.interval = interval
        self.lag_interval = lag_interval
        self.held: dict[int, _Held] = {}
        self.members: list[str] = []
        self._kv: KeyValue | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._lag_task: asyncio.Task[None] | None = None
        self._member_key = member_key(node)
        self._lapsing: set[asyncio.Task[None]] = set()

    def owned(self) -> list[int]:
        """The partitions this node processes now, in order."""
        return sorted(self.held)

    async def start(self, *, wait: float = 0.0) -> None:
        """Join (create the bucket if needed), take this node's share, and keep it up to date.
        ``wait``: how long to keep trying for the first share (a restarted node's old leases
        may still run out)."""
        self._kv = await bus.when_jetstream_answers(
            self._bucket, within=bus.JETSTREAM_WAIT_S, what="joining the decide leases"
        )
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"decide-{self.node}")
        deadline = time.monotonic() + wait
        await self._tick()
        while wait and time.monotonic() < deadline and len(self.held) < len(self._wanted()):
            await asyncio.sleep(min(self.interval, 0.2))
            await self._tick()
        self._task = asyncio.create_task(self._run(), name=f"decide-partitions-{self.node}")
        if self.lag_interval > 0:
            self._lag_task = asyncio.create_task(self._sample_lag(), name="decide-lag")

    async def stop(self) -> None:
        """Finish every batch in hand, release the leases and leave (others take over now,
        not after the TTL)."""
        for task in (self._task, self._lag_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._lag_task = None
        await asyncio.gather(*(self._release(p) for p in list(self.held)), *self._lapsing)
        if self._kv is not None:
            with contextlib.suppress(*_TROUBLE):
                stream = f"KV_{LEASE_BUCKET}"
                await self.js.purge_stream(stream, subject=f"$KV.{LEASE_BUCKET}.{self._member_key}")
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self._publish()

    async def _bucket(self) -> KeyValue:
        config = KeyValueConfig(
            bucket=LEASE_BUCKET,
            ttl=self.ttl,
            history=1,
            # On disk: leases outlive a NATS restart, so no one takes a partition its holder
            # still processes.
            storage=StorageType.FILE,
            replicas=self.replicas,
        )
        js = self.nc.jetstream()  # creating a replicated bucket may take longer than a renewal
        try:
            return await js.create_key_value(config)
        except JetStreamError as exc:  # exists with another configuration: use it as it is
            log.debug("lease bucket: %s", exc)
            return await js.key_value(LEASE_BUCKET)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self._tick()
            except Exception:  # keep the leases going whatever one round ran into
                log.exception("decide partitions: a round failed")

    async def _tick(self) -> None:
        assert self._kv is not None
        kv = self._kv
        try:
            await kv.put(self._member_key, orjson.dumps({"node": self.node}))
        except _TROUBLE as exc:
            log.debug("decide partitions: renewing membership failed: %s", exc)
            with contextlib.suppress(*_TROUBLE):  # the bucket was deleted: make it again
                self._kv = await self._bucket()
        await asyncio.gather(*(self._renew(p) for p in list(self.held)))
        self._lapse()
        members = await self._live_members()
        if members is not None:
            self.members = members
        wanted = self._wanted()
        extra = [p for p in self.held if p not in wanted]
        await asyncio.gather(*(self._release(p) for p in extra))
        for p in sorted(wanted - self.held.keys()):
            await self._acquire(p)
        self._publish()

    def _wanted(self) -> set[int]:
        return share_of(self.node, self.members or [self.node], self.partitions)

    async def _live_members(self) -> list[str] | None:
        """The nodes whose member key is alive (None: NATS did not answer)."""
        stream = f"KV_{LEASE_BUCKET}"
        prefix = f"$KV.{LEASE_BUCKET}.{MEMBER_PREFIX}"
        try:
            info = await self.js.stream_info(stream, subjects_filter=f"{prefix}>")
        except _TROUBLE as exc:
            log.debug("decide partitions: listing members failed: %s", exc)
            return None
        subjects = info.state.subjects or {}
        keys = sorted(s[len(prefix) :] for s in subjects)
        return [self._node_of(key) for key in keys]

    @staticmethod
    def _node_of(key: str) -> str:
        if key.startswith("="):
            with contextlib.suppress(ValueError):
                return bytes.fromhex(key[1:]).decode()
        return key

    async def _renew(self, partition: int) -> None:
        assert self._kv is not None
        held = self.held[partition]
        try:
            held.revision = await self._kv.update(
                f"{LEASE_PREFIX}{partition}", self.node.encode(), last=held.revision
            )
            held.renewed_at = time.monotonic()
        except KeyWrongLastSequenceError:
            log.warning("decide partitions: lost the lease on partition %d", partition)
            await self._drop(partition)
        except _TROUBLE as exc:
            log.warning("decide partitions: renewing partition %d failed: %s", partition, exc)

    def _lapse(self) -> None:
        """Stop processing partitions whose lease may run out before we can renew it."""
        limit = self.ttl - 2 * self.interval
        now = time.monotonic()
        for partition, held in list(self.held.items()):
            if now - held.renewed_at > limit:
                log.warning(
                    "decide partitions: no renewal of partition %d for %.1f s; stopping it",
                    partition,
                    now - held.renewed_at,
                )
                del self.held[partition]
                task = asyncio.create_task(held.worker.stop(), name=f"lapse-{partition}")
                self._lapsing.add(task)
                task.add_done_callback(self._lapsing.discard)

    async def _acquire(self, partition: int) -> None:
        assert self._kv is not None and self._executor is not None
        key = f"{LEASE_PREFIX}{partition}"
        revision: int | None
        try:
            revision = await self._kv.create(key, self.node.encode())
        except KeyWrongLastSequenceError:
            revision = await self._reclaim(key)
        except _TROUBLE as exc:
            log.debug("decide partitions: taking partition %d failed: %s", partition, exc)
            return
        if revision is None:
            return  # another node still holds it: it releases, or its lease runs out
        consumer = bus.decide_consumer(partition, self.partitions)
        try:
            info = await self.js.consumer_info(bus.EVENTS_STREAM, consumer)
            if info.num_ack_pending:
                # The last owner died holding these: have them back now and in order.
                start = await bus.restart_consumer(self.nc.jetstream(), consumer)
                log.info("decide partitions: %s restarts at %d", consumer, start)
            worker = self.make_worker(consumer, self._executor)
            await worker.start()
        except Exception as exc:
            log.warning("decide partitions: cannot start %s: %s", consumer, exc)
            with contextlib.suppress(*_TROUBLE):
                await self._kv.delete(key, last=revision)
            return
        self.held[partition] = _Held(worker, revision, time.monotonic())
        log.info("decide partitions: %s processes partition %d", self.node, partition)

    async def _reclaim(self, key: str) -> int | None:
        """A lease this node held in an earlier life (same name, restarted): take it back."""
        assert self._kv is not None
        try:
            entry = await self._kv.get(key)
            if entry.value != self.node.encode() or entry.revision is None:
                return None
            return await self._kv.update(key, self.node.encode(), last=entry.revision)
        except (KeyWrongLastSequenceError, NotFoundError):
            return None
        except _TROUBLE:
            return None

    async def _release(self, partition: int) -> None:
        """Finish the batch in hand, then free the lease for the next owner."""
        held = self.held.pop(partition, None)
        if held is None:
            return
        await held.worker.stop()
        if self._kv is not None:
            with contextlib.suppress(*_TROUBLE):
                await self._kv.delete(f"{LEASE_PREFIX}{partition}", last=held.revision)
        log.info("decide partitions: %s released partition %d", self.node, partition)

    async def _drop(self, partition: int) -> None:
        held = self.held.pop(partition, None)
        if held is not None:
            await held.worker.stop()

    def _publish(self) -> None:
        self.telemetry.partitions = self.owned()
        self.telemetry.gauge("partitions_owned", float(len(self.held)))
        self.telemetry.gauge("partitions_total", float(self.partitions))

    async def _sample_lag(self) -> None:
        """``consumer_lag``: events waiting in the partitions this node processes."""
        while True:
            await asyncio.sleep(self.lag_interval)
            total = 0
            for partition in list(self.held):
                consumer = bus.decide_consumer(partition, self.partitions)
                try:
                    info = await self.js.consumer_info(bus.EVENTS_STREAM, consumer)
                except _TROUBLE as exc:
                    log.debug("decide: consumer info failed: %s", exc)
                    continue
                total += info.num_pending or 0
            self.telemetry.gauge("consumer_lag", float(total))
