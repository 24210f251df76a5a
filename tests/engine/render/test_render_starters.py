"""The starter emails in templates/emails: each loads, renders and survives hostile data."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest

from engine.render import Renderer, html_to_text, load_template_dir

TEMPLATE_DIR = Path(__file__).resolve().parents[3] / "templates" / "emails"
STARTERS = [
    "abandoned-cart",
    "back-in-stock",
    "browse-abandonment",
    "feedback-request",
    "order-confirmation",
    "price-drop",
    "re-engagement",
    "shipping-update",
    "store-nearby",
    "welcome-1",
    "welcome-2",
    "welcome-3",
]
TRANSACTIONAL = {"order-confirmation", "shipping-update"}
UNSUBSCRIBE = "https://northwind.example/u/tok-123"
ADDRESS = "12 Harbour Lane, Portland, ME 04101"

PRODUCTS = [
    {
        "product_id": "p-1",
        "name": "Everyday Mug",
        "price": 18,
        "quantity": 2,
        "url": "https://northwind.example/p/mug",
        "image_url": "https://cdn.northwind.example/mug.jpg",
    },
    {
        "product_id": "p-2",
        "name": "Linen Apron",
        "price": 38.5,
        "quantity": 1,
        "url": "/p/apron",
        "image_url": "https://cdn.northwind.example/apron.jpg",
    },
    {
        "product_id": "p-3",
        "name": "Workshop Tote",
        "price": 20,
        "quantity": 1,
        "url": "https://northwind.example/p/tote",
    },
]


def context(**properties: Any) -> dict[str, Any]:
    contact = {"id": "u-1", "email": "jane@example.com", "first_name": "Jane", "plan": "pro"}
    return {
        "contact": contact,
        "traits": contact,
        "event": {"name": "Order Completed", "properties": properties},
        "properties": properties,
        "unsubscribe_url": UNSUBSCRIBE,
        "shop": {"name": "Northwind Goods", "url": "https://northwind.example", "address": ADDRESS},
    }


ORDER = {
    "order_id": "NW-1001",
    "total": 81.5,
    "subtotal": 76.5,
    "shipping": 5,
    "tax": 0,
    "currency": "USD",
    "products": PRODUCTS,
    "carrier": "UPS",
    "tracking_number": "1Z999AA10123456784",
    "tracking_url": "https://www.ups.example/track?num=1Z999AA10123456784",
}


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(load_template_dir(TEMPLATE_DIR))


def test_every_starter_is_there(renderer: Renderer) -> None:
    assert sorted(s.id for s in load_template_dir(TEMPLATE_DIR)) == STARTERS
    for template_id in STARTERS:
        assert renderer.source(template_id).format == "mjml"


@pytest.mark.parametrize("template_id", STARTERS)
def test_starter_renders_a_complete_email(renderer: Renderer, template_id: str) -> None:
    rendered = renderer.render(template_id, context(**ORDER))
    assert rendered.subject and "\n" not in rendered.subject
    assert "{{" not in rendered.subject + rendered.html + rendered.text
    assert "{%" not in rendered.subject + rendered.html + rendered.text
    assert re.search(r"cc[0-9a-f]{8,}j\d+z", rendered.html + rendered.text) is None
    assert rendered.html.startswith("<!DOCTYPE html>")
    assert "Northwind Goods" in rendered.html and "Northwind Goods" in rendered.text
    assert ADDRESS in rendered.html and rendered.text.endswith(ADDRESS)
    if template_id in TRANSACTIONAL:
        assert UNSUBSCRIBE not in rendered.html
    else:
        assert f'href="{UNSUBSCRIBE}"' in rendered.html
        assert f"Unsubscribe ({UNSUBSCRIBE})" in rendered.text
    preheader = renderer.source(template_id).preheader
    assert preheader and 'style="display:none;' in rendered.html
    if renderer.source(template_id).text is None:  # derived from the HTML: tidy
        assert "\n\n\n" not in rendered.text and "  " not in rendered.text


@pytest.mark.parametrize("template_id", STARTERS)
def test_text_part_matches_the_html(renderer: Renderer, template_id: str) -> None:
    rendered = renderer.render(template_id, context(**ORDER))
    if renderer.source(template_id).text is None:
        # Derived once at load time; rendering it gives what converting the HTML would give.
        assert rendered.text == html_to_text(rendered.html)


@pytest.mark.parametrize("template_id", STARTERS)
def test_starter_renders_with_no_data_at_all(renderer: Renderer, template_id: str) -> None:
    rendered = renderer.render(template_id, {})
    assert rendered.subject and rendered.html and rendered.text


HOSTILE: dict[str, Any] = {
    "order_id": "<script>alert(1)</script>",
    "total": "a lot",
    "currency": {"code": "USD"},
    "products": [
        {
            "name": "<img src=x onerror=alert(1)>",
            "price": "free",
            "quantity": "two",
            "url": "https://evil.example/phish",
            "image_url": "javascript:alert(1)",
        },
        "not a product",
        None,
        {"price": [1, 2], "quantity": {"n": 1}},
    ],
    "name": "Mug\r\nBcc: victim@x.example",
    "price": None,
    "url": "javascript:alert(1)",
    "image_url": "data:text/html,<script>alert(1)</script>",
    "tracking_url": "javascript:alert(1)",
    "cart_url": "//evil.example/cart",
    "carrier": "{{ 7 * 7 }}",
}


@pytest.mark.parametrize("template_id", STARTERS)
def test_starter_survives_hostile_data(renderer: Renderer, template_id: str) -> None:
    ctx = context(**HOSTILE)
    ctx["contact"] = {"first_name": "Jane\r\nBcc: v@x.example <b>", "__class__": "x"}
    ctx["traits"] = {"welcome_code": "<b>X</b>", "last_order_at": "yesterday"}
    rendered = renderer.render(template_id, ctx)
    assert "\r" not in rendered.subject and "\n" not in rendered.subject
    for needle in ("<script>", "<img src=x", "javascript:", "evil.example", "data:text/html"):
        assert needle not in rendered.html, needle
    assert "49" not in rendered.text  # data is never evaluated as Jinja


def test_abandoned_cart_lists_every_item_in_order(renderer: Renderer) -> None:
    rendered = renderer.render("abandoned-cart", context(products=PRODUCTS))
    for html_or_text in (rendered.html, rendered.text):
        positions = [html_or_text.index(p["name"]) for p in PRODUCTS]
        assert positions == sorted(positions)
    assert "$18.00 \u00d7 2" in rendered.text  # multiplication sign
    assert "View item (https://northwind.example/p/apron)" in rendered.text  # relative url
    assert 'src="https://cdn.northwind.example/apron.jpg"' in rendered.html
    assert rendered.html.count('alt="Workshop Tote"') == 0  # no image: no <img>


def test_abandoned_cart_from_a_product_added_event(renderer: Renderer) -> None:
    product_added = copy.deepcopy(PRODUCTS[0])
    rendered = renderer.render("abandoned-cart", context(**product_added))
    assert rendered.text.count("Everyday Mug") == 1
    assert "View item (https://northwind.example/p/mug)" in rendered.text


def test_order_confirmation_lines_and_totals(renderer: Renderer) -> None:
    rendered = renderer.render("order-confirmation", context(**ORDER))
    assert rendered.subject == "Order NW-1001 confirmed: thank you, Jane"
    assert "2 x Everyday Mug  $36.00" in rendered.text
    assert "1 x Linen Apron  $38.50" in rendered.text
    assert "Total: $81.50" in rendered.text
    cells = re.findall(r"<td[^>]*>([^<]+)</td>", rendered.html)
    assert cells[cells.index("Everyday Mug") :][:3] == ["Everyday Mug", "2", "$36.00"]
    assert "$81.50" in rendered.html
    euro = renderer.render("order-confirmation", context(**{**ORDER, "currency": "EUR"}))
    assert "Total: €81.50" in euro.text


def test_shipping_update_carrier_and_tracking(renderer: Renderer) -> None:
    rendered = renderer.render("shipping-update", context(**ORDER))
    assert "with UPS" in rendered.text
    assert "1Z999AA10123456784" in rendered.text
    assert f'href="{ORDER["tracking_url"]}"' in rendered.html
    assert f"Track your parcel ({ORDER['tracking_url']})" in rendered.text


def test_browse_abandonment_shows_the_viewed_product(renderer: Renderer) -> None:
    viewed = {**PRODUCTS[1], "url": "https://northwind.example/p/apron"}
    rendered = renderer.render("browse-abandonment", context(**viewed))
    assert rendered.subject == "Still thinking about the Linen Apron?"
    assert "$38.50" in rendered.text
    assert "Take another look (https://northwind.example/p/apron)" in rendered.text


def test_welcome_and_re_engagement_personalize(renderer: Renderer) -> None:
    ctx = context()
    assert renderer.render("welcome-1", ctx).subject == "Welcome to Northwind Goods, Jane"
    assert "WELCOME10" in renderer.render("welcome-1", ctx).text
    ctx["traits"] = {"welcome_code": "HELLO-JANE", "last_order_at": "2024-03-02T10:00:00Z"}
    assert "HELLO-JANE" in renderer.render("welcome-3", ctx).text
    assert "since your last order on Mar 2, 2024" in renderer.render("re-engagement", ctx).text
