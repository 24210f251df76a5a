"""The ledger of a node's deliver processes, written by the node itself: one SQLite writer.

``engine.deliver_processes`` moves rendering and SMTP to child processes, so decide and deliver
run on two cores. On a SQLite store the children used to claim and commit in the same file as
the parent, and measured slower than one process: SQLite has one writer, so a child waited
about half its time for the write lock (held by decide through each batch), and every commit
by the other process emptied its page cache (docs/nodes.md).

So a child on a SQLite store does not write the hot path itself. Its two hot writes, the
claim of intents and the group commit of dot markers and outcomes, are requests to its parent
over NATS (``ledger.<parent node>.claim|commit|ping``), which runs exactly the statements the
child would have run, fenced by the child's own claim owner, on the parent's connection,
between its decide batches. A claim's answer is the ids claimed: the child then reads those
rows, their contacts and suppressions itself, in a read transaction, which in WAL mode never
waits for the writer. The parent keeps one writer and one warm page cache and does no more
than the writes; the child keeps the CPU-heavy part (reading and decoding the rows,
composing, signing, SMTP). Before, the parent also read every claimed row and turned it into
JSON for the answer (a tenth of the busiest process's time at load). The promises hold
unchanged: a dot marker is committed before the reply that lets the child write the final
dot, and an unanswered request is a store error, which hands the intent back before its dot
or leaves it to recovery after.

The rest of the child's store work (recovery, queue depth, pauses, catalog data) is rare and
reads or writes the file directly as before.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, Protocol, TypeVar

import nats.errors
import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from engine.deliver.committer import short_error
from engine.deliver.ledger import Ledger
from engine.deliver.model import ClaimBatch, Outcome
from engine.errors import StoreError
from engine.store import Store

log = logging.getLogger(__name__)

T = TypeVar("T")

REQUEST_TIMEOUT_S = 10.0  # as long as SQLite's own busy timeout: then "the store does not answer"
_OWNERS_KEPT = 64  # ledgers kept per claim owner (a restarted child is a new owner)


def ledger_subject(node: str, verb: str) -> str:
    """The subject of a ``verb`` request (claim, commit, ping) to ``node``'s ledger."""
    return f"ledger.{node}.{verb}"


# -- the wire format: orjson ------------------------------------------------------------


def encode_outcomes(outcomes: Sequence[Outcome]) -> list[Outcome]:
    return list(outcomes)  # orjson writes a dataclass as an object of its fields


def decode_outcomes(data: list[dict[str, Any]]) -> list[Outcome]:
    return [Outcome(**o) for o in data]


# -- the parent's side ----------------------------------------------------------------------


class LedgerHost:
    """Serves the ledger requests of this node's deliver processes on its own store."""

    def __init__(self, nc: NatsClient, store: Store, *, node: str) -> None:
        self._nc = nc
        self._store = store
        self._node = node
        self._ledgers: dict[str, Ledger] = {}
        self._sub: Subscription | None = None
        self.requests = 0  # answered, for figures and tests

    async def start(self) -> None:
        from engine.bus import settle

        self._sub = await self._nc.subscribe(ledger_subject(self._node, "*"), cb=self._handle)
        await settle(self._nc)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    def _ledger(self, owner: str) -> Ledger:
        ledger = self._ledgers.get(owner)
        if ledger is None:
            if len(self._ledgers) >= _OWNERS_KEPT:
                self._ledgers.pop(next(iter(self._ledgers)))
            ledger = self._ledgers[owner] = Ledger(self._store, node=self._node, owner=owner)
        return ledger

    async def _handle(self, msg: Msg) -> None:
        verb = msg.subject.rsplit(".", 1)[-1]
        try:
            answer = b'{"ok":' + self.answer(verb, orjson.loads(msg.data)) + b"}"
        except Exception as exc:  # the child turns it into a StoreError, in words
            log.error("deliver: ledger %s request failed: %s", verb, short_error(exc))
            answer = orjson.dumps({"error": f"{verb}: {short_error(exc)}"})
        self.requests += 1
        try:
            await msg.respond(answer)
        except nats.errors.Error as exc:  # the child is gone; its lease runs out
            log.debug("deliver: cannot answer a ledger request: %s", exc)

    def answer(self, verb: str, request: dict[str, Any]) -> bytes:
        """Run one request on the store (the writes the child would have run itself); the
        answer's JSON."""
        owner = request.get("owner")
        if not isinstance(owner, str) or not owner:
            raise ValueError("the request names no claim owner")
        ledger = self._ledger(owner)
        if verb == "claim":
            taken = ledger.take(
                now=float(request["now"]),
                lease_until=float(request["lease_until"]),
                limit=int(request["limit"]),
                ids=request.get("ids"),
            )
            return orjson.dumps(taken)
        if verb == "commit":
            marked = ledger.commit(
                now=float(request["now"]),
                dots=request["dots"],
                lease_until=float(request["lease_until"]),
                outcomes=decode_outcomes(request["outcomes"]),
                renew=request["renew"],
            )
            return orjson.dumps(sorted(marked))
        if verb == "ping":
            ledger.ping()
            return b"true"
        raise ValueError(f"unknown ledger request {verb!r} (claim, commit or ping)")


# -- what the deliver service calls: here, or through the parent ------------------------------


class HotLedger(Protocol):
    """The deliver stage's hot ledger operations, awaited (``Ledger``'s, for one owner)."""

    async def claim(
        self,
        *,
        owner: str,
        now: float,
        lease_until: float,
        limit: int,
        ids: Sequence[str] | None = None,
    ) -> ClaimBatch: ...

    async def commit(
        self,
        *,
        owner: str,
        now: float,
        dots: Sequence[str],
        lease_until: float,
        outcomes: Sequence[Outcome],
        renew: Sequence[str] = (),
    ) -> set[str]: ...

    async def ping(self, *, owner: str) -> None: ...


class RunBlocking(Protocol):
    """Runs blocking store work and awaits its result (``DeliveryService._run_blocking``)."""

    def __call__(self, work: Callable[[], T], /) -> Awaitable[T]: ...


class LocalLedger:
    """``Ledger`` on this process's store (``run_blocking``: inline on SQLite, else a thread)."""

    def __init__(self, ledger: Ledger, run_blocking: RunBlocking) -> None:
        self._ledger = ledger
        self._run_blocking = run_blocking

    def _fenced(self, owner: str) -> Ledger:
        if owner != self._ledger.owner:  # a bug, not bad input: the service has one owner
            raise ValueError(f"claim owner {owner!r} is not this ledger's {self._ledger.owner!r}")
        return self._ledger

    async def claim(self, *, owner: str, **request: Any) -> ClaimBatch:
        return await self._run_blocking(partial(self._fenced(owner).claim, **request))

    async def commit(self, *, owner: str, **changes: Any) -> set[str]:
        return await self._run_blocking(partial(self._fenced(owner).commit, **changes))

    async def ping(self, *, owner: str) -> None:
        await self._run_blocking(self._fenced(owner).ping)


# -- the child's side -----------------------------------------------------------------------


class RemoteLedger:
    """A deliver process's claim and commit, run by its parent node (see the module doc)."""

    def __init__(
        self, nc: NatsClient, store: Store, *, host: str, timeout: float = REQUEST_TIMEOUT_S
    ) -> None:
        self._nc = nc
        self._store = store  # the same SQLite file, read here: the claimed rows
        self.host = host
        self._timeout = timeout
        self._reader: Ledger | None = None

    def _reading(self, owner: str) -> Ledger:
        if self._reader is None or self._reader.owner != owner:
            self._reader = Ledger(self._store, node=self.host, owner=owner)
        return self._reader

    async def _request(self, verb: str, body: dict[str, Any]) -> Any:
        try:
            msg = await self._nc.request(
                ledger_subject(self.host, verb), orjson.dumps(body), timeout=self._timeout
            )
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            raise StoreError(
                f"node {self.host!r} did not answer a ledger {verb} request"
                f" within {self._timeout:g} s ({type(exc).__name__})"
            ) from None
        except nats.errors.Error as exc:
            raise StoreError(f"ledger {verb} request to node {self.host!r}: {exc}") from None
        answer = orjson.loads(msg.data)
        if "error" in answer:
            raise StoreError(f"node {self.host!r}: {answer['error']}")
        return answer["ok"]

    async def claim(
        self,
        *,
        owner: str,
        now: float,
        lease_until: float,
        limit: int,
        ids: Sequence[str] | None = None,
    ) -> ClaimBatch:
        body = {
            "owner": owner,
            "now": now,
            "lease_until": lease_until,
            "limit": limit,
            "ids": None if ids is None else list(ids),
        }
        taken = await self._request("claim", body)
        return self._reading(owner).load(taken) if taken else ClaimBatch([])

    async def commit(
        self,
        *,
        owner: str,
        now: float,
        dots: Sequence[str],
        lease_until: float,
        outcomes: Sequence[Outcome],
        renew: Sequence[str] = (),
    ) -> set[str]:
        body = {
            "owner": owner,
            "now": now,
            "dots": list(dots),
            "lease_until": lease_until,
            "outcomes": encode_outcomes(outcomes),
            "renew": list(renew),
        }
        return set(await self._request("commit", body))

    async def ping(self, *, owner: str) -> None:
        await self._request("ping", {"owner": owner})
