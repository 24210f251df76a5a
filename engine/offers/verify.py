"""Is this code one we gave out, to whom, worth what: ``offers verify CODE`` and the
``offers.verify`` control verb."""

from __future__ import annotations

import hmac
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from engine.offers.codes import generated_code, normalize
from engine.store import schema

_T = schema.offer_codes


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer for one code; ``reason`` says why in words."""

    code: str
    valid: bool
    reason: str
    offer_id: str | None = None
    kind: str | None = None
    value: str | None = None
    contact_id: str | None = None
    issued_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def verify_code(conn: Connection, code: str, secret: bytes) -> Verdict:
    """Look the code up and, for a generated one, recompute its signature from the issuance
    record: a code changed by one character is unknown, and a record altered in the store (or
    a code not made with this engine's key) fails the signature."""
    text = normalize(code) if isinstance(code, str) else ""
    if not text or len(text) > 100:
        return Verdict(str(code)[:100], False, "not a code: expected text such as SAVE-7KQ2-M9XD")
    row = conn.execute(sa.select(_T).where(_T.c.code.in_({text, code.strip()}))).first()
    if row is None:
        return Verdict(text, False, "unknown code: never issued or imported here")
    found = {
        "offer_id": row.offer_id,
        "kind": row.kind,
        "value": row.value,
        "contact_id": row.contact_id,
        "issued_at": row.issued_at,
    }
    if row.state != "issued":
        return Verdict(row.code, False, "in the pool but not given to anyone yet", **found)
    if row.kind == "generated":
        prefix = row.code.partition("-")[0]
        expected = generated_code(
            secret, row.offer_id, prefix, row.contact_id or "", row.intent_key or "", row.attempt
        )
        if not hmac.compare_digest(expected.encode(), row.code.encode()):
            return Verdict(
                row.code,
                False,
                "signature does not match: the record was altered or the code was not made "
                "with this engine's key",
                **found,
            )
        return Verdict(row.code, True, "valid: generated and signed by this engine", **found)
    return Verdict(row.code, True, "valid: drawn from the imported pool", **found)
