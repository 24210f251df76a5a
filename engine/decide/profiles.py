"""Contacts and their recent activity, as one decide batch reads and updates them.

A batch loads every contact it touches with one query, applies its events in stream order in
memory (traits merge, email, timezone, first/last seen), and writes the changed contacts back
with one upsert. Activity rows are appended; the windows conditions count over are loaded once
per batch and extended in memory as the batch's own events are applied.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from sqlalchemy import Connection

from engine.decide import lite
from engine.events import Event

if TYPE_CHECKING:
    from engine.decide.sql import DecideSql

_MAX_EMAIL = 320
_LITE_MAX_IDS = 500  # SQLite fast path only for IN lists well inside SQLite's variable limit


def clean_email(value: object) -> str | None:
    """An address fit to send to, or ``None``: one ``@``, no spaces or control characters."""
    if not isinstance(value, str):
        return None
    address = value.strip()
    local, at, domain = address.rpartition("@")
    if not at or not local or "." not in domain or domain.endswith("."):
        return None
    if len(address) > _MAX_EMAIL or any(c.isspace() or ord(c) < 32 for c in address):
        return None
    return address


@functools.lru_cache(maxsize=1024)
def clean_timezone(value: str) -> str | None:
    """An IANA zone name the engine can use, or ``None``."""
    if not value or len(value) > 64:
        return None
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return None
    return value


@dataclass(slots=True)
class Contact:
    """A contact's profile as this batch sees it."""

    id: str
    email: str | None = None
    traits: dict[str, Any] = field(default_factory=dict)
    timezone: str | None = None
    first_seen_at: float | None = None
    last_seen_at: float | None = None
    stored: bool = False  # the row exists in the store
    changed: bool = False
    # Loaded only for contacts whose events read or change it (engine.decide.consent); the
    # batch's consent changes wait in consent_log, each with whether it was applied.
    consent: dict[str, Any] | None = None
    consent_log: list[Any] = field(default_factory=list)

    @classmethod
    def from_row(cls, row: sa.Row[Any]) -> Contact:
        return cls(
            id=row.id,
            email=row.email,
            traits=dict(row.traits or {}),
            timezone=row.timezone,
            first_seen_at=row.first_seen_at,
            last_seen_at=row.last_seen_at,
            stored=True,
        )

    def observe(self, event: Event) -> float | None:
        """Apply one event; returns the last-seen time from before it (``None`` if new)."""
        previous = self.last_seen_at
        # The validator merged context.traits (where Segment's libraries put a track call's
        # traits) with top-level traits, so every event type can update the profile.
        updates: dict[str, Any] = dict(event.traits)
        if updates:
            self.traits.update(updates)
        email = clean_email(updates.get("email"))
        if email:
            self.email = email
        zone = event.context.get("timezone") or updates.get("timezone")
        if isinstance(zone, str) and clean_timezone(zone):
            self.timezone = zone
        ts = event.timestamp
        self.first_seen_at = ts if self.first_seen_at is None else min(self.first_seen_at, ts)
        self.last_seen_at = ts if previous is None else max(previous, ts)
        self.changed = True
        return previous

    def row(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "email": self.email,
            "traits": self.traits,
            "timezone": self.timezone,
            "consent": {},  # only used when the row is new; never overwritten here
            "first_seen_at": self.first_seen_at if self.first_seen_at is not None else now,
            "last_seen_at": self.last_seen_at if self.last_seen_at is not None else now,
            "updated_at": now,
        }


def load_contacts(conn: Connection, sql: DecideSql, ids: Iterable[str]) -> dict[str, Contact]:
    """The stored contacts among ``ids``, and a blank one for each id not stored yet."""
    wanted = sorted(set(ids))
    found = {}
    if wanted and sql.lite and len(wanted) <= _LITE_MAX_IDS:
        found = {
            r[0]: Contact(r[0], r[1], dict(lite.loads(r[2]) or {}), r[3], r[4], r[5], stored=True)
            for r in lite.contacts(conn, wanted)
        }
    elif wanted:
        found = {
            row.id: Contact.from_row(row) for row in conn.execute(sql.contacts, {"ids": wanted})
        }
    return {cid: found.get(cid) or Contact(cid) for cid in wanted}


def write_contacts(
    conn: Connection, sql: DecideSql, contacts: Iterable[Contact], now: float
) -> None:
    """Insert new contacts and update changed ones (consent and unsubscribe are left alone)."""
    rows = [c.row(now) for c in contacts if c.changed]
    if rows and sql.lite:
        lite.upsert_contacts(conn, rows)
    elif rows:
        conn.execute(sql.upsert_contacts, rows)


@dataclass(slots=True)
class RecentActivity:
    """One contact's recent events (name, ts, properties); counts events in windows."""

    entries: list[tuple[str, float, Mapping[str, Any]]] = field(default_factory=list)

    def add(self, name: str, ts: float, properties: Mapping[str, Any]) -> None:
        self.entries.append((name, ts, properties))

    def count(self, name: str, since: float, until: float, same: Mapping[str, Any]) -> int:
        n = 0
        for entry_name, ts, props in self.entries:
            if entry_name != name or not since < ts <= until:
                continue
            if all(props.get(key) == value for key, value in same.items()):
                n += 1
        return n


def load_activity(
    conn: Connection,
    sql: DecideSql,
    contact_ids: Sequence[str],
    windows: Mapping[str, float],
    earliest: float,
) -> dict[str, RecentActivity]:
    """Stored activity of the counted event names, back to the longest window before
    ``earliest`` (the first moment a condition in this batch will be evaluated at)."""
    recent: dict[str, RecentActivity] = {cid: RecentActivity() for cid in contact_ids}
    if not contact_ids or not windows:
        return recent
    params = {
        "ids": list(contact_ids),
        "names": sorted(windows),
        "since": earliest - max(windows.values()),
    }
    if sql.lite and len(contact_ids) <= _LITE_MAX_IDS:
        since = earliest - max(windows.values())
        for cid, name, ts, properties in lite.activity(conn, contact_ids, sorted(windows), since):
            recent[cid].add(name, ts, lite.loads(properties) or {})
        return recent
    for row in conn.execute(sql.activity, params):
        recent[row.contact_id].add(row.name, row.ts, row.properties or {})
    return recent


def activity_row(event: Event) -> dict[str, Any]:
    """The ``activity`` row recording one event."""
    return {
        "contact_id": event.contact_key,
        "name": event.activity_name[:200],
        "properties": event.properties,
        "message_id": event.message_id,
        "ts": event.timestamp,
    }
