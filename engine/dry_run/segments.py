"""A draft segment over recorded events: who would enter it, and when.

Each contact met in the recording starts from the store (its traits, consent, subscription,
other segments' memberships, and the counted activity from before the first replayed event);
one first seen inside the window starts blank and is built by the replayed events, as decide
built it. Every recorded event is applied the way decide applies it (``Contact.observe`` for
traits and email, ``observe_consent``, the activity the draft counts) and the draft's ``holds``
- the function decide's membership refresh uses - is evaluated at the event's ``receivedAt``.
A contact outside the draft who is inside it after an event *enters* then: that is the mail a
``segment_entered`` workflow would send, so entries are tallied per hour and per recipient
domain, with the ones that could not be mailed (no address, unsubscribed, suppressed) counted
apart. Time alone (a window running out between events) is evaluated at the end only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from engine.catalog.products import is_catalog_event
from engine.decide.consent import observe_consent
from engine.decide.profiles import Contact, load_contacts
from engine.decide.sql import DecideSql
from engine.dry_run.report import SAMPLE, Tally
from engine.events import Event
from engine.segments.evaluate import Profile, holds
from engine.segments.membership import SegmentIndex, load_profiles
from engine.segments.model import Condition, event_windows
from engine.segments.text import format_condition
from engine.store import Store, schema

_CHUNK = 500


class SegmentSimulation:
    """One draft segment condition run over recorded events (``feed`` chunks, ``finish``)."""

    def __init__(
        self,
        condition: Condition,
        *,
        store: Store,
        index: SegmentIndex,
        until: float,
        sample: int = SAMPLE,
    ) -> None:
        self.condition = condition
        self.store = store
        self.index = index
        self.until = until
        self.sql = DecideSql.build(store)
        self.windows = event_windows(condition)
        self.contacts: dict[str, Contact] = {}
        self.profiles: dict[str, Profile] = {}
        self.member: dict[str, bool] = {}
        self.members_at_start = 0
        self.entries = Tally(sample)
        self.exits = 0
        self.no_email = 0
        self.cutoff: float | None = None
        self.last_at: float | None = None
        self.scanned = 0
        self.unreadable = 0
        self._entered: list[tuple[float, str]] = []

    def feed(self, events: Sequence[Event | str]) -> None:
        # Catalog events describe products, not people: decide skips them here too.
        readable = [e for e in events if isinstance(e, Event)]
        good = [e for e in readable if not is_catalog_event(e.activity_name)]
        self.scanned += len(events)
        self.unreadable += len(events) - len(readable)
        if not good:
            return
        if self.cutoff is None:
            self.cutoff = good[0].received_at
        self._load([e.contact_key for e in good])
        for event in good:
            now = event.received_at
            self.last_at = now if self.last_at is None else max(self.last_at, now)
            contact = self.contacts[event.contact_key]
            profile = self.profiles[contact.id]
            contact.observe(event)
            observe_consent(event, contact)
            profile.traits = contact.traits
            profile.consent = contact.consent or {}
            if event.activity_name in self.windows:
                profile.activity.append((event.activity_name, event.timestamp, event.properties))
            inside = holds(self.condition, profile, now)
            if inside and not self.member[contact.id]:
                self._entered.append((now, contact.id))
            elif self.member[contact.id] and not inside:
                self.exits += 1
            self.member[contact.id] = inside

    def _load(self, keys: list[str]) -> None:
        wanted = sorted(set(keys) - set(self.contacts))
        if not wanted:
            return
        assert self.cutoff is not None
        cutoff = self.cutoff
        with self.store.begin() as conn:
            found = load_contacts(conn, self.sql, wanted)
            stored = load_profiles(conn, self.index, wanted, cutoff, self.windows)
        for cid, contact in found.items():
            profile = stored.get(cid)
            if profile is None or (
                contact.first_seen_at is not None and contact.first_seen_at >= cutoff
            ):
                contact = Contact(cid)  # born in the window: the replay builds it
                profile = Profile(cid)
            contact.consent = dict(profile.consent)
            # Rows from the window itself are replayed; only the ones before it are history.
            profile.activity = [a for a in profile.activity if a[1] < cutoff]
            profile.traits = contact.traits
            self.contacts[cid] = contact
            self.profiles[cid] = profile
            self.member[cid] = holds(self.condition, profile, cutoff)
            self.members_at_start += self.member[cid]

    def _mailable(self) -> tuple[set[str], dict[str, str]]:
        """Who among the entered has unsubscribed, and the suppression list's scope of their
        addresses, as the store has them now (what a send would be checked against)."""
        ids = sorted({cid for _, cid in self._entered})
        emails = sorted({e.lower() for cid in ids if (e := self.contacts[cid].email)})
        unsubscribed: set[str] = set()
        suppressed: dict[str, str] = {}
        c, s = schema.contacts.c, schema.suppressions.c
        with self.store.begin() as conn:
            for start in range(0, len(ids), _CHUNK):
                query = sa.select(c.id).where(
                    c.id.in_(ids[start : start + _CHUNK]), c.unsubscribed_at.is_not(None)
                )
                unsubscribed.update(conn.execute(query).scalars())
            for start in range(0, len(emails), _CHUNK):
                query = sa.select(s.address, s.scope).where(
                    s.address.in_(emails[start : start + _CHUNK])
                )
                for row in conn.execute(query):
                    if suppressed.get(row.address) != "all":
                        suppressed[row.address] = row.scope
        return unsubscribed, suppressed

    def finish(self, *, complete: bool = True) -> dict[str, Any]:
        end = max(self.until, self.last_at or self.until)
        reasons: Counter[str] = Counter()
        unsubscribed, suppressed = self._mailable()
        for at, cid in self._entered:
            email = self.contacts[cid].email
            if not email:
                self.no_email += 1
                continue
            scope = suppressed.get(email.lower())
            if scope == "all":
                reasons["on the suppression list"] += 1
                continue
            if scope == "marketing" or cid in unsubscribed:
                reasons["unsubscribed from marketing"] += 1
                continue
            self.entries.add(at, cid, email, {"contact_id": cid, "email": email, "at": at})
        members_at_end = sum(1 for p in self.profiles.values() if holds(self.condition, p, end))
        return {
            "kind": "segment",
            "text": format_condition(self.condition),
            "complete": complete,
            "from": self.cutoff,
            "until": end,
            "events": {"scanned": self.scanned, "unreadable": self.unreadable},
            "contacts": {
                "seen": len(self.profiles),
                "members_at_start": self.members_at_start,
                "entered": len(self._entered),
                "exited": self.exits,
                "members_at_end": members_at_end,
            },
            "emails": {
                "would_send": self.entries.count,
                "recipients": len(self.entries.recipients),
                "no_email": self.no_email,
                "suppressed": sum(reasons.values()),
            },
            "suppressed_reasons": [{"reason": r, "count": n} for r, n in reasons.most_common()],
            "per_hour": self.entries.per_hour(),
            "per_domain": self.entries.per_domain(),
            "caps": [],
            "sample": self.entries.sample,
        }
