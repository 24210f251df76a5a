"""Live membership: which segments an event can affect, and re-evaluating them in a transaction.

``SegmentIndex`` is one consistent snapshot of the defined segments (newest versions), checked
for unknown references and cycles, in dependency order, indexed by the event names and trait
keys each mentions (through the segments it refers to as well). ``refresh`` re-evaluates some
segments for some contacts inside the caller's transaction (a decide batch, a fired re-check or
a build step): it reads profiles, windows and memberships with a few queries, records each
enter and exit in ``segment_members`` and ``segment_history``, and keeps one pending re-check
per segment and contact at the next moment time alone may change the answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.dialects.postgresql import insert as pg_insert

from engine.clv import ORDER_EVENT, value_fields
from engine.decide import lite
from engine.events import Event
from engine.segments.evaluate import Profile, holds, next_change
from engine.segments.model import (
    Consent,
    Segment,
    SegmentInvalid,
    Subscription,
    event_windows,
    reads_value,
    referenced_segments,
    trait_keys,
    walk,
)
from engine.store import schema

_CHUNK = 500  # ids per IN list, well inside SQLite's variable limit


@dataclass(frozen=True, slots=True)
class MembershipChange:
    segment_id: str
    contact_id: str
    kind: str  # entered | exited
    at: float


@dataclass(frozen=True)
class SegmentIndex:
    """The newest version of every segment, in dependency order, with lookups by event/trait."""

    segments: Mapping[str, Segment] = field(default_factory=dict)
    order: tuple[str, ...] = ()  # a segment comes after every segment it refers to
    by_event: Mapping[str, frozenset[str]] = field(default_factory=dict)
    by_trait: Mapping[str, frozenset[str]] = field(default_factory=dict)
    dependents: Mapping[str, frozenset[str]] = field(default_factory=dict)  # transitive
    windows: Mapping[str, int] = field(default_factory=dict)  # event name -> longest window
    counted: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # per segment
    by_consent: frozenset[str] = frozenset()  # segments reading subscription or consent
    reads_traits: frozenset[str] = frozenset()  # segments whose own condition reads traits
    reads_consent: frozenset[str] = frozenset()  # ... reads consent (not just unsubscribed)
    reads_value: frozenset[str] = frozenset()  # ... reads the order value (clv, orders, aov)

    @classmethod
    def build(cls, segments: Iterable[Segment]) -> SegmentIndex:
        """Index segments; ``SegmentInvalid`` names an unknown reference or a cycle."""
        newest: dict[str, Segment] = {}
        for seg in segments:
            if seg.id not in newest or seg.version > newest[seg.id].version:
                newest[seg.id] = seg
        refs = {sid: referenced_segments(seg.condition) for sid, seg in newest.items()}
        for sid in sorted(refs):
            for ref in sorted(refs[sid]):
                if ref not in newest:
                    raise SegmentInvalid(
                        f"segment {sid!r} refers to segment {ref!r}, which does not exist"
                    )
        order = _dependency_order(refs)
        dependents: dict[str, set[str]] = {sid: set() for sid in newest}
        for sid in order:  # references first, so their own references are already folded in
            for ref in refs[sid]:
                dependents[ref].add(sid)
        for sid in reversed(order):
            for dep in list(dependents[sid]):
                dependents[sid] |= dependents[dep]
        by_event: dict[str, set[str]] = {}
        by_trait: dict[str, set[str]] = {}
        windows: dict[str, int] = {}
        for sid, seg in newest.items():
            if reads_value(seg.condition):  # an order changes the value it reads
                for target in (sid, *dependents[sid]):
                    by_event.setdefault(ORDER_EVENT, set()).add(target)
            for name, within in event_windows(seg.condition).items():
                windows[name] = max(within, windows.get(name, 0))
                for target in (sid, *dependents[sid]):
                    by_event.setdefault(name, set()).add(target)
            for key in trait_keys(seg.condition):
                for target in (sid, *dependents[sid]):
                    by_trait.setdefault(key, set()).add(target)
        return cls(
            segments=newest,
            order=tuple(order),
            by_event={k: frozenset(v) for k, v in by_event.items()},
            by_trait={k: frozenset(v) for k, v in by_trait.items()},
            dependents={k: frozenset(v) for k, v in dependents.items()},
            windows=windows,
            counted={sid: event_windows(seg.condition) for sid, seg in newest.items()},
            by_consent=frozenset(
                target
                for sid, seg in newest.items()
                if any(isinstance(n, Subscription | Consent) for n in walk(seg.condition))
                for target in (sid, *dependents[sid])
            ),
            reads_traits=frozenset(sid for sid, seg in newest.items() if trait_keys(seg.condition)),
            reads_consent=frozenset(
                sid
                for sid, seg in newest.items()
                if any(isinstance(n, Consent) for n in walk(seg.condition))
            ),
            reads_value=frozenset(sid for sid, seg in newest.items() if reads_value(seg.condition)),
        )

    def affected_by(self, event: Event) -> set[str]:
        """Segments whose answer this event may change (its name, the traits it sets)."""
        found = set(self.by_event.get(event.activity_name, ()))
        for key in event.traits:
            found |= self.by_trait.get(key, frozenset())
        return found

    def with_dependents(self, ids: Iterable[str]) -> set[str]:
        out: set[str] = set()
        for sid in ids:
            if sid in self.segments:
                out.add(sid)
                out |= self.dependents.get(sid, frozenset())
        return out


def _dependency_order(refs: Mapping[str, set[str]]) -> list[str]:
    order: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(sid: str, path: list[str]) -> None:
        if state.get(sid) == 2:
            return
        if state.get(sid) == 1:
            cycle = [*path[path.index(sid) :], sid]
            raise SegmentInvalid(f"segments refer to each other in a cycle: {' -> '.join(cycle)}")
        state[sid] = 1
        for ref in sorted(refs[sid]):
            visit(ref, [*path, sid])
        state[sid] = 2
        order.append(sid)

    for sid in sorted(refs):
        visit(sid, [])
    return order


class SegmentRegistry:
    """The segments known to this node; ``index`` is swapped as a whole."""

    def __init__(self, segments: Iterable[Segment] = ()) -> None:
        self.index = SegmentIndex.build(segments)

    def replace(self, segments: Iterable[Segment]) -> None:
        self.index = SegmentIndex.build(segments)

    def add(self, segment: Segment) -> None:
        self.replace([*self.index.segments.values(), segment])


def _chunks(items: Sequence[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), _CHUNK):
        yield list(items[start : start + _CHUNK])


def load_profiles(
    conn: Connection,
    index: SegmentIndex,
    contact_ids: Sequence[str],
    now: float,
    windows: Mapping[str, int] | None = None,
    *,
    traits: bool = True,
    consent: bool = True,
    value: bool = True,
) -> dict[str, Profile]:
    """Profiles (traits, consent, order value, windows, current memberships) of the stored
    contacts; the activity loaded is that of ``windows`` (event name -> longest window;
    default: every segment's). ``traits``/``consent``/``value`` False: left empty, not read
    (decoding a contact's JSON costs more than evaluating an event window over it)."""
    c, a, m = schema.contacts, schema.activity, schema.segment_members
    profiles: dict[str, Profile] = {}
    windows = index.windows if windows is None else windows
    names = sorted(windows)
    since = now - max(windows.values(), default=0)
    if conn.dialect.name == "sqlite":
        for ids in _chunks(sorted(set(contact_ids))):
            _load_lite(
                conn, profiles, ids, names, since, traits=traits, consent=consent, value=value
            )
        return profiles
    for ids in _chunks(sorted(set(contact_ids))):
        query = sa.select(
            c.c.id, c.c.traits, c.c.unsubscribed_at, c.c.consent, c.c.lifetime_value,
            c.c.orders, c.c.first_order_at, c.c.last_order_at,
        ).where(c.c.id.in_(ids))  # fmt: skip
        for row in conn.execute(query):
            profiles[row.id] = Profile(
                row.id,
                dict(row.traits or {}) if traits else {},
                row.unsubscribed_at is not None,
                dict(row.consent or {}) if consent else {},
                [],
                value=value_fields(*row[4:]) if value else {},
            )
        if names:
            found = conn.execute(
                sa.select(a.c.contact_id, a.c.name, a.c.ts, a.c.properties).where(
                    a.c.contact_id.in_(ids), a.c.name.in_(names), a.c.ts > since
                )
            )
            for act in found:
                profile = profiles.get(act.contact_id)
                if profile is not None:
                    profile.activity.append((act.name, act.ts, act.properties or {}))
        rows = conn.execute(
            sa.select(m.c.segment_id, m.c.contact_id).where(m.c.contact_id.in_(ids))
        )
        for member in rows:
            profile = profiles.get(member.contact_id)
            if profile is not None:
                profile.memberships[member.segment_id] = True
    return profiles


def _load_lite(
    conn: Connection,
    profiles: dict[str, Profile],
    ids: list[str],
    names: list[str],
    since: float,
    *,
    traits: bool,
    consent: bool,
    value: bool,
) -> None:
    """``load_profiles`` on SQLite's own cursor (see engine.decide.lite for why)."""
    marks, ids = lite.in_list(ids)  # padded: the statements stay prepared
    columns = f"id, unsubscribed_at, {'traits' if traits else 'NULL'}, " + (
        "consent" if consent else "NULL"
    )
    columns += ", lifetime_value, orders, first_order_at, last_order_at"
    found = lite.run(conn, f"SELECT {columns} FROM contacts WHERE id IN ({marks})", ids)
    loads = lite.loads
    for cid, unsubscribed_at, traits_json, consent_json, *order in found:
        profiles[cid] = Profile(
            cid,
            (loads(traits_json) or {}) if traits_json is not None else {},
            unsubscribed_at is not None,
            (loads(consent_json) or {}) if consent_json is not None else {},
            value=value_fields(*order) if value else {},
        )
    if names:
        names_in, names = lite.in_list(names)
        rows = lite.run(
            conn,
            "SELECT contact_id, name, ts, properties FROM activity WHERE contact_id IN "
            f"({marks}) AND name IN ({names_in}) AND ts > ?",
            [*ids, *names, since],
        )
        for cid, name, ts, properties in rows:
            profile = profiles.get(cid)
            if profile is not None:
                profile.activity.append((name, ts, lite.loads(properties) or {}))
    members = lite.run(
        conn,
        f"SELECT segment_id, contact_id FROM segment_members WHERE contact_id IN ({marks})",
        ids,
    )
    for sid, cid in members:
        profile = profiles.get(cid)
        if profile is not None:
            profile.memberships[sid] = True


def refresh(
    conn: Connection,
    index: SegmentIndex,
    targets: Mapping[str, Iterable[str]],
    now: float,
    *,
    rechecks_cleared: bool = False,
) -> tuple[list[MembershipChange], float | None]:
    """Re-evaluate ``targets`` (contact id -> segment ids, dependents included) at ``now``;
    write enters, exits and re-checks in ``conn``'s transaction; return the changes and the
    earliest re-check written. ``rechecks_cleared``: the caller already deleted the pending
    re-checks of every (segment, contact) evaluated here (a build deletes a page's at once)."""
    closures: dict[frozenset[str], frozenset[str]] = {}  # a build asks the same for everyone
    wanted: dict[str, frozenset[str]] = {}
    for cid, sids in targets.items():
        key = frozenset(sids)
        closure = closures.get(key)
        if closure is None:
            closure = closures[key] = frozenset(index.with_dependents(key))
        if closure:
            wanted[cid] = closure
    if not wanted:
        return [], None
    windows: dict[str, int] = {}  # only the events the evaluated segments count
    evaluated_sids: set[str] = set()
    for closure in set(wanted.values()):
        evaluated_sids |= closure
        for sid in closure:
            for name, within in index.counted[sid].items():
                windows[name] = max(within, windows.get(name, 0))
    profiles = load_profiles(
        conn,
        index,
        list(wanted),
        now,
        windows,
        traits=not evaluated_sids.isdisjoint(index.reads_traits),
        consent=not evaluated_sids.isdisjoint(index.reads_consent),
        value=not evaluated_sids.isdisjoint(index.reads_value),
    )
    changes: list[MembershipChange] = []
    rechecks: list[dict[str, Any]] = []
    evaluated: list[dict[str, Any]] = []
    for cid in sorted(wanted):
        profile = profiles.get(cid)
        if profile is None:
            continue  # not a stored contact
        sids = wanted[cid]
        for sid in index.order:
            if sid not in sids:
                continue
            condition = index.segments[sid].condition
            now_in = holds(condition, profile, now)
            was_in = profile.memberships.get(sid, False)
            if now_in != was_in:
                kind = "entered" if now_in else "exited"
                changes.append(MembershipChange(sid, cid, kind, now))
                profile.memberships[sid] = now_in
            if not rechecks_cleared:
                evaluated.append({"b_segment": sid, "b_contact": cid})
            moment = next_change(condition, profile, now)
            if moment is not None:
                rechecks.append({"segment_id": sid, "contact_id": cid, "fire_at": moment})
    _write(conn, changes, evaluated, rechecks)
    return changes, min((r["fire_at"] for r in rechecks), default=None)


def _write(
    conn: Connection,
    changes: list[MembershipChange],
    evaluated: list[dict[str, Any]],
    rechecks: list[dict[str, Any]],
) -> None:
    if conn.dialect.name == "sqlite":  # one writer at a time: plain inserts cannot conflict
        _write_lite(conn, changes, evaluated, rechecks)
        return
    # PostgreSQL from here on.
    m, h, r = schema.segment_members, schema.segment_history, schema.segment_rechecks
    entered = [
        {"segment_id": c.segment_id, "contact_id": c.contact_id, "entered_at": c.at}
        for c in changes
        if c.kind == "entered"
    ]
    exited = [
        {"b_segment": c.segment_id, "b_contact": c.contact_id}
        for c in changes
        if c.kind == "exited"
    ]
    if exited:
        conn.execute(
            m.delete().where(
                m.c.segment_id == sa.bindparam("b_segment"),
                m.c.contact_id == sa.bindparam("b_contact"),
            ),
            exited,
        )
    if entered:
        # A concurrent transaction (a re-check on another node) may have recorded it already.
        conn.execute(pg_insert(m).on_conflict_do_nothing(), entered)
    if changes:
        conn.execute(
            h.insert(),
            [
                {"segment_id": c.segment_id, "contact_id": c.contact_id, "kind": c.kind, "at": c.at}
                for c in changes
            ],
        )
    if evaluated:
        conn.execute(
            r.delete().where(
                r.c.segment_id == sa.bindparam("b_segment"),
                r.c.contact_id == sa.bindparam("b_contact"),
            ),
            evaluated,
        )
    if rechecks:
        upsert = pg_insert(r)
        conn.execute(
            upsert.on_conflict_do_update(
                index_elements=[r.c.segment_id, r.c.contact_id],
                set_={"fire_at": sa.func.least(r.c.fire_at, upsert.excluded.fire_at)},
            ),
            rechecks,
        )


def _write_lite(
    conn: Connection,
    changes: list[MembershipChange],
    evaluated: list[dict[str, Any]],
    rechecks: list[dict[str, Any]],
) -> None:
    exited = [(c.segment_id, c.contact_id) for c in changes if c.kind == "exited"]
    if exited:
        lite.run_many(
            conn, "DELETE FROM segment_members WHERE segment_id = ? AND contact_id = ?", exited
        )
    entered = [(c.segment_id, c.contact_id, c.at) for c in changes if c.kind == "entered"]
    if entered:
        lite.run_many(
            conn,
            "INSERT INTO segment_members (segment_id, contact_id, entered_at) VALUES (?, ?, ?)",
            entered,
        )
    if changes:
        lite.run_many(
            conn,
            "INSERT INTO segment_history (segment_id, contact_id, kind, at) VALUES (?, ?, ?, ?)",
            [(c.segment_id, c.contact_id, c.kind, c.at) for c in changes],
        )
    if evaluated:
        lite.run_many(
            conn,
            "DELETE FROM segment_rechecks WHERE segment_id = ? AND contact_id = ?",
            [(e["b_segment"], e["b_contact"]) for e in evaluated],
        )
    if rechecks:
        lite.run_many(
            conn,
            "INSERT INTO segment_rechecks (segment_id, contact_id, fire_at) VALUES (?, ?, ?)",
            [(r["segment_id"], r["contact_id"], r["fire_at"]) for r in rechecks],
        )


def fire_rechecks(
    conn: Connection, index: SegmentIndex, now: float, limit: int = 1000
) -> tuple[list[MembershipChange], int]:
    """Re-evaluate the due re-checks in ``conn``'s transaction; returns changes and how many
    re-checks were due. Re-checks of segments no longer defined are dropped."""
    r = schema.segment_rechecks
    due = conn.execute(
        sa.select(r.c.segment_id, r.c.contact_id)
        .where(r.c.fire_at <= now)
        .order_by(r.c.fire_at)
        .limit(limit)
    ).all()
    if not due:
        return [], 0
    conn.execute(
        r.delete().where(
            r.c.segment_id == sa.bindparam("b_segment"),
            r.c.contact_id == sa.bindparam("b_contact"),
        ),
        [{"b_segment": row.segment_id, "b_contact": row.contact_id} for row in due],
    )
    targets: dict[str, set[str]] = {}
    for row in due:
        if row.segment_id in index.segments:
            targets.setdefault(row.contact_id, set()).add(row.segment_id)
    changes, _ = refresh(conn, index, targets, now)
    return changes, len(due)


def next_recheck(conn: Connection) -> float | None:
    found = conn.execute(sa.select(sa.func.min(schema.segment_rechecks.c.fire_at))).scalar()
    return None if found is None else float(found)
