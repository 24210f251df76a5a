"""The control API: request/reply on NATS, the only way the console (or a script) steers engines.

Subjects: ``control.<node>.<verb>`` for one node and ``control.all.<verb>`` for every node.
Request body: JSON ``{"actor": "name", "args": {...}}``. Reply: ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": "plain words"}``. Handlers are plain async functions registered by verb.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from engine.errors import EngineError

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], str], Awaitable[Any]]


class ControlError(EngineError, ValueError):
    """A control request was refused; the message is shown to the operator as is."""


class ControlServer:
    """Serves control requests for one node."""

    def __init__(self, nc: NatsClient, node: str) -> None:
        self._nc = nc
        self.node = node
        self._handlers: dict[str, Handler] = {}
        self._subs: list[Subscription] = []

    def register(self, verb: str, handler: Handler) -> None:
        self._handlers[verb] = handler

    @property
    def verbs(self) -> list[str]:
        return sorted(self._handlers)

    async def start(self) -> None:
        for prefix in (f"control.{self.node}.", "control.all."):
            self._subs.append(await self._nc.subscribe(prefix + ">", cb=self._on_request))

    async def stop(self) -> None:
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except Exception:  # connection may already be closed
                log.debug("unsubscribe failed", exc_info=True)
        self._subs.clear()

    async def _on_request(self, msg: Msg) -> None:
        verb = msg.subject.split(".", 2)[2]
        reply = await self.handle(verb, msg.data)
        if msg.reply:
            try:
                body = orjson.dumps(reply, default=str, option=orjson.OPT_NON_STR_KEYS)
            except TypeError as exc:  # a result that is not JSON: say so rather than time out
                log.exception("control %s: reply is not JSON", verb)
                body = orjson.dumps({"ok": False, "error": f"reply not encodable: {exc}"})
            await msg.respond(body)

    async def handle(self, verb: str, data: bytes) -> dict[str, Any]:
        handler = self._handlers.get(verb)
        if handler is None:
            return {"ok": False, "error": f"unknown control request {verb!r}", "node": self.node}
        try:
            request = orjson.loads(data) if data else {}
            if not isinstance(request, dict):
                raise ControlError("the request must be a JSON object")
            args = request.get("args") or {}
            actor = str(request.get("actor") or "unknown")
            if not isinstance(args, dict):
                raise ControlError("args must be a JSON object")
            result = await handler(args, actor)
        except orjson.JSONDecodeError as exc:
            return {
                "ok": False,
                "error": f"the request is not valid JSON: {exc}",
                "node": self.node,
            }
        except EngineError as exc:
            return {"ok": False, "error": str(exc), "node": self.node}
        except Exception as exc:  # a bug must not kill the responder; the operator sees it
            log.exception("control %s failed", verb)
            return {
                "ok": False,
                "error": f"internal error: {type(exc).__name__}",
                "node": self.node,
            }
        return {"ok": True, "result": result, "node": self.node}


async def request(
    nc: NatsClient,
    node: str,
    verb: str,
    args: dict[str, Any] | None = None,
    *,
    actor: str = "cli",
    timeout: float = 5.0,
) -> Any:
    """Send one control request and return its result, raising ``ControlError`` on refusal."""
    body = orjson.dumps({"actor": actor, "args": args or {}})
    msg = await nc.request(f"control.{node}.{verb}", body, timeout=timeout)
    reply = orjson.loads(msg.data)
    if not reply.get("ok"):
        raise ControlError(str(reply.get("error")))
    return reply.get("result")
