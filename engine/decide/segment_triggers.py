"""Workflows started by a contact entering a segment (``[trigger] segment_entered = "vip"``).

An entry is turned into a synthetic ``Segment Entered`` event (properties ``segment_id``) with a
message id derived from the segment, the contact and the moment of entry, so the enrollment's
dedup key (workflow, step, contact, trigger event) is stable if the same transaction is ever
replayed, while entering again later starts a new enrollment (subject to ``reentry``).
Enrollments start in the transaction that records the entry: the decide batch, or the timer
service when time alone made the contact enter.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from engine.decide.changes import Enrollment
from engine.decide.conditions import Facts, all_hold
from engine.decide.machine import Moment, StepMachine, Subject
from engine.decide.profiles import Contact, RecentActivity
from engine.decide.registry import WorkflowIndex
from engine.decide.workflow import Workflow
from engine.events import Event

if TYPE_CHECKING:
    from engine.segments.membership import MembershipChange

SEGMENT_ENTERED = "Segment Entered"

MayEnter = Callable[[Workflow, str, float], bool]


def entry_event(change: MembershipChange) -> Event:
    """The synthetic event an entry triggers workflows with."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{change.segment_id}\x1f{change.contact_id}\x1f{change.at!r}".encode())
    return Event(
        message_id=f"segment-entered-{digest.hexdigest()}",
        type="track",
        user_id=change.contact_id,
        anonymous_id=None,
        name=SEGMENT_ENTERED,
        properties={"segment_id": change.segment_id},
        timestamp=change.at,
        received_at=change.at,
    )


def triggered_entries(
    index: WorkflowIndex, changes: Sequence[MembershipChange]
) -> list[MembershipChange]:
    """The entries some enabled workflow is triggered by."""
    return [c for c in changes if c.kind == "entered" and index.segment_triggers.get(c.segment_id)]


def limited_workflows(index: WorkflowIndex, entries: Sequence[MembershipChange]) -> set[str]:
    """Workflows these entries trigger whose reentry rule needs the contact's history."""
    return {
        wf.id
        for c in entries
        for wf in index.segment_triggers.get(c.segment_id, ())
        if wf.reentry.mode != "always"
    }


def enroll_entries(
    index: WorkflowIndex,
    machine: StepMachine,
    entries: Sequence[MembershipChange],
    contacts: Mapping[str, Contact],
    activity: Mapping[str, RecentActivity],
    may_enter: MayEnter,
    now: float,
) -> tuple[list[Enrollment], list[str]]:
    """Start the workflows triggered by these entries; returns the new enrollments and the ids
    of workflows skipped by their reentry rule (one per skip)."""
    started: list[Enrollment] = []
    skipped: list[str] = []
    for change in entries:
        contact = contacts.get(change.contact_id)
        if contact is None:
            continue
        event = entry_event(change)
        who = Subject(contact, activity.get(contact.id) or RecentActivity())
        for wf in index.segment_triggers.get(change.segment_id, ()):
            facts = Facts(contact.traits, event.properties, now, None, who.activity)
            if not all_hold(wf.trigger.where, facts):
                continue
            if not may_enter(wf, contact.id, now):
                skipped.append(wf.id)
                continue
            at = Moment(now=now, at=now, due_at=change.at)
            started.append(machine.enter(wf, event, who, None, at))
    return started, skipped
