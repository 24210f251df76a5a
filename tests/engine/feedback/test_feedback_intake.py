"""Bounces and complaints reaching a running node: ESP webhooks over HTTP, DSNs by SMTP.

The local stack in one process (embedded nats-server, SQLite, capture inbox); no mocks.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import aiohttp
import aiosmtplib
import pytest
import sqlalchemy as sa

from engine.config import load_settings
from engine.inbox import CaptureInbox, list_messages
from engine.node import Node
from engine.store import schema

WRITE_KEY = "wk-feedback"


@pytest.fixture
async def node(tmp_path: Path) -> Any:
    settings = load_settings(
        None,
        environ={},
        overrides={
            "engine": {"data_dir": str(tmp_path / "data"), "node": "fb1"},
            "http": {"listen": "127.0.0.1:0"},
            "ingest": {"write_key": WRITE_KEY},
        },
    )
    node = Node(settings)
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


def auth(key: str = WRITE_KEY) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


async def post(node: Node, path: str, body: Any, key: str = WRITE_KEY) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(headers=auth(key)) as http,
        http.post(f"{node.http_url}{path}", json=body) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


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


def intents_to(node: Node, address: str) -> list[tuple[str, str, str]]:
    """(id, status, event_id) of every intent to ``address``, oldest first."""
    assert node.store is not None
    intents = schema.intents
    with node.store.begin() as conn:
        rows = conn.execute(
            sa.select(intents.c.id, intents.c.status, intents.c.event_id)
            .where(intents.c.to_addr == address)
            .order_by(intents.c.id)
        ).all()
    return [(r.id, r.status, r.event_id) for r in rows]


def suppressions(node: Node) -> list[tuple[str, str, str]]:
    assert node.store is not None
    table = schema.suppressions
    with node.store.begin() as conn:
        rows = conn.execute(sa.select(table.c.address, table.c.scope, table.c.reason)).all()
    return sorted((r.address, r.scope, r.reason) for r in rows)


async def wait_status(node: Node, address: str, statuses: list[str], timeout: float = 15) -> Any:
    found: list[tuple[str, str, str]] = []
    for _ in range(int(timeout / 0.1)):
        found = intents_to(node, address)
        if [status for _, status, _ in found] == statuses:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"{address}: expected {statuses}, store has {found}")


async def sent_intent(node: Node, user: str) -> str:
    status, _ = await post(node, "/v1/track", {**order(user, f"{user}-1"), "messageId": user})
    assert status == 200
    found: list[tuple[str, str, str]] = await wait_status(node, f"{user}@example.com", ["sent"])
    assert len(found) == 1
    return found[0][0]


def postmark_bounce(intent_id: str, email: str) -> dict[str, Any]:
    return {
        "RecordType": "Bounce",
        "ID": 4323372036854775807,
        "Type": "HardBounce",
        "TypeCode": 1,
        "Name": "Hard bounce",
        "Tag": "",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "Metadata": {"intent_id": intent_id},
        "ServerID": 23,
        "MessageStream": "outbound",
        "Description": "The server was unable to deliver your message (ex: unknown user).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Email": email,
        "From": "shop@shop.example",
        "BouncedAt": "2026-11-27T12:00:00Z",
        "DumpAvailable": False,
        "Inactive": True,
        "CanActivate": True,
        "Subject": "Your order",
    }


async def test_postmark_hard_bounce_webhook_bounces_and_suppresses(node: Node) -> None:
    address = "pam@example.com"
    intent_id = await sent_intent(node, "pam")
    body = postmark_bounce(intent_id, address)

    # A wrong key, an unknown provider and a malformed body change nothing.
    status, reply = await post(node, "/webhooks/postmark", body, key="wrong")
    assert status == 401, reply
    status, reply = await post(node, "/webhooks/mailchimp", body)
    assert status == 404 and "mailchimp" in reply["error"], reply
    status, reply = await post(node, "/webhooks/postmark", {**body, "Email": "not an address"})
    assert status == 400, reply
    assert "Postmark webhook: Email" in reply["error"], reply
    async with (
        aiohttp.ClientSession(headers=auth()) as http,
        http.post(f"{node.http_url}/webhooks/postmark", data=b"{not json") as resp,
    ):
        assert resp.status == 400
        assert "not JSON" in (await resp.json())["error"]
    assert [s for _, s, _ in intents_to(node, address)] == ["sent"]
    assert suppressions(node) == []

    status, reply = await post(node, "/webhooks/postmark", body)
    assert status == 200, reply
    assert reply["hard_bounces"] == 1 and reply["intents_bounced"] == 1, reply
    assert reply["suppressed"] == 1, reply
    assert [s for _, s, _ in intents_to(node, address)] == ["bounced"]
    assert suppressions(node) == [(address, "all", "hard_bounce")]
    counters = node.telemetry.counters
    assert counters['feedback_total{kind="hard_bounce",source="postmark"}'] == 1
    assert counters['feedback_invalid_total{source="postmark"}'] == 2

    # A later order confirmation (transactional) to that address is suppressed, not sent.
    status, _ = await post(node, "/v1/track", order("pam", "pam-2"))
    assert status == 200
    await wait_status(node, address, ["bounced", "suppressed"])


async def test_dsn_mailed_to_the_bounce_address_bounces_the_intent(node: Node) -> None:
    address = "dan@example.com"
    intent_id = await sent_intent(node, "dan")
    bounce_domain = node.settings.sending.bounce_domain
    dsn = (
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.com>\r\n"
        f"To: bounce+{intent_id}@{bounce_domain}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Message-ID: <dsn-1@mx.example.com>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\r\n'
        "\r\n"
        "--b1\r\n"
        "Content-Type: text/plain\r\n"
        "\r\n"
        f"<{address}>: 550 5.1.1 User unknown\r\n"
        "--b1\r\n"
        "Content-Type: message/delivery-status\r\n"
        "\r\n"
        "Reporting-MTA: dns; mx.example.com\r\n"
        "\r\n"
        f"Final-Recipient: rfc822; {address}\r\n"
        "Action: failed\r\n"
        "Status: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 User unknown\r\n"
        "--b1--\r\n"
    ).encode()
    host, _, port = node.inbox_address.rpartition(":")

    async def send(raw: bytes, sender: str, recipients: list[str]) -> None:
        await aiosmtplib.send(
            raw,
            sender=sender,
            recipients=recipients,
            hostname=host,
            port=int(port),
            start_tls=False,
        )

    # A malformed report to the bounce domain is stored, answered 250, and changes nothing.
    await send(
        b"Subject: hello\r\n\r\nnot a report\r\n",
        sender="someone@mx.example.com",
        recipients=[f"bounce+{intent_id}@{bounce_domain}"],
    )
    assert [s for _, s, _ in intents_to(node, address)] == ["sent"]
    assert node.telemetry.counters['feedback_invalid_total{source="mail"}'] == 1
    await send(
        dsn,
        sender="MAILER-DAEMON@mx.example.com",
        recipients=[f"bounce+{intent_id}@{bounce_domain}"],
    )
    assert [s for _, s, _ in intents_to(node, address)] == ["bounced"]
    assert suppressions(node) == [(address, "all", "hard_bounce")]
    assert node.telemetry.counters['feedback_total{kind="hard_bounce",source="dsn"}'] == 1


async def test_inbox_hook_sees_every_message_and_its_errors_do_not_refuse_mail(
    tmp_path: Path,
) -> None:
    seen: list[tuple[bytes, tuple[str, ...]]] = []

    async def hook(raw: bytes, rcpt_tos: tuple[str, ...]) -> None:
        seen.append((raw, rcpt_tos))
        if b"boom" in raw:
            raise RuntimeError("boom")

    box = CaptureInbox(tmp_path / "inbox", keep=10, on_message=hook)
    host, port = await box.start("127.0.0.1", 0)
    try:
        for body in (b"Subject: one\r\n\r\nfine\r\n", b"Subject: two\r\n\r\nboom\r\n"):
            errors, reply = await aiosmtplib.send(
                body,
                sender="a@example.com",
                recipients=["b@example.com", "c@example.com"],
                hostname=host,
                port=port,
                start_tls=False,
            )
            assert errors == {} and reply.startswith("2.0.0 Ok"), reply
    finally:
        await box.stop()
    assert [r for _, r in seen] == [("b@example.com", "c@example.com")] * 2
    assert b"fine" in seen[0][0]
    assert len(list_messages(tmp_path / "inbox")) == 2


async def test_webhook_routes_only_with_a_feedback_handler(tmp_path: Path) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from engine.ingest.http import build_app
    from engine.telemetry import Telemetry

    telemetry = Telemetry("t")
    app = build_app(
        publisher=None,  # type: ignore[arg-type]  # no event is posted here
        write_key=WRITE_KEY,
        telemetry=telemetry,
        metrics_text=telemetry.prometheus,
        health=dict,
    )
    async with TestClient(TestServer(app)) as client:
        resp = await client.post("/webhooks/postmark", data=b"{}", headers=auth())
        assert resp.status == 404
