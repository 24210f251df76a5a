"""Open pixel and click redirect: ``GET /t/o/{token}``, ``GET /t/c/{token}`` (engine/tracking.py).

A valid hit publishes ``Email Opened`` / ``Email Link Clicked`` into the EVENTS stream (so
workflows can wait for or branch on it) and answers with the 1x1 GIF, or a 302 to the signed
URL. A forged or bent token gets a 400 and publishes nothing; there is no redirect to any URL
that is not inside a valid signature. If the stream is unavailable, the reader still gets the
image or the redirect (the hit is counted as lost).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiohttp import web

from engine.errors import BusError, EventInvalid, TokenInvalid
from engine.ids import new_id
from engine.ingest.publisher import EventPublisher
from engine.ingest.validate import format_time, normalize_with_stamp, parse_event
from engine.telemetry import Telemetry
from engine.tracking import PIXEL_GIF, Hit, TrackingLinks

log = logging.getLogger(__name__)

_HEADERS = {
    "Cache-Control": "no-store, private",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Robots-Tag": "noindex",
}
ANON_PREFIX = "anon:"


def hit_event(hit: Hit, now: float) -> dict[str, Any]:
    """The Segment ``track`` event of a hit, normalized as ingest does."""
    properties = {
        "intent_id": hit.intent_id,
        "workflow_id": hit.workflow_id,
        "step_id": hit.step_id,
    }
    if hit.kind == "c":
        properties["url"] = hit.url
    data: dict[str, Any] = {
        "type": "track",
        "event": hit.event_name,
        "properties": properties,
        "messageId": f"{hit.kind}-{new_id()}",
    }
    if hit.contact_id.startswith(ANON_PREFIX):
        data["anonymousId"] = hit.contact_id[len(ANON_PREFIX) :]
    else:
        data["userId"] = hit.contact_id
    normalize_with_stamp(data, format_time(now))
    return data


def add_tracking_routes(
    app: web.Application,
    *,
    links: TrackingLinks,
    publisher: EventPublisher,
    telemetry: Telemetry,
) -> None:
    """Serve the open pixel and the click redirect."""

    async def publish(hit: Hit) -> None:
        data = hit_event(hit, time.time())
        try:
            parse_event(data)
            await publisher.publish(data)
        except (BusError, EventInvalid) as exc:
            telemetry.count("tracking_lost_total", kind=hit.kind)
            log.warning("tracking hit not recorded: %s", exc)
            return
        telemetry.count("tracking_hits_total", kind=hit.kind)

    async def opened(request: web.Request) -> web.Response:
        token = request.match_info["token"].removesuffix(".gif")
        try:
            hit = links.verify(token, "o")
        except TokenInvalid as exc:
            telemetry.count("tracking_invalid_total", kind="o")
            return web.Response(status=400, text=f"{exc}\n", headers=_HEADERS)
        await publish(hit)
        return web.Response(body=PIXEL_GIF, content_type="image/gif", headers=_HEADERS)

    async def clicked(request: web.Request) -> web.Response:
        try:
            hit = links.verify(request.match_info["token"], "c")
            if not hit.url.lower().startswith(("http://", "https://")):
                raise TokenInvalid("the link does not lead to a web page")
        except TokenInvalid as exc:
            telemetry.count("tracking_invalid_total", kind="c")
            text = f"This link is not valid ({exc}). Nothing was opened.\n"
            return web.Response(status=400, text=text, headers=_HEADERS)
        await publish(hit)
        raise web.HTTPFound(hit.url, headers=_HEADERS)

    app.router.add_get("/t/o/{token}", opened, allow_head=False)
    app.router.add_get("/t/c/{token}", clicked, allow_head=False)
