"""Experiments end to end: a real engine (embedded NATS, SQLite, the capture inbox), events over
HTTP, mail in the inbox. The holdout never receives mail; arms get their subjects; orders
become conversions; signed click links redirect, become events, and cannot be bent.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import re
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa

from engine.config import load_settings
from engine.control import ControlError, request
from engine.experiments.assign import assign
from engine.experiments.model import HOLDOUT
from engine.inbox import get_message, list_messages
from engine.library import default_templates_dir
from engine.node import Node
from engine.store import schema
from tests.engine.access_support import grant

WORKFLOW = """
id = "cart-test"
name = "Cart test"
category = "marketing"
[trigger]
event = "Product Added"
[goal]
event = "Order Completed"
attribution_window = "1d"
[[steps]]
id = "remind"
type = "send"
template = "cart-test"
holdout = 30
variants = [
  { id = "a", subject = "Arm A: your cart" },
  { id = "b", subject = "Arm B: still thinking?" },
]
"""
USERS = [f"p{n}" for n in range(30)]


@pytest.fixture
async def node(tmp_path: Path) -> Any:
    templates = tmp_path / "templates"
    (templates / "workflows").mkdir(parents=True)
    shutil.copytree(default_templates_dir() / "emails", templates / "emails")
    (templates / "workflows" / "cart-test.toml").write_text(WORKFLOW, encoding="utf-8")
    mine = templates / "emails" / "cart-test"
    mine.mkdir()
    (mine / "template.toml").write_text('name = "Cart test"\nversion = 1\nsubject = "Your cart"\n')
    (mine / "body.html").write_text(
        '<html><body><p><a href="{{ properties.cart_url }}">Back to your cart</a></p>'
        '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p></body></html>'
    )
    settings = load_settings(
        None,
        environ={},
        overrides={
            "engine": {"data_dir": str(tmp_path / "data"), "node": "x1"},
            "http": {"listen": "127.0.0.1:0"},
            "ingest": {"write_key": "wk-test"},
            "tracking": {"opens": True, "clicks": True},
        },
    )
    node = Node(settings, templates_dir=templates)
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


async def post(node: Node, body: dict[str, Any]) -> None:
    auth = {"Authorization": "Basic " + base64.b64encode(b"wk-test:").decode()}
    async with (
        aiohttp.ClientSession(headers=auth) as http,
        http.post(f"{node.http_url}/v1/batch", json=body) as resp,
    ):
        assert resp.status == 200, await resp.text()


def added(user: str) -> dict[str, Any]:
    return {
        "type": "track",
        "userId": user,
        "event": "Product Added",
        "context": {"traits": {"email": f"{user}@example.com"}},
        "properties": {"sku": "mug", "cart_url": "https://shop.example/cart?id=1&x=2"},
    }


async def until(check: Any, timeout: float = 20.0) -> Any:
    for _ in range(int(timeout / 0.1)):
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError("timed out")


async def test_the_holdout_never_gets_mail_and_arms_get_their_subjects(node: Node) -> None:
    assert node.nc is not None and node.store is not None
    await post(node, {"batch": [added(u) for u in USERS]})
    wf = node.components["library"].workflows.get("cart-test")
    [experiment] = wf.experiments()
    arms = {u: assign(experiment, u) for u in USERS}
    held = {u for u, arm in arms.items() if arm == HOLDOUT}
    mailed = set(USERS) - held
    assert held and mailed  # 30% of 30 contacts: both groups exist for this hash

    inbox = node.data_dir / "inbox"

    async def all_mail() -> list[Any]:
        entries = list_messages(inbox, limit=500)
        return entries if len(entries) >= len(mailed) else []

    entries = await until(all_mail)
    await asyncio.sleep(1.0)  # anything the holdout might wrongly get would arrive by now
    entries = list_messages(inbox, limit=500)
    got = {rcpt.split("@")[0]: e for e in entries for rcpt in e.rcpt_tos}
    assert set(got) == mailed
    for user, entry in got.items():
        expected = "Arm A: your cart" if arms[user] == "a" else "Arm B: still thinking?"
        assert entry.subject == expected

    # The recipients order; a holdout contact orders too (it counts for the lift).
    buyers = [*sorted(mailed)[:4], *sorted(held)[:1]]
    orders = [
        {"type": "track", "userId": u, "event": "Order Completed", "properties": {"total": 20}}
        for u in buyers
    ]
    await post(node, {"batch": orders})

    async def converted() -> dict[str, Any]:
        result: dict[str, Any] = await request(node.nc, "x1", "conversions.summary")
        rows = [w for w in result["workflows"] if w["workflow_id"] == "cart-test"]
        return rows[0] if rows and rows[0]["conversions"] == 4 else {}

    summary = await until(converted)
    assert summary["sends"] == len(mailed)
    assert summary["revenue"] == 80.0
    assert summary["rate"] == pytest.approx(4 / len(mailed))
    assert summary["rate_low"] < summary["rate"] < summary["rate_high"]

    results = await request(node.nc, "x1", "experiments.results", {"workflow": "cart-test"})
    [exp] = results["experiments"]
    by_arm = {v["variant"]: v for v in exp["variants"]}
    assert set(by_arm) == {"a", "b", HOLDOUT}
    assert by_arm[HOLDOUT]["sends"] == 0
    assert by_arm[HOLDOUT]["exposed"] == len(held)
    assert by_arm[HOLDOUT]["conversions"] == 1
    assert sum(by_arm[a]["conversions"] for a in ("a", "b")) == 4
    assert sum(by_arm[a]["sends"] for a in ("a", "b")) == len(mailed)
    assert "lift" in by_arm["a"] and exp["state"] == "collecting"
    # Order value after exposure, per arm against the holdout (default window 30 days).
    assert exp["value_window_s"] == 30 * 86_400
    value = {arm: row["value"] for arm, row in by_arm.items()}
    assert value[HOLDOUT]["contacts"] == len(held) and value[HOLDOUT]["revenue"] == 20.0
    assert sum(value[a]["revenue"] for a in ("a", "b")) == 80.0
    assert sum(value[a]["contacts"] for a in ("a", "b")) == len(mailed)
    assert value[HOLDOUT]["clv_mean"] == pytest.approx(20.0 / len(held))
    assert "incremental" in value["a"] and value["a"]["matured"] == 0
    week = await request(
        node.nc, "x1", "experiments.results", {"workflow": "cart-test", "value_window": "7d"}
    )
    assert week["experiments"][0]["value_window_s"] == 7 * 86_400
    with pytest.raises(ControlError, match="value_window: bad duration 'soon'"):
        await request(node.nc, "x1", "experiments.results", {"value_window": "soon"})
    with pytest.raises(ControlError, match="at most 366d"):
        await request(node.nc, "x1", "experiments.results", {"value_window": "400d"})

    # Promotion by hand: audited; a wrong variant is refused with the reason.
    assert node.store is not None
    grant(node.store, "ana", "marketer")
    with pytest.raises(ControlError, match="has no variant 'c'"):
        await request(
            node.nc, "x1", "experiments.promote", {"experiment": exp["id"], "variant": "c"}
        )
    done = await request(
        node.nc, "x1", "experiments.promote", {"experiment": exp["id"], "variant": "b"}, user="ana"
    )
    assert done["changed"] is True
    audit = await request(node.nc, "x1", "audit.list", {"search": "experiments.promote"})
    assert audit[0]["actor"] == "ana" and audit[0]["target"] == exp["id"]

    # The click redirect: signed, becomes an event, and refuses a bent link.
    user = sorted(mailed)[0]
    raw = get_message(inbox, got[user].id)[1]
    message = email.message_from_bytes(raw, policy=email.policy.default)
    html = message.get_body(preferencelist=("html",)).get_content()  # type: ignore[union-attr]
    clicks = re.findall(r'href="([^"]*/t/c/[^"]+)"', html)
    assert clicks and "/t/o/" in html and "/u/" in html  # unsubscribe link left as it is
    async with aiohttp.ClientSession() as http:
        async with http.get(clicks[0].replace("&amp;", "&"), allow_redirects=False) as resp:
            assert resp.status == 302
            assert resp.headers["Location"] == "https://shop.example/cart?id=1&x=2"
        token = clicks[0].rsplit("/", 1)[1]
        head, _, sig = token.partition(".")
        forged = (
            base64.urlsafe_b64encode(
                base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)).replace(
                    b"https://shop.example", b"https://evil.example"
                )
            )
            .rstrip(b"=")
            .decode()
        )
        async with http.get(f"{node.http_url}/t/c/{forged}.{sig}", allow_redirects=False) as resp:
            assert resp.status == 400
            assert "Location" not in resp.headers

    async def clicked() -> list[Any]:
        a = schema.activity
        with node.store.begin() as conn:  # type: ignore[union-attr]
            return list(
                conn.execute(
                    sa.select(a.c.properties).where(
                        a.c.contact_id == user, a.c.name == "Email Link Clicked"
                    )
                )
            )

    [(props,)] = await until(clicked)
    assert props["workflow_id"] == "cart-test" and props["url"].startswith("https://shop.example")
