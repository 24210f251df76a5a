"""The deliver stage's statements against the ``intents`` ledger (blocking; run on a DB thread).

Every state change is fenced by ``claimed_by``: a node only moves rows it still owns, so a node
that stalled past its lease (and was recovered by another) cannot mark or finish a row that is
now someone else's. ``claimed_by`` is ``"<node>/<incarnation>"``: a restarted node recovers its
previous incarnation's rows at once instead of waiting for their leases, and the fence still
keeps a lingering old process away from them.

Claims: on PostgreSQL ``SELECT ... FOR UPDATE SKIP LOCKED`` in a CTE, then UPDATE ... RETURNING,
so deliver workers on several nodes never wait on or take each other's rows; on SQLite the same
statement without the lock clause is atomic because SQLite serializes writers. Every claim
carries the queue controls' filter (``engine.deliver.queues.OPEN_SQL``) in that same statement,
so a pause committed before a claim starts is always seen by it, on every node.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection, bindparam, func

from engine.clv import value_fields
from engine.decide import lite
from engine.deliver.model import (
    CLAIMED,
    DEFERRED,
    QUEUED,
    SENDING,
    UNCERTAIN,
    ClaimBatch,
    ClaimedIntent,
    ContactRow,
    Outcome,
)
from engine.deliver.queues import OPEN_SQL, open_to_claim
from engine.store import Store, schema

intents = schema.intents
_C = intents.c
_CLAIM_COLUMNS = (
    _C.id,
    _C.workflow_id,
    _C.step_id,
    _C.contact_id,
    _C.event_id,
    _C.template_id,
    _C.route,
    _C.category,
    _C.to_addr,
    _C.context,
    _C.attempts,
    _C.expires_at,
    _C.received_at,
)
_LITE_CLAIM_COLUMNS = ", ".join(c.name for c in _CLAIM_COLUMNS)
_CHUNK = 500  # ids per IN (...) list
UNCERTAIN_REPLY = (
    "uncertain: the engine stopped after committing to send the final dot and before "
    "recording the relay's reply; not retried automatically"
)

# One executemany statement for every kind of outcome: all columns are written, so a row ends
# exactly as the Outcome says. COALESCE keeps the render data of an earlier attempt.
_OUTCOME_UPDATE = (
    sa.update(intents)
    .where(
        _C.id == bindparam("o_id"),
        _C.claimed_by == bindparam("o_owner"),
        # Not IN (...): SQLAlchemy cannot expand a list inside an executemany.
        sa.or_(_C.status == CLAIMED, _C.status == SENDING, _C.status == UNCERTAIN),
    )
    .values(
        status=bindparam("o_status"),
        attempts=bindparam("o_attempts"),
        reply=func.coalesce(bindparam("o_reply", type_=sa.Text), _C.reply),
        next_attempt_at=func.coalesce(bindparam("o_next", type_=sa.Float), _C.next_attempt_at),
        rendered_at=func.coalesce(bindparam("o_rendered", type_=sa.Float), _C.rendered_at),
        message_id=func.coalesce(bindparam("o_message_id", type_=sa.String), _C.message_id),
        dot_at=bindparam("o_dot_at", type_=sa.Float),
        accepted_at=bindparam("o_accepted_at", type_=sa.Float),
        finished_at=bindparam("o_finished_at", type_=sa.Float),
        claimed_by=bindparam("o_claimed_by", type_=sa.String),
        lease_until=None,
    )
)

# The same update on SQLite's DBAPI cursor (see Ledger.commit): positional, in this order.
_LITE_OUTCOME_UPDATE = (
    "UPDATE intents SET status = ?, attempts = ?, reply = coalesce(?, reply), "
    "next_attempt_at = coalesce(?, next_attempt_at), rendered_at = coalesce(?, rendered_at), "
    "message_id = coalesce(?, message_id), dot_at = ?, accepted_at = ?, finished_at = ?, "
    "claimed_by = ?, lease_until = NULL "
    f"WHERE id = ? AND claimed_by = ? AND status IN ('{CLAIMED}', '{SENDING}', '{UNCERTAIN}')"
)


@dataclass(slots=True)
class Recovery:
    """What a recovery pass changed."""

    requeued: int = 0
    uncertain: list[tuple[str, str]] = field(default_factory=list)  # (intent id, workflow id)


def _chunks(items: Sequence[str]) -> list[Sequence[str]]:
    return [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]


def _claim_statement(
    where: tuple[sa.ColumnElement[bool] | sa.TextClause, ...], *, pg: bool, pick: bool
) -> sa.Update:
    """UPDATE ... SET claimed ... RETURNING, for the rows ``where`` selects.

    ``pick``: choose at most ``b_limit`` rows, oldest first. On PostgreSQL the pick runs in a
    CTE with ``FOR UPDATE SKIP LOCKED``, so concurrent claimers skip each other's rows instead
    of waiting; SQLite needs no lock clause (one writer at a time).
    """
    target: sa.ColumnElement[bool]
    if pick:
        chosen = (
            sa.select(_C.id)
            .where(*where)
            .order_by(_C.next_attempt_at)
            .limit(bindparam("b_limit", type_=sa.Integer))
        )
        if pg:
            picked = chosen.with_for_update(skip_locked=True).cte("picked")
            target = _C.id.in_(sa.select(picked.c.id))
        else:
            target = _C.id.in_(chosen)
    else:
        target = sa.true()
    if pick and not pg:
        # SQLite: the rows are the ones picked (one writer: nothing changes in between). With
        # the conditions repeated here, the planner scanned the status index over every due
        # row for each claim (the whole backlog) instead of looking up the picked ids.
        where = ()
    return (
        sa.update(intents)
        .where(target, *where)
        .values(
            status=CLAIMED,
            claimed_by=bindparam("b_owner"),
            lease_until=bindparam("b_lease", type_=sa.Float),
        )
        .returning(*_CLAIM_COLUMNS)
    )


def _lite_claimed(v: tuple[Any, ...]) -> ClaimedIntent:
    """A row of ``_LITE_CLAIM_COLUMNS`` from the raw cursor (the context still JSON text)."""
    return _claimed((*v[:9], lite.loads(v[9]), *v[10:]))


def _claimed(row: Iterable[Any]) -> ClaimedIntent:
    # Positional: _CLAIM_COLUMNS is in ClaimedIntent's field order (attribute access by name
    # on a Row costs more than the rest of the conversion).
    v = tuple(row)
    return ClaimedIntent(
        v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8],
        v[9] if isinstance(v[9], dict) else {},
        v[10] or 0,
        v[11], v[12],
    )  # fmt: skip


class Ledger:
    """Claims, marks and finishes intents for one deliver service instance (``owner``).

    The hot statements are built once, with expanding bind parameters for the id lists, so
    each call is a cache hit in SQLAlchemy's compiled cache (building a statement costs more
    than running it on SQLite).
    """

    def __init__(self, store: Store, *, node: str, owner: str) -> None:
        self.store = store
        self.node = node
        self.owner = owner
        pg = store.dialect == "postgresql"
        self._lite = store.is_sqlite
        ids: sa.BindParameter[list[str]] = bindparam("b_ids", expanding=True)
        now = bindparam("b_now", type_=sa.Float)
        self._claim_ids = _claim_statement(
            (_C.id.in_(ids), _C.status == QUEUED, _C.next_attempt_at <= now, open_to_claim()),
            pg=pg,
            pick=pg,
        )
        self._claim_due = _claim_statement(
            (_C.status == bindparam("b_status"), _C.next_attempt_at <= now, open_to_claim()),
            pg=pg,
            pick=True,
        )
        self._mark_dots = (
            sa.update(intents)
            .where(_C.id.in_(ids), _C.status == CLAIMED, _C.claimed_by == bindparam("b_owner"))
            .values(status=SENDING, dot_at=now, lease_until=bindparam("b_lease", type_=sa.Float))
            .returning(_C.id)
        )
        self._renew = (
            sa.update(intents)
            .where(
                _C.id.in_(ids),
                _C.claimed_by == bindparam("b_owner"),
                _C.status.in_((CLAIMED, SENDING)),
            )
            .values(lease_until=bindparam("b_lease", type_=sa.Float))
        )
        contacts = schema.contacts
        self._contacts = sa.select(
            contacts.c.id,
            contacts.c.email,
            contacts.c.traits,
            contacts.c.consent,
            contacts.c.unsubscribed_at,
            contacts.c.lifetime_value,
            contacts.c.orders,
            contacts.c.first_order_at,
            contacts.c.last_order_at,
        ).where(contacts.c.id.in_(ids))
        suppressions = schema.suppressions
        self._suppressions = sa.select(suppressions.c.address, suppressions.c.scope).where(
            suppressions.c.address.in_(ids)
        )

    # -- claiming ---------------------------------------------------------------------------

    def claim(
        self, *, now: float, lease_until: float, limit: int, ids: Sequence[str] | None = None
    ) -> ClaimBatch:
        """Claim up to ``limit`` due intents (only ``ids`` when given: notified, still queued)
        and load their contacts and suppressions, all in one transaction."""
        claimed: list[ClaimedIntent] = []
        params: dict[str, Any] = {"b_now": now, "b_owner": self.owner, "b_lease": lease_until}
        with self.store.begin() as conn:
            if self._lite:
                # SQLite: the DBAPI cursor (see _take_lite).
                found = self._take_lite(conn, limit, ids, now=now, lease_until=lease_until)
                claimed = [_lite_claimed(v) for v in found]
                batch = ClaimBatch(claimed)
                if claimed:
                    self._load_recipients_lite(conn, batch)
                return batch
            if ids is not None:
                for chunk in _chunks(ids):
                    rows = conn.execute(
                        self._claim_ids, {**params, "b_ids": list(chunk), "b_limit": len(chunk)}
                    )
                    claimed += [_claimed(row) for row in rows]
            else:
                for status in (QUEUED, DEFERRED):
                    if len(claimed) >= limit:
                        break
                    rows = conn.execute(
                        self._claim_due,
                        {**params, "b_status": status, "b_limit": limit - len(claimed)},
                    )
                    claimed += [_claimed(row) for row in rows]
            batch = ClaimBatch(claimed)
            if claimed:
                self._load_recipients(conn, batch)
        return batch

    def take(
        self, *, now: float, lease_until: float, limit: int, ids: Sequence[str] | None = None
    ) -> list[str]:
        """``claim`` on SQLite without reading the rows: the ids claimed. The parent of a
        deliver process runs this for it, and the process reads the rows itself (``load``):
        a reader does not wait for SQLite's writer, and the node's busiest process no longer
        turns every claimed row into JSON for a NATS message."""
        with self.store.begin() as conn:
            found = self._take_lite(
                conn, limit, ids, now=now, lease_until=lease_until, columns="id"
            )
        return [row[0] for row in found]

    def load(self, ids: Sequence[str]) -> ClaimBatch:
        """The intents ``ids`` this owner holds claimed, in that order, with their contacts and
        suppressions (one read transaction; SQLite). One no longer held (its lease ran out and
        recovery took it) is left out."""
        order = {intent_id: n for n, intent_id in enumerate(ids)}
        claimed: list[ClaimedIntent] = []
        with self.store.begin() as conn:
            for chunk in _chunks(ids):
                places, padded = lite.in_list(chunk)
                statement = (
                    f"SELECT {_LITE_CLAIM_COLUMNS} FROM intents "
                    f"WHERE id IN ({places}) AND status = ? AND claimed_by = ?"
                )
                found = lite.run(conn, statement, [*padded, CLAIMED, self.owner])
                claimed += [_lite_claimed(v) for v in found]
            claimed.sort(key=lambda i: order[i.id])
            batch = ClaimBatch(claimed)
            if claimed:
                self._load_recipients_lite(conn, batch)
        return batch

    def _take_lite(
        self,
        conn: Connection,
        limit: int,
        ids: Sequence[str] | None,
        *,
        now: float,
        lease_until: float,
        columns: str = _LITE_CLAIM_COLUMNS,
    ) -> list[tuple[Any, ...]]:
        """Claim on SQLite's cursor, returning ``columns``: the notified ``ids`` still queued,
        or without ids a poll of the oldest due (the deliver process's usual claim under a
        backlog: Core's execute and row processing were half its cost)."""
        if ids is not None:
            return self._claim_lite(conn, ids, now=now, lease_until=lease_until, columns=columns)
        return self._poll_lite(conn, limit, now=now, lease_until=lease_until, columns=columns)

    def _claim_lite(
        self,
        conn: Connection,
        ids: Sequence[str],
        *,
        now: float,
        lease_until: float,
        columns: str = _LITE_CLAIM_COLUMNS,
    ) -> list[tuple[Any, ...]]:
        """``_claim_ids`` on SQLite's DBAPI cursor, returning ``columns``: SQLAlchemy's
        per-execute overhead was most of a claim's cost (see engine.decide.lite), and the claim
        sits between decide's commit and the first SMTP command of every notified intent."""
        found: list[tuple[Any, ...]] = []
        for chunk in _chunks(ids):
            places, padded = lite.in_list(chunk)
            statement = (
                "UPDATE intents SET status = ?, claimed_by = ?, lease_until = ? "
                f"WHERE id IN ({places}) AND +status = ? "
                f"AND +next_attempt_at <= ? AND {OPEN_SQL} RETURNING {columns}"
            )
            found += lite.run(
                conn, statement, [CLAIMED, self.owner, lease_until, *padded, QUEUED, now]
            )
        return found

    def _poll_lite(
        self,
        conn: Connection,
        limit: int,
        *,
        now: float,
        lease_until: float,
        columns: str = _LITE_CLAIM_COLUMNS,
    ) -> list[tuple[Any, ...]]:
        """``_claim_due`` on SQLite's cursor, returning ``columns``: the oldest due queued,
        then deferred, intents up to ``limit``, each status picked through the status index
        inside the subquery and updated by id."""
        found: list[tuple[Any, ...]] = []
        for status in (QUEUED, DEFERRED):
            if len(found) >= limit:
                break
            statement = (
                "UPDATE intents SET status = ?, claimed_by = ?, lease_until = ? WHERE id IN ("
                "SELECT id FROM intents WHERE status = ? AND next_attempt_at <= ? "
                f"AND {OPEN_SQL} ORDER BY next_attempt_at LIMIT ?) RETURNING {columns}"
            )
            params = [CLAIMED, self.owner, lease_until, status, now, limit - len(found)]
            found += lite.run(conn, statement, params)
        return found

    def _load_recipients_lite(self, conn: Connection, batch: ClaimBatch) -> None:
        contact_ids = sorted({i.contact_id for i in batch.intents})
        addresses = sorted({i.to_addr.lower() for i in batch.intents})
        for chunk in _chunks(contact_ids):
            places, padded = lite.in_list(chunk)
            statement = (
                "SELECT id, email, traits, consent, unsubscribed_at, lifetime_value, orders, "
                f"first_order_at, last_order_at FROM contacts WHERE id IN ({places})"
            )
            for cid, email, traits, consent, unsubscribed_at, *order in lite.run(
                conn, statement, padded
            ):
                traits, consent = lite.loads(traits), lite.loads(consent)
                batch.contacts[cid] = ContactRow(
                    id=cid,
                    email=email,
                    traits=traits if isinstance(traits, dict) else {},
                    consent=consent if isinstance(consent, dict) else {},
                    unsubscribed_at=unsubscribed_at,
                    value=value_fields(*order),
                )
        for chunk in _chunks(addresses):
            places, padded = lite.in_list(chunk)
            statement = f"SELECT address, scope FROM suppressions WHERE address IN ({places})"
            for address, scope in lite.run(conn, statement, padded):
                if batch.suppressions.get(address) != "all":
                    batch.suppressions[address] = scope

    def _load_recipients(self, conn: Connection, batch: ClaimBatch) -> None:
        contact_ids = sorted({i.contact_id for i in batch.intents})
        addresses = sorted({i.to_addr.lower() for i in batch.intents})
        for chunk in _chunks(contact_ids):
            for row in conn.execute(self._contacts, {"b_ids": list(chunk)}):
                batch.contacts[row.id] = ContactRow(
                    id=row.id,
                    email=row.email,
                    traits=row.traits if isinstance(row.traits, dict) else {},
                    consent=row.consent if isinstance(row.consent, dict) else {},
                    unsubscribed_at=row.unsubscribed_at,
                    value=value_fields(
                        row.lifetime_value, row.orders, row.first_order_at, row.last_order_at
                    ),
                )
        for chunk in _chunks(addresses):
            for entry in conn.execute(self._suppressions, {"b_ids": list(chunk)}):
                if batch.suppressions.get(entry.address) != "all":
                    batch.suppressions[entry.address] = entry.scope

    # -- the group commit -------------------------------------------------------------------

    def commit(
        self,
        *,
        now: float,
        dots: Sequence[str],
        lease_until: float,
        outcomes: Sequence[Outcome],
        renew: Sequence[str] = (),
    ) -> set[str]:
        """One transaction: dot markers, outcomes, hard-bounce suppressions, lease renewals.

        Returns the ids whose dot marker was written: only for those may the final dot go out
        (a missing id means this node no longer owns the intent).
        """
        marked: set[str] = set()
        with self.store.begin() as conn:
            params = {"b_now": now, "b_owner": self.owner, "b_lease": lease_until}
            for chunk in _chunks(dots):
                if self._lite:  # every message waits for this before its dot: no Core overhead
                    places, padded = lite.in_list(chunk)
                    statement = (
                        "UPDATE intents SET status = ?, dot_at = ?, lease_until = ? "
                        f"WHERE id IN ({places}) AND +status = ? AND claimed_by = ? RETURNING id"
                    )
                    values = [SENDING, now, lease_until, *padded, CLAIMED, self.owner]
                    marked.update(row[0] for row in lite.run(conn, statement, values))
                    continue
                found = conn.execute(self._mark_dots, {**params, "b_ids": list(chunk)})
                marked.update(found.scalars())
            if outcomes and self._lite:  # Core's per-row parameter handling was most of it
                lite.run_many(conn, _LITE_OUTCOME_UPDATE, [self._lite_row(o) for o in outcomes])
            elif outcomes:
                conn.execute(_OUTCOME_UPDATE, [self._outcome_params(o) for o in outcomes])
            if outcomes:
                bounced = {o.suppress_address.lower(): o for o in outcomes if o.suppress_address}
                if bounced:
                    self._suppress(conn, bounced, now)
            for chunk in _chunks(renew):
                conn.execute(self._renew, {**params, "b_ids": list(chunk)})
        return marked

    def _lite_row(self, o: Outcome) -> tuple[Any, ...]:
        final = o.status not in (QUEUED, DEFERRED)
        return (
            o.status,
            o.attempts,
            o.reply[:4000] if o.reply else o.reply,
            o.next_attempt_at,
            o.rendered_at,
            o.message_id,
            o.dot_at,
            o.accepted_at,
            o.finished_at,
            self.owner if final else None,
            o.intent_id,
            self.owner,
        )

    def _outcome_params(self, o: Outcome) -> dict[str, Any]:
        final = o.status not in (QUEUED, DEFERRED)
        return {
            "o_id": o.intent_id,
            "o_owner": self.owner,
            "o_status": o.status,
            "o_attempts": o.attempts,
            "o_reply": o.reply[:4000] if o.reply else o.reply,
            "o_next": o.next_attempt_at,
            "o_rendered": o.rendered_at,
            "o_message_id": o.message_id,
            "o_dot_at": o.dot_at,
            "o_accepted_at": o.accepted_at,
            "o_finished_at": o.finished_at,
            "o_claimed_by": self.owner if final else None,
        }

    def _suppress(self, conn: Connection, bounced: dict[str, Outcome], now: float) -> None:
        table = schema.suppressions
        rows = [
            {
                "address": address,
                "scope": "all",
                "reason": "hard_bounce",
                "source": f"bounce {o.intent_id}: {o.reply or ''}"[:200],
                "created_at": now,
            }
            for address, o in bounced.items()
        ]
        conn.execute(self.store.insert_ignore(table, index=["address"]), rows)
        # A marketing-only suppression (an unsubscribe) widens to everything.
        conn.execute(
            sa.update(table)
            .where(table.c.address.in_(list(bounced)), table.c.scope != "all")
            .values(scope="all", reason="hard_bounce", created_at=now)
        )

    # -- recovery and gauges ----------------------------------------------------------------

    def recover(self, *, now: float, own_node: bool) -> Recovery:
        """Requeue claimed rows whose lease ran out; make sending ones ``uncertain``.

        With ``own_node``, rows of earlier incarnations of this node count as abandoned whatever
        their lease says (this runs once at start-up, before this incarnation claims anything).
        """
        stale = sa.or_(_C.lease_until.is_(None), _C.lease_until < now)
        if own_node:
            stale = sa.or_(
                stale,
                _C.claimed_by.startswith(f"{self.node}/", autoescape=True),
                _C.claimed_by == self.node,
            )
        recovery = Recovery()
        with self.store.begin() as conn:
            requeued = conn.execute(
                sa.update(intents)
                .where(_C.status == CLAIMED, stale)
                .values(status=QUEUED, claimed_by=None, lease_until=None)
                .returning(_C.id)
            ).all()
            recovery.requeued = len(requeued)
            # claimed_by stays: it names the node that was sending, and lets that node still
            # record the real reply should it turn out to be alive after all.
            rows = conn.execute(
                sa.update(intents)
                .where(_C.status == SENDING, stale)
                .values(status=UNCERTAIN, finished_at=now, lease_until=None, reply=UNCERTAIN_REPLY)
                .returning(_C.id, _C.workflow_id)
            ).all()
            recovery.uncertain = [(row.id, row.workflow_id) for row in rows]
        return recovery

    def ping(self) -> None:
        """Raise if the store does not answer."""
        with self.store.begin() as conn:
            conn.execute(sa.select(sa.literal(1)))

    def due_count(self, now: float, *, cap: int = 100_000) -> int:
        """How many intents are due and unclaimed (counted up to ``cap``)."""
        due = (
            sa.select(sa.literal(1))
            .where(_C.status.in_((QUEUED, DEFERRED)), _C.next_attempt_at <= now)
            .limit(cap)
            .subquery()
        )
        with self.store.begin() as conn:
            return int(conn.execute(sa.select(func.count()).select_from(due)).scalar_one())
