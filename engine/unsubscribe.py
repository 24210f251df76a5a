"""Unsubscribe tokens: opaque, signed, per contact and address.

A token is ``base64url(payload) "." base64url(HMAC-SHA256(secret, payload)[:16])`` where the
payload names the contact and address. It is only a bearer proof that the link came from us: it
grants nothing but "unsubscribe this address", so it does not expire.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

import orjson

from engine.errors import TokenInvalid

_SIG_BYTES = 16


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class UnsubscribeTokens:
    """Makes and verifies unsubscribe tokens with one secret key."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the unsubscribe secret must be at least 16 bytes")
        self._secret = secret

    def derived_key(self, label: bytes) -> bytes:
        """A key for another purpose (tracking links), derived from the secret and a label."""
        return hmac.new(self._secret, label, hashlib.sha256).digest()

    def make(self, contact_id: str, address: str) -> str:
        payload = orjson.dumps([contact_id, address.lower()])
        sig = hmac.new(self._secret, payload, hashlib.sha256).digest()[:_SIG_BYTES]
        return f"{_b64(payload)}.{_b64(sig)}"

    def verify(self, token: str) -> tuple[str, str]:
        """Return ``(contact_id, address)``; raise ``TokenInvalid`` for anything forged or bent."""
        head, dot, tail = token.partition(".")
        if not dot or not head or not tail or len(token) > 2048:
            raise TokenInvalid("malformed unsubscribe token")
        try:
            payload = _unb64(head)
            sig = _unb64(tail)
        except (ValueError, TypeError) as exc:
            raise TokenInvalid("malformed unsubscribe token") from exc
        expected = hmac.new(self._secret, payload, hashlib.sha256).digest()[:_SIG_BYTES]
        if not hmac.compare_digest(sig, expected):
            raise TokenInvalid("unsubscribe token signature does not match")
        try:
            contact_id, address = orjson.loads(payload)
        except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
            raise TokenInvalid("malformed unsubscribe token") from exc
        if not isinstance(contact_id, str) or not isinstance(address, str):
            raise TokenInvalid("malformed unsubscribe token")
        return contact_id, address


def load_or_create_secret(path: Path) -> bytes:
    """The signing key, kept in a file only this user can read."""
    if path.exists():
        return path.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(secret)
    return secret
