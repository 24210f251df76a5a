"""Why a contact did not get a workflow's email: the first reason, in words.

The checks follow the path an email takes, and the first that stops it is the answer:

1. the trigger: no event of its name (the nearest event the contact did have is named), or
   none meeting its ``where`` conditions (the first condition that fails is named), or for a
   ``segment_entered`` trigger, never entering the segment;
2. a matching event that started nothing: it came before the workflow existed, the workflow is
   disabled, or the re-entry rule held it back (``once``, ``after 1d`` and when);
3. the enrollment it started: still waiting (until when, for what), exited (goal reached =
   converted, an exit step), completed without reaching a send (the branch that took it away),
   or reached a send with no email address;
4. the email: queued and not sent yet, deferred (the relay's reply, the next attempt),
   suppressed (the suppression list, an unsubscribe from marketing mail, withdrawn consent:
   the workflow's category decides which apply), bounced, expired, failed.

``got`` is true when an email of the workflow was sent (the answer says when, with the relay's
reply). ``also`` lists what would still stop a send even once the first reason is gone.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from engine.contact_story import (
    GOAL_PREFIX,
    PENDING_STATUSES,
    blockers,
    enrollments,
    suppression_of,
    when,
)
from engine.decide.conditions import Facts
from engine.decide.durations import format_duration
from engine.decide.profiles import RecentActivity
from engine.decide.workflow import Workflow
from engine.store import schema

ACTIVITY_SCANNED = 5_000


@dataclass(frozen=True, slots=True)
class Answer:
    reason: str  # a short code: sent, no_trigger_event, trigger_conditions, reentry, ...
    answer: str  # the sentence
    at: float | None = None  # the moment it is about, when there is one

    def as_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "answer": self.answer, "at": self.at}


def why_not(
    conn: sa.Connection,
    contact: Any,
    wf: Workflow,
    workflows: Mapping[str, Workflow],
    now: float,
) -> dict[str, Any]:
    """The answer for ``contact`` (a contacts row) and ``wf`` (the newest version)."""
    a, w = schema.activity, schema.workflows
    events = conn.execute(
        sa.select(a.c.message_id, a.c.name, a.c.ts, a.c.properties)
        .where(a.c.contact_id == contact.id)
        .order_by(a.c.ts.desc(), a.c.id.desc())
        .limit(ACTIVITY_SCANNED)
    ).all()
    events = list(reversed(events))
    created = conn.execute(sa.select(sa.func.min(w.c.created_at)).where(w.c.id == wf.id)).scalar()
    stories = enrollments(conn, contact.id, workflows, 50, workflow_id=wf.id)
    suppression = suppression_of(conn, contact.email)
    found = _first_reason(conn, contact, wf, events, created, stories, now)
    also = [] if found.reason == "sent" else blockers(contact, suppression, wf.category)
    return {
        "contact": contact.id,
        "workflow": wf.id,
        "name": wf.name,
        "category": wf.category,
        "got": found.reason == "sent",
        **found.as_dict(),
        "also": also,
        "enrollments": len(stories),
    }


def _first_reason(
    conn: sa.Connection,
    contact: Any,
    wf: Workflow,
    events: list[Any],
    created: float | None,
    stories: list[dict[str, Any]],
    now: float,
) -> Answer:
    sent = [(x, story) for story in stories for x in story["intents"] if x["status"] == "sent"]
    if sent:
        latest, _story = max(sent, key=lambda p: p[0]["accepted_at"] or p[0]["decided_at"])
        return Answer(
            "sent",
            f"{contact.id} got {wf.name}: {latest['template']} was sent to {latest['to']} at"
            f" {when(latest['accepted_at'])} (the relay replied {latest['reply']}).",
            latest["accepted_at"],
        )
    if wf.trigger.segment is not None:
        trigger_answer = _segment_trigger(conn, contact, wf, stories)
        if trigger_answer is not None:
            return trigger_answer
        matching: list[Any] = []
    elif wf.trigger.catalog is not None:
        if not stories:
            return _no_catalog_alert(contact, wf)
        matching = []
    else:
        names = wf.trigger.events
        named = [e for e in events if e.name in names]
        if not named:
            return _no_trigger_event(contact, wf, events)
        matching = [e for e in named if _trigger_holds(wf, e, events, contact)]
        if not matching:
            return _trigger_conditions(wf, named[-1], events, contact)
    started = {s["trigger"]["message_id"] for s in stories}
    newest_story = stories[0] if stories else None
    since = newest_story["trigger"]["ts"] if newest_story else None
    unstarted = [
        e for e in matching if e.message_id not in started and (since is None or e.ts > since)
    ]
    if unstarted:
        answer = _not_started(wf, unstarted[-1], created, newest_story)
        if answer is not None:
            return answer
    if newest_story is not None:
        return _story_reason(contact, wf, newest_story, now)
    last = matching[-1] if matching else None
    what = f"{last.name} at {when(last.ts)}" if last is not None else "the trigger"
    return Answer(
        "unexplained",
        f"{what} meets the trigger with today's data, but no enrollment started; the contact's"
        " traits or activity may have been different when it was decided.",
        last.ts if last is not None else None,
    )


def _segment_trigger(
    conn: sa.Connection, contact: Any, wf: Workflow, stories: list[dict[str, Any]]
) -> Answer | None:
    sid = wf.trigger.segment
    if stories:
        return None
    h = schema.segment_history
    entered = conn.execute(
        sa.select(sa.func.max(h.c.at)).where(
            h.c.contact_id == contact.id, h.c.segment_id == sid, h.c.kind == "entered"
        )
    ).scalar()
    if entered is None:
        return Answer(
            "no_trigger_event",
            f"trigger never matched: {wf.name} starts when a contact enters segment {sid},"
            f" and {contact.id} never entered it.",
        )
    return Answer(
        "trigger_conditions",
        f"{contact.id} entered segment {sid} at {when(entered)}, but no enrollment started"
        f" (the trigger's conditions, or the re-entry rule '{wf.reentry.describe()}').",
        float(entered),
    )


def _no_catalog_alert(contact: Any, wf: Workflow) -> Answer:
    catalog = wf.trigger.catalog
    assert catalog is not None
    change = (
        f"a price drop of at least {catalog.min_drop_percent:g}%"
        if catalog.kind == "price_drop"
        else "a product coming back in stock"
    )
    return Answer(
        "no_trigger_event",
        f"trigger never matched: {wf.name} starts from the catalog, on {change}, for the"
        f" contacts who looked at that product within {catalog.lookback / 86400:g} days;"
        f" no such alert reached {contact.id}.",
    )


def _no_trigger_event(contact: Any, wf: Workflow, events: list[Any]) -> Answer:
    names = " or ".join(f"`{n}`" for n in wf.trigger.events)
    base = f"trigger never matched: no {names} event was recorded for {contact.id}"
    if not events:
        return Answer("no_trigger_event", f"{base}; the contact has no events at all.")
    seen = sorted({e.name for e in events})
    close = difflib.get_close_matches(wf.trigger.events[0], seen, n=1, cutoff=0.3)
    nearest = next(e for e in reversed(events) if e.name == close[0]) if close else events[-1]
    return Answer(
        "no_trigger_event",
        f"{base}. Nearest: `{nearest.name}` at {when(nearest.ts)}.",
        nearest.ts,
    )


def _facts(event: Any, events: list[Any], contact: Any) -> Facts:
    recent = RecentActivity([(e.name, e.ts, e.properties or {}) for e in events])
    before = [e.ts for e in events if e.ts < event.ts]
    return Facts(
        dict(contact.traits or {}),
        event.properties or {},
        event.ts,
        max(before) if before else None,
        recent,
    )


def _trigger_holds(wf: Workflow, event: Any, events: list[Any], contact: Any) -> bool:
    facts = _facts(event, events, contact)
    return all(c.holds(facts) for c in wf.trigger.where)


def _trigger_conditions(wf: Workflow, event: Any, events: list[Any], contact: Any) -> Answer:
    facts = _facts(event, events, contact)
    failing = next((c for c in wf.trigger.where if not c.holds(facts)), None)
    what = failing.describe() if failing is not None else "a condition"
    return Answer(
        "trigger_conditions",
        f"trigger never matched: `{event.name}` at {when(event.ts)} did not meet the"
        f" trigger's condition {what} (as the contact's data reads now).",
        event.ts,
    )


def _not_started(
    wf: Workflow, event: Any, created: float | None, previous: dict[str, Any] | None
) -> Answer | None:
    """Why a matching event started no enrollment, when the reason is visible now."""
    label = f"`{event.name}` at {when(event.ts)}"
    if created is not None and event.ts < created and previous is None:
        return Answer(
            "before_workflow",
            f"{label} came before {wf.name} existed (its first version was stored at"
            f" {when(created)}); events are not replayed into new workflows.",
            event.ts,
        )
    if not wf.enabled:
        return Answer(
            "disabled",
            f"{wf.name} is disabled: it starts no new enrollments ({label} started none).",
            event.ts,
        )
    if previous is None:
        return None
    mode = wf.reentry.mode
    entered = previous["entered_at"]
    if mode == "once":
        return Answer(
            "reentry",
            f"re-entry rule 'once': {label} started nothing because the contact already went"
            f" through {wf.name} (entered at {when(entered)}).",
            event.ts,
        )
    if mode == "after":
        gap = event.ts - entered
        if previous["state"] in ("active", "waiting") or gap < wf.reentry.after_s:
            return Answer(
                "reentry",
                f"re-entry rule 'after {format_duration(wf.reentry.after_s)}': {label} came"
                f" {format_duration(max(gap, 0))} after the previous entry (at {when(entered)}),"
                " so it started nothing.",
                event.ts,
            )
    return None


def _story_reason(contact: Any, wf: Workflow, story: dict[str, Any], now: float) -> Answer:
    """The reason inside the latest enrollment."""
    intents = story["intents"]
    entered = f"entered at {when(story['entered_at'])}"
    if intents:
        x = intents[-1]
        status = x["status"]
        if status in PENDING_STATUSES:
            return Answer(
                "queued",
                f"{x['template']} was queued at {when(x['decided_at'])} and is {status}, not"
                f" sent yet (attempts {x['attempts']}).",
                x["decided_at"],
            )
        if status == "deferred":
            return Answer(
                "deferred",
                f"{x['template']} was deferred: {x['reply'] or 'no reply'}; it will be tried"
                " again.",
                x["finished_at"],
            )
        extra = ""
        if status == "suppressed":
            extra = (
                f" ({wf.name} is {wf.category} mail"
                + ("; transactional mail would still go" if wf.category == "marketing" else "")
                + ")"
            )
        return Answer(
            status,
            f"{x['template']} was {status}: {x['reply'] or status}{extra}.",
            x["finished_at"],
        )
    decisions = story["decisions"]
    if any(d["kind"] == "no_email" for d in decisions):
        d = next(d for d in decisions if d["kind"] == "no_email")
        return Answer(
            "no_email",
            f"no email address: the enrollment ({entered}) reached step {d['step']!r} at"
            f" {when(d['ts'])} and nothing could be sent.",
            d["ts"],
        )
    if story["state"] == "waiting":
        until = story["waiting_until"]
        awaited = f" for {story['waiting_for']}" if story["waiting_for"] else ""
        return Answer(
            "waiting",
            f"still waiting{awaited} at step {story['step']!r} until {when(until)}"
            f" ({entered}); the email has not been decided yet.",
            until,
        )
    if story["state"] == "exited":
        reason = story["exit_reason"] or "an exit"
        if reason.startswith(GOAL_PREFIX):
            return Answer(
                "converted",
                f"converted before the email: {reason} ({entered}, exited at"
                f" {when(story['updated_at'])}).",
                story["updated_at"],
            )
        return Answer(
            "exited",
            f"exited before the email: {reason} ({entered}).",
            story["updated_at"],
        )
    branches = [d for d in decisions if d["kind"] == "branch"]
    taken = f"; the branch {branches[-1]['detail']}" if branches else ""
    return Answer(
        "no_send",
        f"the enrollment ({entered}) {story['state']} without reaching a send step{taken}.",
        story["updated_at"],
    )
