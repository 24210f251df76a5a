"""The unsubscribe pages behind the ``List-Unsubscribe`` link (RFC 8058 one-click).

``GET /u/{token}`` only shows a confirmation page with a button: mail security scanners and link
previewers follow every link in a message, so a GET must never unsubscribe anyone.
``POST /u/{token}`` unsubscribes: either a mail client's one-click request (form body
``List-Unsubscribe=One-Click``, RFC 8058 section 3.2) or the page's own button.
A forged or garbled token gets a 400 page and changes nothing.
"""

from __future__ import annotations

import html
import logging
import time
from typing import Protocol

from aiohttp import web

from engine.errors import TokenInvalid
from engine.telemetry import Telemetry
from engine.unsubscribe import UnsubscribeTokens

log = logging.getLogger(__name__)

ROUTE = "/u/{token}"
SOURCE_ONE_CLICK = "one-click"  # a mail client's RFC 8058 POST
SOURCE_PAGE = "page"  # the button on our confirmation page

# The page's button posts this field, so its requests can be told apart from one-click ones.
_CONFIRM_FIELD = "confirm"

_HEADERS = {
    # The token in the URL is a bearer credential: keep it out of caches and Referer headers.
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    # Nobody may frame the page to trick a click on the button.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "X-Robots-Tag": "noindex",
}

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{title}</title>
<style>
  body {{ margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
         background: #f4f5f7; color: #1f2328; }}
  main {{ max-width: 28rem; margin: 12vh auto; padding: 2rem; background: #fff;
         border-radius: 12px; box-shadow: 0 1px 3px rgba(0, 0, 0, .08); }}
  h1 {{ font-size: 1.35rem; margin: 0 0 .75rem; }}
  p {{ margin: 0 0 1rem; color: #444c56; }}
  button {{ font: inherit; font-weight: 600; color: #fff; background: #cf222e; border: 0;
           border-radius: 8px; padding: .6rem 1.4rem; cursor: pointer; }}
  button:hover, button:focus-visible {{ background: #a40e26; }}
</style>
</head>
<body>
<main>
<h1>{title}</h1>
{body}
</main>
</body>
</html>
"""


class UnsubscribeHandler(Protocol):
    """Records an unsubscribe; the lead wires it to the store. Must be idempotent.

    ``source`` is ``"one-click"`` (a mail client's RFC 8058 POST) or ``"page"`` (our button).
    """

    async def __call__(self, contact_id: str, address: str, source: str) -> None: ...


def add_unsubscribe_routes(
    app: web.Application,
    *,
    tokens: UnsubscribeTokens,
    handler: UnsubscribeHandler,
    telemetry: Telemetry,
) -> None:
    """Add ``GET`` and ``POST /u/{token}`` to ``app``.

    Records ``http_request_seconds{path="/u/{token}"}`` and ``unsubscribes_total{source}``.
    """
    pages = _UnsubscribePages(tokens, handler, telemetry)
    # HEAD is as harmless as GET here: link checkers use it.
    app.router.add_get(ROUTE, pages.show)
    app.router.add_post(ROUTE, pages.unsubscribe)


class _UnsubscribePages:
    def __init__(
        self, tokens: UnsubscribeTokens, handler: UnsubscribeHandler, telemetry: Telemetry
    ) -> None:
        self._tokens = tokens
        self._handler = handler
        self._telemetry = telemetry

    async def show(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            contact = self._verify(request)
            if contact is None:
                return _invalid_link()
            address = html.escape(_mask(contact[1]))
            return _page(
                "Unsubscribe from our emails?",
                f"<p>We will stop sending marketing emails to <strong>{address}</strong>. "
                "Emails about your orders and your account will still arrive.</p>\n"
                # Without an action the form posts back to this very URL, token included.
                '<form method="post">'
                f'<input type="hidden" name="{_CONFIRM_FIELD}" value="yes">'
                '<button type="submit">Unsubscribe</button></form>',
            )
        finally:
            self._observe(started)

    async def unsubscribe(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            contact = self._verify(request)
            if contact is None:
                return _invalid_link()
            form = await request.post()
            if form.get("List-Unsubscribe") == "One-Click":
                source = SOURCE_ONE_CLICK
            elif form.get(_CONFIRM_FIELD) == "yes":
                source = SOURCE_PAGE
            else:
                return _page(
                    "Nothing was changed",
                    "<p>This request did not ask to unsubscribe. Please open the unsubscribe "
                    "link from our email and press the button.</p>",
                    status=400,
                )
            contact_id, address = contact
            try:
                await self._handler(contact_id, address, source)
            except Exception:
                # The reader can do nothing about it; say so plainly and keep the details here.
                log.exception("unsubscribe of contact %s failed", contact_id)
                return _page(
                    "We could not unsubscribe you just now",
                    "<p>Something went wrong on our side and nothing was changed. "
                    "Please try again in a few minutes.</p>",
                    status=503,
                )
            self._telemetry.count("unsubscribes_total", source=source)
            return _page(
                "You are unsubscribed",
                f"<p>We will not send marketing emails to "
                f"<strong>{html.escape(_mask(address))}</strong> any more.</p>",
            )
        finally:
            self._observe(started)

    def _verify(self, request: web.Request) -> tuple[str, str] | None:
        try:
            return self._tokens.verify(request.match_info["token"])
        except TokenInvalid:
            return None

    def _observe(self, started: float) -> None:
        self._telemetry.observe("http_request_seconds", time.perf_counter() - started, path=ROUTE)


def _invalid_link() -> web.Response:
    return _page(
        "This unsubscribe link does not work",
        "<p>The link may have been cut short or changed when it was copied, "
        "so nothing was changed.</p>"
        "<p>Please use the unsubscribe link in the latest email from us, "
        "or reply to that email and ask to be removed.</p>",
        status=400,
    )


def _page(title: str, body: str, *, status: int = 200) -> web.Response:
    text = _PAGE.format(title=html.escape(title), body=body)
    return web.Response(
        text=text, status=status, content_type="text/html", charset="utf-8", headers=_HEADERS
    )


def _mask(address: str) -> str:
    """``jane.doe@example.com`` -> ``ja…@example.com``: enough to recognise, if forwarded."""
    local, at, domain = address.rpartition("@")
    if not at:
        return address[:2] + "…"
    return f"{local[:2]}…@{domain}"
