"""Location consent and offer codes through the whole local stack: HTTP in, the capture inbox
out (real embedded nats-server, SQLite, aiosmtpd inbox; no mocks)."""

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
import sqlalchemy as sa

from engine.config import load_settings
from engine.control import ControlError, request
from engine.inbox import get_message, list_messages
from engine.node import Node
from engine.store import schema


@pytest.fixture
async def node(tmp_path: Path) -> Any:
    settings = load_settings(
        None,
        environ={},
        overrides={
            "engine": {"data_dir": str(tmp_path / "data"), "node": "t1"},
            "http": {"listen": "127.0.0.1:0"},
            "ingest": {"write_key": "wk-test"},
        },
    )
    node = Node(settings)
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


async def post(node: Node, body: dict[str, Any]) -> int:
    auth = {"Authorization": "Basic " + base64.b64encode(b"wk-test:").decode()}
    async with (
        aiohttp.ClientSession(headers=auth) as http,
        http.post(f"{node.http_url}/v1/track", json=body) as resp,
    ):
        return resp.status


async def call(node: Node, verb: str, args: dict[str, Any] | None = None) -> Any:
    assert node.nc is not None
    return await request(node.nc, "t1", verb, args or {})


def consent(user: str, granted: bool) -> dict[str, Any]:
    return {
        "userId": user,
        "event": "Consent Updated",
        "properties": {"purpose": "location", "granted": granted, "method": "app_prompt"},
        "context": {"traits": {"email": f"{user}@example.com", "first_name": user.title()}},
    }


def geofence(user: str) -> dict[str, Any]:
    return {
        "userId": user,
        "event": "Geofence Entered",
        "properties": {"store_id": "s-7", "store_name": "Harbour Street", "distance_m": 80},
        "context": {"traits": {"email": f"{user}@example.com"}},
    }


async def outcome(node: Node, status: str, timeout: float = 15) -> dict[str, int]:
    summary: dict[str, int] = {}
    for _ in range(int(timeout / 0.1)):
        summary = await call(node, "ledger.summary")
        if summary.get(status):
            return summary
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {status} intent: {summary}")


async def test_near_a_store_mail_carries_a_verifiable_code(node: Node) -> None:
    assert await post(node, consent("ana", True)) == 200
    assert await post(node, geofence("ana")) == 200
    assert await post(node, geofence("ben")) == 200  # no consent: nothing
    await outcome(node, "sent")
    inbox = node.data_dir / "inbox"
    for _ in range(100):
        mails = [e for e in list_messages(inbox, limit=50) if "ana@example.com" in e.rcpt_tos]
        if mails:
            break
        await asyncio.sleep(0.1)
    [entry] = mails
    assert entry.subject == "You're near our Harbour Street store, Ana"
    _, raw = get_message(inbox, entry.id)
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    body = msg.get_body(preferencelist=("plain",))
    assert body is not None
    text = body.get_content()
    found = re.search(r"NEAR-[0-9A-Z]{4}-[0-9A-Z]{4}", text)
    assert found is not None and "10% off" in text, text
    verdict = await call(node, "offers.verify", {"code": found.group(0)})
    assert verdict["valid"] is True and verdict["contact_id"] == "ana"
    assert verdict["offer_id"] == "nearby" and verdict["value"] == "10%"
    bent = found.group(0)[:-1] + ("X" if found.group(0)[-1] != "X" else "Y")
    assert (await call(node, "offers.verify", {"code": bent}))["valid"] is False
    assert all("ben@example.com" not in e.rcpt_tos for e in list_messages(inbox, limit=50))
    history = await call(node, "consent.history", {"contact": "ana"})
    assert history["consent"]["location"]["granted"] is True
    assert [(h["purpose"], h["granted"], h["method"]) for h in history["history"]] == [
        ("location", True, "app_prompt")
    ]
    with pytest.raises(ControlError, match="there is no contact 'zed'"):
        await call(node, "consent.history", {"contact": "zed"})
    [listed] = [o for o in await call(node, "offers.list") if o["id"] == "nearby"]
    assert listed["kind"] == "generated" and listed["issued"] == 1


async def test_consent_withdrawn_before_the_send_suppresses_it(node: Node) -> None:
    await call(node, "queues.pause", {"workflow": "store-nearby", "reason": "test hold"})
    assert await post(node, consent("cat", True)) == 200
    assert await post(node, geofence("cat")) == 200
    for _ in range(100):
        queues = await call(node, "ledger.summary")
        if queues.get("queued"):
            break
        await asyncio.sleep(0.1)
    assert queues.get("queued") == 1, queues
    assert await post(node, consent("cat", False)) == 200
    for _ in range(100):
        history = await call(node, "consent.history", {"contact": "cat"})
        if len(history["history"]) == 2:
            break
        await asyncio.sleep(0.1)
    await call(node, "queues.resume", {"workflow": "store-nearby", "reason": "test over"})
    summary = await outcome(node, "suppressed")
    assert summary.get("sent", 0) == 0
    assert node.store is not None
    with node.store.begin() as conn:
        [reply] = conn.execute(sa.select(schema.intents.c.reply)).scalars()
    assert reply == "suppressed: no location consent (withdrawn after the trigger)"
