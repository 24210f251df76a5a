"""The control API: request/reply on NATS, the only way the console (or a script) steers engines.

Subjects: ``control.<user>.<node>.<verb>`` for one node and ``control.<user>.all.<verb>`` for
every node. The user is the one NATS signed in: each user may publish only under its own name
(engine/access.py), so the server takes the actor from the subject and checks the user's role on
every request before the handler runs. Request body: JSON ``{"args": {...}}`` (an ``actor`` in
the body is ignored). Reply: ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "plain
words"}`` (``"refused": "access"`` when the role does not allow it). Handlers are plain async
functions registered by verb; :func:`request` is the one place that builds the subject.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError

from engine.access import LOCAL_ADMIN, AccessDenied, check, control_subject
from engine.bus import settle
from engine.errors import EngineError

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], str], Awaitable[Any]]
RoleLookup = Callable[[str], Awaitable[str | None]]
"""The role of a user name (None: no such user)."""


class ControlError(EngineError, ValueError):
    """A control request was refused; the message is shown to the operator as is."""


# Argument checks the verbs share: a refusal names the argument and what was expected.


def check_keys(args: dict[str, Any], allowed: tuple[str, ...]) -> None:
    """Refuse arguments the verb does not take, naming them and the ones it does."""
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        names = ", ".join(repr(k) for k in unknown)
        plural = "s" if len(unknown) > 1 else ""
        raise ControlError(
            f"unknown argument{plural} {names} (this request takes: {', '.join(allowed)})"
        )


def required_text(args: dict[str, Any], key: str, most: int = 255) -> str:
    """A required, non-blank text argument of at most ``most`` characters."""
    value = args.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ControlError(f"{key} is required (text)")
    if len(value) > most:
        raise ControlError(f"{key} is too long (at most {most:,} characters)")
    return value


def limit_arg(args: dict[str, Any], default: int, most: int) -> int:
    """``limit``: a whole number from 1 to ``most`` (``default`` when absent)."""
    value = args.get("limit", default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise ControlError(f"limit must be a whole number from 1 to {most}")
    return value


class ControlServer:
    """Serves control requests for one node, checking the caller's role on each one.

    ``roles`` names the role of a user (the node reads the users table: a role change holds
    on the next request, on every node).
    """

    def __init__(self, nc: NatsClient, node: str, *, roles: RoleLookup) -> None:
        self._nc = nc
        self.node = node
        self._roles = roles
        self._handlers: dict[str, Handler] = {}
        self._subs: list[Subscription] = []

    def register(self, verb: str, handler: Handler) -> None:
        self._handlers[verb] = handler

    @property
    def verbs(self) -> list[str]:
        return sorted(self._handlers)

    async def start(self) -> None:
        for target in (self.node, "all"):
            subject = control_subject("*", target, ">")
            self._subs.append(await self._nc.subscribe(subject, cb=self._on_request))
        try:
            await settle(self._nc)  # serving when start() returns, not a moment later
        except NatsError:  # reconnecting: the subscriptions go out when it is back
            log.warning("control subscriptions not yet confirmed by NATS", exc_info=True)

    async def stop(self) -> None:
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except Exception:  # connection may already be closed
                log.debug("unsubscribe failed", exc_info=True)
        self._subs.clear()

    async def _on_request(self, msg: Msg) -> None:
        _, user, _, verb = msg.subject.split(".", 3)
        reply = await self.handle(verb, msg.data, user=user)
        if msg.reply:
            try:
                body = orjson.dumps(reply, default=str, option=orjson.OPT_NON_STR_KEYS)
            except TypeError as exc:  # a result that is not JSON: say so rather than time out
                log.exception("control %s: reply is not JSON", verb)
                body = orjson.dumps({"ok": False, "error": f"reply not encodable: {exc}"})
            await msg.respond(body)

    async def handle(self, verb: str, data: bytes, *, user: str) -> dict[str, Any]:
        """Answer one request from ``user`` (the subject's user, never the body's "actor")."""
        handler = self._handlers.get(verb)
        if handler is None:
            return {"ok": False, "error": f"unknown control request {verb!r}", "node": self.node}
        try:
            check(verb, user, await self._roles(user))
        except AccessDenied as exc:
            log.info("control %s refused for %s: %s", verb, user, exc)
            return {"ok": False, "error": str(exc), "refused": "access", "node": self.node}
        except Exception as exc:  # the users table cannot be read: refuse, never allow
            log.exception("control %s: the role of %s could not be read", verb, user)
            return {
                "ok": False,
                "error": f"the role of {user!r} could not be read ({type(exc).__name__})",
                "refused": "access",
                "node": self.node,
            }
        try:
            request = orjson.loads(data) if data else {}
            if not isinstance(request, dict):
                raise ControlError("the request must be a JSON object")
            args = request.get("args") or {}
            if not isinstance(args, dict):
                raise ControlError("args must be a JSON object")
            result = await handler(args, user)
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
    user: str = LOCAL_ADMIN,
    timeout: float = 5.0,
) -> Any:
    """Send one control request as ``user`` and return its result, raising ``ControlError`` on
    refusal. ``user`` must be the user ``nc`` signed in as (NATS refuses any other name);
    the default is the local stack's generated admin."""
    body = orjson.dumps({"args": args or {}})
    msg = await nc.request(control_subject(user, node, verb), body, timeout=timeout)
    reply = orjson.loads(msg.data)
    if not reply.get("ok"):
        raise ControlError(str(reply.get("error")))
    return reply.get("result")
