"""The template editor's verbs through the real control API of engine nodes (embedded
nats-server, SQLite, the capture inbox): the preview is the mail the inbox receives, a save is
live at once on every node, versions and diffs, test sends, contact search, fields seen."""

from __future__ import annotations

import asyncio
import email
import email.policy
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from engine.bus import events_subject
from engine.config import load_settings
from engine.control import ControlError, request
from engine.inbox import get_message, list_messages
from engine.node import Node
from engine.store import schema
from tests.engine.access_support import grant


def node_settings(data: Path, name: str, **extra: Any) -> Any:
    overrides: dict[str, Any] = {
        "engine": {"data_dir": str(data), "node": name},
        "http": {"listen": "127.0.0.1:0"},
        "ingest": {"write_key": "wk-test"},
    }
    for key, value in extra.items():
        overrides.setdefault(key, {}).update(value)
    return load_settings(None, environ={}, overrides=overrides)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    node = Node(node_settings(tmp_path / "data", "t1"))
    await node.start()
    assert node.store is not None
    grant(node.store, "ada", "marketer")
    try:
        yield node
    finally:
        await node.stop()


async def call(node: Node, verb: str, args: dict[str, Any] | None = None, **kw: Any) -> Any:
    assert node.nc is not None
    return await request(node.nc, node.settings.engine.node, verb, args, user="ada", **kw)


async def wait_for(predicate: Callable[[], Awaitable[Any]], what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = await predicate()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def publish(node: Node, body: dict[str, Any]) -> str:
    assert node.js is not None
    body = {"messageId": uuid.uuid4().hex, **body}
    await node.js.publish(
        events_subject(body["type"]), orjson.dumps(body), headers={"Nats-Msg-Id": body["messageId"]}
    )
    return str(body["messageId"])


async def sign_up(node: Node, user: str, address: str, first_name: str = "Grace") -> str:
    return await publish(
        node,
        {
            "type": "track",
            "event": "Signed Up",
            "userId": user,
            "properties": {"method": "email", "source": "footer"},
            "context": {"traits": {"email": address, "first_name": first_name}},
        },
    )


async def inbox_mail(node: Node, address: str, count: int = 1) -> list[bytes]:
    directory = node.data_dir / "inbox"

    async def found() -> list[bytes]:
        entries = [e for e in list_messages(directory, limit=200) if address in e.rcpt_tos]
        if len(entries) < count:
            return []
        entries.sort(key=lambda e: e.received_at)
        return [get_message(directory, e.id)[1] for e in entries]

    return list(await wait_for(found, f"{count} mail(s) to {address}", timeout=30))


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def part_bytes(raw: bytes, subtype: str) -> bytes:
    """The encoded payload of the text/<subtype> part, exactly as it was on the wire."""
    message = parse(raw)
    part = message.get_body(preferencelist=(subtype,))
    assert part is not None
    payload = part.get_payload(decode=False)
    assert isinstance(payload, str)
    return payload.encode("ascii")


def raw_headers(raw: bytes) -> dict[str, bytes]:
    """Each top-level header's raw value (folded lines kept), by name."""
    out: dict[str, bytes] = {}
    name = b""
    for line in raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            out[name.decode()] += b"\r\n" + line
        else:
            name, _, value = line.partition(b":")
            out[name.decode()] = value
    return out


def decoded(raw: bytes, subtype: str) -> str:
    part = parse(raw).get_body(preferencelist=(subtype,))
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


# -- the preview is the mail -------------------------------------------------------------------


async def test_the_preview_is_byte_identical_to_the_mail_the_inbox_receives(node: Node) -> None:
    address = f"grace-{uuid.uuid4().hex[:6]}@example.com"
    event_id = await sign_up(node, "u-grace", address, first_name="Grace <&> Hopper")
    [raw] = await inbox_mail(node, address)

    preview = await call(
        node,
        "templates.preview",
        {"template": "welcome-1", "contact": "u-grace", "event": event_id},
    )
    assert preview["target"]["event_id"] == event_id
    assert preview["category"] == "marketing"
    ours = preview["raw"].encode("utf-8")
    # The parts, as encoded on the wire, are the same bytes; so are the decoded parts.
    assert part_bytes(ours, "html") == part_bytes(raw, "html")
    assert part_bytes(ours, "plain") == part_bytes(raw, "plain")
    assert decoded(raw, "html") == preview["html"]
    assert decoded(raw, "plain") == preview["text"].replace("\r\n", "\n")
    assert "Grace &lt;&amp;&gt; Hopper" in preview["html"]  # escaped, as sent
    # The headers the engine sent, byte for byte, but Date, Message-ID (and so the boundary).
    sent, shown = raw_headers(raw), raw_headers(ours)
    for name in ("From", "To", "Subject", "List-Unsubscribe", "List-Unsubscribe-Post", "List-Id"):
        assert shown[name] == sent[name], name
    headers = dict(preview["headers"])
    assert headers["To"] == f"<{address}>"
    assert headers["Subject"] == str(parse(raw)["Subject"])
    assert preview["unsubscribe_url"] in headers["List-Unsubscribe"]

    # Without an event: the contact's latest event of the workflow's trigger, the same mail.
    again = await call(node, "templates.preview", {"template": "welcome-1", "contact": "u-grace"})
    assert again["target"]["event_id"] == event_id
    assert again["html"] == preview["html"]


async def test_a_draft_previews_without_saving_and_sample_data_needs_no_contact(
    node: Node,
) -> None:
    got = await call(node, "templates.get", {"template": "welcome-1"})
    draft = {
        "body": got["body"].replace(
            "</mj-body>",
            "<mj-section><mj-column><mj-text>"
            "Hello {{ contact.first_name }} from the draft</mj-text></mj-column></mj-section>"
            "</mj-body>",
        )
    }
    preview = await call(
        node, "templates.preview", {"template": "welcome-1", "draft": draft, "sample": True}
    )
    assert preview["draft"] is True
    assert preview["target"]["sample"] is True
    assert preview["target"]["event"] == "Signed Up"
    first = preview["target"]["name"]
    assert first and f"Hello {first} from the draft" in preview["html"]
    assert "Sample data" in preview["notes"][0]
    # Nothing was saved.
    assert (await call(node, "templates.get", {"template": "welcome-1"}))["version"] == 1


# -- save: a new version, live at once, everywhere ---------------------------------------------


async def test_save_makes_the_new_version_live_without_a_restart(node: Node) -> None:
    first = f"a-{uuid.uuid4().hex[:6]}@example.com"
    await sign_up(node, "u-a", first)
    [before] = await inbox_mail(node, first)
    assert "v2 subject" not in str(parse(before)["Subject"])

    saved = await call(
        node,
        "templates.save",
        {
            "template": "welcome-1",
            "draft": {"subject": "v2 subject for {{ contact.first_name }}"},
            "base_version": 1,
        },
    )
    assert saved["version"] == 2 and saved["changed"] is True
    second = f"b-{uuid.uuid4().hex[:6]}@example.com"
    await sign_up(node, "u-b", second, first_name="Bea")
    [after] = await inbox_mail(node, second)
    assert str(parse(after)["Subject"]) == "v2 subject for Bea"

    # Audited; versions and the diff show it; saving the same content adds nothing.
    assert node.store is not None
    with node.store.begin() as conn:
        audit = conn.execute(
            sa.select(schema.audit_log).where(schema.audit_log.c.action == "templates.save")
        ).one()
    assert audit.actor == "ada" and audit.target == "template welcome-1 v2"
    versions = await call(node, "templates.versions", {"template": "welcome-1"})
    assert [v["version"] for v in versions["versions"]] == [2, 1]
    assert versions["versions"][0]["source"] == "console:ada"
    diff = await call(node, "templates.diff", {"template": "welcome-1", "from": 1})
    assert diff["to"] == 2
    [part] = diff["parts"]
    assert part["part"] == "subject" and part["added"] == 1 and part["removed"] == 1
    assert "+v2 subject for {{ contact.first_name }}" in part["diff"]
    same = await call(
        node, "templates.save", {"template": "welcome-1", "draft": {"subject": saved_subject()}}
    )
    assert same == {"template": "welcome-1", "version": 2, "changed": False}

    # A stale base version is refused, and so is a template that does not compile.
    with pytest.raises(ControlError, match="is at version 2, not 1"):
        await call(
            node,
            "templates.save",
            {"template": "welcome-1", "draft": {"subject": "x"}, "base_version": 1},
        )
    with pytest.raises(ControlError, match=r"not saved: .*body line 2"):
        await call(
            node,
            "templates.save",
            {"template": "welcome-1", "draft": {"body": "<p>\n{% if %}</p>", "format": "html"}},
        )
    assert [
        v["version"]
        for v in (await call(node, "templates.versions", {"template": "welcome-1"}))["versions"]
    ] == [2, 1]


def saved_subject() -> str:
    return "v2 subject for {{ contact.first_name }}"


async def test_a_save_on_one_node_is_live_on_the_others(tmp_path: Path) -> None:
    a = Node(node_settings(tmp_path / "a", "a1"))
    await a.start()
    try:
        assert a.store is not None
        grant(a.store, "ada", "marketer")
        b = Node(
            node_settings(
                tmp_path / "b",
                "b1",
                engine={"role": "deliver"},
                nats={"url": a.nats_url, **a.nats_auth()},
                database={"url": a.settings.database_url()},
                smtp={"url": f"smtp://{a.inbox_address}"},
            )
        )
        await b.start()
        try:
            renderer = b.components["library"].renderer
            assert renderer.source("welcome-2").version == 1
            await call(
                a,
                "templates.save",
                {"template": "welcome-2", "draft": {"subject": "Changed on a1"}},
            )

            async def live_on_b() -> bool:
                return bool(renderer.source("welcome-2").subject == "Changed on a1")

            await wait_for(live_on_b, "node b1 to load the saved template")
            assert renderer.source("welcome-2").version == 2
        finally:
            await b.stop()
    finally:
        await a.stop()


async def test_a_new_template_can_be_created(node: Node) -> None:
    draft = {
        "name": "Restock notice",
        "subject": "{{ properties.name }} is back",
        "body": "<html><body><p>Hi {{ contact.first_name }}</p>"
        '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a> {{ shop.address }}</p></body></html>',
        "format": "html",
    }
    saved = await call(node, "templates.save", {"template": "restock-notice", "draft": draft})
    assert saved["version"] == 1
    listed = await call(node, "templates.list")
    row = next(t for t in listed["templates"] if t["id"] == "restock-notice")
    assert row["name"] == "Restock notice" and row["versions"] == 1 and row["used_by"] == []
    with pytest.raises(ControlError, match=r"draft\.body is required"):
        await call(node, "templates.save", {"template": "empty-one", "draft": {"subject": "s"}})
    with pytest.raises(ControlError, match="bad template id"):
        await call(node, "templates.save", {"template": "Bad Id", "draft": draft})


# -- lint through the verb ---------------------------------------------------------------------


async def test_lint_reports_findings_with_lines_for_a_draft(node: Node) -> None:
    body = (
        "<html><body>\n"
        "<p>Hi {{ contcat.first_name }}</p>\n"
        '<img src="https://shop.example/a.png">\n'
        "<p>{{ contact.favourite_colour }}</p>\n"
        "</body></html>\n"
    )
    await sign_up(node, "u-lint", "lint@example.com")
    await inbox_mail(node, "lint@example.com")
    result = await call(
        node,
        "templates.lint",
        {"template": "welcome-1", "draft": {"body": body, "format": "html"}, "contact": "u-lint"},
    )
    found = {(f["code"], f["line"]) for f in result["findings"]}
    assert ("undefined", 2) in found
    assert ("img-alt", 3) in found
    assert ("unseen-field", 4) in found  # no contact in the stream has that trait
    assert ("no-unsubscribe", 5) in found and ("no-postal-address", 5) in found
    assert result["errors"] == 3 and result["warnings"] == 2
    undefined = next(f for f in result["findings"] if f["code"] == "undefined")
    assert "did you mean 'contact'" in undefined["message"]
    # The saved starter passes.
    clean = await call(node, "templates.lint", {"template": "welcome-1", "sample": True})
    assert clean["findings"] == []


# -- test sends, contacts, fields ---------------------------------------------------------------


async def test_test_send_reaches_the_inbox_with_a_void_unsubscribe_link(node: Node) -> None:
    await sign_up(node, "u-t", "t@example.com", first_name="Tess")
    [real] = await inbox_mail(node, "t@example.com")
    sent = await call(node, "templates.test_send", {"template": "welcome-1", "contact": "u-t"})
    assert sent["via"] == "inbox" and sent["reply"].startswith("250")
    mails = await inbox_mail(node, "t@example.com", count=2)
    test = next(m for m in mails if sent["message_id"] in m.decode())
    assert str(parse(test)["Subject"]) == str(parse(real)["Subject"])
    # Everything but the unsubscribe token is the real mail.
    real_unsub = str(parse(real)["List-Unsubscribe"])
    test_unsub = str(parse(test)["List-Unsubscribe"])
    assert real_unsub != test_unsub
    assert decoded(test, "html").replace(token(test_unsub), token(real_unsub)) == decoded(
        real, "html"
    )
    # To another address: the To header and envelope name it.
    sent = await call(
        node,
        "templates.test_send",
        {"template": "welcome-1", "contact": "u-t", "to": "Reviewer <review@example.org>"},
    )
    assert sent["to"] == "review@example.org"
    [review] = await inbox_mail(node, "review@example.org")
    assert str(parse(review)["To"]) == "review@example.org"
    with pytest.raises(ControlError, match="to: "):
        await call(node, "templates.test_send", {"template": "welcome-1", "to": "a\r\nBcc: x@y"})


def token(list_unsubscribe: str) -> str:
    url = next(u for u in list_unsubscribe.split(",") if "/u/" in u)
    return url.strip(" <>").rsplit("/u/", 1)[1]


async def test_contact_search_events_and_fields_seen(node: Node) -> None:
    await sign_up(node, "u-lovelace", "ada.lovelace@example.com", first_name="Ada")
    await publish(
        node,
        {
            "type": "track",
            "event": "Product Viewed",
            "userId": "u-lovelace",
            "properties": {"name": "Engine", "products": [{"sku": "E-1", "price": 3}]},
        },
    )

    async def two_events() -> list[Any]:
        try:
            got = await call(node, "contacts.events", {"contact": "u-lovelace"})
        except ControlError as exc:  # decide has not written the contact yet
            if "no contact" not in str(exc):
                raise
            return []
        return list(got["events"]) if len(got["events"]) == 2 else []

    events = await wait_for(two_events, "two recorded events")
    assert [e["name"] for e in events] == ["Product Viewed", "Signed Up"]
    by_name = await call(node, "contacts.search", {"query": "ada"})
    assert [c["id"] for c in by_name["contacts"]] == ["u-lovelace"]
    assert by_name["contacts"][0]["name"] == "Ada"
    by_mail = await call(node, "contacts.search", {"query": "lovelace@"})
    assert by_mail["contacts"][0]["email"] == "ada.lovelace@example.com"
    assert (await call(node, "contacts.search", {"query": "100%_"}))["contacts"] == []
    seen = await call(node, "templates.fields")
    assert {"path": "first_name", "count": 1, "example": "Ada"} in seen["traits"]
    paths = {f["path"] for f in seen["events"]["Product Viewed"]}
    assert {"name", "products", "products[].sku", "products[].price"} <= paths


async def test_bad_arguments_are_refused_by_name(node: Node) -> None:
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("templates.get", {"template": "nope"}, "there is no template 'nope' \\(templates: "),
        ("templates.get", {"template": "welcome-1", "version": 9}, "version 9"),
        ("templates.preview", {"template": "welcome-1", "contact": "ghost"}, "no contact 'ghost'"),
        ("templates.preview", {"template": "welcome-1", "event": "e1"}, "event needs contact"),
        ("templates.preview", {"template": "welcome-1", "colour": 1}, "unknown argument"),
        ("templates.preview", {"template": "welcome-1", "category": "x"}, "category must be"),
        ("templates.diff", {"template": "welcome-1"}, "from is required"),
        ("templates.save", {"template": "welcome-1"}, "draft is required"),
        ("templates.save", {"template": "welcome-1", "draft": {"format": "pdf"}}, "format"),
        ("contacts.search", {"limit": 0}, "limit must be"),
        ("contacts.events", {"contact": "ghost"}, "no contact 'ghost'"),
    ]
    for verb, args, message in cases:
        with pytest.raises(ControlError, match=message):
            await call(node, verb, args)


# -- lifetime value in templates ----------------------------------------------------------------


async def test_the_preview_and_the_mail_show_the_contacts_lifetime_value(node: Node) -> None:
    await sign_up(node, "u-clv", "clv@example.com")
    await inbox_mail(node, "clv@example.com")  # the welcome mail: the contact is stored
    for total in (120, 35.5):
        await publish(
            node,
            {"type": "track", "event": "Order Completed", "userId": "u-clv",
             "properties": {"order_id": f"o-{total}", "total": total}},
        )  # fmt: skip
    assert node.store is not None

    async def counted() -> bool:
        with node.store.begin() as conn:  # type: ignore[union-attr]
            c = schema.contacts
            found = conn.execute(sa.select(c.c.orders).where(c.c.id == "u-clv")).scalar()
        return found == 2

    await wait_for(counted, "both orders counted")
    body = (
        "<html><body>\n"
        "<p>{{ contact.lifetime_value | money }} over {{ contact.orders }} orders,"
        " {{ contact.average_order_value }} each</p>\n"
        '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a> {{ shop.address }}</p>\n'
        "</body></html>\n"
    )
    draft = {"body": body, "format": "html"}
    args = {"template": "welcome-1", "draft": draft, "contact": "u-clv"}
    preview = await call(node, "templates.preview", args)
    assert "155.50 over 2 orders, 77.75 each" in preview["html"]
    lint = await call(node, "templates.lint", args)
    assert [f for f in lint["findings"] if "lifetime_value" in f["message"]] == []
    assert [f for f in lint["findings"] if "contact.orders" in f["message"]] == []
