"""The engine's HTTP face: Segment's tracking API, Prometheus metrics, health, unsubscribe pages.

Tracking API (https://segment.com/docs/connections/sources/catalog/libraries/server/http-api/):
``POST /v1/{identify,track,page,screen,group,alias}`` take one event, ``/v1/batch`` (and
``/v1/import``) a ``{"batch": [...]}`` object. analytics.js's short paths (``/v1/t``, ``/v1/b``,
...) are accepted too. A 200 means every accepted event is durably in the EVENTS stream.

Serve the app with ``HttpService`` (or a runner made the same way, ``auto_decompress=False``):
aiohttp's own request decompression must be off so that ``body.read_json`` caps gzip output.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import hdrs, web

from engine.errors import BusError, EventInvalid
from engine.events import EVENT_TYPES
from engine.ingest.body import (
    BATCH_LIMIT,
    EVENT_LIMIT,
    MAX_REQUEST_BYTES,
    Rejected,
    WriteKeyAuth,
    error,
    limit_words,
    read_json,
)
from engine.ingest.publisher import EventPublisher
from engine.ingest.tracking_pages import add_tracking_routes
from engine.ingest.unsubscribe_pages import UnsubscribeHandler, add_unsubscribe_routes
from engine.ingest.validate import ROOT_FIELD, format_time, normalize_with_stamp, parse_event
from engine.ingest.webhooks import FeedbackHandler, add_webhook_routes
from engine.telemetry import Telemetry
from engine.tracking import TrackingLinks
from engine.unsubscribe import UnsubscribeTokens

SOURCE = "http"
BATCH_PATHS = ("/v1/batch", "/v1/import", "/v1/b")
# analytics.js posts to /v1/<first letter of the type>.
SHORT_PATHS = {
    "t": "track",
    "i": "identify",
    "p": "page",
    "s": "screen",
    "g": "group",
    "a": "alias",
}
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_OK = b'{"success":true}'
_JSON = "application/json"
_AUTH_CHALLENGE = {"WWW-Authenticate": 'Basic realm="Campaign Console ingest"'}
# A 503 is worth retrying soon: JetStream drops the retried duplicates by messageId.
_RETRY = {"Retry-After": "1"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HttpService:
    """The HTTP service of an engine node: ``build_app`` served on one TCP address.

    Takes ``build_app``'s arguments; ``app`` is exposed so routes can be added before ``start``.
    """

    def __init__(
        self,
        *,
        publisher: EventPublisher,
        write_key: str,
        telemetry: Telemetry,
        metrics_text: Callable[[], str],
        health: Callable[[], Mapping[str, Any]],
        unsubscribe: UnsubscribeHandler | None = None,
        tokens: UnsubscribeTokens | None = None,
        shutdown_timeout: float = 10.0,
        feedback: FeedbackHandler | None = None,
        tracking: TrackingLinks | None = None,
    ) -> None:
        """``shutdown_timeout``: how long ``stop`` waits for requests in flight."""
        self.app = build_app(
            publisher=publisher,
            write_key=write_key,
            telemetry=telemetry,
            metrics_text=metrics_text,
            health=health,
            unsubscribe=unsubscribe,
            tokens=tokens,
            feedback=feedback,
            tracking=tracking,
        )
        self._runner = web.AppRunner(
            self.app,
            # One log line per request would cost more than the request at our rates.
            access_log=None,
            # read_json inflates gzip itself, with a cap on the output.
            auto_decompress=False,
            handle_signals=False,
            shutdown_timeout=shutdown_timeout,
        )
        self._started = False

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Listen on ``host:port`` (0: a free port); returns the address actually bound."""
        await self._runner.setup()
        self._started = True
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0]
        return str(bound[0]), int(bound[1])

    async def stop(self) -> None:
        """Stop listening and wait for requests in flight (up to the shutdown timeout)."""
        if self._started:
            self._started = False
            await self._runner.cleanup()


def build_app(
    *,
    publisher: EventPublisher,
    write_key: str,
    telemetry: Telemetry,
    metrics_text: Callable[[], str],
    health: Callable[[], Mapping[str, Any]],
    unsubscribe: UnsubscribeHandler | None = None,
    tokens: UnsubscribeTokens | None = None,
    feedback: FeedbackHandler | None = None,
    tracking: TrackingLinks | None = None,
) -> web.Application:
    """The aiohttp application: tracking API, ``/metrics``, ``/healthz`` and ``/u/{token}``.

    ``metrics_text`` returns the Prometheus exposition (``Telemetry.prometheus``). ``health``
    returns a JSON-able mapping; ``{"ok": False, ...}`` is served with status 503.
    The unsubscribe pages are served when both ``unsubscribe`` and ``tokens`` are given;
    ``POST /webhooks/{provider}`` (ESP bounces and complaints) when ``feedback`` is given.

    Records ``events_received_total{source="http"}``, ``events_invalid_total{source="http"}``,
    ``http_request_seconds{path}`` and ``stage_seconds{stage="ingest"}``.
    """
    if (unsubscribe is None) != (tokens is None):
        raise ValueError("unsubscribe and tokens must be given together")
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    auth = WriteKeyAuth(write_key)
    api = _TrackingApi(publisher, auth, telemetry)
    for kind in EVENT_TYPES:
        app.router.add_post(f"/v1/{kind}", api.single_endpoint(kind))
    for letter, kind in SHORT_PATHS.items():
        app.router.add_post(f"/v1/{letter}", api.single_endpoint(kind))
    for path in BATCH_PATHS:
        app.router.add_post(path, api.batch)

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(
            body=metrics_text().encode(), headers={hdrs.CONTENT_TYPE: METRICS_CONTENT_TYPE}
        )

    async def healthz(_request: web.Request) -> web.Response:
        report = health()
        status = 503 if report.get("ok") is False else 200
        return web.Response(body=orjson.dumps(report), status=status, content_type=_JSON)

    app.router.add_get("/metrics", _timed(telemetry, "/metrics", metrics), allow_head=False)
    app.router.add_get("/healthz", _timed(telemetry, "/healthz", healthz), allow_head=False)
    if unsubscribe is not None and tokens is not None:
        add_unsubscribe_routes(app, tokens=tokens, handler=unsubscribe, telemetry=telemetry)
    if feedback is not None:
        add_webhook_routes(app, auth=auth, feedback=feedback, telemetry=telemetry)
    if tracking is not None:
        # Open pixel and click redirect ([tracking] opens/clicks; off by default).
        add_tracking_routes(app, links=tracking, publisher=publisher, telemetry=telemetry)
    return app


def _timed(telemetry: Telemetry, path: str, handler: Handler) -> Handler:
    async def timed(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            return await handler(request)
        finally:
            telemetry.observe("http_request_seconds", time.perf_counter() - started, path=path)

    return timed


class _TrackingApi:
    """The Segment endpoints. Rejections travel as ``Rejected`` up to one place per endpoint."""

    def __init__(self, publisher: EventPublisher, auth: WriteKeyAuth, telemetry: Telemetry):
        self._publisher = publisher
        self._auth = auth
        self._telemetry = telemetry

    def single_endpoint(self, kind: str) -> Handler:
        # The metric label is the canonical path, so analytics.js's /v1/t counts as /v1/track.
        label = f"/v1/{kind}"

        async def handle(request: web.Request) -> web.StreamResponse:
            started = time.perf_counter()
            try:
                return await self._single(request, kind)
            except Rejected as rejected:
                return self._rejected(rejected)
            finally:
                self._telemetry.observe(
                    "http_request_seconds", time.perf_counter() - started, path=label
                )

        return handle

    async def batch(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            return await self._batch(request)
        except Rejected as rejected:
            return self._rejected(rejected)
        finally:
            self._telemetry.observe(
                "http_request_seconds", time.perf_counter() - started, path="/v1/batch"
            )

    async def _single(self, request: web.Request, kind: str) -> web.StreamResponse:
        header = self._check_header(request)
        data, _size = await read_json(request, EVENT_LIMIT, "one event")
        if not isinstance(data, dict):
            raise error(400, "body must be a JSON object (one event)")
        if header is None and not self._auth.body_ok(data):
            raise WriteKeyAuth.rejected()
        started = time.perf_counter()
        data["type"] = kind  # the path decides, as in Segment's API
        normalize_with_stamp(data, format_time(time.time()))
        try:
            parse_event(data)
        except EventInvalid as exc:
            raise _invalid("the event is invalid", [_problem(exc.field, exc)]) from None
        self._telemetry.count("events_received_total", source=SOURCE)
        try:
            await self._publisher.publish(data)
        except BusError as exc:
            return _unavailable(exc, accepted=None)
        self._telemetry.observe("stage_seconds", time.perf_counter() - started, stage="ingest")
        return web.Response(body=_OK, content_type=_JSON)

    async def _batch(self, request: web.Request) -> web.StreamResponse:
        header = self._check_header(request)
        data, size = await read_json(request, BATCH_LIMIT, "a batch request")
        if not isinstance(data, dict):
            raise error(400, 'body must be a JSON object like {"batch": [...]}')
        if header is None and not self._auth.body_ok(data):
            raise WriteKeyAuth.rejected()
        started = time.perf_counter()
        batch = data.get("batch")
        if not isinstance(batch, list):
            problem = "is required" if batch is None else "must be an array of events"
            raise _invalid("the batch is invalid", [{"field": "batch", "problem": problem}])
        shared_context = data.get("context")
        if shared_context is not None and not isinstance(shared_context, dict):
            problem = "must be a JSON object"
            raise _invalid("the batch is invalid", [{"field": "context", "problem": problem}])
        shared_sent_at = data.get("sentAt")

        stamp = format_time(time.time())
        # No event can exceed the per-event limit when the whole body is below it.
        check_sizes = size > EVENT_LIMIT
        valid: list[dict[str, Any]] = []
        errors: list[dict[str, str]] = []
        for index, item in enumerate(batch):
            try:
                if not isinstance(item, dict):
                    raise EventInvalid(ROOT_FIELD, "must be a JSON object")
                if check_sizes and len(orjson.dumps(item)) > EVENT_LIMIT:
                    raise EventInvalid(
                        ROOT_FIELD, f"is larger than the {limit_words(EVENT_LIMIT)} limit"
                    )
                if shared_context:
                    _merge_context(item, shared_context)
                if shared_sent_at is not None and "sentAt" not in item:
                    item["sentAt"] = shared_sent_at
                normalize_with_stamp(item, stamp)
                parse_event(item)
            except EventInvalid as exc:
                errors.append(_problem(_in_batch(index, exc.field), exc))
                continue
            valid.append(item)

        self._telemetry.count("events_received_total", len(batch), source=SOURCE)
        if errors:
            self._telemetry.count("events_invalid_total", len(errors), source=SOURCE)
        results = await self._publisher.publish_many(valid) if valid else []
        failures = [result for result in results if result is not None]
        accepted = len(valid) - len(failures)
        if failures:
            return _unavailable(failures[0], accepted=accepted, errors=errors)
        self._telemetry.observe("stage_seconds", time.perf_counter() - started, stage="ingest")
        if errors:
            summary = (
                f"{len(errors)} of {len(batch)} events are invalid; "
                f"the other {accepted} were accepted"
            )
            return _invalid(summary, errors, accepted=accepted).response()
        return web.Response(
            body=orjson.dumps({"success": True, "accepted": accepted}), content_type=_JSON
        )

    def _check_header(self, request: web.Request) -> str | None:
        """The Authorization header, if any; a wrong one is refused before the body is read."""
        header = request.headers.get(hdrs.AUTHORIZATION)
        if header is not None and not self._auth.header_ok(header):
            raise WriteKeyAuth.rejected()
        return header

    def _rejected(self, rejected: Rejected) -> web.Response:
        if rejected.status == 401:
            return rejected.response(_AUTH_CHALLENGE)
        if rejected.invalid:
            # A request refused as a whole counts as one event received and found invalid.
            self._telemetry.count("events_received_total", source=SOURCE)
            self._telemetry.count("events_invalid_total", source=SOURCE)
        return rejected.response()


def _problem(field: str, exc: EventInvalid) -> dict[str, str]:
    return {"field": field, "problem": exc.problem}


def _in_batch(index: int, field: str) -> str:
    return f"batch[{index}]" if field == ROOT_FIELD else f"batch[{index}].{field}"


def _merge_context(item: dict[str, Any], shared: dict[str, Any]) -> None:
    """Apply a batch's top-level context to one event; the event's own keys win."""
    own = item.get("context")
    if own is None:
        item["context"] = shared
    elif isinstance(own, dict):
        item["context"] = {**shared, **own}
    # Anything else is left for parse_event to report as "context must be a JSON object".


def _invalid(
    summary: str, errors: list[dict[str, str]], *, accepted: int | None = None
) -> Rejected:
    """400 naming each invalid field; ``accepted`` says how many events of a batch went in."""
    payload: dict[str, Any] = {"success": False, "error": summary, "errors": errors}
    if accepted is not None:
        payload["accepted"] = accepted
    return Rejected(400, payload)


def _unavailable(
    exc: BusError, *, accepted: int | None, errors: list[dict[str, str]] | None = None
) -> web.Response:
    """503: NATS could not take the events. Retrying with the same messageIds is safe."""
    payload: dict[str, Any] = {
        "success": False,
        "error": f"the event stream is unavailable, please retry: {exc}",
    }
    if accepted is not None:
        payload["accepted"] = accepted
    if errors:
        payload["errors"] = errors
    return web.Response(body=orjson.dumps(payload), status=503, content_type=_JSON, headers=_RETRY)
