"""The one Segment event validator, shared by HTTP ingest and the decide stage.

HTTP ingest calls ``normalize_for_wire`` then ``parse_event`` on every event before publishing it;
the decide stage calls ``parse_event`` on what it pulls from the EVENTS stream (including events
published straight to NATS, which were never checked). Both therefore agree on what an event is.

Errors are ``EventInvalid(field, problem)``: ``field`` is a JSON-path-like name ("userId",
"context.traits") and ``problem`` says in plain words what is wrong ("must be a string").
The whole message is ``ROOT_FIELD`` when it is not an object; the HTTP batch endpoint prefixes
fields with ``batch[i].``.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

from engine.catalog.products import check_catalog_event, is_catalog_event
from engine.consent import CONSENT_EVENTS, changes_in
from engine.errors import EventInvalid
from engine.events import EVENT_TYPES, Event
from engine.ids import new_id

MAX_ID_CHARS = 255
MAX_EVENT_NAME_CHARS = 200
# The field name used when the whole message (HTTP body or NATS payload) is at fault.
ROOT_FIELD = "body"

_TYPES = frozenset(EVENT_TYPES)
_TYPE_LIST = ", ".join(EVENT_TYPES)
# Longer than any ISO-8601 date-time; refusing early keeps hostile strings away from the parser.
_MAX_TIME_CHARS = 64
# Go's and Java's SDKs send up to nanoseconds; datetime keeps microseconds.
_LONG_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_event(data: object, *, received_at: float | None = None) -> Event:
    """Validate one Segment event (a decoded JSON object) and return it as an ``Event``.

    ``received_at`` is the fallback reception time (epoch seconds) for events that carry no
    ``receivedAt`` (those published straight to NATS: pass the JetStream timestamp). Ingest always
    sets ``receivedAt``, and that value wins. Without either, the current time is used.

    A missing ``messageId`` is generated; callers that need the id to be stable across retries or
    redeliveries must set it before calling (ingest does, in ``normalize_for_wire``).

    Raises ``EventInvalid`` naming the first offending field.
    """
    if not isinstance(data, dict):
        raise EventInvalid(ROOT_FIELD, "must be a JSON object")

    kind = data.get("type")
    if kind is None or kind == "":
        raise EventInvalid("type", f"is required (one of {_TYPE_LIST})")
    if not isinstance(kind, str):
        raise EventInvalid("type", "must be a string")
    if kind not in _TYPES:
        raise EventInvalid("type", f"must be one of {_TYPE_LIST}, not {_shorten(kind)!r}")

    user_id = _identity(data.get("userId"), "userId")
    anonymous_id = _identity(data.get("anonymousId"), "anonymousId")
    if user_id is None and anonymous_id is None:
        raise EventInvalid("userId", "is required (or anonymousId)")

    message_id = data.get("messageId")
    if message_id is None or message_id == "":
        message_id = new_id()
    elif not isinstance(message_id, str):
        raise EventInvalid("messageId", "must be a string")
    elif len(message_id) > MAX_ID_CHARS:
        raise EventInvalid("messageId", f"must be at most {MAX_ID_CHARS} characters")

    name: str | None = None
    if kind == "track":
        name = data.get("event")
        if name is None or name == "":
            raise EventInvalid("event", "is required for track events")
        name = _name(name, "event")
    elif kind in ("page", "screen"):
        name = data.get("name")
        if name == "":
            name = None
        elif name is not None:
            name = _name(name, "name")
    elif kind == "group":
        if _identity(data.get("groupId"), "groupId") is None:
            raise EventInvalid("groupId", "is required for group events")
    elif kind == "alias" and _identity(data.get("previousId"), "previousId") is None:
        raise EventInvalid("previousId", "is required for alias events")

    properties = _object(data.get("properties"), "properties")
    if name is not None and kind == "track" and is_catalog_event(name):
        check_catalog_event(properties)
    traits = _object(data.get("traits"), "traits")
    context = _object(data.get("context"), "context")
    _object(data.get("integrations"), "integrations")
    # Segment's libraries put a track call's user traits in context.traits; top-level wins.
    context_traits = _object(context.get("traits"), "context.traits")
    if context_traits:
        traits = {**context_traits, **traits} if traits else context_traits

    timestamp = _time(data.get("timestamp"), "timestamp")
    sent_at = _time(data.get("sentAt"), "sentAt")
    original = _time(data.get("originalTimestamp"), "originalTimestamp")
    received = _time(data.get("receivedAt"), "receivedAt")
    if received is None:
        received = time.time() if received_at is None else received_at
    if timestamp is None:
        if original is not None and sent_at is not None:
            # Segment's clock-skew correction: the device clock may be wrong, but the gap between
            # the event and the send is right, and our clock set receivedAt.
            timestamp = received - (sent_at - original)
        elif original is not None:
            timestamp = original
        else:
            timestamp = received

    if kind == "track" and name in CONSENT_EVENTS:
        changes_in(name, properties, context)  # EventInvalid names the field at fault

    return Event(
        message_id=message_id,
        type=kind,
        user_id=user_id,
        anonymous_id=anonymous_id,
        name=name,
        properties=properties,
        traits=traits,
        context=context,
        timestamp=timestamp,
        received_at=received,
    )


def normalize_for_wire(data: dict[str, Any], received_at: float) -> dict[str, Any]:
    """Prepare a decoded event for the EVENTS stream, in place; returns ``data``.

    Sets ``messageId`` when missing (so JetStream can drop a retried publish as a duplicate),
    sets ``receivedAt`` (ISO 8601 UTC with milliseconds) and drops ``writeKey``, a secret that
    has no business in the stream.
    """
    return normalize_with_stamp(data, format_time(received_at))


def normalize_with_stamp(data: dict[str, Any], received_at_iso: str) -> dict[str, Any]:
    """``normalize_for_wire`` with the time already formatted (one format per HTTP request)."""
    message_id = data.get("messageId")
    if message_id is None or message_id == "":
        data["messageId"] = new_id()
    data["receivedAt"] = received_at_iso
    data.pop("writeKey", None)
    return data


def format_time(epoch: float) -> str:
    """Epoch seconds as ISO 8601 UTC with milliseconds: ``2024-05-01T12:00:00.123Z``."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def parse_time(value: str) -> float:
    """An ISO-8601 date-time (a trailing ``Z`` allowed; no zone means UTC) as epoch seconds.

    Raises ``ValueError`` when ``value`` is not one.
    """
    if len(value) > _MAX_TIME_CHARS:
        raise ValueError("too long")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        trimmed = _LONG_FRACTION.sub(r"\1", value, count=1)
        if trimmed == value:
            raise
        moment = datetime.fromisoformat(trimmed)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _identity(value: object, field: str) -> str | None:
    """A user/anonymous/group id: a string, or a number turned into one (as Segment does)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool):  # bool is an int in Python, but never an id
        raise EventInvalid(field, "must be a string")
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        text = str(int(value)) if value.is_integer() else repr(value)
    else:
        raise EventInvalid(field, "must be a string")
    if len(text) > MAX_ID_CHARS:
        raise EventInvalid(field, f"must be at most {MAX_ID_CHARS} characters")
    return text


def _name(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise EventInvalid(field, "must be a string")
    if len(value) > MAX_EVENT_NAME_CHARS:
        raise EventInvalid(field, f"must be at most {MAX_EVENT_NAME_CHARS} characters")
    return value


def _object(value: object, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise EventInvalid(field, "must be a JSON object")
    return value


def _time(value: object, field: str) -> float | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise EventInvalid(field, "must be an ISO-8601 date-time string")
    try:
        return parse_time(value)
    except (ValueError, OverflowError, OSError):
        raise EventInvalid(
            field, "is not an ISO-8601 date-time (like 2024-05-01T12:00:00.000Z)"
        ) from None


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
