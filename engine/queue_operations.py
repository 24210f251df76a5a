"""The queue control verbs (``queues.*``, ``sending.*``, ``routes.drain``): argument checks only.

The statements live in :mod:`engine.deliver.queues`; the replies are documented in
docs/CONTRACTS.md ("Queue control"). Controls are kept in the store, so any node can serve
these verbs for all of them (the console sends them to ``control.all.*``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from engine.control import ControlError, ControlServer, check_keys
from engine.deliver import queues
from engine.deliver.limits import DomainRule, Rate, RouteLimits
from engine.deliver.model import CANCELLED
from engine.deliver.queues import ALL, DOMAIN, ROUTE, WORKFLOW, Scope, Selection
from engine.deliver.routes import known_routes as configured_routes
from engine.errors import ConfigError

if TYPE_CHECKING:
    from engine.node import Node

_MAX_REASON = 500
_MAX_DOMAINS = 50
_SCOPE_KEYS = (WORKFLOW, ROUTE, DOMAIN)


def _text(args: dict[str, Any], key: str, *, most: int = 255) -> str | None:
    value = args.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ControlError(f"{key} must be a non-empty string")
    value = value.strip()
    if len(value) > most:
        raise ControlError(f"{key} is too long (at most {most} characters)")
    if key == DOMAIN:
        value = value.lower().rstrip(".")
        if "@" in value or any(ch.isspace() for ch in value) or "." not in value:
            raise ControlError(
                f"domain must be a recipient domain such as gmail.com, not {value!r}"
            )
    return value


def _flag(args: dict[str, Any], key: str) -> bool:
    value = args.get(key, False)
    if not isinstance(value, bool):
        raise ControlError(f"{key} must be true or false")
    return value


def _reason(args: dict[str, Any], *, required: bool = False) -> str:
    value = args.get("reason", "")
    if not isinstance(value, str):
        raise ControlError("reason must be a string")
    value = value.strip()
    if required and not value:
        raise ControlError("a reason is required")
    if len(value) > _MAX_REASON:
        raise ControlError(f"reason is too long (at most {_MAX_REASON} characters)")
    return value


def _scope(args: dict[str, Any]) -> Scope:
    """Exactly one of workflow, route, domain, or ``all: true``."""
    named = [(k, v) for k in _SCOPE_KEYS if (v := _text(args, k)) is not None]
    everything = _flag(args, ALL)
    if everything and named:
        raise ControlError("give either all: true or one of workflow, route, domain, not both")
    if everything:
        return Scope(ALL)
    if len(named) != 1:
        raise ControlError("give exactly one of workflow, route or domain (or all: true)")
    kind, value = named[0]
    return Scope(kind, value)


def _selection(args: dict[str, Any], keys: tuple[str, ...] = _SCOPE_KEYS) -> Selection:
    """Any of the ``keys`` (all must match), or ``all: true`` for every queue."""
    named = {k: _text(args, k) for k in keys}
    everything = _flag(args, ALL)
    chosen = {k: v for k, v in named.items() if v is not None}
    if everything and chosen:
        raise ControlError(f"give either all: true or {', '.join(keys)}, not both")
    if not everything and not chosen:
        raise ControlError(f"say which queues: {', '.join(keys)} (any of them), or all: true")
    return Selection(**chosen)


def known_routes(node: Node) -> set[str]:
    """The route names the settings configure (the default one included), the same on every
    node whether or not it delivers itself, plus any this node's delivery service runs."""
    delivery = node.components.get("delivery")
    return set(configured_routes(node.settings)) | set(getattr(delivery, "routes", ()))


def register_queue_operations(control: ControlServer, node: Node) -> None:
    """Register the queue control verbs on the node's control server."""

    store = node.require_store

    async def run(work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        return await asyncio.to_thread(work)

    async def queues_list(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, ("domains",))
        domains = args.get("domains", 0)
        if isinstance(domains, bool) or not isinstance(domains, int) or domains < 0:
            raise ControlError("domains must be a whole number (top domains per queue, 0: none)")
        s, routes = store(), known_routes(node)
        return await run(
            lambda: queues.list_queues(
                s, now=node.clock.now(), domains=min(domains, _MAX_DOMAINS), routes=routes
            )
        )

    async def queues_pause(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, (*_SCOPE_KEYS, ALL, "reason", "preview"))
        return await _pause(args, actor, _scope(args), "queues.pause")

    async def queues_resume(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, (*_SCOPE_KEYS, ALL, "reason", "preview"))
        return await _resume(args, actor, _scope(args), "queues.resume")

    async def sending_pause(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, ("reason", "preview"))
        return await _pause(args, actor, Scope(ALL), "sending.pause")

    async def sending_resume(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, ("reason", "preview"))
        return await _resume(args, actor, Scope(ALL), "sending.resume")

    async def _pause(args: dict[str, Any], actor: str, scope: Scope, action: str) -> Any:
        reason, preview = _reason(args), _flag(args, "preview")
        s, routes = store(), known_routes(node)
        return await run(
            lambda: queues.pause(
                s,
                scope,
                actor=actor,
                reason=reason,
                now=node.clock.now(),
                routes=routes,
                preview=preview,
                action=action,
            )
        )

    async def _resume(args: dict[str, Any], actor: str, scope: Scope, action: str) -> Any:
        reason, preview = _reason(args), _flag(args, "preview")
        s = store()
        return await run(
            lambda: queues.resume(
                s,
                scope,
                actor=actor,
                reason=reason,
                now=node.clock.now(),
                preview=preview,
                action=action,
            )
        )

    async def routes_drain(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, (ROUTE, "reason", "preview"))
        route = _text(args, ROUTE, most=100)
        if route is None:
            raise ControlError("route is required")
        reason, preview = _reason(args), _flag(args, "preview")
        s, routes = store(), known_routes(node)
        return await run(
            lambda: queues.drain(
                s,
                route,
                actor=actor,
                reason=reason,
                now=node.clock.now(),
                routes=routes,
                preview=preview,
            )
        )

    async def queues_reroute(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, ("from_route", "to_route", WORKFLOW, DOMAIN, "reason", "preview"))
        from_route = _text(args, "from_route", most=100)
        to_route = _text(args, "to_route", most=100)
        if from_route is None or to_route is None:
            raise ControlError("from_route and to_route are required")
        selection = Selection(workflow=_text(args, WORKFLOW, most=100), domain=_text(args, DOMAIN))
        reason, preview = _reason(args), _flag(args, "preview")
        s, routes = store(), known_routes(node)
        return await run(
            lambda: queues.reroute(
                s,
                from_route=from_route,
                to_route=to_route,
                selection=selection,
                actor=actor,
                reason=reason,
                now=node.clock.now(),
                routes=routes,
                preview=preview,
            )
        )

    async def queues_retry_now(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, (*_SCOPE_KEYS, ALL, "reason", "preview"))
        selection = _selection(args)
        reason, preview = _reason(args), _flag(args, "preview")
        s = store()
        return await run(
            lambda: queues.retry_now(
                s, selection, actor=actor, reason=reason, now=node.clock.now(), preview=preview
            )
        )

    async def queues_cancel(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, (*_SCOPE_KEYS, ALL, "reason", "preview"))
        selection = _selection(args)
        reason, preview = _reason(args, required=True), _flag(args, "preview")
        s = store()
        result = await run(
            lambda: queues.cancel(
                s, selection, actor=actor, reason=reason, now=node.clock.now(), preview=preview
            )
        )
        if not preview:
            by_workflow: dict[str, int] = {}
            for q in result["queues"]:
                by_workflow[q["workflow"]] = by_workflow.get(q["workflow"], 0) + q["count"]
            for workflow, n in by_workflow.items():
                node.telemetry.count("intents_total", n, outcome=CANCELLED, workflow=workflow)
        return result

    def delivery() -> Any:
        service = node.components.get("delivery")
        if service is None:
            raise ControlError(
                f"node {node.settings.engine.node} does not deliver (role "
                f"{node.settings.engine.role}); send this to a deliver node"
            )
        return service

    async def routes_list(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, ())
        service = node.components.get("delivery")
        if service is not None:
            return {"node": node.settings.engine.node, "routes": service.route_states()}
        return {
            "node": node.settings.engine.node,
            "routes": [{"name": name} for name in sorted(known_routes(node))],
        }

    async def routes_set_rate(args: dict[str, Any], actor: str) -> Any:
        """Change a route's rate, or one recipient domain's rate and concurrency, live."""
        check_keys(
            args,
            (
                "route",
                "domain",
                "per_second",
                "per_minute",
                "per_hour",
                "burst",
                "concurrency",
                "preview",
            ),
        )
        name = _text(args, "route")
        if not name:
            raise ControlError("route is required")
        domain = (_text(args, "domain") or "").lower()
        preview = _flag(args, "preview")
        service = delivery()
        try:
            route = service.route(name)
        except KeyError as exc:
            raise ControlError(str(exc.args[0])) from None
        before: RouteLimits = route.limits
        numbers: dict[str, float] = {}
        for key in ("per_second", "per_minute", "per_hour", "burst", "concurrency"):
            if key in args:
                value = args[key]
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise ControlError(f"{key} must be 0 (no limit) or a positive number")
                numbers[key] = value
        if "concurrency" in numbers and not domain:
            raise ControlError("concurrency is per recipient domain: give a domain too")
        if not numbers:
            raise ControlError(
                "give at least one of per_second, per_minute, per_hour, burst, concurrency"
            )
        base = before.domains.get(domain) if domain else None
        old_rate = (
            (base.rate if base and base.rate else before.domain_rate) if domain else before.rate
        )
        try:
            rate = Rate(
                per_second=float(numbers.get("per_second", old_rate.per_second)),
                per_minute=int(numbers.get("per_minute", old_rate.per_minute)),
                per_hour=int(numbers.get("per_hour", old_rate.per_hour)),
                burst=float(numbers.get("burst", old_rate.burst)),
            )
            if domain:
                concurrency = numbers.get("concurrency")
                rule = DomainRule(
                    concurrency=int(concurrency)
                    if concurrency is not None
                    else (base.concurrency if base else None),
                    rate=rate,
                )
                after = replace(before, domains={**before.domains, domain: rule})
            else:
                after = replace(before, rate=rate)
        except ConfigError as exc:
            raise ControlError(str(exc)) from None
        target = f"route {name}" + (f" domain {domain}" if domain else "")
        result = {
            "action": "routes.set_rate",
            "preview": preview,
            "node": node.settings.engine.node,
            "target": target,
            "before": before.as_dict(),
            "after": after.as_dict(),
            "summary": f"Set the limits of {target} on node {node.settings.engine.node}",
        }
        if preview:
            return result
        from engine.operations import audit  # operations registers these verbs

        service.set_route_limits(name, after)
        detail = {"node": node.settings.engine.node, "domain": domain or None, **numbers}
        s = store()
        now = node.clock.now()
        await asyncio.to_thread(
            audit,
            s,
            actor=actor,
            action="routes.set_rate",
            target=target,
            count=0,
            detail=detail,
            now=now,
        )
        return result

    for verb, handler in {
        "routes.list": routes_list,
        "routes.set_rate": routes_set_rate,
        "queues.list": queues_list,
        "queues.pause": queues_pause,
        "queues.resume": queues_resume,
        "sending.pause": sending_pause,
        "sending.resume": sending_resume,
        "routes.drain": routes_drain,
        "queues.reroute": queues_reroute,
        "queues.retry_now": queues_retry_now,
        "queues.cancel": queues_cancel,
    }.items():
        control.register(verb, handler)
