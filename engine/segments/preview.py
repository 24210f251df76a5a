"""Evaluating a draft segment over the stored contacts without saving it (the builder's live
count).

The draft is parsed and checked like a save (positioned errors, unknown segments it refers to),
then evaluated with the same ``holds`` the decide stage uses, a page of contacts at a time in
id order, at one moment ``now``. It is bounded: at most ``max_contacts`` contacts and about
``budget_s`` seconds; the reply says whether every contact was looked at and, if not, why it
stopped, so a count over part of a large store is never mistaken for the whole.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from engine.segments.evaluate import holds
from engine.segments.membership import SegmentIndex, load_profiles
from engine.segments.model import Condition, SegmentInvalid, event_windows, referenced_segments
from engine.segments.text import format_condition, parse_condition
from engine.store import Store, schema

PAGE = 500
MAX_CONTACTS = 50_000
BUDGET_S = 3.0
SAMPLE = 10


@dataclass
class DraftCount:
    """What a draft would hold now."""

    text: str  # canonical
    members: int = 0
    scanned: int = 0
    total: int = 0
    complete: bool = True
    stopped: str | None = None  # why it stopped early, in words
    sample: list[dict[str, Any]] = field(default_factory=list)
    at: float = 0.0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "members": self.members,
            "scanned": self.scanned,
            "total": self.total,
            "complete": self.complete,
            "stopped": self.stopped,
            "sample": self.sample,
            "at": self.at,
            "seconds": round(self.seconds, 3),
        }


def parse_draft(text: str, index: SegmentIndex) -> Condition:
    """The draft's tree; ``SegmentInvalid`` (positioned) if malformed or it names an unknown
    segment."""
    condition = parse_condition(text)
    unknown = sorted(referenced_segments(condition) - set(index.segments))
    if unknown:
        names = ", ".join(sorted(index.segments)) or "none yet"
        raise SegmentInvalid(f"there is no segment {unknown[0]!r} to refer to (segments: {names})")
    return condition


def count_draft(
    store: Store,
    index: SegmentIndex,
    condition: Condition,
    now: float,
    *,
    max_contacts: int = MAX_CONTACTS,
    budget_s: float = BUDGET_S,
    sample: int = SAMPLE,
    monotonic: Callable[[], float] = time.monotonic,
) -> DraftCount:
    """Evaluate ``condition`` for the stored contacts (bounded; see the module docstring)."""
    started = monotonic()
    c = schema.contacts
    windows = event_windows(condition)
    out = DraftCount(text=format_condition(condition), at=now)
    with store.begin() as conn:
        out.total = int(conn.execute(sa.select(sa.func.count()).select_from(c)).scalar() or 0)
    after = ""
    while out.scanned < min(out.total, max_contacts):
        size = min(PAGE, max_contacts - out.scanned)
        with store.begin() as conn:
            rows = conn.execute(
                sa.select(c.c.id, c.c.email).where(c.c.id > after).order_by(c.c.id).limit(size)
            ).all()
            if not rows:
                break
            ids = [r.id for r in rows]
            profiles = load_profiles(conn, index, ids, now, windows)
        emails = {r.id: r.email for r in rows}
        for cid in ids:
            profile = profiles.get(cid)
            if profile is not None and holds(condition, profile, now):
                out.members += 1
                if len(out.sample) < sample:
                    out.sample.append({"contact_id": cid, "email": emails.get(cid)})
        out.scanned += len(ids)
        after = ids[-1]
        if monotonic() - started > budget_s and out.scanned < out.total:
            out.stopped = f"stopped after {budget_s:g} s"
            break
    if out.scanned < out.total:
        out.complete = False
        out.stopped = out.stopped or f"the first {max_contacts:,} contacts only"
    out.seconds = monotonic() - started
    return out
