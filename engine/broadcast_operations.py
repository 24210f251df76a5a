"""The broadcast control verbs (``broadcasts.*``; envelope in engine/control.py).

- ``broadcasts.create {template, segment, at?, name?, category?, route?, priority?, preview?}``
  -> ``{action, preview, recipients, send_at, summary}`` and, when done, ``id``, ``name``,
  ``audit_id``. ``at``: omitted or ``"now"``, epoch seconds, or ISO 8601 with an offset.
- ``broadcasts.list {limit?}`` -> ``{"broadcasts": [...]}``, newest first, each with its state,
  fan-out progress (``members``, ``queued``, ``capped``, ``skipped``, ``progress``) and the
  outcomes of its intents so far (``outcomes``: status -> count).
- ``broadcasts.cancel {broadcast, reason, preview?}`` -> ``{action, preview, id, count,
  reason, summary}`` (+ ``audit_id``): stops the fan-out, cancels the pending intents.

Bad arguments are refused with a message naming the problem, and nothing changes. The
statements are in engine/broadcasts.py (the CLI uses them too).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from engine import broadcasts
from engine.control import ControlError, ControlServer, check_keys
from engine.deliver.routes import known_routes

if TYPE_CHECKING:
    from engine.node import Node

_CREATE = ("template", "segment", "at", "name", "category", "route", "priority", "preview")


def _flag(args: dict[str, Any], key: str) -> bool:
    value = args.get(key, False)
    if not isinstance(value, bool):
        raise ControlError(f"{key} must be true or false")
    return value


def register_broadcast_operations(control: ControlServer, node: Node) -> None:
    """Register the broadcast verbs on the node's control server."""

    store = node.require_store

    def poke() -> None:
        service = node.components.get("broadcasts")
        if isinstance(service, broadcasts.BroadcastService):
            service.poke()

    async def create(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, _CREATE)
        preview = _flag(args, "preview")
        try:
            request = broadcasts.BroadcastRequest(
                template=args.get("template", ""),
                segment=args.get("segment", ""),
                name=args.get("name") or "",
                send_at=broadcasts.parse_when(args.get("at")),
                category=args.get("category", "marketing"),
                route=args.get("route", "default"),
                priority=args.get("priority", broadcasts.DEFAULT_PRIORITY),
            )
            reply = await asyncio.to_thread(
                broadcasts.create,
                store(),
                request,
                actor=actor,
                now=node.clock.now(),
                routes=sorted(known_routes(node.settings)),
                preview=preview,
            )
        except broadcasts.BroadcastError as exc:
            raise ControlError(str(exc)) from None
        if not preview:
            poke()
        return reply

    async def list_(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, ("limit",))
        limit = args.get("limit", 50)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 500:
            raise ControlError("limit must be a whole number from 1 to 500")
        found = await asyncio.to_thread(broadcasts.list_broadcasts, store(), limit=limit)
        return {"now": node.clock.now(), "broadcasts": found}

    async def cancel(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, ("broadcast", "reason", "preview"))
        ident = args.get("broadcast")
        if not isinstance(ident, str) or not ident.strip() or len(ident) > 32:
            raise ControlError("broadcast must be a broadcast id (see broadcasts.list)")
        reason = args.get("reason")
        if not isinstance(reason, str):
            raise ControlError("a reason is required (text)")
        try:
            return await asyncio.to_thread(
                broadcasts.cancel,
                store(),
                ident.strip(),
                reason=reason,
                actor=actor,
                now=node.clock.now(),
                preview=_flag(args, "preview"),
            )
        except broadcasts.BroadcastError as exc:
            raise ControlError(str(exc)) from None

    control.register("broadcasts.create", create)
    control.register("broadcasts.list", list_)
    control.register("broadcasts.cancel", cancel)
