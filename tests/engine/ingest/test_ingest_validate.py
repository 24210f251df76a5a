"""parse_event and normalize_for_wire: Segment's spec, and errors that name their field."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from engine.errors import EventInvalid
from engine.ingest.validate import (
    ROOT_FIELD,
    format_time,
    normalize_for_wire,
    parse_event,
    parse_time,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC).timestamp()


def track(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "track",
        "userId": "u1",
        "event": "Order Completed",
        "messageId": "m1",
        "properties": {"total": 42.5},
    }
    event.update(overrides)
    return {k: v for k, v in event.items() if v is not ...}


def test_track_event_is_parsed() -> None:
    event = parse_event(
        track(timestamp="2024-05-01T12:00:00.000Z", context={"ip": "192.0.2.1"}),
        received_at=T0 + 5,
    )
    assert event.message_id == "m1"
    assert event.type == "track"
    assert event.user_id == "u1"
    assert event.anonymous_id is None
    assert event.name == "Order Completed"
    assert event.activity_name == "Order Completed"
    assert event.properties == {"total": 42.5}
    assert event.context == {"ip": "192.0.2.1"}
    assert event.timestamp == T0
    assert event.received_at == T0 + 5


@pytest.mark.parametrize(
    ("data", "user_id", "anonymous_id"),
    [
        ({"userId": 12345}, "12345", None),
        ({"userId": 12.0}, "12", None),
        ({"anonymousId": "a-1"}, None, "a-1"),
        ({"userId": "", "anonymousId": "a-2"}, None, "a-2"),
        ({"userId": "u", "anonymousId": 7}, "u", "7"),
    ],
)
def test_ids_accept_strings_and_numbers(
    data: dict[str, Any], user_id: str | None, anonymous_id: str | None
) -> None:
    event = parse_event({"type": "identify", "messageId": "m", **data})
    assert (event.user_id, event.anonymous_id) == (user_id, anonymous_id)


def test_contact_key_falls_back_to_anonymous_id() -> None:
    assert parse_event({"type": "page", "anonymousId": "a9"}).contact_key == "anon:a9"


@pytest.mark.parametrize(
    ("data", "field", "problem"),
    [
        ([1, 2], ROOT_FIELD, "must be a JSON object"),
        ("track", ROOT_FIELD, "must be a JSON object"),
        (track(type=...), "type",
         "is required (one of track, identify, page, screen, group, alias)"),
        (track(type=3), "type", "must be a string"),
        (track(type="purchase"), "type", "must be one of track, identify, page, screen, group, "
         "alias, not 'purchase'"),
        (track(userId=...), "userId", "is required (or anonymousId)"),
        (track(userId=None, anonymousId=""), "userId", "is required (or anonymousId)"),
        (track(userId=True), "userId", "must be a string"),
        (track(userId={"id": 1}), "userId", "must be a string"),
        (track(userId="x" * 256), "userId", "must be at most 255 characters"),
        (track(anonymousId=["a"]), "anonymousId", "must be a string"),
        (track(messageId=5), "messageId", "must be a string"),
        (track(messageId="m" * 256), "messageId", "must be at most 255 characters"),
        (track(event=...), "event", "is required for track events"),
        (track(event=""), "event", "is required for track events"),
        (track(event=7), "event", "must be a string"),
        (track(event="e" * 201), "event", "must be at most 200 characters"),
        (track(properties=[1]), "properties", "must be a JSON object"),
        (track(properties="x"), "properties", "must be a JSON object"),
        (track(traits=1), "traits", "must be a JSON object"),
        (track(context="web"), "context", "must be a JSON object"),
        (track(context={"traits": []}), "context.traits", "must be a JSON object"),
        (track(integrations=True), "integrations", "must be a JSON object"),
        (track(timestamp=1714564800), "timestamp", "must be an ISO-8601 date-time string"),
        (track(timestamp="yesterday"), "timestamp",
         "is not an ISO-8601 date-time (like 2024-05-01T12:00:00.000Z)"),
        (track(sentAt="2024-13-01T00:00:00Z"), "sentAt",
         "is not an ISO-8601 date-time (like 2024-05-01T12:00:00.000Z)"),
        (track(originalTimestamp={}), "originalTimestamp", "must be an ISO-8601 date-time string"),
        (track(receivedAt="2024-05-01T12:00:00Z" + " " * 80), "receivedAt",
         "is not an ISO-8601 date-time (like 2024-05-01T12:00:00.000Z)"),
        ({"type": "page", "userId": "u", "name": 3}, "name", "must be a string"),
        ({"type": "screen", "userId": "u", "name": "n" * 201}, "name",
         "must be at most 200 characters"),
        ({"type": "group", "userId": "u"}, "groupId", "is required for group events"),
        ({"type": "group", "userId": "u", "groupId": []}, "groupId", "must be a string"),
        ({"type": "alias", "userId": "u"}, "previousId", "is required for alias events"),
        ({"type": "alias", "userId": "u", "previousId": "p" * 300}, "previousId",
         "must be at most 255 characters"),
    ],
)  # fmt: skip
def test_each_error_names_its_field(data: object, field: str, problem: str) -> None:
    with pytest.raises(EventInvalid) as caught:
        parse_event(data)
    assert (caught.value.field, caught.value.problem) == (field, problem)
    assert str(caught.value) == f"{field}: {problem}"


def test_every_type_parses() -> None:
    base = {"userId": "u"}
    assert parse_event({"type": "identify", "traits": {"plan": "pro"}, **base}).traits == {
        "plan": "pro"
    }
    page = parse_event({"type": "page", "name": "Home", **base})
    assert (page.name, page.activity_name) == ("Home", "Page Viewed")
    assert parse_event({"type": "screen", **base}).name is None
    assert parse_event({"type": "group", "groupId": 77, **base}).activity_name == "Group Joined"
    assert parse_event({"type": "alias", "previousId": "anon-1", **base}).type == "alias"


def test_track_traits_may_come_in_context() -> None:
    event = parse_event(track(context={"traits": {"email": "a@example.com", "plan": "free"}}))
    assert event.traits == {"email": "a@example.com", "plan": "free"}
    both = parse_event(track(traits={"plan": "pro"}, context={"traits": {"plan": "free", "x": 1}}))
    assert both.traits == {"plan": "pro", "x": 1}


def test_missing_message_id_is_generated() -> None:
    first = parse_event(track(messageId=...))
    second = parse_event(track(messageId=...))
    assert len(first.message_id) == 32
    assert first.message_id != second.message_id


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T12:00:00Z", T0),
        ("2024-05-01T12:00:00.250Z", T0 + 0.25),
        ("2024-05-01T14:00:00+02:00", T0),
        ("2024-05-01T12:00:00", T0),  # no zone: UTC
        ("2024-05-01T12:00:00.123456789Z", T0 + 0.123456),  # Go sends nanoseconds
    ],
)
def test_times_are_iso_8601(text: str, expected: float) -> None:
    assert parse_time(text) == pytest.approx(expected)


def test_timestamp_is_corrected_for_device_clock_skew() -> None:
    # The device clock is an hour fast; the event happened 2 s before it was sent.
    data = track(originalTimestamp="2024-05-01T13:00:00Z", sentAt="2024-05-01T13:00:02Z")
    assert parse_event(data, received_at=T0).timestamp == pytest.approx(T0 - 2)
    without_sent_at = track(originalTimestamp="2024-05-01T13:00:00Z")
    assert parse_event(without_sent_at, received_at=T0).timestamp == T0 + 3600
    assert parse_event(track(), received_at=T0).timestamp == T0


def test_received_at_in_the_event_wins_over_the_fallback() -> None:
    data = track(receivedAt="2024-05-01T12:00:00.000Z")
    assert parse_event(data, received_at=T0 + 99).received_at == T0


def test_normalize_for_wire_sets_id_and_received_at_and_drops_write_key() -> None:
    data = track(messageId=..., writeKey="secret", receivedAt="2000-01-01T00:00:00Z")
    wire = normalize_for_wire(data, T0 + 0.5)
    assert wire is data
    assert len(wire["messageId"]) == 32
    assert wire["receivedAt"] == "2024-05-01T12:00:00.500Z"
    assert "writeKey" not in wire
    assert parse_event(wire).received_at == T0 + 0.5
    kept = normalize_for_wire(track(messageId="client-id"), T0)
    assert kept["messageId"] == "client-id"


def test_format_time_is_utc_with_milliseconds() -> None:
    assert format_time(0) == "1970-01-01T00:00:00.000Z"
    assert format_time(T0 + 0.0126) == "2024-05-01T12:00:00.012Z"
