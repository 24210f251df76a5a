"""What events say about products, checked and normalised.

Two kinds of source, trusted differently:

- the catalog source sends ``Product Updated`` (one product in ``properties``, or several in
  ``properties.products[]``). Its values are checked at ingest (a bad one is refused with the
  field and the reason) and they are the truth: only they can start price-drop and
  back-in-stock alerts;
- shopper events (``Product Viewed``, ``Product Added``, ``Product Removed``, ``Cart Viewed``,
  ``Checkout Started``, ``Order Completed``) carry product properties too, but they may come
  from a browser: they describe products the catalog source has not described, a value that
  does not fit is ignored (the event itself still counts), and they never start an alert.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from engine.errors import EventInvalid

PRODUCT_UPDATED = "Product Updated"
PRODUCT_VIEWED = "Product Viewed"
PRODUCT_ADDED = "Product Added"
PRODUCT_REMOVED = "Product Removed"
ORDER_COMPLETED = "Order Completed"
# Events whose products[] only describe products (no cart or view change).
_LISTING_EVENTS = frozenset({"Cart Viewed", "Checkout Started", "Product List Viewed"})
SHOPPER_EVENTS = frozenset(
    {PRODUCT_VIEWED, PRODUCT_ADDED, PRODUCT_REMOVED, ORDER_COMPLETED, *_LISTING_EVENTS}
)
CATALOG_EVENTS = frozenset({PRODUCT_UPDATED})

MAX_ID = 255
MAX_NAME = 500
MAX_URL = 2000
MAX_ITEMS = 100  # products[] entries read from one event
MAX_QUANTITY = 10_000
MAX_STOCK = 1_000_000_000


@dataclass(frozen=True, slots=True)
class ProductFacts:
    """The product values one event (or one ``products[]`` entry) states; None: not stated."""

    product_id: str
    name: str | None = None
    price: float | None = None
    currency: str | None = None
    stock: int | None = None
    url: str | None = None
    image_url: str | None = None
    quantity: int = 1


def is_catalog_event(name: str) -> bool:
    return name in CATALOG_EVENTS


def touches_products(name: str) -> bool:
    """Whether an event of this name says anything about products."""
    return name in CATALOG_EVENTS or name in SHOPPER_EVENTS


def check_catalog_event(properties: Mapping[str, Any]) -> None:
    """Refuse a ``Product Updated`` event whose product values are unusable (``EventInvalid``
    naming the field), so a feed mistake is reported at ingest and changes nothing."""
    items = properties.get("products")
    if items is None:
        _strict(properties, "properties")
        return
    if not isinstance(items, list) or not items:
        raise EventInvalid("properties.products", "must be a non-empty list of products")
    if len(items) > MAX_ITEMS:
        raise EventInvalid("properties.products", f"must hold at most {MAX_ITEMS} products")
    for i, item in enumerate(items):
        where = f"properties.products[{i}]"
        if not isinstance(item, dict):
            raise EventInvalid(where, "must be a JSON object")
        _strict(item, where)


def _strict(raw: Mapping[str, Any], where: str) -> None:
    if _product_id(raw.get("product_id")) is None:
        raise EventInvalid(f"{where}.product_id", f"is required (text of 1 to {MAX_ID} characters)")
    if "price" in raw and raw["price"] is not None and _price(raw["price"]) is None:
        raise EventInvalid(f"{where}.price", "must be a number of at least 0")
    if "stock" in raw and raw["stock"] is not None and _stock(raw["stock"]) is None:
        raise EventInvalid(f"{where}.stock", "must be a whole number")
    if "currency" in raw and raw["currency"] is not None and _currency(raw["currency"]) is None:
        raise EventInvalid(f"{where}.currency", "must be a 3-letter ISO 4217 code like USD")
    if "name" in raw and raw["name"] is not None and _text(raw["name"], MAX_NAME) is None:
        raise EventInvalid(f"{where}.name", f"must be text of at most {MAX_NAME} characters")
    for key in ("url", "image_url"):
        if key in raw and raw[key] is not None and _text(raw[key], MAX_URL) is None:
            raise EventInvalid(f"{where}.{key}", f"must be text of at most {MAX_URL} characters")


def products_of(name: str, properties: Mapping[str, Any]) -> Iterator[ProductFacts]:
    """The products an event names, with the values that fit (others left as None)."""
    items = properties.get("products")
    listing = name in (ORDER_COMPLETED, PRODUCT_UPDATED) or name in _LISTING_EVENTS
    if isinstance(items, list) and listing:
        for item in items[:MAX_ITEMS]:
            if isinstance(item, dict):
                facts = facts_of(item, properties)
                if facts is not None:
                    yield facts
        return
    if name in (PRODUCT_UPDATED, PRODUCT_VIEWED, PRODUCT_ADDED, PRODUCT_REMOVED):
        facts = facts_of(properties, properties)
        if facts is not None:
            yield facts


def facts_of(raw: Mapping[str, Any], parent: Mapping[str, Any]) -> ProductFacts | None:
    """One product's values; ``parent`` (the event's properties) supplies a shared currency."""
    product_id = _product_id(raw.get("product_id"))
    if product_id is None:
        return None
    quantity = _stock(raw.get("quantity"))
    return ProductFacts(
        product_id=product_id,
        name=_text(raw.get("name"), MAX_NAME),
        price=_price(raw.get("price")),
        currency=_currency(raw.get("currency")) or _currency(parent.get("currency")),
        stock=_stock(raw.get("stock")),
        url=_text(raw.get("url"), MAX_URL),
        image_url=_text(raw.get("image_url"), MAX_URL),
        quantity=min(max(quantity, 1), MAX_QUANTITY) if quantity is not None else 1,
    )


def _product_id(value: object) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        value = str(value)
    if isinstance(value, str) and 0 < len(value.strip()) <= MAX_ID:
        return value.strip()
    return None


def _price(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and 0 <= number < 1e12 else None


def _stock(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and -MAX_STOCK <= value <= MAX_STOCK:
        return value
    return None


def _currency(value: object) -> str | None:
    if isinstance(value, str) and len(value) == 3 and value.isascii() and value.isalpha():
        return value.upper()
    return None


def _text(value: object, limit: int) -> str | None:
    if isinstance(value, str) and value.strip() and len(value) <= limit:
        return value.strip()
    return None
