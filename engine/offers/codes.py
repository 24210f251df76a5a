"""Generated codes: short, signed, verifiable.

A generated code is ``PREFIX-XXXX-XXXX``: eight Crockford base32 characters (40 bits) of
HMAC-SHA256(offer key, offer id, contact id, intent key, attempt). Nobody without the key can
make one that verifies, and the same send always gets the same code. ``attempt`` is 0 unless
another issued code already took that text (at a million codes per offer, two 40-bit codes
collide with a fair chance); the issuance row keeps it so verification can recompute the code.
"""

from __future__ import annotations

import hashlib
import hmac

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford: no I, L, O, U
_READ_AS = str.maketrans({"O": "0", "I": "1", "L": "1"})
BODY_CHARS = 8


def _base32(data: bytes, chars: int) -> str:
    number = int.from_bytes(data, "big")
    bits = len(data) * 8
    out = []
    for i in range(chars):
        shift = bits - 5 * (i + 1)
        out.append(ALPHABET[(number >> shift) & 31])
    return "".join(out)


def generated_code(secret: bytes, offer_id: str, prefix: str, contact_id: str, intent_key: str,
                   attempt: int = 0) -> str:  # fmt: skip
    """The code for one send of one offer to one contact."""
    if len(secret) < 16:
        raise ValueError("the offer signing key must be at least 16 bytes")
    message = "\x1f".join((offer_id, contact_id, intent_key, str(attempt))).encode()
    mac = hmac.new(secret, message, hashlib.sha256).digest()
    body = _base32(mac[:5], BODY_CHARS)
    return f"{prefix}-{body[:4]}-{body[4:]}"


def normalize(code: str) -> str:
    """A code as people type it back: case, spaces and look-alike letters forgiven; the
    prefix is kept as written (upper-cased)."""
    text = "".join(code.split()).upper()
    prefix, dash, body = text.partition("-")
    if not dash:
        return text
    return f"{prefix}-{body.translate(_READ_AS)}"
