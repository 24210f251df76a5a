"""The control API envelope over a real nats-server."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from engine import bus
from engine.control import ControlError, ControlServer, request
from engine.errors import EngineError


async def test_request_reply_and_refusals(nats_url: str, nats_token: str) -> None:
    nc = await bus.connect(nats_url, token=nats_token)
    server = ControlServer(nc, "n1")
    seen: list[tuple[dict[str, Any], str]] = []

    async def echo(args: dict[str, Any], actor: str) -> Any:
        seen.append((args, actor))
        return {"echo": args}

    async def refuse(args: dict[str, Any], actor: str) -> Any:
        raise EngineError("route relay-z does not exist")

    async def crash(args: dict[str, Any], actor: str) -> Any:
        raise RuntimeError("secret internals")

    server.register("echo", echo)
    server.register("refuse", refuse)
    server.register("crash", crash)
    await server.start()
    try:
        assert await request(nc, "n1", "echo", {"a": 1}, actor="ana") == {"echo": {"a": 1}}
        assert seen == [({"a": 1}, "ana")]
        # control.all.* reaches every node.
        assert await request(nc, "all", "echo", {"b": 2}) == {"echo": {"b": 2}}
        with pytest.raises(ControlError, match="route relay-z does not exist"):
            await request(nc, "n1", "refuse")
        with pytest.raises(ControlError, match="unknown control request 'nope'"):
            await request(nc, "n1", "nope")
        with pytest.raises(ControlError, match="internal error: RuntimeError") as info:
            await request(nc, "n1", "crash")
        assert "secret internals" not in str(info.value)
        reply = await nc.request("control.n1.echo", b"{not json", timeout=2)
        assert orjson.loads(reply.data)["error"].startswith("the request is not valid JSON")
        reply = await nc.request("control.n1.echo", b'{"args": [1]}', timeout=2)
        assert orjson.loads(reply.data)["error"] == "args must be a JSON object"
    finally:
        await server.stop()
        await nc.drain()
