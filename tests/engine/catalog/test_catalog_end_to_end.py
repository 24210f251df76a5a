"""Catalog end to end on the local stack: events over HTTP into the embedded nats-server, the
decide worker, the fan-out, the timer service and the deliver stage, mail in the capture inbox.
The engine runs on a manual clock (started at the real time, so ingest's stamps agree)."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa

from engine.clock import ManualClock
from engine.config import load_settings
from engine.deliver.queues import Scope, pause, resume
from engine.inbox import get_message, list_messages
from engine.node import Node
from engine.store import schema


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    settings = load_settings(
        None,
        environ={},
        overrides={
            "engine": {"data_dir": str(tmp_path / "data"), "node": "t1"},
            "http": {"listen": "127.0.0.1:0"},
            "ingest": {"write_key": "wk-test"},
        },
    )
    node = Node(settings, clock=ManualClock(time.time()))
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


async def post(node: Node, event: dict[str, Any]) -> None:
    auth = {"Authorization": "Basic " + base64.b64encode(b"wk-test:").decode()}
    async with (
        aiohttp.ClientSession(headers=auth) as http,
        http.post(f"{node.http_url}/v1/track", json=event) as resp,
    ):
        assert resp.status == 200, await resp.text()


def shopper(user: str, event: str, **properties: Any) -> dict[str, Any]:
    traits = {"email": f"{user}@example.com", "first_name": user.title()}
    return {"userId": user, "event": event, "properties": properties, "context": {"traits": traits}}


def product(product_id: str, **values: Any) -> dict[str, Any]:
    return {"userId": "catalog-feed", "event": "Product Updated",
            "properties": {"product_id": product_id, "currency": "USD", **values}}  # fmt: skip


async def eventually(check: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def mails(node: Node, to: str) -> list[email.message.EmailMessage]:
    inbox = node.data_dir / "inbox"
    found = []
    for entry in list_messages(inbox, limit=500):
        if to in entry.rcpt_tos:
            _, raw = get_message(inbox, entry.id)
            found.append(email.message_from_bytes(raw, policy=email.policy.default))
    return found


def text_of(msg: email.message.EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


def intents(node: Node, workflow: str) -> list[Any]:
    assert node.store is not None
    i = schema.intents
    with node.store.begin() as conn:
        return list(conn.execute(sa.select(i).where(i.c.workflow_id == workflow)))


async def test_a_price_drop_mails_the_viewer_and_a_price_back_up_expires_the_mail(
    node: Node,
) -> None:
    await post(node, product("shirt", name="Linen Shirt", price=100, stock=5,
                             url="https://northwind.example/p/shirt"))  # fmt: skip
    await post(node, product("scarf", name="Wool Scarf", price=100, stock=5))
    await post(node, shopper("ann", "Product Viewed", product_id="shirt"))
    await post(node, shopper("cal", "Product Viewed", product_id="scarf"))
    await post(node, product("shirt", price=80))
    [msg] = await eventually(lambda: mails(node, "ann@example.com"), "the price-drop mail")
    assert msg["Subject"] == "Price drop: Linen Shirt is now $80.00"
    body = text_of(msg)
    assert "Now $80.00, was $100.00" in body
    assert "Ann, the Linen Shirt you looked at has dropped in price." in body
    # The scarf's drop is held in the queue, and its price goes back up before it can go out.
    assert node.store is not None
    clock = node.clock
    scope = Scope("workflow", "price-drop")
    pause(node.store, scope, actor="test", reason="hold", now=clock.now(), routes={"default"})
    await post(node, product("scarf", price=50))
    await eventually(lambda: intents(node, "price-drop")[1:], "the scarf's alert to be queued")
    await post(node, product("scarf", price=90))
    await eventually(lambda: node.store and _price(node, "scarf") == 90, "the price back up")
    resume(node.store, scope, actor="test", reason="go", now=clock.now())
    expired = await eventually(
        lambda: [i for i in intents(node, "price-drop") if i.status == "expired"],
        "the scarf's alert to expire",
    )
    assert [(i.contact_id, i.reply) for i in expired] == [
        ("cal", "expired: the price of scarf went back up (50 -> 90)")
    ]
    assert mails(node, "cal@example.com") == []


def _price(node: Node, product_id: str) -> float | None:
    assert node.store is not None
    p = schema.products
    with node.store.begin() as conn:
        return conn.execute(sa.select(p.c.price).where(p.c.id == product_id)).scalar()


async def test_abandoned_cart_and_back_in_stock_show_the_catalog_as_it_is_at_send_time(
    node: Node,
) -> None:
    clock = node.clock
    assert isinstance(clock, ManualClock)
    await post(node, product("apron", name="Apron", price=40, stock=6))
    await post(node, product("mug", name="Mug", price=12, stock=0))
    await post(node, shopper("dan", "Product Added", product_id="apron", name="Apron", price=40))
    await post(node, shopper("eve", "Product Viewed", product_id="mug"))
    await eventually(lambda: _price(node, "apron") == 40 and _cart(node, "dan"), "the cart")
    await post(node, product("apron", price=35, stock=2))
    await post(node, product("mug", stock=4))
    [restock] = await eventually(lambda: mails(node, "eve@example.com"), "the back-in-stock mail")
    assert restock["Subject"] == "Back in stock: Mug"
    assert "$12.00 \u00b7 Only 4 left" in text_of(restock)
    # 40 -> 35 is a 12.5 % drop of a product in dan's cart: the price-drop alert comes first.
    [drop] = await eventually(lambda: mails(node, "dan@example.com"), "dan's price-drop mail")
    assert drop["Subject"] == "Price drop: Apron is now $35.00"
    clock.advance(31 * 60)  # the abandoned-cart wait ends
    [cart] = await eventually(
        lambda: [m for m in mails(node, "dan@example.com") if "cart" in m["Subject"]],
        "the abandoned-cart mail",
    )
    assert cart["Subject"] == "Dan, you left something in your cart"
    body = text_of(cart)
    assert "Apron" in body and "$35.00" in body and "Only 2 left" in body
    assert "$40.00" not in body


def _cart(node: Node, contact: str) -> bool:
    assert node.store is not None
    cp = schema.contact_products
    with node.store.begin() as conn:
        query = sa.select(cp.c.cart_quantity).where(cp.c.contact_id == contact)
        return any(conn.execute(query).scalars())
