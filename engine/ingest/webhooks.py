"""``POST /webhooks/{provider}``: bounce and complaint webhooks from an ESP (SES, SendGrid,
Postmark), authenticated with the tracking API's write key as the HTTP basic auth user name.

200 with the counts of what was applied; 400 with the parser's words for a body it cannot use;
401 for a missing or wrong key (checked before the body is read); 404 for an unknown provider;
413 past ``WEBHOOK_LIMIT``; 415 for a compressed body.
"""

from __future__ import annotations

import time
from typing import Protocol

import orjson
from aiohttp import hdrs, web

from engine.errors import StoreError
from engine.feedback import FeedbackInvalid
from engine.feedback.apply import FeedbackResult
from engine.ingest.body import Rejected, WriteKeyAuth, error, limit_words
from engine.telemetry import Telemetry

__all__ = ["PROVIDERS", "WEBHOOK_LIMIT", "FeedbackHandler", "add_webhook_routes"]

WEBHOOK_LIMIT = 1024 * 1024
PROVIDERS = ("ses", "sendgrid", "postmark")
_PATH = "/webhooks/{provider}"
_CHALLENGE = {"WWW-Authenticate": 'Basic realm="Campaign Console webhooks"'}


class FeedbackHandler(Protocol):
    """What the webhook endpoint hands a body to (``engine.feedback.intake.FeedbackIntake``)."""

    async def handle_webhook(self, provider: str, body: bytes) -> FeedbackResult: ...


def add_webhook_routes(
    app: web.Application, *, auth: WriteKeyAuth, feedback: FeedbackHandler, telemetry: Telemetry
) -> None:
    """Add ``POST /webhooks/{provider}``; records ``http_request_seconds{path}``."""

    async def handle(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            return await _handle(request, auth, feedback)
        except Rejected as rejected:
            return rejected.response(_CHALLENGE if rejected.status == 401 else None)
        finally:
            telemetry.observe("http_request_seconds", time.perf_counter() - started, path=_PATH)

    app.router.add_post(_PATH, handle)


async def _handle(
    request: web.Request, auth: WriteKeyAuth, feedback: FeedbackHandler
) -> web.Response:
    header = request.headers.get(hdrs.AUTHORIZATION)
    if header is None or not auth.header_ok(header):
        raise error(
            401,
            "missing or wrong write key: send it as the HTTP basic auth user name",
            invalid=False,
        )
    provider = request.match_info["provider"]
    if provider not in PROVIDERS:
        raise error(
            404,
            f"unknown webhook provider {provider[:40]!r}: use one of {', '.join(PROVIDERS)}",
            invalid=False,
        )
    body = await _read(request)
    try:
        result = await feedback.handle_webhook(provider, body)
    except FeedbackInvalid as exc:
        raise error(400, str(exc)) from None
    except StoreError as exc:
        raise error(503, f"the store is unavailable, please retry: {exc}") from None
    payload = {"success": True, **result.as_dict()}
    return web.Response(body=orjson.dumps(payload), content_type="application/json")


async def _read(request: web.Request) -> bytes:
    encoding = request.headers.get(hdrs.CONTENT_ENCODING, "").strip().lower()
    if encoding not in ("", "identity"):
        raise error(415, f"Content-Encoding {encoding[:40]!r} is not supported for webhooks")
    too_large = error(413, f"body is larger than the {limit_words(WEBHOOK_LIMIT)} webhook limit")
    length = request.content_length
    if length is not None and length > WEBHOOK_LIMIT:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(64 * 1024)
        if not chunk:
            break
        size += len(chunk)
        if size > WEBHOOK_LIMIT:
            raise too_large
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        raise error(400, "body is empty: send the provider's JSON")
    return body
