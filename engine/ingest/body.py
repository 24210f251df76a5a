"""Reading tracking-API requests: write-key auth, size limits, gzip and JSON.

Limits are Segment's and apply to the decompressed JSON: 32 KB for one event, 500 KB for a
batch request. Gzip bodies are inflated with an output cap, so a small "gzip bomb" costs at most
one limit's worth of memory.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import zlib
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import hdrs, web

EVENT_LIMIT = 32 * 1024
BATCH_LIMIT = 500 * 1024
# Gzip of incompressible data is slightly larger than the data (header, trailer, ~5 bytes per
# 16 KB block), so the compressed body may exceed the decompressed limit by this much.
GZIP_SLACK = 1024
# aiohttp's own cap on any request body; larger bodies are refused before they are buffered.
MAX_REQUEST_BYTES = BATCH_LIMIT + GZIP_SLACK

_GZIP = frozenset({"gzip", "x-gzip"})
_PLAIN = frozenset({"", "identity"})


class Rejected(Exception):
    """Ends a request early with a JSON error response (the body is already built)."""

    def __init__(self, status: int, payload: dict[str, Any], *, invalid: bool = True) -> None:
        super().__init__(status)
        self.status = status
        self.payload = payload
        # Whether the rejection counts as an invalid event (auth failures do not).
        self.invalid = invalid

    def response(self, headers: Mapping[str, str] | None = None) -> web.Response:
        """The JSON error response."""
        return web.Response(
            body=orjson.dumps(self.payload),
            status=self.status,
            content_type="application/json",
            headers=headers,
        )


def error(status: int, message: str, *, invalid: bool = True) -> Rejected:
    """A request-level error: ``{"success": false, "error": message}``."""
    return Rejected(status, {"success": False, "error": message}, invalid=invalid)


def limit_words(limit: int) -> str:
    """A byte limit as people write it: ``32 KB``."""
    return f"{limit // 1024} KB"


def too_large(limit: int, what: str) -> Rejected:
    """413 naming the limit: ``body is larger than the 32 KB limit for one event``."""
    return error(413, f"body is larger than the {limit_words(limit)} limit for {what}")


async def read_json(request: web.Request, limit: int, what: str) -> tuple[Any, int]:
    """The request's decoded JSON body and its decompressed size; raises ``Rejected``.

    ``what`` names the limit in the 413 message ("one event", "a batch request").
    """
    encoding = request.headers.get(hdrs.CONTENT_ENCODING, "").strip().lower()
    gzipped = encoding in _GZIP
    if not gzipped and encoding not in _PLAIN:
        raise error(415, f"Content-Encoding {encoding!r} is not supported (use gzip or none)")
    cap = limit + GZIP_SLACK if gzipped else limit
    length = request.content_length
    if length is not None and length > cap:
        raise too_large(limit, what)
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large(limit, what) from None
    if len(raw) > cap:
        raise too_large(limit, what)
    if gzipped:
        raw = gunzip(raw, limit, what)
    if not raw:
        raise error(400, "body is empty: send a JSON object")
    try:
        return orjson.loads(raw), len(raw)
    except orjson.JSONDecodeError as exc:
        raise error(
            400, f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None


def gunzip(data: bytes, limit: int, what: str) -> bytes:
    """Inflate gzip ``data`` (one or more members) to at most ``limit`` bytes."""
    out = b""
    while True:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            # max_length is always >= 1 here; 0 would mean "unlimited".
            out += inflater.decompress(data, limit + 1 - len(out))
        except zlib.error as exc:
            raise error(400, f"body is not valid gzip: {exc}") from None
        if len(out) > limit or inflater.unconsumed_tail:
            raise too_large(limit, what)
        if not inflater.eof:
            raise error(400, "body is not valid gzip: it ends too early")
        data = inflater.unused_data
        if not data.strip(b"\0"):  # some writers pad the last member with zeros
            return out


class WriteKeyAuth:
    """Segment's write-key check: HTTP basic auth with the key as user name (password empty),
    or a ``writeKey`` field in the body when there is no Authorization header."""

    def __init__(self, write_key: str) -> None:
        if not write_key:
            raise ValueError("the ingest write key must not be empty")
        self._key = write_key.encode()
        # The header Segment's libraries send; compared first, without decoding anything.
        token = base64.b64encode(self._key + b":").decode("ascii")
        self._expected = f"Basic {token}".encode()

    def header_ok(self, header: str) -> bool:
        """Whether an Authorization header carries the write key."""
        raw = header.encode("utf-8", "surrogateescape")
        if hmac.compare_digest(raw, self._expected):
            return True
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        user = decoded.partition(b":")[0]
        return hmac.compare_digest(user, self._key)

    def body_ok(self, data: dict[str, Any]) -> bool:
        """Whether a decoded body carries the write key as ``writeKey``."""
        key = data.get("writeKey")
        return isinstance(key, str) and hmac.compare_digest(key.encode(), self._key)

    @staticmethod
    def rejected() -> Rejected:
        """401 saying how to send the key (the caller adds ``WWW-Authenticate``)."""
        return error(
            401,
            "missing or wrong write key: send it as the HTTP basic auth user name "
            "(with an empty password) or as writeKey in the body",
            invalid=False,
        )
