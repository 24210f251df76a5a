"""Conversions: a workflow's goal reached after its mail, recorded in the decide transaction.

For each event of a batch that is some workflow's goal (event name and ``where`` conditions),
the conversion goes to the last mail of that workflow the contact got (an intent ``sent``)
within the goal's ``attribution_window`` before the event; revenue is the event's
``[goal] revenue`` property, else its ``revenue``, ``total`` or ``value``. Independently, the
contact's latest exposure to each of the workflow's experiments within the window is marked
converted (once), holdout included: that is what the experiment results count.

A goal event without a mail (or exposure) in the window converts nothing. A replayed event is
never decided twice (``processed_events``), and ``(workflow_id, event_id)`` is unique anyway.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from engine.decide import lite
from engine.decide.conditions import ActivityLookup, Facts, all_hold
from engine.decide.workflow import Workflow
from engine.events import Event
from engine.experiments.exposures import insert_ignore
from engine.ids import new_id
from engine.store import schema

REVENUE_PROPERTIES = ("revenue", "total", "value")


@dataclass(frozen=True, slots=True)
class Converted:
    """One conversion recorded, for telemetry."""

    workflow_id: str
    after_send_s: float
    revenue: float | None


def revenue_of(wf: Workflow, properties: Mapping[str, Any]) -> float | None:
    """The amount the goal event carries, if any (a number, not text)."""
    names = (wf.revenue_property,) if wf.revenue_property else REVENUE_PROPERTIES
    for name in names:
        value = properties.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def goal_workflows(workflows: Iterable[Workflow], event: Event) -> list[Workflow]:
    """The workflows (newest versions) whose goal names this event."""
    return [wf for wf in workflows if wf.goal is not None and event.activity_name in wf.goal.events]


def record_conversions(
    conn: Connection,
    newest: Mapping[str, Workflow],
    events: Sequence[Event],
    traits: Mapping[str, Mapping[str, Any]],
    activity: Mapping[str, ActivityLookup],
) -> list[Converted]:
    """Attribute this batch's goal events; ``traits`` and ``activity`` are per contact id."""
    candidates: list[tuple[Event, Workflow]] = []
    for event in events:
        who = event.contact_key
        for wf in goal_workflows(newest.values(), event):
            assert wf.goal is not None
            facts = Facts(
                traits.get(who, {}), event.properties, event.timestamp, None, activity[who]
            )
            if all_hold(wf.goal.where, facts):
                candidates.append((event, wf))
    if not candidates:
        return []
    contacts = sorted({e.contact_key for e, _ in candidates})
    wf_ids = sorted({wf.id for _, wf in candidates})
    since = min(e.timestamp - wf.attribution_window for e, wf in candidates)
    sends = _sent_mails(conn, contacts, wf_ids, since)
    exposures = _open_exposures(conn, contacts, wf_ids, since)
    rows: list[dict[str, Any]] = []
    marks: list[dict[str, Any]] = []
    done: list[Converted] = []
    for event, wf in candidates:
        start, end = event.timestamp - wf.attribution_window, event.timestamp
        revenue = revenue_of(wf, event.properties)
        mail = _latest(sends.get((event.contact_key, wf.id), []), start, end, "sent_at")
        if mail is not None:
            rows.append(
                {
                    "id": new_id(),
                    "workflow_id": wf.id,
                    "step_id": mail["step_id"],
                    "intent_id": mail["id"],
                    "contact_id": event.contact_key,
                    "event_id": event.message_id,
                    "event_name": event.activity_name,
                    "trigger_name": mail["trigger_name"],
                    "triggered_at": mail["received_at"],
                    "sent_at": mail["sent_at"],
                    "converted_at": event.timestamp,
                    "revenue": revenue,
                }
            )
            done.append(Converted(wf.id, max(0.0, event.timestamp - mail["sent_at"]), revenue))
        by_experiment: dict[str, list[dict[str, Any]]] = {}
        for exp in exposures.get((event.contact_key, wf.id), []):
            by_experiment.setdefault(exp["experiment_id"], []).append(exp)
        for found in by_experiment.values():
            latest = _latest(found, start, end, "exposed_at")
            if latest is not None and latest["converted_at"] is None:
                latest["converted_at"] = event.timestamp  # once, even twice in one batch
                marks.append(
                    {
                        "b_id": latest["id"],
                        "converted_at": event.timestamp,
                        "conversion_event_id": event.message_id,
                        "revenue": revenue,
                    }
                )
    if rows:
        conn.execute(insert_ignore(conn, schema.conversions, ["workflow_id", "event_id"]), rows)
    if marks:
        t = schema.experiment_exposures
        conn.execute(
            sa.update(t)
            .where(t.c.id == sa.bindparam("b_id"), t.c.converted_at.is_(None))
            .values(
                converted_at=sa.bindparam("converted_at"),
                conversion_event_id=sa.bindparam("conversion_event_id"),
                revenue=sa.bindparam("revenue"),
            ),
            marks,
        )
    return done


def _latest(
    items: list[dict[str, Any]], start: float, end: float, key: str
) -> dict[str, Any] | None:
    inside = [item for item in items if start <= item[key] <= end]
    return max(inside, key=lambda item: item[key], default=None)


def _lite_since(
    conn: Connection,
    select: str,
    contacts: list[str],
    workflows: tuple[str, list[str]],
    since_sql: str,
    since: float,
) -> list[tuple[Any, ...]]:
    """``select`` WHERE the contact is one of ``contacts``, the workflow expression one of
    its ids, and ``since_sql``, on SQLite's raw cursor (IN lists padded, see engine.decide.lite):
    every batch of orders is a batch of goal events, and Core's IN-list handling of a hundred
    contacts cost more than SQLite answering."""
    who, contact_values = lite.in_list(contacts)
    which, workflow_values = lite.in_list(workflows[1])
    return lite.run(
        conn,
        f"{select} WHERE contact_id IN ({who}) AND {workflows[0]} IN ({which}) AND {since_sql}",
        [*contact_values, *workflow_values, since],
    )


def _sent_mails(
    conn: Connection, contacts: list[str], wf_ids: list[str], since: float
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    rows: Iterable[Sequence[Any]]
    if conn.dialect.name == "sqlite":
        # "|| ''" keeps SQLite's planner on the contact index: by (workflow, status) or by
        # status it read every mail ever sent, for each batch of goal events.
        found = _lite_since(
            conn,
            "SELECT id, workflow_id, step_id, contact_id, context, received_at, finished_at "
            "FROM intents",
            contacts,
            ("workflow_id || ''", wf_ids),
            "status || '' = 'sent' AND finished_at >= ?",
            since,
        )
        rows = [(*r[:4], lite.loads(r[4]), *r[5:]) for r in found]
    else:
        i = schema.intents
        rows = conn.execute(
            sa.select(
                i.c.id, i.c.workflow_id, i.c.step_id, i.c.contact_id, i.c.context,
                i.c.received_at, i.c.finished_at,
            ).where(
                i.c.contact_id.in_(contacts),
                i.c.workflow_id.op("||")("").in_(wf_ids),
                i.c.status.op("||")("") == "sent",
                i.c.finished_at >= since,
            )
        )  # fmt: skip
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for intent_id, workflow_id, step_id, contact_id, context, received_at, finished_at in rows:
        event = context.get("event") if isinstance(context, dict) else None
        name = event.get("name") if isinstance(event, dict) else None
        out.setdefault((contact_id, workflow_id), []).append(
            {
                "id": intent_id,
                "step_id": step_id,
                "trigger_name": str(name or "")[:200],
                "received_at": received_at,
                "sent_at": finished_at,
            }
        )
    return out


def _open_exposures(
    conn: Connection, contacts: list[str], wf_ids: list[str], since: float
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    columns = ("id", "experiment_id", "workflow_id", "contact_id", "exposed_at", "converted_at")
    rows: Iterable[Sequence[Any]]
    if conn.dialect.name == "sqlite":
        rows = _lite_since(
            conn,
            f"SELECT {', '.join(columns)} FROM experiment_exposures",
            contacts,
            ("workflow_id", wf_ids),
            "exposed_at >= ?",
            since,
        )
    else:
        t = schema.experiment_exposures
        rows = conn.execute(
            sa.select(*(t.c[name] for name in columns)).where(
                t.c.contact_id.in_(contacts),
                t.c.workflow_id.in_(wf_ids),
                t.c.exposed_at >= since,
            )
        )
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        found = dict(zip(columns, row, strict=True))
        out.setdefault((found["contact_id"], found["workflow_id"]), []).append(found)
    return out
