"""The one-click unsubscribe pages: GET changes nothing, POST with a valid token unsubscribes."""

from __future__ import annotations

import aiohttp
import pytest
from ingest_support import WRITE_KEY, Ingest
from nats.aio.client import Client as NatsClient

from engine.errors import StoreError
from engine.ingest.http import HttpService
from engine.ingest.publisher import EventPublisher
from engine.telemetry import Telemetry
from engine.unsubscribe import UnsubscribeTokens

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


async def test_get_shows_a_confirmation_page_and_changes_nothing(ingest: Ingest) -> None:
    token = ingest.tokens.make("c-42", "Jane.Doe@Example.com")
    for _ in range(3):  # link scanners like to fetch twice
        async with ingest.session.get(f"/u/{token}") as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            page = await response.text()
    assert '<form method="post">' in page
    assert '<button type="submit">Unsubscribe</button>' in page
    assert "ja…@example.com" in page  # masked: the page may be seen by whoever has the link
    assert "jane.doe@example.com" not in page
    assert ingest.unsubscribed == []


async def test_one_click_post_unsubscribes_once(ingest: Ingest) -> None:
    token = ingest.tokens.make("c-42", "jane@example.com")
    async with ingest.session.post(f"/u/{token}", data=ONE_CLICK) as response:
        assert response.status == 200
        page = await response.text()
    assert "You are unsubscribed" in page
    assert ingest.unsubscribed == [("c-42", "jane@example.com", "one-click")]
    assert ingest.telemetry.counters['unsubscribes_total{source="one-click"}'] == 1


async def test_the_page_button_unsubscribes(ingest: Ingest) -> None:
    token = ingest.tokens.make("c-7", "sam@example.com")
    async with ingest.session.post(f"/u/{token}", data={"confirm": "yes"}) as response:
        assert response.status == 200
    assert ingest.unsubscribed == [("c-7", "sam@example.com", "page")]


def forgeries(tokens: UnsubscribeTokens) -> list[str]:
    good = tokens.make("c-1", "a@example.com")
    other = tokens.make("c-2", "b@example.com")
    payload, signature = good.split(".")
    return [
        "garbage",
        "Zm9v.YmFy",
        f"{other.split('.')[0]}.{signature}",  # someone else's payload, our signature
        f"{payload}.{signature[:-2]}AA",  # a bent signature
        f"{payload}.",
        "x" * 3000,
    ]


async def test_a_forged_token_is_refused_and_changes_nothing(ingest: Ingest) -> None:
    for token in forgeries(ingest.tokens):
        async with ingest.session.post(f"/u/{token}", data=ONE_CLICK) as response:
            assert response.status == 400
            assert "This unsubscribe link does not work" in await response.text()
        async with ingest.session.get(f"/u/{token}") as response:
            assert response.status == 400
    assert ingest.unsubscribed == []


async def test_a_post_that_does_not_ask_changes_nothing(ingest: Ingest) -> None:
    token = ingest.tokens.make("c-1", "a@example.com")
    async with ingest.session.post(f"/u/{token}", data={"List-Unsubscribe": "Maybe"}) as response:
        assert response.status == 400
        assert "Nothing was changed" in await response.text()
    assert ingest.unsubscribed == []


async def test_pages_cannot_be_framed_cached_or_leak_the_token(ingest: Ingest) -> None:
    token = ingest.tokens.make("c-1", "a@example.com")
    async with ingest.session.get(f"/u/{token}") as response:
        headers = response.headers
    assert headers["Cache-Control"] == "no-store"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]


async def test_addresses_are_escaped(ingest: Ingest) -> None:
    token = ingest.tokens.make("c-1", "<b>x@<script>.example")
    async with ingest.session.get(f"/u/{token}") as response:
        page = await response.text()
    assert "<script>" not in page
    assert "&lt;b…@&lt;script&gt;.example" in page


async def test_a_failing_store_gets_a_plain_503_page(bus: NatsClient) -> None:
    telemetry = Telemetry("test")
    tokens = UnsubscribeTokens(b"another-secret-of-16+bytes")

    async def broken(contact_id: str, address: str, source: str) -> None:
        raise StoreError("database is locked")

    service = HttpService(
        publisher=EventPublisher(bus.jetstream(), telemetry),
        write_key=WRITE_KEY,
        telemetry=telemetry,
        metrics_text=telemetry.prometheus,
        health=dict,
        unsubscribe=broken,
        tokens=tokens,
    )
    host, port = await service.start()
    try:
        async with (
            aiohttp.ClientSession(f"http://{host}:{port}") as session,
            session.post(f"/u/{tokens.make('c', 'a@example.com')}", data=ONE_CLICK) as response,
        ):
            assert response.status == 503
            page = await response.text()
    finally:
        await service.stop()
    assert "We could not unsubscribe you just now" in page
    assert "database is locked" not in page
    assert "unsubscribes_total" not in str(telemetry.counters)


async def test_unsubscribe_needs_its_tokens(bus: NatsClient) -> None:
    telemetry = Telemetry("test")

    async def record(contact_id: str, address: str, source: str) -> None:
        raise AssertionError("never called")

    with pytest.raises(ValueError, match="unsubscribe and tokens must be given together"):
        HttpService(
            publisher=EventPublisher(bus.jetstream(), telemetry),
            write_key=WRITE_KEY,
            telemetry=telemetry,
            metrics_text=telemetry.prometheus,
            health=dict,
            unsubscribe=record,
        )
