"""Control verbs for offers and consent (docs/CONTRACTS.md):

- ``offers.verify {code}`` -> ``{code, valid, reason, offer_id, kind, value, contact_id,
  issued_at}``: whether a code is one this engine issued, to whom and worth what;
- ``offers.list`` -> ``[{id, kind, value, description, rules: [{when, value}], issued,
  available}]``: every offer in the settings and the loaded workflows, with pool counts;
- ``consent.history {contact, purpose?, limit?}`` -> ``{contact, consent, history: [{purpose,
  granted, at, method, source, event_id, applied, recorded_at}]}``: the consent in effect and
  every change, newest first.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from engine.consent import check_purpose
from engine.control import ControlError, ControlServer
from engine.offers.issue import pool_counts
from engine.offers.model import Offer
from engine.offers.verify import verify_code
from engine.store import schema

if TYPE_CHECKING:
    from engine.decide.registry import WorkflowRegistry
    from engine.node import Node


def _only(args: dict[str, Any], allowed: tuple[str, ...]) -> None:
    extra = sorted(set(args) - set(allowed))
    if extra:
        takes = ", ".join(allowed) or "no arguments"
        raise ControlError(f"unknown argument(s) {', '.join(extra)} (this verb takes: {takes})")


def _text(args: dict[str, Any], key: str, most: int) -> str:
    value = args.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ControlError(f"{key} is required (text)")
    if len(value) > most:
        raise ControlError(f"{key} is too long (at most {most} characters)")
    return value.strip()


def offers_of(registry: WorkflowRegistry) -> dict[str, Offer]:
    """The configured offers and those of the newest version of every loaded workflow."""
    offers = dict(registry.offers.offers)
    for wf in registry.index.live.values():
        offers.update(wf.offers)
    return offers


def register_offer_operations(control: ControlServer, node: Node) -> None:
    store = node.require_store

    def registry() -> WorkflowRegistry:
        library = node.components.get("library")
        if library is None:
            raise ControlError("the workflows are not loaded on this node")
        found: WorkflowRegistry = library.workflows
        return found

    async def offers_verify(args: dict[str, Any], actor: str) -> Any:
        _only(args, ("code",))
        code = _text(args, "code", 100)
        secret = registry().offers.secret

        def run() -> dict[str, Any]:
            with store().engine.connect() as conn:
                return verify_code(conn, code, secret).as_dict()

        return await asyncio.to_thread(run)

    async def offers_list(args: dict[str, Any], actor: str) -> Any:
        _only(args, ())
        offers = offers_of(registry())

        def run() -> list[dict[str, Any]]:
            with store().engine.connect() as conn:
                counts = pool_counts(conn)
            return [
                {
                    "id": o.id,
                    "kind": o.kind,
                    "value": o.value,
                    "description": o.description,
                    "rules": [{"when": r.describe(), "value": r.value} for r in o.rules],
                    "issued": counts.get(o.id, {}).get("issued", 0),
                    "available": counts.get(o.id, {}).get("available", 0),
                }
                for o in sorted(offers.values(), key=lambda o: o.id)
            ]

        return await asyncio.to_thread(run)

    async def consent_history(args: dict[str, Any], actor: str) -> Any:
        _only(args, ("contact", "purpose", "limit"))
        contact = _text(args, "contact", 255)
        purpose = args.get("purpose")
        if purpose is not None:
            try:
                check_purpose(purpose, "purpose")
            except ValueError as exc:
                raise ControlError(str(exc)) from exc
        limit = args.get("limit", 100)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise ControlError("limit must be a whole number from 1 to 1000")

        def run() -> dict[str, Any]:
            h, c = schema.consent_history, schema.contacts
            with store().engine.connect() as conn:
                row = conn.execute(sa.select(c.c.consent).where(c.c.id == contact)).first()
                if row is None:
                    raise ControlError(f"there is no contact {contact!r}")
                query = sa.select(h).where(h.c.contact_id == contact)
                if purpose is not None:
                    query = query.where(h.c.purpose == purpose)
                query = query.order_by(h.c.at.desc(), h.c.id.desc()).limit(limit)
                history = [
                    {k: v for k, v in r._mapping.items() if k not in ("id", "contact_id")}
                    for r in conn.execute(query)
                ]
            return {"contact": contact, "consent": row.consent or {}, "history": history}

        return await asyncio.to_thread(run)

    control.register("offers.verify", offers_verify)
    control.register("offers.list", offers_list)
    control.register("consent.history", consent_history)
