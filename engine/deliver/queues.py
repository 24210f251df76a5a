"""Queues, steered live: the statements behind the ``queues.*`` control verbs (blocking).

A queue is a workflow on a route: every pending intent (``queued`` or ``deferred``) is in the
queue ``(workflow_id, route)``. Operators steer queues with controls kept in the store
(``queue_controls``, one row per scope), so every node's claim sees them in the same statement
that claims:

- ``paused`` on a workflow, a route, a recipient domain, or everything ("all"): matching pending
  intents are not claimed. In-flight intents (``claimed``, ``sending``) finish normally. Resuming
  deletes the control; the intents are still ``queued``/``deferred`` with their due times, so the
  next claim takes them: nothing is resent (a claimed intent is never claimed twice) and nothing
  is skipped (a held intent is never dropped, only left where it was).
- ``draining`` on a route: the route finishes what it had when the drain began (in flight and
  pending intents decided up to ``since``, deferred retries included, on their schedule) while
  intents decided later are held, as if paused. The route is "drained" once none of the former
  remain; resume (or reroute) then decides what happens to the held ones. This is a load
  balancer's drain (finish current work, take no new work), which is what an operator wants
  before taking a relay away.

The mutating functions run their change, the count they return and the audit entry in one
transaction: the count is the number of rows changed (``UPDATE ... RETURNING``). With
``preview`` they only count what they would touch and change nothing (no audit entry either).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from engine.deliver.model import CANCELLED, DEFERRED, IN_FLIGHT, PENDING, SENT
from engine.errors import DeliveryError
from engine.store import Store, schema

ALL = "all"
WORKFLOW = "workflow"
ROUTE = "route"
DOMAIN = "domain"
KINDS = (ALL, WORKFLOW, ROUTE, DOMAIN)
ALL_VALUE = "*"  # the value of the "all" scope's row
PAUSED = "paused"
DRAINING = "draining"
RATE_WINDOW = 60.0  # seconds of sends behind a queue's rate

_I = schema.intents.c
_Q = schema.queue_controls

# The claim filter, as SQL text so the Core claims and the SQLite driver-level claim
# (engine.deliver.ledger) share one definition. "intents" is the claimed table. The "all" test
# is its own uncorrelated subquery: both databases evaluate it once and skip the scan when it
# holds (SQLite codes a constant WHERE term before the loop; PostgreSQL makes it a one-time
# filter), so a full pause costs nothing per poll whatever the backlog.
_ALL_PAUSED_SQL = (
    f"EXISTS (SELECT 1 FROM queue_controls WHERE kind = '{ALL}' AND state = '{PAUSED}')"
)
_SCOPED_HELD_SQL = (
    "EXISTS (SELECT 1 FROM queue_controls q WHERE "
    f"(q.state = '{PAUSED}' AND ("
    f"(q.kind = '{WORKFLOW}' AND q.value = intents.workflow_id) "
    f"OR (q.kind = '{ROUTE}' AND q.value = intents.route) "
    f"OR (q.kind = '{DOMAIN}' AND q.value = intents.domain))) "
    f"OR (q.state = '{DRAINING}' AND q.kind = '{ROUTE}' AND q.value = intents.route "
    "AND intents.decided_at > q.since))"
)
HELD_SQL = f"({_ALL_PAUSED_SQL} OR {_SCOPED_HELD_SQL})"
"""True for an ``intents`` row that a queue control holds back (SQL text)."""
OPEN_SQL = f"NOT {_ALL_PAUSED_SQL} AND NOT {_SCOPED_HELD_SQL}"
"""True for an ``intents`` row that no queue control holds back: part of every claim."""


def held() -> sa.TextClause:
    return sa.text(HELD_SQL)


def open_to_claim() -> sa.TextClause:
    return sa.text(OPEN_SQL)


class QueueControlError(DeliveryError, ValueError):
    """A queue control request was refused; nothing was changed. Shown to the operator as is."""


@dataclass(frozen=True, slots=True)
class Scope:
    """What a pause or resume applies to: exactly one workflow, route or domain, or all."""

    kind: str
    value: str = ALL_VALUE

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise QueueControlError(f"unknown scope {self.kind!r}")

    @property
    def label(self) -> str:
        return "all queues" if self.kind == ALL else f"{self.kind} {self.value}"

    @property
    def target(self) -> str:
        return ALL if self.kind == ALL else f"{self.kind}={self.value}"

    def where(self) -> sa.ColumnElement[bool]:
        column = {WORKFLOW: _I.workflow_id, ROUTE: _I.route, DOMAIN: _I.domain}.get(self.kind)
        return sa.true() if column is None else column == self.value


@dataclass(frozen=True, slots=True)
class Selection:
    """A slice of the queues: the given fields must all match (None: any); empty = everything."""

    workflow: str | None = None
    route: str | None = None
    domain: str | None = None

    def where(self) -> list[sa.ColumnElement[bool]]:
        clauses: list[sa.ColumnElement[bool]] = []
        if self.workflow is not None:
            clauses.append(_I.workflow_id == self.workflow)
        if self.route is not None:
            clauses.append(_I.route == self.route)
        if self.domain is not None:
            clauses.append(_I.domain == self.domain)
        return clauses

    @property
    def label(self) -> str:
        parts = [
            f"{name} {value}"
            for name, value in (
                ("workflow", self.workflow),
                ("route", self.route),
                ("domain", self.domain),
            )
            if value is not None
        ]
        return ", ".join(parts) if parts else "all queues"

    @property
    def target(self) -> str:
        parts = [
            f"{name}={value}"
            for name, value in (
                ("workflow", self.workflow),
                ("route", self.route),
                ("domain", self.domain),
            )
            if value is not None
        ]
        return ",".join(parts) if parts else ALL

    def to_dict(self) -> dict[str, str]:
        return {
            k: v
            for k, v in (
                ("workflow", self.workflow),
                ("route", self.route),
                ("domain", self.domain),
            )
            if v is not None
        }


# -- reading ---------------------------------------------------------------------------------


def paused_routes(store: Store) -> set[str]:
    """The routes held by a ``paused`` control of kind route."""
    with store.begin() as conn:
        rows = conn.execute(
            sa.select(_Q.c.value).where(_Q.c.kind == "route", _Q.c.state == PAUSED)
        ).all()
    return {row.value for row in rows}


def _controls(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(sa.select(_Q).order_by(_Q.c.since, _Q.c.kind, _Q.c.value)).all()
    return [dict(r._mapping) for r in rows]


def _control_dict(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("kind", "value", "state", "reason", "actor", "since")}


def _drain_remaining(conn: Connection, route: str, since: float) -> int:
    """Intents a draining route still has to finish: in flight, or pending from before."""
    n = conn.execute(
        sa.select(sa.func.count()).where(
            _I.route == route,
            sa.or_(
                _I.status.in_(IN_FLIGHT),
                sa.and_(_I.status.in_(PENDING), _I.decided_at <= since),
            ),
        )
    ).scalar_one()
    return int(n)


def _queue_state(
    workflow: str, route: str, controls: list[dict[str, Any]]
) -> tuple[str, dict[str, Any] | None]:
    """The state a queue shows and the control that sets it (a pause wins over a drain)."""
    order = {ALL: 0, ROUTE: 1, WORKFLOW: 2}
    pauses = [
        c
        for c in controls
        if c["state"] == PAUSED
        and (
            c["kind"] == ALL
            or (c["kind"] == WORKFLOW and c["value"] == workflow)
            or (c["kind"] == ROUTE and c["value"] == route)
        )
    ]
    if pauses:
        return PAUSED, min(pauses, key=lambda c: order[c["kind"]])
    for c in controls:
        if c["state"] == DRAINING and c["kind"] == ROUTE and c["value"] == route:
            return str(c["shown_state"]), c
    return "active", None


def list_queues(
    store: Store, *, now: float, domains: int = 0, routes: Collection[str] = ()
) -> dict[str, Any]:
    """Every queue with pending, in-flight or recently sent intents, and the active controls.

    ``domains``: also the top this many recipient domains (by depth) of each queue.
    """
    stats: dict[tuple[str, str], dict[str, Any]] = {}

    def queue(workflow: str, route: str) -> dict[str, Any]:
        key = (workflow, route)
        if key not in stats:
            stats[key] = {
                "workflow": workflow,
                "route": route,
                "depth": 0,
                "due": 0,
                "deferred": 0,
                "in_flight": 0,
                "held": 0,
                "sent_last_minute": 0,
                "rate": 0.0,
                "oldest_decided_at": None,
            }
        return stats[key]

    due = sa.func.sum(sa.case((_I.next_attempt_at <= now, 1), else_=0))
    with store.begin() as conn:
        controls = _controls(conn)
        for c in controls:
            if c["state"] == DRAINING:
                remaining = _drain_remaining(conn, c["value"], c["since"])
                c["remaining"] = remaining
                c["shown_state"] = DRAINING if remaining else "drained"
        active = conn.execute(
            sa.select(
                _I.workflow_id,
                _I.route,
                _I.status,
                sa.func.count(),
                due,
                sa.func.min(_I.decided_at),
            )
            .where(_I.status.in_((*PENDING, *IN_FLIGHT)))
            .group_by(_I.workflow_id, _I.route, _I.status)
        ).all()
        held_rows = (
            conn.execute(
                sa.select(_I.workflow_id, _I.route, sa.func.count())
                .where(_I.status.in_(PENDING), held())
                .group_by(_I.workflow_id, _I.route)
            ).all()
            if controls
            else []
        )
        # A literal status, so the planners may use the partial index; SQLite is told to (it
        # otherwise takes ix_intents_status_next and walks every sent row ever).
        hint = "INDEXED BY ix_intents_sent_finished" if store.is_sqlite else ""
        sent = conn.execute(
            sa.text(
                f"SELECT workflow_id, route, count(*) FROM intents {hint} "
                f"WHERE status = '{SENT}' AND finished_at >= :since GROUP BY workflow_id, route"
            ),
            {"since": now - RATE_WINDOW},
        ).all()
        by_domain = (
            conn.execute(
                sa.select(_I.workflow_id, _I.route, _I.domain, _I.status, sa.func.count(), due)
                .where(_I.status.in_((*PENDING, *IN_FLIGHT)))
                .group_by(_I.workflow_id, _I.route, _I.domain, _I.status)
            ).all()
            if domains > 0
            else []
        )
    for workflow, route, status, n, n_due, oldest in active:
        q = queue(workflow, route)
        if status in PENDING:
            q["depth"] += n
            q["due"] += int(n_due or 0)
            if status == DEFERRED:
                q["deferred"] += n
            if oldest is not None and (
                q["oldest_decided_at"] is None or oldest < q["oldest_decided_at"]
            ):
                q["oldest_decided_at"] = oldest
        else:
            q["in_flight"] += n
    for workflow, route, n in held_rows:
        queue(workflow, route)["held"] = int(n)
    for workflow, route, n in sent:
        q = queue(workflow, route)
        q["sent_last_minute"] = int(n)
        q["rate"] = round(n / RATE_WINDOW, 3)
    paused_domains = {c["value"] for c in controls if c["kind"] == DOMAIN}
    slices: dict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
    for workflow, route, domain, status, n, n_due in by_domain:
        entry = slices[(workflow, route)].setdefault(
            domain,
            {"domain": domain, "depth": 0, "due": 0, "deferred": 0, "in_flight": 0},
        )
        if status in PENDING:
            entry["depth"] += n
            entry["due"] += int(n_due or 0)
            if status == DEFERRED:
                entry["deferred"] += n
        else:
            entry["in_flight"] += n
    queues = []
    for (workflow, route), q in stats.items():
        oldest = q.pop("oldest_decided_at")
        q["oldest_age"] = None if oldest is None else round(max(0.0, now - oldest), 3)
        state, control = _queue_state(workflow, route, controls)
        q["state"] = state
        q["control"] = None if control is None else _control_dict(control)
        if domains > 0:
            top = sorted(
                slices.get((workflow, route), {}).values(),
                key=lambda d: (-d["depth"], -d["in_flight"], d["domain"]),
            )[:domains]
            for d in top:
                d["state"] = PAUSED if d["domain"] in paused_domains else "active"
            q["domains"] = top
        queues.append(q)
    queues.sort(key=lambda q: (-q["depth"], -q["in_flight"], q["workflow"], q["route"]))
    shown = []
    for c in controls:
        entry = _control_dict(c)
        if c["state"] == DRAINING:
            entry["state"] = c["shown_state"]
            entry["remaining"] = c["remaining"]
        shown.append(entry)
    return {
        "now": now,
        "queues": queues,
        "controls": shown,
        "routes": sorted(routes),
        "totals": {
            key: sum(q[key] for q in queues)
            for key in ("depth", "due", "deferred", "in_flight", "held", "sent_last_minute")
        }
        | {"rate": round(sum(q["rate"] for q in queues), 3)},
    }


# -- helpers for the changes -----------------------------------------------------------------


def _by_queue(rows: Iterable[Any]) -> list[dict[str, Any]]:
    """``(workflow, route[, n])`` rows -> ``[{"workflow", "route", "count"}]``, biggest first."""
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for row in rows:
        counts[(row[0], row[1])] += int(row[2]) if len(row) > 2 else 1
    return [
        {"workflow": w, "route": r, "count": n}
        for (w, r), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    ]


def _count_by_queue(conn: Connection, *where: Any) -> list[dict[str, Any]]:
    return _by_queue(
        conn.execute(
            sa.select(_I.workflow_id, _I.route, sa.func.count())
            .where(*where)
            .group_by(_I.workflow_id, _I.route)
        ).all()
    )


def _total(queues: list[dict[str, Any]]) -> int:
    return sum(q["count"] for q in queues)


def _intents(n: int, kind: str = "queued") -> str:
    return f"{n:,} {kind} intent{'' if n == 1 else 's'}"


def _audit(
    conn: Connection,
    *,
    actor: str,
    action: str,
    target: str,
    count: int,
    detail: dict[str, Any],
    now: float,
) -> int:
    row = conn.execute(
        schema.audit_log.insert().returning(schema.audit_log.c.id),
        {
            "ts": now,
            "actor": actor[:200],
            "action": action,
            "target": target[:400],
            "count": count,
            "detail": detail,
        },
    ).scalar_one()
    return int(row)


def _known_workflow(conn: Connection, workflow: str) -> bool:
    wf = schema.workflows.c
    found = conn.execute(sa.select(wf.id).where(wf.id == workflow).limit(1)).first()
    if found is None:
        found = conn.execute(sa.select(_I.id).where(_I.workflow_id == workflow).limit(1)).first()
    return found is not None


def _route_in_use(conn: Connection, route: str) -> bool:
    found = conn.execute(
        sa.select(_I.id).where(_I.route == route, _I.status.in_((*PENDING, *IN_FLIGHT))).limit(1)
    ).first()
    return found is not None


def _check_scope(conn: Connection, scope: Scope, routes: Collection[str]) -> None:
    if scope.kind == WORKFLOW and not _known_workflow(conn, scope.value):
        raise QueueControlError(f"there is no workflow {scope.value!r}")
    if scope.kind == ROUTE and scope.value not in routes and not _route_in_use(conn, scope.value):
        raise QueueControlError(_unknown_route(scope.value, routes))


def _unknown_route(route: str, routes: Collection[str]) -> str:
    return f"there is no route {route!r} (routes: {', '.join(sorted(routes)) or 'none'})"


def _pending_in(scope: Scope) -> tuple[sa.ColumnElement[bool], ...]:
    return (_I.status.in_(PENDING), scope.where())


# -- pause, resume, drain ----------------------------------------------------------------------


def pause(
    store: Store,
    scope: Scope,
    *,
    actor: str,
    reason: str,
    now: float,
    routes: Collection[str],
    preview: bool = False,
    action: str = "queues.pause",
) -> dict[str, Any]:
    """Hold the scope's pending intents (in-flight ones finish); see the module docstring."""
    with store.begin() as conn:
        _check_scope(conn, scope, routes)
        existing = conn.execute(
            sa.select(_Q).where(_Q.c.kind == scope.kind, _Q.c.value == scope.value)
        ).first()
        already = existing is not None and existing.state == PAUSED
        control = {
            "kind": scope.kind,
            "value": scope.value,
            "state": PAUSED,
            "reason": reason,
            "actor": actor[:200],
            "since": now,
        }
        if already:
            assert existing is not None
            control = _control_dict(dict(existing._mapping))
        elif not preview:
            # The control first: on SQLite that takes the write lock, so the counts below are
            # of the same moment as the pause.
            conn.execute(store.upsert(_Q, index=["kind", "value"], update=list(control)), control)
        queues = _count_by_queue(conn, *_pending_in(scope))
        in_flight = int(
            conn.execute(
                sa.select(sa.func.count()).where(_I.status.in_(IN_FLIGHT), scope.where())
            ).scalar_one()
        )
        count = _total(queues)
        if already:
            summary = f"{scope.label} is already paused (since {control['actor']} paused it)"
        else:
            verb = "Pause" if preview else "Paused"
            summary = f"{verb} {scope.label}: {_intents(count)} held"
            if in_flight:
                summary += f", {_intents(in_flight, 'in-flight')} finish normally"
        return _bulk_result(
            conn,
            action=action,
            preview=preview,
            queues=queues,
            summary=summary,
            actor=actor,
            target=scope.target,
            now=now,
            detail={"reason": reason, "in_flight": in_flight, "already": already},
            extra={"in_flight": in_flight, "control": control},
            changed=not already and not preview,
        )


def resume(
    store: Store,
    scope: Scope,
    *,
    actor: str,
    reason: str,
    now: float,
    preview: bool = False,
    action: str = "queues.resume",
) -> dict[str, Any]:
    """Lift the scope's pause or drain: its pending intents are claimable again (when due)."""
    with store.begin() as conn:
        existing = conn.execute(
            sa.select(_Q).where(_Q.c.kind == scope.kind, _Q.c.value == scope.value)
        ).first()
        if existing is None:
            raise QueueControlError(f"{scope.label} is not paused or draining")
        previous = _control_dict(dict(existing._mapping))
        if not preview:
            conn.execute(sa.delete(_Q).where(_Q.c.kind == scope.kind, _Q.c.value == scope.value))
        queues = _count_by_queue(conn, *_pending_in(scope))
        count = _total(queues)
        # Pending intents of the scope that another control still holds.
        if preview:
            still_held = _still_held_after(conn, scope)
        else:
            still_held = int(
                conn.execute(
                    sa.select(sa.func.count()).where(*_pending_in(scope), held())
                ).scalar_one()
            )
        verb = "Resume" if preview else "Resumed"
        summary = f"{verb} {scope.label}: {_intents(count)} released"
        if still_held:
            summary += f" ({still_held:,} still held by other controls)"
        return _bulk_result(
            conn,
            action=action,
            preview=preview,
            queues=queues,
            summary=summary,
            actor=actor,
            target=scope.target,
            now=now,
            detail={"reason": reason, "previous": previous, "still_held": still_held},
            extra={"still_held": still_held, "control": previous},
            changed=not preview,
        )


def _still_held_after(conn: Connection, scope: Scope) -> int:
    """Preview of ``still_held``: the other controls, evaluated without deleting this one."""
    controls = [
        c for c in _controls(conn) if not (c["kind"] == scope.kind and c["value"] == scope.value)
    ]
    if not controls:
        return 0
    conditions: list[sa.ColumnElement[bool]] = []
    for c in controls:
        if c["state"] == PAUSED:
            column = {WORKFLOW: _I.workflow_id, ROUTE: _I.route, DOMAIN: _I.domain}.get(c["kind"])
            conditions.append(sa.true() if column is None else column == c["value"])
        elif c["state"] == DRAINING:
            conditions.append(sa.and_(_I.route == c["value"], _I.decided_at > c["since"]))
    n = conn.execute(
        sa.select(sa.func.count()).where(*_pending_in(scope), sa.or_(*conditions))
    ).scalar_one()
    return int(n)


def drain(
    store: Store,
    route: str,
    *,
    actor: str,
    reason: str,
    now: float,
    routes: Collection[str],
    preview: bool = False,
    action: str = "routes.drain",
) -> dict[str, Any]:
    """Let ``route`` finish what it has now and hold intents decided from now on."""
    scope = Scope(ROUTE, route)
    with store.begin() as conn:
        _check_scope(conn, scope, routes)
        existing = conn.execute(
            sa.select(_Q).where(_Q.c.kind == ROUTE, _Q.c.value == route)
        ).first()
        if existing is not None and existing.state == DRAINING:
            raise QueueControlError(f"route {route} is already draining")
        control = {
            "kind": ROUTE,
            "value": route,
            "state": DRAINING,
            "reason": reason,
            "actor": actor[:200],
            "since": now,
        }
        if not preview:
            conn.execute(store.upsert(_Q, index=["kind", "value"], update=list(control)), control)
        queues = _count_by_queue(conn, *_pending_in(scope), _I.decided_at <= now)
        in_flight = int(
            conn.execute(
                sa.select(sa.func.count()).where(_I.status.in_(IN_FLIGHT), _I.route == route)
            ).scalar_one()
        )
        count = _total(queues)
        verb = "Drain" if preview else "Draining"
        summary = (
            f"{verb} route {route}: {_intents(count)} and {_intents(in_flight, 'in-flight')} "
            "still go out; new intents for it are held"
        )
        if existing is not None:
            summary += " (it was paused: the queued ones go out now)"
        result = {
            "action": action,
            "preview": preview,
            "changed": not preview,
            "count": count,
            "in_flight": in_flight,
            "queues": queues,
            "control": control,
            "summary": summary,
        }
        if not preview:
            result["audit_id"] = _audit(
                conn,
                actor=actor,
                action=action,
                target=scope.target,
                count=count,
                detail={"reason": reason, "in_flight": in_flight, "queues": queues[:50]},
                now=now,
            )
    return result


# -- changes to pending intents ----------------------------------------------------------------


def _touch(
    conn: Connection, where: tuple[Any, ...], values: dict[str, Any], *, preview: bool
) -> list[dict[str, Any]]:
    """Per-queue counts of the pending intents ``where`` selects; unless ``preview``, also
    update them with ``values`` in the same statement (the count is the count changed)."""
    if preview:
        return _count_by_queue(conn, *where)
    rows = conn.execute(
        sa.update(schema.intents).where(*where).values(**values).returning(_I.workflow_id, _I.route)
    ).all()
    return _by_queue(rows)


def _bulk_result(
    conn: Connection,
    *,
    action: str,
    preview: bool,
    queues: list[dict[str, Any]],
    summary: str,
    actor: str,
    target: str,
    now: float,
    detail: dict[str, Any],
    extra: dict[str, Any] | None = None,
    changed: bool | None = None,
) -> dict[str, Any]:
    """The reply of a queue verb, and (unless a preview) its audit row in the same transaction.
    ``changed`` defaults to "not a preview and something was touched"."""
    count = _total(queues)
    result: dict[str, Any] = {
        "action": action,
        "preview": preview,
        "changed": (not preview and count > 0) if changed is None else changed,
        "count": count,
        "queues": queues,
        **(extra or {}),
        "summary": summary,
    }
    if not preview:
        result["audit_id"] = _audit(
            conn,
            actor=actor,
            action=action,
            target=target,
            count=count,
            detail={**detail, "queues": queues[:50]},
            now=now,
        )
    return result


def reroute(
    store: Store,
    *,
    from_route: str,
    to_route: str,
    selection: Selection,
    actor: str,
    reason: str,
    now: float,
    routes: Collection[str],
    preview: bool = False,
) -> dict[str, Any]:
    """Move pending intents (never in-flight ones) of ``from_route`` (a slice of it) to
    ``to_route``. They keep their ids (so their Message-IDs), attempts and due times."""
    if from_route == to_route:
        raise QueueControlError(f"the intents are already on route {to_route}")
    if to_route not in routes:
        raise QueueControlError(_unknown_route(to_route, routes))
    selection = Selection(workflow=selection.workflow, route=from_route, domain=selection.domain)
    with store.begin() as conn:
        if from_route not in routes and not _route_in_use(conn, from_route):
            raise QueueControlError(_unknown_route(from_route, routes))
        if selection.workflow is not None and not _known_workflow(conn, selection.workflow):
            raise QueueControlError(f"there is no workflow {selection.workflow!r}")
        target = conn.execute(
            sa.select(_Q.c.state).where(_Q.c.kind == ROUTE, _Q.c.value == to_route)
        ).first()
        if target is not None and target.state == DRAINING:
            # Moved intents are older than the drain, so the drain would send them: refuse
            # rather than let a draining route take on new work.
            raise QueueControlError(f"route {to_route} is draining; resume it first")
        where = (_I.status.in_(PENDING), *selection.where())
        # Counted by the queues they leave (RETURNING would give the new route).
        queues = [
            {**q, "route": from_route}
            for q in _touch(conn, where, {"route": to_route}, preview=preview)
        ]
        count = _total(queues)
        slice_label = Selection(workflow=selection.workflow, domain=selection.domain).label
        of = "" if slice_label == "all queues" else f" ({slice_label})"
        verb = "Reroute" if preview else "Rerouted"
        summary = f"{verb} {_intents(count)} from {from_route} to {to_route}{of}"
        if target is not None:
            summary += f"; route {to_route} is paused, they wait there"
        return _bulk_result(
            conn,
            action="queues.reroute",
            preview=preview,
            queues=queues,
            summary=summary,
            actor=actor,
            target=f"{from_route}->{to_route} {selection.target}",
            now=now,
            detail={
                "reason": reason,
                "from_route": from_route,
                "to_route": to_route,
                "selection": selection.to_dict(),
            },
            extra={"from_route": from_route, "to_route": to_route},
        )


def retry_now(
    store: Store,
    selection: Selection,
    *,
    actor: str,
    reason: str,
    now: float,
    preview: bool = False,
) -> dict[str, Any]:
    """Make deferred intents due now: same intent (so the same Message-ID), same attempts."""
    where = (_I.status == DEFERRED, _I.next_attempt_at > now, *selection.where())
    with store.begin() as conn:
        queues = _touch(conn, where, {"next_attempt_at": now}, preview=preview)
        verb = "Retry" if preview else "Retrying"
        return _bulk_result(
            conn,
            action="queues.retry_now",
            preview=preview,
            queues=queues,
            summary=f"{verb} {_intents(_total(queues), 'deferred')} now ({selection.label})",
            actor=actor,
            target=selection.target,
            now=now,
            detail={"reason": reason, "selection": selection.to_dict()},
        )


def cancel(
    store: Store,
    selection: Selection,
    *,
    actor: str,
    reason: str,
    now: float,
    preview: bool = False,
) -> dict[str, Any]:
    """End pending intents with the outcome ``cancelled`` (in-flight ones are not touched)."""
    if not reason.strip():
        raise QueueControlError("a reason is required to cancel intents")
    where = (_I.status.in_(PENDING), *selection.where())
    reply = f"cancelled by {actor}: {reason}"[:4000]
    values = {
        "status": CANCELLED,
        "reply": reply,
        "finished_at": now,
        "claimed_by": None,
        "lease_until": None,
    }
    with store.begin() as conn:
        queues = _touch(conn, where, values, preview=preview)
        verb = "Cancel" if preview else "Cancelled"
        return _bulk_result(
            conn,
            action="queues.cancel",
            preview=preview,
            queues=queues,
            summary=f"{verb} {_intents(_total(queues), 'pending')} ({selection.label}): {reason}",
            actor=actor,
            target=selection.target,
            now=now,
            detail={"reason": reason, "selection": selection.to_dict()},
            extra={"reason": reason},
        )
