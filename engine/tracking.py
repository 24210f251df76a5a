"""Opt-in open and click tracking: signed pixel and redirect links (docs/experiments.md).

Off by default (``[tracking] opens = false, clicks = false``). When on, the deliver stage
rewrites each ``http(s)`` link of a mail's HTML to ``<public_url>/t/c/<token>`` and adds a
1x1 image ``<public_url>/t/o/<token>``; the HTTP service turns a hit into an event in the
stream, ``Email Opened`` or ``Email Link Clicked``, with the mail's ``intent_id``,
``workflow_id``, ``step_id`` (and ``url``), so workflows can wait for or branch on them.

A token is ``base64url(payload) "." base64url(HMAC-SHA256(key, payload)[:16])``, the payload
naming the kind, the intent, the contact, the workflow, the step and (clicks) the target URL.
The key is derived from the unsubscribe secret with a label of its own, so a tracking token
is never an unsubscribe token and the other way round. The redirect goes only to the URL
inside a valid token: a changed URL breaks the signature, so the service cannot be used as
an open redirect.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from html import escape, unescape

import orjson

from engine.errors import TokenInvalid
from engine.unsubscribe import UnsubscribeTokens

OPENED = "Email Opened"
CLICKED = "Email Link Clicked"
KEY_LABEL = b"campaign-console tracking v1"
_SIG_BYTES = 16
_MAX_TOKEN = 4096
_HREF = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(https?://[^"']+)\2""", re.IGNORECASE)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
# The smallest transparent GIF.
PIXEL_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class Hit:
    """What a valid token says."""

    kind: str  # "o" (open) or "c" (click)
    intent_id: str
    contact_id: str
    workflow_id: str
    step_id: str
    url: str = ""

    @property
    def event_name(self) -> str:
        return OPENED if self.kind == "o" else CLICKED


class TrackingLinks:
    """Makes and checks tracking tokens, and instruments a mail's HTML."""

    def __init__(self, key: bytes, public_url: str, *, opens: bool, clicks: bool) -> None:
        if len(key) < 16:
            raise ValueError("the tracking key must be at least 16 bytes")
        self._key = key
        self.base = public_url.rstrip("/")
        self.opens = opens
        self.clicks = clicks

    @classmethod
    def from_settings(
        cls, tokens: UnsubscribeTokens, public_url: str, *, opens: bool, clicks: bool
    ) -> TrackingLinks | None:
        """Links keyed from the unsubscribe secret (labelled), or None when both are off."""
        if not opens and not clicks:
            return None
        key = tokens.derived_key(KEY_LABEL)
        return cls(key, public_url, opens=opens, clicks=clicks)

    def token(self, hit: Hit) -> str:
        fields = [hit.kind, hit.intent_id, hit.contact_id, hit.workflow_id, hit.step_id]
        if hit.kind == "c":
            fields.append(hit.url)
        payload = orjson.dumps(fields)
        sig = hmac.new(self._key, payload, hashlib.sha256).digest()[:_SIG_BYTES]
        return f"{_b64(payload)}.{_b64(sig)}"

    def verify(self, token: str, kind: str) -> Hit:
        """The hit a token names; ``TokenInvalid`` for anything forged, bent or of another kind."""
        head, dot, tail = token.partition(".")
        if not dot or not head or not tail or len(token) > _MAX_TOKEN:
            raise TokenInvalid("malformed tracking link")
        try:
            payload, sig = _unb64(head), _unb64(tail)
        except (ValueError, TypeError) as exc:
            raise TokenInvalid("malformed tracking link") from exc
        expected = hmac.new(self._key, payload, hashlib.sha256).digest()[:_SIG_BYTES]
        if not hmac.compare_digest(sig, expected):
            raise TokenInvalid("tracking link signature does not match")
        try:
            fields = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise TokenInvalid("malformed tracking link") from exc
        if (
            not isinstance(fields, list)
            or not all(isinstance(f, str) for f in fields)
            or len(fields) != (6 if kind == "c" else 5)
            or fields[0] != kind
        ):
            raise TokenInvalid("malformed tracking link")
        return Hit(*fields)

    def instrument(
        self,
        html: str,
        *,
        intent_id: str,
        contact_id: str,
        workflow_id: str,
        step_id: str,
        keep: tuple[str, ...] = (),
    ) -> str:
        """The HTML with its links going through the click redirect (except those in ``keep``,
        such as the unsubscribe link) and the open pixel before ``</body>``."""
        base = Hit("c", intent_id, contact_id, workflow_id, step_id)
        if self.clicks:

            def rewrite(match: re.Match[str]) -> str:
                target = unescape(match.group(3))
                if target in keep:
                    return match.group(0)
                hit = Hit("c", base.intent_id, contact_id, workflow_id, step_id, target)
                link = escape(f"{self.base}/t/c/{self.token(hit)}")
                return f"{match.group(1)}{match.group(2)}{link}{match.group(2)}"

            html = _HREF.sub(rewrite, html)
        if self.opens:
            hit = Hit("o", intent_id, contact_id, workflow_id, step_id)
            pixel = (
                f'<img src="{escape(f"{self.base}/t/o/{self.token(hit)}")}" width="1" height="1"'
                ' alt="" style="display:block;border:0;width:1px;height:1px">'
            )
            found = list(_BODY_END.finditer(html))
            if found:
                at = found[-1].start()
                html = html[:at] + pixel + html[at:]
            else:
                html += pixel
        return html
