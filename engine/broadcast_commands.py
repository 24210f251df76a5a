"""``campaign-engine broadcast create|list|cancel``: broadcasts straight against the store.

A running engine (role all or decide) picks a created broadcast up within its poll interval
(about a second); the statements and their checks are the control verbs' (engine/broadcasts.py).
"""

from __future__ import annotations

import getpass
import time
from datetime import UTC, datetime

from engine import broadcasts
from engine.config import Settings
from engine.deliver.routes import known_routes


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M")


def broadcast_create(
    settings: Settings,
    *,
    template: str,
    segment: str,
    at: str | None,
    name: str,
    category: str,
    route: str,
    priority: str,
    preview: bool,
) -> int:
    from engine.commands import _store

    level: int | str = int(priority) if priority.isdigit() else priority
    request = broadcasts.BroadcastRequest(
        template=template,
        segment=segment,
        name=name,
        send_at=broadcasts.parse_when(at),
        category=category,
        route=route,
        priority=level,
    )
    store = _store(settings)
    try:
        reply = broadcasts.create(
            store,
            request,
            actor=_actor(),
            now=time.time(),
            routes=sorted(known_routes(settings)),
            preview=preview,
        )
    finally:
        store.dispose()
    print(reply["summary"] + (" (preview: nothing was changed)" if preview else ""))
    if not preview:
        print(f"Broadcast id: {reply['id']}")
    return 0


def broadcast_list(settings: Settings, *, limit: int) -> int:
    from engine.commands import _store

    store = _store(settings)
    try:
        found = broadcasts.list_broadcasts(store, limit=limit)
    finally:
        store.dispose()
    if not found:
        print("No broadcasts yet.")
        return 0
    print(
        f"{'ID':32}  {'STATE':9}  {'SEND AT (UTC)':16}  {'DONE':>5}  {'QUEUED':>7}  "
        f"{'SENT':>7}  {'CAPPED':>6}  NAME"
    )
    for b in found:
        sent = b["outcomes"].get("sent", 0)
        print(
            f"{b['id']:32}  {b['state']:9}  {_when(b['send_at']):16}  "
            f"{b['progress']:>5.0%}  {b['queued']:>7,}  {sent:>7,}  {b['capped']:>6,}  {b['name']}"
        )
    return 0


def broadcast_cancel(settings: Settings, ident: str, *, reason: str, preview: bool) -> int:
    from engine.commands import _store

    store = _store(settings)
    try:
        reply = broadcasts.cancel(
            store, ident, reason=reason, actor=_actor(), now=time.time(), preview=preview
        )
    finally:
        store.dispose()
    print(reply["summary"] + (" (preview: nothing was changed)" if preview else ""))
    return 0
