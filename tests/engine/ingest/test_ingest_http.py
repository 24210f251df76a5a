"""The tracking API against a real nats-server: what a 200 puts in the stream, and every refusal."""

from __future__ import annotations

import asyncio
import gzip
import io
from typing import Any

import orjson
import pytest
from ingest_support import AUTH, WRITE_KEY, Ingest

from engine.bus import event_subject
from engine.events import EVENT_TYPES
from engine.natsserver import NatsServer

MINIMAL: dict[str, dict[str, Any]] = {
    "track": {"userId": "u1", "event": "Product Viewed", "properties": {"sku": "A-1"}},
    "identify": {"userId": "u1", "traits": {"email": "u1@example.com"}},
    "page": {"anonymousId": "a1", "name": "Home"},
    "screen": {"userId": "u1", "name": "Cart"},
    "group": {"userId": "u1", "groupId": "g1"},
    "alias": {"userId": "u1", "previousId": "a1"},
}


async def post(
    ingest: Ingest,
    path: str,
    body: object,
    *,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> tuple[int, dict[str, Any]]:
    # A file-like body: aiohttp warns about large raw bytes.
    data = io.BytesIO(raw if raw is not None else orjson.dumps(body))
    async with ingest.session.post(
        path, data=data, headers=AUTH if headers is None else headers
    ) as response:
        return response.status, orjson.loads(await response.read())


@pytest.mark.parametrize("kind", EVENT_TYPES)
async def test_each_event_endpoint_publishes_to_its_subject(ingest: Ingest, kind: str) -> None:
    body = {"messageId": f"msg-{kind}", **MINIMAL[kind]}
    assert await post(ingest, f"/v1/{kind}", body) == (200, {"success": True})
    [msg] = await ingest.stream()
    assert msg.subject == event_subject({"type": kind, **body})
    assert msg.headers is not None
    assert msg.headers["Nats-Msg-Id"] == f"msg-{kind}"
    wire = orjson.loads(msg.data or b"")
    assert wire["type"] == kind
    assert wire["receivedAt"].endswith("Z")
    assert {k: wire[k] for k in body} == body


async def test_the_path_sets_the_type(ingest: Ingest) -> None:
    body = {"type": "identify", "messageId": "m", **MINIMAL["track"]}
    assert (await post(ingest, "/v1/track", body))[0] == 200
    assert (await post(ingest, "/v1/t", {**body, "messageId": "m2"}))[0] == 200  # analytics.js
    subjects = [msg.subject for msg in await ingest.stream()]
    assert subjects == [event_subject({**body, "type": "track"})] * 2


async def test_missing_message_id_is_generated_and_is_the_msg_id(ingest: Ingest) -> None:
    assert (await post(ingest, "/v1/track", MINIMAL["track"]))[0] == 200
    [msg] = await ingest.stream()
    wire = orjson.loads(msg.data or b"")
    assert len(wire["messageId"]) == 32
    assert msg.headers is not None
    assert msg.headers["Nats-Msg-Id"] == wire["messageId"]


async def test_the_same_message_id_twice_is_stored_once(ingest: Ingest) -> None:
    body = {"messageId": "retry-me", **MINIMAL["track"]}
    assert (await post(ingest, "/v1/track", body))[0] == 200
    assert (await post(ingest, "/v1/track", body))[0] == 200
    assert len(await ingest.stream()) == 1
    assert ingest.telemetry.counters["events_duplicate_total"] == 1


async def test_gzip_body_is_accepted(ingest: Ingest) -> None:
    body = gzip.compress(orjson.dumps({"messageId": "gz", **MINIMAL["track"]}))
    status, _ = await post(ingest, "/v1/track", None, raw=body, headers={**AUTH, **GZIP})
    assert status == 200
    [msg] = await ingest.stream()
    assert orjson.loads(msg.data or b"")["messageId"] == "gz"


GZIP = {"Content-Encoding": "gzip"}


async def test_gzip_bomb_is_refused_without_inflating_it(ingest: Ingest) -> None:
    bomb = gzip.compress(b"[" + b" " * 5_000_000 + b"]")  # ~5 KB compressed, 5 MB inflated
    status, reply = await post(ingest, "/v1/batch", None, raw=bomb, headers={**AUTH, **GZIP})
    assert status == 413
    assert reply["error"] == "body is larger than the 500 KB limit for a batch request"


async def test_broken_gzip_and_unknown_encodings_are_refused(ingest: Ingest) -> None:
    truncated = gzip.compress(orjson.dumps(MINIMAL["track"]))[:-12]
    status, reply = await post(ingest, "/v1/track", None, raw=truncated, headers={**AUTH, **GZIP})
    assert (status, reply["error"]) == (400, "body is not valid gzip: it ends too early")
    status, reply = await post(ingest, "/v1/track", None, raw=b"xx", headers={**AUTH, **GZIP})
    assert status == 400
    assert reply["error"].startswith("body is not valid gzip: ")
    headers = {**AUTH, "Content-Encoding": "br"}
    status, reply = await post(ingest, "/v1/track", MINIMAL["track"], headers=headers)
    assert status == 415
    assert reply["error"] == "Content-Encoding 'br' is not supported (use gzip or none)"
    assert await ingest.stream() == []


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic " + "d3Jvbmc6"},  # "wrong:"
        {"Authorization": f"Bearer {WRITE_KEY}"},
        {"Authorization": "Basic !!!not-base64"},
    ],
)
async def test_missing_or_wrong_write_key_is_401(ingest: Ingest, headers: dict[str, str]) -> None:
    status, reply = await post(ingest, "/v1/track", MINIMAL["track"], headers=headers)
    assert status == 401
    assert reply == {
        "success": False,
        "error": "missing or wrong write key: send it as the HTTP basic auth user name "
        "(with an empty password) or as writeKey in the body",
    }
    assert await ingest.stream() == []
    assert "events_invalid_total" not in str(ingest.telemetry.counters)


async def test_write_key_may_come_in_the_body_and_is_not_published(ingest: Ingest) -> None:
    body = {"writeKey": WRITE_KEY, **MINIMAL["track"]}
    assert (await post(ingest, "/v1/track", body, headers={}))[0] == 200
    batch = {"writeKey": WRITE_KEY, "batch": [{"type": "track", **MINIMAL["track"]}]}
    assert (await post(ingest, "/v1/batch", batch, headers={}))[0] == 200
    messages = await ingest.stream()
    assert len(messages) == 2
    assert all(b"writeKey" not in (msg.data or b"") for msg in messages)


async def test_basic_auth_wins_over_the_body_write_key(ingest: Ingest) -> None:
    wrong_header = {"Authorization": "Basic d3Jvbmc6"}
    body = {"writeKey": WRITE_KEY, **MINIMAL["track"]}
    assert (await post(ingest, "/v1/track", body, headers=wrong_header))[0] == 401
    wrong_body = {"writeKey": "nope", **MINIMAL["track"]}
    assert (await post(ingest, "/v1/track", wrong_body))[0] == 200


async def test_an_event_over_32_kb_is_413(ingest: Ingest) -> None:
    body = {**MINIMAL["track"], "properties": {"blob": "x" * 33_000}}
    status, reply = await post(ingest, "/v1/track", body)
    assert (status, reply["error"]) == (413, "body is larger than the 32 KB limit for one event")
    # The limit is on the JSON, not on what went over the wire.
    small = gzip.compress(orjson.dumps(body))
    status, reply = await post(ingest, "/v1/track", None, raw=small, headers={**AUTH, **GZIP})
    assert (status, reply["error"]) == (413, "body is larger than the 32 KB limit for one event")
    assert await ingest.stream() == []


async def test_a_batch_over_500_kb_is_413(ingest: Ingest) -> None:
    event = {"type": "track", **MINIMAL["track"], "properties": {"blob": "x" * 20_000}}
    status, reply = await post(ingest, "/v1/batch", {"batch": [event] * 26})
    assert status == 413
    assert reply == {
        "success": False,
        "error": "body is larger than the 500 KB limit for a batch request",
    }
    assert await ingest.stream() == []


async def test_a_body_beyond_any_limit_is_refused_unread(ingest: Ingest) -> None:
    status, reply = await post(ingest, "/v1/batch", None, raw=b" " * 2_000_000)
    assert (status, reply["success"]) == (413, False)


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b'{"userId": "u1", "event": tru}', "invalid literal, expected 'true' at line 1 column 27"),
        (
            b'{"userId": "u1",\n "event": }',
            "unexpected character, expected a JSON value at line 2 column 11",
        ),
        (b"", None),
    ],
)
async def test_malformed_json_is_400(ingest: Ingest, raw: bytes, error: str | None) -> None:
    status, reply = await post(ingest, "/v1/track", None, raw=raw)
    assert status == 400
    if error is None:
        assert reply["error"] == "body is empty: send a JSON object"
    else:
        assert reply["error"] == f"body is not valid JSON: {error}"
    assert ingest.telemetry.counters['events_invalid_total{source="http"}'] == 1


@pytest.mark.parametrize(
    ("path", "body", "field", "problem"),
    [
        ("/v1/track", {"event": "E"}, "userId", "is required (or anonymousId)"),
        ("/v1/track", {"userId": "u"}, "event", "is required for track events"),
        ("/v1/track", {"userId": "u", "event": "E", "properties": [1]}, "properties",
         "must be a JSON object"),
        ("/v1/identify", {"userId": "u", "traits": "vip"}, "traits", "must be a JSON object"),
        ("/v1/page", {"userId": "u", "context": 1}, "context", "must be a JSON object"),
        ("/v1/page", {"userId": "u", "timestamp": "soon"}, "timestamp",
         "is not an ISO-8601 date-time (like 2024-05-01T12:00:00.000Z)"),
        ("/v1/group", {"userId": "u"}, "groupId", "is required for group events"),
        ("/v1/alias", {"userId": "u"}, "previousId", "is required for alias events"),
        ("/v1/identify", {"userId": "u", "messageId": 12}, "messageId", "must be a string"),
    ],
)  # fmt: skip
async def test_an_invalid_event_is_400_naming_its_field(
    ingest: Ingest, path: str, body: dict[str, Any], field: str, problem: str
) -> None:
    status, reply = await post(ingest, path, body)
    assert status == 400
    assert reply == {
        "success": False,
        "error": "the event is invalid",
        "errors": [{"field": field, "problem": problem}],
    }
    assert await ingest.stream() == []


async def test_a_body_that_is_not_an_object_is_400(ingest: Ingest) -> None:
    status, reply = await post(ingest, "/v1/track", [MINIMAL["track"]])
    assert (status, reply["error"]) == (400, "body must be a JSON object (one event)")
    status, reply = await post(ingest, "/v1/batch", [MINIMAL["track"]])
    assert (status, reply["error"]) == (400, 'body must be a JSON object like {"batch": [...]}')
    status, reply = await post(ingest, "/v1/batch", {"events": []})
    assert (status, reply["errors"]) == (400, [{"field": "batch", "problem": "is required"}])


async def test_a_valid_batch_is_all_published(ingest: Ingest) -> None:
    batch = [{"type": kind, "messageId": f"b-{kind}", **MINIMAL[kind]} for kind in EVENT_TYPES]
    assert await post(ingest, "/v1/batch", {"batch": batch}) == (
        200,
        {"success": True, "accepted": 6},
    )
    messages = await ingest.stream()
    assert sorted(str(msg.subject) for msg in messages) == sorted(event_subject(e) for e in batch)
    for msg in messages:
        assert msg.headers is not None
        assert msg.headers["Nats-Msg-Id"] == orjson.loads(msg.data or b"")["messageId"]
    assert ingest.telemetry.counters['events_received_total{source="http"}'] == 6


async def test_import_is_an_alias_of_batch(ingest: Ingest) -> None:
    body = {"batch": [{"type": "track", **MINIMAL["track"]}]}
    assert await post(ingest, "/v1/import", body) == (200, {"success": True, "accepted": 1})
    assert len(await ingest.stream()) == 1


async def test_a_mixed_batch_publishes_the_valid_and_lists_the_invalid(ingest: Ingest) -> None:
    track = {"type": "track", **MINIMAL["track"]}
    batch: list[object] = [
        {**track, "messageId": "ok-0"},
        {**track, "messageId": "bad-1", "userId": None},
        {**track, "messageId": "ok-2"},
        "not an event",
        {**track, "messageId": "bad-4", "type": "purchase"},
        {**track, "messageId": "bad-5", "context": {"traits": 3}},
        {**track, "messageId": "big-6", "properties": {"blob": "x" * 40_000}},
    ]
    status, reply = await post(ingest, "/v1/batch", {"batch": batch})
    assert status == 400
    assert reply == {
        "success": False,
        "error": "5 of 7 events are invalid; the other 2 were accepted",
        "accepted": 2,
        "errors": [
            {"field": "batch[1].userId", "problem": "is required (or anonymousId)"},
            {"field": "batch[3]", "problem": "must be a JSON object"},
            {
                "field": "batch[4].type",
                "problem": "must be one of track, identify, page, screen, group, alias, "
                "not 'purchase'",
            },
            {"field": "batch[5].context.traits", "problem": "must be a JSON object"},
            {"field": "batch[6]", "problem": "is larger than the 32 KB limit"},
        ],
    }
    ids = [orjson.loads(msg.data or b"")["messageId"] for msg in await ingest.stream()]
    assert sorted(ids) == ["ok-0", "ok-2"]
    counters = ingest.telemetry.counters
    assert counters['events_received_total{source="http"}'] == 7
    assert counters['events_invalid_total{source="http"}'] == 5


async def test_batch_context_and_sent_at_apply_to_each_event(ingest: Ingest) -> None:
    body = {
        "batch": [
            {"type": "track", **MINIMAL["track"]},
            {"type": "track", **MINIMAL["track"], "context": {"ip": "198.51.100.7"}},
        ],
        "context": {"library": {"name": "analytics-python"}, "ip": "192.0.2.1"},
        "sentAt": "2024-05-01T12:00:00Z",
    }
    assert (await post(ingest, "/v1/batch", body))[0] == 200
    wires = [orjson.loads(msg.data or b"") for msg in await ingest.stream()]
    contexts = sorted((w["context"] for w in wires), key=lambda c: c["ip"])
    assert contexts == [
        {"library": {"name": "analytics-python"}, "ip": "192.0.2.1"},
        {"library": {"name": "analytics-python"}, "ip": "198.51.100.7"},
    ]
    assert {w["sentAt"] for w in wires} == {"2024-05-01T12:00:00Z"}


async def test_an_empty_batch_is_fine(ingest: Ingest) -> None:
    assert await post(ingest, "/v1/batch", {"batch": []}) == (200, {"success": True, "accepted": 0})


async def test_metrics_show_the_counters(ingest: Ingest) -> None:
    await post(ingest, "/v1/track", MINIMAL["track"])
    await post(ingest, "/v1/track", {"userId": "u"})
    async with ingest.session.get("/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = await response.text()
    assert 'campaign_events_received_total{node="test",source="http"} 2' in text
    assert 'campaign_events_invalid_total{node="test",source="http"} 1' in text
    assert 'campaign_stage_seconds_count{node="test",stage="ingest"} 1' in text
    assert 'campaign_http_request_seconds_count{node="test",path="/v1/track"} 2' in text


async def test_healthz_serves_the_health_report(ingest: Ingest) -> None:
    async with ingest.session.get("/healthz") as response:
        assert (response.status, await response.json()) == (200, {"ok": True, "node": "test"})
    ingest.health["ok"] = False
    async with ingest.session.get("/healthz") as response:
        assert response.status == 503


async def test_nats_down_is_503_and_the_retry_is_stored_once(
    ingest: Ingest, nats_server: NatsServer
) -> None:
    body = {"messageId": "during-outage", **MINIMAL["track"]}
    nats_server.kill()
    status, reply = await post(ingest, "/v1/track", body)
    assert status == 503
    assert reply == {
        "success": False,
        "error": "the event stream is unavailable, please retry: "
        "NATS did not acknowledge the event within 1 s",
    }
    status, reply = await post(ingest, "/v1/batch", {"batch": [{"type": "track", **body}]})
    assert (status, reply["accepted"]) == (503, 0)

    await asyncio.to_thread(nats_server.start)
    for _ in range(200):
        if ingest.nc.is_connected:
            break
        await asyncio.sleep(0.05)
    # The client retries with the same messageId; whatever the outage left behind, one copy.
    for _ in range(50):
        status, _reply = await post(ingest, "/v1/track", body)
        if status == 200:
            break
        await asyncio.sleep(0.1)  # JetStream may still be recovering the stream
    assert status == 200
    ids = [orjson.loads(msg.data or b"")["messageId"] for msg in await ingest.stream()]
    assert ids == ["during-outage"]
