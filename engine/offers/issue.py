"""Issuing offer codes inside the decide (or timer) transaction that writes the send intent.

Why here and not at delivery: the code is claimed in the same transaction that inserts the
intent, keyed by the intent's dedup key (one send per workflow, step, contact and trigger event).
Either both commit or neither does, so a crash, a redelivered event or a replayed stream can
never leave a code claimed without its send or give one send two codes; the deliver stage only
renders what the intent carries, so its retries and restarts show the same code every time.
The price: a code issued to a send that ends suppressed or expired stays issued (never seen by
anyone, never given to anyone else).

Pool draws take the oldest available code with one ``UPDATE ... RETURNING``; on PostgreSQL the
row is picked ``FOR UPDATE SKIP LOCKED`` so concurrent decide workers draw different codes
without waiting for each other, and SQLite serialises writers. ``offer_codes.code`` is unique
and ``(offer_id, intent_key)`` is unique: the store itself refuses a code given twice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import Connection

if TYPE_CHECKING:
    from engine.decide.changes import Changes

from engine.decide.conditions import Facts, all_hold
from engine.offers.codes import generated_code
from engine.offers.model import Offer
from engine.store import schema

log = logging.getLogger(__name__)

_MAX_ATTEMPTS = 20
_T = schema.offer_codes


class _NoActivity:
    def count(self, name: str, since: float, until: float, same: Mapping[str, Any]) -> int:
        return 0


@dataclass(frozen=True, slots=True)
class Issued:
    """One code given to one send."""

    offer_id: str
    code: str
    value: str
    kind: str


@dataclass(frozen=True, slots=True)
class Exhausted:
    """A pool had no code left for this send."""

    offer_id: str
    intent: dict[str, Any]


def choose_value(offer: Offer, traits: Mapping[str, Any], segments: set[str], at: float) -> str:
    """The value of the first rule that holds for the contact, else the offer's value."""
    facts = Facts(traits, {}, at, None, _NoActivity())
    for rule in offer.rules:
        if rule.segment is not None and rule.segment not in segments:
            continue
        if all_hold(rule.where, facts):
            return rule.value
    return offer.value


def _contacts(conn: Connection, ids: list[str], segments: set[str]) -> tuple[
    dict[str, dict[str, Any]], dict[str, set[str]]
]:  # fmt: skip
    traits: dict[str, dict[str, Any]] = {}
    member: dict[str, set[str]] = {cid: set() for cid in ids}
    c, m = schema.contacts, schema.segment_members
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        for row in conn.execute(sa.select(c.c.id, c.c.traits).where(c.c.id.in_(chunk))):
            traits[row.id] = dict(row.traits) if isinstance(row.traits, dict) else {}
        if segments:
            query = sa.select(m.c.contact_id, m.c.segment_id).where(
                m.c.contact_id.in_(chunk), m.c.segment_id.in_(sorted(segments))
            )
            for row in conn.execute(query):
                member[row.contact_id].add(row.segment_id)
    return traits, member


def issue_codes(
    conn: Connection, requests: Sequence[tuple[dict[str, Any], Offer]]
) -> list[Exhausted]:
    """Give every requested send its code, written into ``intent["context"]["offer"]``.

    Returns the sends whose pool was empty (the caller drops them with a note); every other
    request gets a code, the one it already had if this send was decided before."""
    ids = sorted({intent["contact_id"] for intent, _ in requests})
    wanted = {s for _, offer in requests for s in offer.segments()}
    traits, member = _contacts(conn, ids, wanted)
    exhausted: list[Exhausted] = []
    for intent, offer in requests:
        cid, key, now = intent["contact_id"], intent["dedup_key"], intent["decided_at"]
        value = choose_value(offer, traits.get(cid, {}), member.get(cid, set()), now)
        issued = _existing(conn, offer.id, key) or (
            _generate(conn, offer, cid, key, value, now)
            if offer.kind == "generated"
            else _draw(conn, offer, cid, key, value, now)
        )
        if issued is None:
            exhausted.append(Exhausted(offer.id, intent))
            continue
        intent["context"]["offer"] = {
            "id": offer.id,
            "code": issued.code,
            "value": issued.value,
            "kind": issued.kind,
            "description": offer.description,
        }
    return exhausted


def _existing(conn: Connection, offer_id: str, key: str) -> Issued | None:
    row = conn.execute(
        sa.select(_T.c.code, _T.c.value, _T.c.kind).where(
            _T.c.offer_id == offer_id, _T.c.intent_key == key
        )
    ).first()
    return None if row is None else Issued(offer_id, row.code, row.value or "", row.kind)


def _generate(
    conn: Connection, offer: Offer, contact_id: str, key: str, value: str, now: float
) -> Issued:
    insert = _insert_ignore(conn)
    for attempt in range(_MAX_ATTEMPTS):
        code = generated_code(offer.secret, offer.id, offer.prefix, contact_id, key, attempt)
        row = {
            "offer_id": offer.id,
            "code": code,
            "kind": "generated",
            "state": "issued",
            "intent_key": key,
            "contact_id": contact_id,
            "value": value,
            "attempt": attempt,
            "imported_at": None,
            "issued_at": now,
        }
        if conn.execute(insert.returning(_T.c.id), row).first() is not None:
            return Issued(offer.id, code, value, "generated")
        # Taken: by this send in a concurrent transaction (then that code is ours), or by
        # another send whose code happens to have the same text (then the next attempt).
        mine = _existing(conn, offer.id, key)
        if mine is not None:
            return mine
    raise RuntimeError(f"offer {offer.id}: no free code after {_MAX_ATTEMPTS} attempts")


def _insert_ignore(conn: Connection) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(_T).on_conflict_do_nothing()
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(_T).on_conflict_do_nothing()


def _draw(
    conn: Connection, offer: Offer, contact_id: str, key: str, value: str, now: float
) -> Issued | None:
    pg = conn.dialect.name == "postgresql"
    for skip_locked in (True, False) if pg else (False,):
        pick = (
            sa.select(_T.c.id)
            .where(_T.c.offer_id == offer.id, _T.c.state == "available")
            .order_by(_T.c.id)
            .limit(1)
        )
        if pg:
            pick = pick.with_for_update(skip_locked=skip_locked)
        claim = (
            sa.update(_T)
            .where(_T.c.id == pick.scalar_subquery(), _T.c.state == "available")
            .values(
                state="issued", intent_key=key, contact_id=contact_id, value=value, issued_at=now
            )
            .returning(_T.c.code)
        )
        row = conn.execute(claim).first()
        if row is not None:
            return Issued(offer.id, row.code, value, "pool")
    return None


def issue_or_drop(conn: Connection, changes: Changes) -> None:
    """Issue the codes ``changes`` asks for; a send whose pool is empty is not queued, its
    enrollment trace says so, and the audit log records it once per offer (``offer.pool_exhausted``)
    so operators see it next to the alerts."""
    exhausted = issue_codes(conn, changes.offer_requests)
    changes.offer_requests = []
    if not exhausted:
        return
    dropped = {id(e.intent) for e in exhausted}
    changes.intents = [i for i in changes.intents if id(i) not in dropped]
    per_offer: dict[str, list[dict[str, Any]]] = {}
    for e in exhausted:
        intent = e.intent
        per_offer.setdefault(e.offer_id, []).append(intent)
        changes.log.append(
            {
                "enrollment_id": intent["enrollment_id"],
                "ts": intent["decided_at"],
                "step_id": intent["step_id"],
                "kind": "offer_exhausted",
                "detail": (
                    f"offer {e.offer_id}: no codes left in its pool (import more with "
                    f"'campaign-engine offers import {e.offer_id} FILE'); "
                    f"{intent['template_id']} to {intent['to_addr']} not sent"
                ),
            }
        )
    for offer_id, intents in per_offer.items():
        log.warning("offer %s: pool exhausted, %d send(s) not queued", offer_id, len(intents))
        conn.execute(
            schema.audit_log.insert(),
            {
                "ts": intents[0]["decided_at"],
                "actor": "engine",
                "action": "offer.pool_exhausted",
                "target": offer_id,
                "count": len(intents),
                "detail": {"workflows": sorted({i["workflow_id"] for i in intents})},
            },
        )


# ---------------------------------------------------------------- pools, verification


class PoolImportError(ValueError):
    """A pool file cannot be imported; nothing was written."""


def read_pool_codes(lines: Iterable[str], source: str) -> list[str]:
    """Codes from a text or CSV file: the first column of each line, a header line
    (``code``) and blank lines skipped; ``PoolImportError`` for a bad or repeated code."""
    codes: list[str] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        text = line.strip().split(",")[0].strip().strip('"')
        if not text or (number == 1 and text.lower() == "code"):
            continue
        if len(text) > 100 or any(c.isspace() or ord(c) < 33 for c in text):
            raise PoolImportError(f"{source}:{number}: {text[:40]!r} is not a usable code")
        if text in seen:
            raise PoolImportError(
                f"{source}:{number}: code {text!r} appears twice (first on line {seen[text]})"
            )
        seen[text] = number
        codes.append(text)
    if not codes:
        raise PoolImportError(f"{source}: no codes found")
    return codes


def import_pool(conn: Connection, offer_id: str, codes: Sequence[str], now: float) -> int:
    """Add ``codes`` to the pool of ``offer_id``; ``PoolImportError`` (nothing written) when
    any of them is already known, in this pool or another offer's."""
    known: dict[str, str] = {}
    for start in range(0, len(codes), 500):
        chunk = list(codes[start : start + 500])
        query = sa.select(_T.c.code, _T.c.offer_id).where(_T.c.code.in_(chunk))
        known.update({row.code: row.offer_id for row in conn.execute(query)})
    if known:
        code, owner = sorted(known.items())[0]
        raise PoolImportError(
            f"{len(known)} code(s) are already known, e.g. {code!r} (offer {owner}); "
            "nothing was imported"
        )
    rows = [
        {
            "offer_id": offer_id,
            "code": code,
            "kind": "pool",
            "state": "available",
            "intent_key": None,
            "contact_id": None,
            "value": None,
            "attempt": 0,
            "imported_at": now,
            "issued_at": None,
        }
        for code in codes
    ]
    for start in range(0, len(rows), 2000):
        conn.execute(_T.insert(), rows[start : start + 2000])
    return len(rows)


def pool_counts(conn: Connection) -> dict[str, dict[str, int]]:
    """Per offer: codes ``available`` and ``issued``."""
    out: dict[str, dict[str, int]] = {}
    query = sa.select(_T.c.offer_id, _T.c.state, sa.func.count()).group_by(
        _T.c.offer_id, _T.c.state
    )
    for offer_id, state, n in conn.execute(query):
        out.setdefault(offer_id, {"available": 0, "issued": 0})[state] = int(n)
    return out
