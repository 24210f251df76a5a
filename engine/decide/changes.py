"""Enrollments in memory, and the unit of work one decide or timer transaction writes.

Decisions are taken in memory against rows loaded once per batch; ``Changes`` collects what
they produce (enrollments, intents, timers, the enrollment log) and ``write`` stores it all
with a handful of ``executemany`` statements inside the caller's transaction.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import Connection

from engine.decide import lite
from engine.pacing.caps import Capped, enforce_caps
from engine.pacing.policy import Pacing
from engine.store import schema

if TYPE_CHECKING:
    from engine.decide.sql import DecideSql
    from engine.offers.model import Offer

LIVE_STATES = ("active", "waiting")
_ENROLLMENT_KEY = ("workflow_id", "contact_id", "trigger_event_id")


@dataclass(slots=True)
class Enrollment:
    """A contact's journey through one workflow version, started by one trigger event."""

    id: str
    workflow_id: str
    workflow_version: int
    contact_id: str
    trigger_event_id: str
    trigger: dict[str, Any]  # name, properties, ts, received_at, previous_seen
    step_id: str | None
    state: str  # active | waiting | completed | exited
    waiting_for: dict[str, Any] | None
    exit_reason: str | None
    entered_at: float
    updated_at: float
    stored: bool = False

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES

    @classmethod
    def from_row(cls, row: sa.Row[Any]) -> Enrollment:
        return cls(
            id=row.id,
            workflow_id=row.workflow_id,
            workflow_version=row.workflow_version,
            contact_id=row.contact_id,
            trigger_event_id=row.trigger_event_id,
            trigger=dict(row.trigger),
            step_id=row.step_id,
            state=row.state,
            waiting_for=row.waiting_for,
            exit_reason=row.exit_reason,
            entered_at=row.entered_at,
            updated_at=row.updated_at,
            stored=True,
        )

    @classmethod
    def from_values(cls, v: tuple[Any, ...]) -> Enrollment:
        """From a row of ``lite.enrollments`` (JSON columns still encoded)."""
        return cls(
            v[0], v[1], v[2], v[3], v[4], dict(lite.loads(v[5])), v[6], v[7],
            lite.loads(v[8]), v[9], v[10], v[11], stored=True,
        )  # fmt: skip

    def row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "workflow_id": self.workflow_id,
            "workflow_version": self.workflow_version,
            "contact_id": self.contact_id,
            "trigger_event_id": self.trigger_event_id,
            "trigger": self.trigger,
            "step_id": self.step_id,
            "state": self.state,
            "waiting_for": self.waiting_for,
            "exit_reason": self.exit_reason,
            "entered_at": self.entered_at,
            "updated_at": self.updated_at,
        }


@dataclass
class Changes:
    """What one transaction writes."""

    enrollments: dict[str, Enrollment] = field(default_factory=dict)  # new or changed
    intents: list[dict[str, Any]] = field(default_factory=list)
    timers: list[dict[str, Any]] = field(default_factory=list)
    cancelled: set[str] = field(default_factory=set)  # enrollments whose stored timers end
    log: list[dict[str, Any]] = field(default_factory=list)
    pacing: Pacing = field(default_factory=Pacing)  # caps and quiet hours for new intents
    capped: list[Capped] = field(default_factory=list)  # filled by ``write``
    exposures: list[dict[str, Any]] = field(default_factory=list)  # experiment arms given
    # Sends that carry an offer: their codes are issued in ``write`` (engine.offers.issue).
    offer_requests: list[tuple[dict[str, Any], Offer]] = field(default_factory=list)

    def touch(self, enrollment: Enrollment, now: float) -> None:
        enrollment.updated_at = now
        self.enrollments[enrollment.id] = enrollment

    def note(self, enrollment: Enrollment, now: float, kind: str, detail: str) -> None:
        """One line of the enrollment's "why" trace."""
        self.log.append(
            {
                "enrollment_id": enrollment.id,
                "ts": now,
                "step_id": enrollment.step_id,
                "kind": kind,
                "detail": detail,
            }
        )

    def cancel_timers(self, enrollment: Enrollment) -> None:
        """End the enrollment's pending timers: stored ones, and any added in this batch."""
        self.timers = [t for t in self.timers if t["enrollment_id"] != enrollment.id]
        if enrollment.stored:
            self.cancelled.add(enrollment.id)

    @property
    def next_timer_at(self) -> float | None:
        return min((t["fire_at"] for t in self.timers), default=None)

    def write(self, conn: Connection, sql: DecideSql) -> tuple[list[str], Counter[str]]:
        """Store everything; returns the new intent ids and new intents per workflow.

        Intents are inserted ignoring an existing ``dedup_key``, so a decision taken twice never
        makes a second send; only the rows really inserted and queued are returned (one the
        frequency cap dropped is stored as ``suppressed``; ``capped`` lists those and the ones
        it pre-empted).
        """
        if self.cancelled and sql.lite:
            lite.cancel_timers(conn, sorted(self.cancelled))
        elif self.cancelled:
            rows = [{"b_enrollment": eid} for eid in sorted(self.cancelled)]
            conn.execute(sql.cancel_timers, rows)
        self._write_enrollments(conn, sql)
        if self.timers:
            conn.execute(sql.insert_timers, self.timers)
        ids: list[str] = []
        per_workflow: Counter[str] = Counter()
        if self.offer_requests:
            from engine.offers.issue import issue_or_drop

            issue_or_drop(conn, self)
        if self.intents:
            now = max(float(i["decided_at"]) for i in self.intents)
            self.capped = enforce_caps(conn, self.pacing, self.intents, now)
            for capped in self.capped:
                if capped.enrollment_id is not None:
                    self.log.append(
                        {
                            "enrollment_id": capped.enrollment_id,
                            "ts": now,
                            "step_id": capped.step_id,
                            "kind": "capped",
                            "detail": f"intent {capped.intent_id}: {capped.reason}",
                        }
                    )
            if sql.lite:
                found = lite.insert(
                    conn,
                    schema.intents,
                    self.intents,
                    conflict=["dedup_key"],
                    returning=["id", "workflow_id", "status"],
                )
            else:
                found = [tuple(row) for row in conn.execute(sql.insert_intents, self.intents)]
            for intent_id, workflow_id, status in found:
                if status == "queued":
                    ids.append(intent_id)
                per_workflow[workflow_id] += 1
        if self.exposures:
            from engine.experiments.exposures import write_exposures

            write_exposures(conn, self.exposures)
        if self.log:
            if sql.lite:
                lite.insert(conn, schema.enrollment_log, self.log)
            else:
                conn.execute(sql.insert_log, self.log)
        return ids, per_workflow

    def _write_enrollments(self, conn: Connection, sql: DecideSql) -> None:
        for waiting in (True, False):
            group = [e for e in self.enrollments.values() if (e.waiting_for is not None) == waiting]
            new = [_new_row(e, waiting) for e in group if not e.stored]
            changed = [_changed_row(e, waiting) for e in group if e.stored]
            if sql.lite:
                # waiting_for of an enrollment not waiting: None, stored as SQL NULL.
                rows = [e.row() for e in group if not e.stored]
                lite.insert(conn, schema.enrollments, rows, conflict=_ENROLLMENT_KEY)
                if changed:
                    lite.update_enrollments(conn, changed, waiting)
                continue
            if new:
                conn.execute(
                    sql.insert_enrollment if waiting else sql.insert_enrollment_not_waiting, new
                )
            if changed:
                conn.execute(
                    sql.update_enrollment if waiting else sql.update_enrollment_not_waiting, changed
                )


def _new_row(enrollment: Enrollment, waiting: bool) -> dict[str, Any]:
    row = enrollment.row()
    if not waiting:
        del row["waiting_for"]
    return row


def _changed_row(enrollment: Enrollment, waiting: bool) -> dict[str, Any]:
    row: dict[str, Any] = {
        "b_id": enrollment.id,
        "step_id": enrollment.step_id,
        "state": enrollment.state,
        "exit_reason": enrollment.exit_reason,
        "updated_at": enrollment.updated_at,
    }
    if waiting:
        row["waiting_for"] = enrollment.waiting_for
    return row
