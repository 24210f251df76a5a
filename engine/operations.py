"""Control API verbs served by every node (see engine/control.py for the envelope).

Each verb that changes something writes an audit entry with the actor, what, and how many. Who
may call each verb is in the one table of engine/access.py: a verb missing there is refused.
"""

from __future__ import annotations

import asyncio
import base64
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from engine.control import ControlError, ControlServer
from engine.store import Store, schema

if TYPE_CHECKING:
    from engine.alerts import AlertService
    from engine.node import Node


def _limit(args: dict[str, Any], default: int = 100, most: int = 1000) -> int:
    raw = args.get("limit", default)
    if not isinstance(raw, int) or raw < 1:
        raise ControlError("limit must be a positive whole number")
    return min(raw, most)


def audit(
    store: Store,
    *,
    actor: str,
    action: str,
    target: str,
    count: int,
    detail: dict[str, Any],
    now: float,
) -> None:
    with store.begin() as conn:
        conn.execute(
            schema.audit_log.insert(),
            {
                "ts": now,
                "actor": actor[:200],
                "action": action,
                "target": target[:400],
                "count": count,
                "detail": detail,
            },
        )


def register_operations(control: ControlServer, node: Node) -> None:
    """Register the node's verbs on its control server."""

    store = node.require_store

    async def ping(args: dict[str, Any], actor: str) -> Any:
        # "verbs": what this engine serves (the console enables "Pause all sending" on it).
        return {**node.health(), "verbs": control.verbs}

    async def metrics(args: dict[str, Any], actor: str) -> Any:
        return node.telemetry.snapshot()

    async def ledger_summary(args: dict[str, Any], actor: str) -> Any:
        def query() -> dict[str, int]:
            with store().begin() as conn:
                rows = conn.execute(
                    sa.select(schema.intents.c.status, sa.func.count()).group_by(
                        schema.intents.c.status
                    )
                ).all()
            return {str(status): int(n) for status, n in rows}

        return await asyncio.to_thread(query)

    async def deliverability_summary(args: dict[str, Any], actor: str) -> Any:
        from engine.deliverability import summary

        return await asyncio.to_thread(summary, store(), node.clock.now())

    async def audit_list(args: dict[str, Any], actor: str) -> Any:
        limit = _limit(args)
        text = str(args.get("search") or "")

        def query() -> list[dict[str, Any]]:
            t = schema.audit_log
            stmt = sa.select(t).order_by(t.c.id.desc()).limit(limit)
            if text:
                like = f"%{text}%"
                stmt = stmt.where(
                    sa.or_(t.c.actor.ilike(like), t.c.action.ilike(like), t.c.target.ilike(like))
                )
            with store().begin() as conn:
                return [dict(r._mapping) for r in conn.execute(stmt)]

        return await asyncio.to_thread(query)

    async def dead_letters_list(args: dict[str, Any], actor: str) -> Any:
        limit = _limit(args)
        status = str(args.get("status") or "open")

        def query() -> list[dict[str, Any]]:
            t = schema.dead_letters
            stmt = (
                sa.select(t)
                .where(t.c.status == status)
                .order_by(t.c.created_at.desc())
                .limit(limit)
            )
            with store().begin() as conn:
                rows = [dict(r._mapping) for r in conn.execute(stmt)]
            for row in rows:
                payload: bytes = row.pop("payload")
                try:
                    row["payload"] = payload.decode("utf-8")
                except UnicodeDecodeError:
                    row["payload_b64"] = base64.b64encode(payload).decode("ascii")
            return rows

        return await asyncio.to_thread(query)

    async def dead_letters_discard(args: dict[str, Any], actor: str) -> Any:
        ids = args.get("ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or not ids:
            raise ControlError("ids must be a non-empty list of dead letter ids")

        def run() -> int:
            t = schema.dead_letters
            with store().begin() as conn:
                n = conn.execute(
                    sa.update(t)
                    .where(t.c.id.in_(ids), t.c.status == "open")
                    .values(status="discarded")
                ).rowcount
            audit(
                store(),
                actor=actor,
                action="dead_letters.discard",
                target=",".join(ids)[:400],
                count=n,
                detail={"ids": ids},
                now=node.clock.now(),
            )
            return int(n)

        return {"discarded": await asyncio.to_thread(run)}

    async def dead_letters_retry(args: dict[str, Any], actor: str) -> Any:
        ids = args.get("ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or not ids:
            raise ControlError("ids must be a non-empty list of dead letter ids")
        if node.js is None:
            raise ControlError("not connected to JetStream")
        t = schema.dead_letters

        def load() -> list[dict[str, Any]]:
            with store().begin() as conn:
                return [
                    dict(r._mapping)
                    for r in conn.execute(sa.select(t).where(t.c.id.in_(ids), t.c.status == "open"))
                ]

        rows = await asyncio.to_thread(load)
        for row in rows:
            # A fresh Nats-Msg-Id: the original id was already seen by JetStream's dedup window.
            await node.js.publish(
                row["subject"], row["payload"], headers={"Nats-Msg-Id": f"retry-{row['id']}"}
            )

        def mark() -> None:
            with store().begin() as conn:
                conn.execute(
                    sa.update(t).where(t.c.id.in_([r["id"] for r in rows])).values(status="retried")
                )
            audit(
                store(),
                actor=actor,
                action="dead_letters.retry",
                target=",".join(ids)[:400],
                count=len(rows),
                detail={"ids": ids},
                now=node.clock.now(),
            )

        await asyncio.to_thread(mark)
        return {"retried": len(rows)}

    async def inbox_list(args: dict[str, Any], actor: str) -> Any:
        from engine.inbox import list_messages

        limit = _limit(args, default=50)
        query = args.get("search")
        entries = await asyncio.to_thread(
            list_messages, node.data_dir / "inbox", limit=limit, query=query or None
        )
        return [e.to_dict() for e in entries]

    async def inbox_show(args: dict[str, Any], actor: str) -> Any:
        from engine.inbox import get_message

        ident = args.get("id")
        if not isinstance(ident, str | int):
            raise ControlError("id is required")
        entry, raw = await asyncio.to_thread(get_message, node.data_dir / "inbox", str(ident))
        return {"entry": entry.to_dict(), "raw": raw.decode("utf-8", "replace")}

    demo_state: dict[str, Any] = {}

    async def demo_start(args: dict[str, Any], actor: str) -> Any:
        from engine.demo import run_demo

        rate = args.get("rate", 20)
        if not isinstance(rate, int | float) or not 0 < rate <= 20_000:
            raise ControlError("rate must be between 0 and 20,000 events per second")
        if node.js is None:
            raise ControlError("not connected to JetStream")
        task = demo_state.get("task")
        if task is not None and not task.done():
            task.cancel()
        from engine.demo import DEFAULT_DOMAINS, SAFE_DOMAINS, DemoShop

        # Consumer-mail domains only while mail stays in the local capture inbox.
        domains = SAFE_DOMAINS if node.settings.smtp.url else DEFAULT_DOMAINS
        demo_state["task"] = asyncio.create_task(
            run_demo(
                node.js,
                rate=float(rate),
                duration=None,
                shop=DemoShop(domains=domains),
                backlog=lambda: node.telemetry.gauges.get("consumer_lag", 0.0),
            )
        )
        demo_state["rate"] = float(rate)
        node._tasks.append(demo_state["task"])
        await asyncio.to_thread(
            audit,
            store(),
            actor=actor,
            action="demo.start",
            target="demo",
            count=0,
            detail={"rate": rate},
            now=node.clock.now(),
        )
        return {"running": True, "rate": float(rate)}

    async def demo_stop(args: dict[str, Any], actor: str) -> Any:
        task = demo_state.pop("task", None)
        if task is not None:
            task.cancel()
        await asyncio.to_thread(
            audit,
            store(),
            actor=actor,
            action="demo.stop",
            target="demo",
            count=0,
            detail={},
            now=node.clock.now(),
        )
        return {"running": False}

    async def demo_status(args: dict[str, Any], actor: str) -> Any:
        task = demo_state.get("task")
        return {"running": task is not None and not task.done(), "rate": demo_state.get("rate", 0)}

    def alerts() -> AlertService:
        service = node.components.get("alerts")
        if service is None:
            raise ControlError("alerting is not running on this node")
        return service  # type: ignore[no-any-return]

    async def alerts_list(args: dict[str, Any], actor: str) -> Any:
        service = alerts()
        return {"active": service.active(), "recent": service.recent()}

    async def alerts_rules(args: dict[str, Any], actor: str) -> Any:
        service = alerts()
        return {"rules": service.rules_list(), "enabled": service.settings.enabled}

    async def alerts_set_rule(args: dict[str, Any], actor: str) -> Any:
        return await alerts().set_rule(args, actor)

    for verb, handler in {
        "ping": ping,
        "metrics": metrics,
        "ledger.summary": ledger_summary,
        "deliverability.summary": deliverability_summary,
        "audit.list": audit_list,
        "dead_letters.list": dead_letters_list,
        "dead_letters.discard": dead_letters_discard,
        "dead_letters.retry": dead_letters_retry,
        "inbox.list": inbox_list,
        "inbox.show": inbox_show,
        "demo.start": demo_start,
        "demo.stop": demo_stop,
        "demo.status": demo_status,
        "alerts.list": alerts_list,
        "alerts.rules": alerts_rules,
        "alerts.set_rule": alerts_set_rule,
    }.items():
        control.register(verb, handler)

    from engine.queue_operations import register_queue_operations

    register_queue_operations(control, node)

    from engine.user_operations import register_user_operations

    register_user_operations(control, node)

    from engine.offers.operations import register_offer_operations

    register_offer_operations(control, node)
