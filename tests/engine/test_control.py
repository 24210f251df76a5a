"""The control API envelope over a real nats-server (a token-only server: the subject's user
is trusted here; tests/engine/test_access.py shows NATS making it unforgeable)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from engine import bus
from engine.control import ControlError, ControlServer, request
from engine.errors import EngineError

ROLES = {"ana": "admin", "vic": "viewer"}


async def lookup(user: str) -> str | None:
    return ROLES.get(user)


async def test_request_reply_and_refusals(nats_url: str, nats_token: str) -> None:
    nc = await bus.connect(nats_url, token=nats_token)
    server = ControlServer(nc, "n1", roles=lookup)
    seen: list[tuple[dict[str, Any], str]] = []

    # Handlers under real verb names: a verb outside engine/access.py's table is refused.
    async def echo(args: dict[str, Any], actor: str) -> Any:
        seen.append((args, actor))
        return {"echo": args}

    async def refuse(args: dict[str, Any], actor: str) -> Any:
        raise EngineError("route relay-z does not exist")

    async def crash(args: dict[str, Any], actor: str) -> Any:
        raise RuntimeError("secret internals")

    server.register("ping", echo)
    server.register("routes.list", refuse)
    server.register("queues.list", crash)
    server.register("not.in.the.table", echo)
    await server.start()
    try:
        assert await request(nc, "n1", "ping", {"a": 1}, user="ana") == {"echo": {"a": 1}}
        assert seen == [({"a": 1}, "ana")]
        # control.<user>.all.* reaches every node.
        assert await request(nc, "all", "ping", {"b": 2}, user="vic") == {"echo": {"b": 2}}
        assert seen[-1] == ({"b": 2}, "vic")
        with pytest.raises(ControlError, match="route relay-z does not exist"):
            await request(nc, "n1", "routes.list", user="ana")
        with pytest.raises(ControlError, match="unknown control request 'nope'"):
            await request(nc, "n1", "nope", user="ana")
        with pytest.raises(ControlError, match="internal error: RuntimeError") as info:
            await request(nc, "n1", "queues.list", user="ana")
        assert "secret internals" not in str(info.value)
        reply = await nc.request("control.ana.n1.ping", b"{not json", timeout=2)
        assert orjson.loads(reply.data)["error"].startswith("the request is not valid JSON")
        reply = await nc.request("control.ana.n1.ping", b'{"args": [1]}', timeout=2)
        assert orjson.loads(reply.data)["error"] == "args must be a JSON object"
        n = len(seen)
        # The body's "actor" is ignored: the subject says who asks.
        body = orjson.dumps({"actor": "ana", "args": {"c": 3}})
        reply = await nc.request("control.vic.n1.ping", body, timeout=2)
        assert orjson.loads(reply.data)["ok"] and seen[-1] == ({"c": 3}, "vic")
        # A verb nobody classified, and a user nobody added: refused before any handler runs.
        with pytest.raises(ControlError, match="not in the engine's access table"):
            await request(nc, "n1", "not.in.the.table", user="ana")
        with pytest.raises(ControlError, match="user 'mallory' is not known"):
            await request(nc, "n1", "ping", user="mallory")
        reply = await nc.request("control.mallory.n1.ping", b"{}", timeout=2)
        assert orjson.loads(reply.data)["refused"] == "access"
        assert len(seen) == n + 1
    finally:
        await server.stop()
        await nc.drain()


async def test_a_role_lookup_that_fails_refuses(nats_url: str, nats_token: str) -> None:
    nc = await bus.connect(nats_url, token=nats_token)

    async def broken(user: str) -> str | None:
        raise OSError("database is locked")

    server = ControlServer(nc, "n1", roles=broken)
    calls: list[str] = []

    async def ping(args: dict[str, Any], actor: str) -> Any:
        calls.append(actor)
        return {}

    server.register("ping", ping)
    await server.start()
    try:
        with pytest.raises(ControlError, match="the role of 'ana' could not be read"):
            await request(nc, "n1", "ping", user="ana")
        assert calls == []
    finally:
        await server.stop()
        await nc.drain()
