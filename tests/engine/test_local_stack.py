"""The local stack in one process: HTTP in, mail out to the capture inbox, unsubscribe honoured.

A real embedded nats-server, SQLite and the capture inbox; no mocks.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.config import load_settings
from engine.control import ControlError, request
from engine.inbox import get_message, list_messages
from engine.node import Node
from tests.engine.access_support import grant


@pytest.fixture
async def node(tmp_path: Path) -> Any:
    settings = load_settings(
        None,
        environ={},
        overrides={
            "engine": {"data_dir": str(tmp_path / "data"), "node": "t1"},
            "http": {"listen": "127.0.0.1:0"},
            "ingest": {"write_key": "wk-test"},
            # Welcome mails 3 s apart, so the test sees the second one come due.
            "workflows": {"welcome-series": {"gap": "3s"}},
        },
    )
    node = Node(settings)
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


async def post(node: Node, path: str, body: dict[str, Any], key: str = "wk-test") -> int:
    auth = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
    async with (
        aiohttp.ClientSession(headers=auth) as http,
        http.post(f"{node.http_url}{path}", json=body) as resp,
    ):
        return resp.status


async def wait_for_mail(node: Node, to: str, count: int, timeout: float = 15) -> list[Any]:
    inbox = node.data_dir / "inbox"
    for _ in range(int(timeout / 0.1)):
        entries = [e for e in list_messages(inbox, limit=500) if to in e.rcpt_tos]
        if len(entries) >= count:
            return entries
        await asyncio.sleep(0.1)
    raise AssertionError(f"{to}: expected {count} messages, inbox has {len(entries)}")


def order(user: str, order_id: str) -> dict[str, Any]:
    return {
        "userId": user,
        "event": "Order Completed",
        "context": {"traits": {"email": f"{user}@example.com", "first_name": "Uma"}},
        "properties": {
            "order_id": order_id,
            "total": 30,
            "currency": "USD",
            "products": [{"name": "Mug", "price": 30, "quantity": 1}],
        },
    }


async def test_event_over_http_becomes_mail_in_the_inbox(node: Node) -> None:
    assert await post(node, "/v1/track", order("uma", "o-1")) == 200
    [entry] = await wait_for_mail(node, "uma@example.com", 1)
    _, raw = get_message(node.data_dir / "inbox", entry.id)
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert "o-1" in str(msg["Subject"])
    assert msg.get_content_type() == "multipart/alternative"
    # The same messageId twice: one email.
    event = {**order("vic", "o-2"), "messageId": "dup-1"}
    assert await post(node, "/v1/track", event) == 200
    assert await post(node, "/v1/track", event) == 200
    await wait_for_mail(node, "vic@example.com", 1)
    await asyncio.sleep(1.0)
    assert len(await wait_for_mail(node, "vic@example.com", 1)) == 1
    # A wrong write key is refused and nothing is sent.
    assert await post(node, "/v1/track", order("wes", "o-3"), key="wrong") == 401


async def test_unsubscribe_stops_marketing_at_once_but_not_transactional(node: Node) -> None:
    user = "zoe"
    signup = {
        "userId": user,
        "event": "Signed Up",
        "context": {"traits": {"email": f"{user}@example.com", "first_name": "Zoe"}},
    }
    assert await post(node, "/v1/track", signup) == 200
    [welcome] = await wait_for_mail(node, f"{user}@example.com", 1)
    _, raw = get_message(node.data_dir / "inbox", welcome.id)
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = re.search(r"<(https?://[^>]+)>", str(msg["List-Unsubscribe"]))
    assert link is not None
    async with aiohttp.ClientSession() as http:
        # A link scanner's GET changes nothing...
        async with http.get(link.group(1)) as resp:
            assert resp.status == 200
        async with http.post(link.group(1), data={"List-Unsubscribe": "One-Click"}) as resp:
            assert resp.status == 200
    # ...the one-click POST does: welcome-2 (marketing, due 3 s after sign-up) is suppressed at
    # send time, while an order confirmation (transactional) still goes.
    assert await post(node, "/v1/track", order(user, "o-9")) == 200
    for _ in range(100):
        summary = await ledger(node)
        if summary.get("suppressed", 0) >= 1:
            break
        await asyncio.sleep(0.1)
    assert summary == {"sent": 2, "suppressed": 1}, summary
    entries = await wait_for_mail(node, f"{user}@example.com", 2)
    assert any("o-9" in e.subject for e in entries)
    assert len(entries) == 2


async def ledger(node: Node) -> dict[str, int]:
    assert node.nc is not None
    result: dict[str, int] = await request(node.nc, "t1", "ledger.summary")
    return result


async def test_control_api_lists_dead_letters_for_bad_events(node: Node) -> None:
    assert node.js is not None and node.nc is not None and node.store is not None
    grant(node.store, "ops-ana", "support")
    await node.js.publish("events.track", b"{not json", headers={"Nats-Msg-Id": "bad-1"})
    await node.js.publish("events.track", b'{"type": "track", "event": "X"}')
    for _ in range(100):
        dead = await request(node.nc, "t1", "dead_letters.list")
        if len(dead) == 2:
            break
        await asyncio.sleep(0.1)
    reasons = sorted(d["reason"] for d in dead)
    assert any("JSON" in r for r in reasons), reasons
    assert any("userId" in r for r in reasons), reasons
    discarded = await request(
        node.nc, "t1", "dead_letters.discard", {"ids": [dead[0]["id"]]}, user="ops-ana"
    )
    assert discarded == {"discarded": 1}
    audit = await request(node.nc, "t1", "audit.list", {"search": "ops-ana"})
    assert audit[0]["action"] == "dead_letters.discard"
    with pytest.raises(ControlError, match="ids must be a non-empty list"):
        await request(node.nc, "t1", "dead_letters.discard", {"ids": "all"})
