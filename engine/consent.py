"""Consent per purpose: the events that give or withdraw it, the state in effect, its history.

``contacts.consent`` holds the state in effect, one entry per purpose::

    {"location": {"granted": true, "at": 1767225600.0, "method": "app_prompt",
                  "source": "ios", "event_id": "msg-42"}}

and ``consent_history`` keeps every change (who, when, how, from which event). Two events set it:

- a track ``Consent Updated`` with properties ``{purpose, granted: bool, method?, source?}``;
- Segment's ``Segment Consent Preference Updated``, whose
  ``context.consent.categoryPreferences`` is ``{purpose: bool, ...}`` (method
  ``consent_preferences``, source ``segment`` unless the properties say otherwise).

The ingest validator rejects a malformed one (HTTP 400, or a dead letter on NATS) with the field
at fault, so the decide stage only sees well-formed changes. A change older than the one in
effect for that purpose (an event delayed on a phone) is kept in the history as not applied: the
newest statement of the person wins, whatever order the events arrive in.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.errors import EventInvalid

CONSENT_UPDATED = "Consent Updated"
SEGMENT_PREFERENCES = "Segment Consent Preference Updated"
CONSENT_EVENTS = frozenset({CONSENT_UPDATED, SEGMENT_PREFERENCES})
PURPOSE = re.compile(r"[a-z][a-z0-9_]{0,63}")  # the same as a segment's "consented to PURPOSE"
_MAX_TEXT = 100
_MAX_PURPOSES = 50


@dataclass(frozen=True, slots=True)
class ConsentChange:
    """One purpose given or withdrawn, as an event said it."""

    purpose: str
    granted: bool
    at: float  # when the person said so (the event's timestamp)
    method: str | None = None  # how: checkbox, banner, app_prompt, import, ...
    source: str | None = None  # where: web, ios, segment, import contacts.csv, ...
    event_id: str | None = None

    def entry(self) -> dict[str, Any]:
        """The ``contacts.consent[purpose]`` value this change puts in effect."""
        return {
            "granted": self.granted,
            "at": self.at,
            "method": self.method,
            "source": self.source,
            "event_id": self.event_id,
        }


def check_purpose(purpose: object, where: str) -> str:
    """A purpose name (``location``, ``email_marketing``); ``ValueError`` naming ``where``."""
    if not isinstance(purpose, str) or not PURPOSE.fullmatch(purpose):
        raise ValueError(
            f"{where} must be a purpose name: lower-case letters, digits and '_' starting with "
            f"a letter (at most 64), got {purpose!r}"
        )
    return purpose


def _text(value: object, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise EventInvalid(field, "must be a string")
    return value.strip()[:_MAX_TEXT] or None


def changes_in(
    name: str | None,
    properties: Mapping[str, Any],
    context: Mapping[str, Any],
    *,
    at: float = 0.0,
    event_id: str | None = None,
) -> list[ConsentChange]:
    """The consent changes a track event named ``name`` makes (none for other events);
    ``EventInvalid`` naming the field for a malformed consent event."""
    if name == CONSENT_UPDATED:
        try:
            purpose = check_purpose(properties.get("purpose"), "purpose")
        except ValueError as exc:
            raise EventInvalid("properties.purpose", str(exc).removeprefix("purpose ")) from exc
        granted = properties.get("granted")
        if not isinstance(granted, bool):
            raise EventInvalid("properties.granted", "must be true or false")
        method = _text(properties.get("method"), "properties.method")
        source = _text(properties.get("source"), "properties.source")
        return [ConsentChange(purpose, granted, at, method, source, event_id)]
    if name == SEGMENT_PREFERENCES:
        consent = context.get("consent")
        prefs = consent.get("categoryPreferences") if isinstance(consent, Mapping) else None
        field = "context.consent.categoryPreferences"
        if not isinstance(prefs, Mapping) or not prefs:
            raise EventInvalid(field, "must be an object of {purpose: true|false}")
        if len(prefs) > _MAX_PURPOSES:
            raise EventInvalid(field, f"names more than {_MAX_PURPOSES} purposes")
        method = _text(properties.get("method"), "properties.method") or "consent_preferences"
        source = _text(properties.get("source"), "properties.source") or "segment"
        out = []
        for purpose, granted in sorted(prefs.items()):
            try:
                check_purpose(purpose, "a purpose")
            except ValueError as exc:
                raise EventInvalid(f"{field}", str(exc)) from exc
            if not isinstance(granted, bool):
                raise EventInvalid(f"{field}.{purpose}", "must be true or false")
            out.append(ConsentChange(purpose, granted, at, method, source, event_id))
        return out
    return []


def granted(consent: Mapping[str, Any] | None, purpose: str) -> bool:
    """Whether ``consent`` (``contacts.consent``) grants ``purpose``: only an explicit grant
    counts; never asked, withdrawn or unreadable is no."""
    entry = (consent or {}).get(purpose)
    return isinstance(entry, Mapping) and entry.get("granted") is True


def apply_changes(
    consent: dict[str, Any], changes: Iterable[ConsentChange]
) -> list[tuple[ConsentChange, bool]]:
    """Put ``changes`` in effect in ``consent`` (in place) in order; each with whether it
    was applied (False: older than the entry already in effect for its purpose)."""
    out = []
    for change in changes:
        current = consent.get(change.purpose)
        at = current.get("at") if isinstance(current, Mapping) else None
        newer = not isinstance(at, int | float) or change.at >= at
        if newer:
            consent[change.purpose] = change.entry()
        out.append((change, newer))
    return out


def history_row(
    contact_id: str, change: ConsentChange, applied: bool, recorded_at: float
) -> dict[str, Any]:
    """The ``consent_history`` row recording one change."""
    return {
        "contact_id": contact_id,
        "purpose": change.purpose,
        "granted": change.granted,
        "at": change.at,
        "method": change.method,
        "source": change.source[:200] if change.source else None,
        "event_id": change.event_id,
        "applied": applied,
        "recorded_at": recorded_at,
    }


def imported_changes(raw: object, where: str, at: float, source: str) -> list[ConsentChange]:
    """The consent an imported contact record states: ``{purpose: true|false}`` or
    ``{purpose: {"granted": bool, "at"?: epoch seconds, "method"?, "source"?}}`` (in a CSV
    cell, the same as JSON text); ``ValueError`` naming the purpose at fault."""
    if raw is None or raw == "" or raw == {}:
        return []
    if isinstance(raw, str):
        import orjson

        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"{where}: consent is not valid JSON ({exc})") from exc
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: consent must be an object of {{purpose: true|false}}")
    out = []
    for purpose, value in sorted(raw.items()):
        check_purpose(purpose, f"{where}: consent purpose")
        entry = value if isinstance(value, Mapping) else {"granted": value}
        if not isinstance(entry.get("granted"), bool):
            raise ValueError(f"{where}: consent.{purpose}.granted must be true or false")
        when = entry.get("at", at)
        if isinstance(when, bool) or not isinstance(when, int | float):
            raise ValueError(f"{where}: consent.{purpose}.at must be epoch seconds")
        method, src = entry.get("method", "import"), entry.get("source", source)
        if not isinstance(method, str) or not isinstance(src, str):
            raise ValueError(f"{where}: consent.{purpose}.method and .source must be text")
        out.append(ConsentChange(purpose, entry["granted"], float(when), method[:100], src[:200]))
    return out


def record_changes(
    conn: Any, changes: Mapping[str, Sequence[ConsentChange]], now: float
) -> set[str]:
    """Apply consent changes to stored contacts and keep their history (the caller's
    transaction; ``FOR UPDATE`` on PostgreSQL); the ids whose consent in effect changed."""
    import sqlalchemy as sa

    from engine.store import schema

    wanted = sorted(cid for cid, found in changes.items() if found)
    if not wanted:
        return set()
    tbl = schema.contacts
    stored: dict[str, dict[str, Any]] = {}
    for start in range(0, len(wanted), 500):
        query = sa.select(tbl.c.id, tbl.c.consent).where(tbl.c.id.in_(wanted[start : start + 500]))
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        for row in conn.execute(query):
            stored[row.id] = dict(row.consent) if isinstance(row.consent, dict) else {}
    history, updates, changed = [], [], set()
    for cid in wanted:
        if cid not in stored:
            continue
        consent = stored[cid]
        results = apply_changes(consent, changes[cid])
        history += [history_row(cid, change, applied, now) for change, applied in results]
        if any(applied for _, applied in results):
            changed.add(cid)
            updates.append({"b_id": cid, "b_consent": consent, "b_updated": now})
    if history:
        conn.execute(schema.consent_history.insert(), history)
    if updates:
        conn.execute(
            sa.update(tbl)
            .where(tbl.c.id == sa.bindparam("b_id"))
            .values(consent=sa.bindparam("b_consent"), updated_at=sa.bindparam("b_updated")),
            updates,
        )
    return changed
