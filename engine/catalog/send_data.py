"""Catalog data at send time: current products for templates, and the alert re-check.

The deliver stage calls ``attach`` right after a claim, for the claimed intents whose template
uses a catalog variable (``CATALOG_VARIABLES``) or that are catalog alerts; it reads the
catalog in one short transaction (three queries for the whole batch) and adds to each such
intent's render context:

- ``product``: the trigger's product (its ``product_id``) as the catalog has it now;
- ``cart``: the contact's cart, most recently added first, at current prices and stock, and
  ``cart_total``;
- ``recently_viewed``: the products the contact viewed lately (newest first, at most 6);
- ``recommendations``: at most 4 products often viewed or bought together with the trigger's
  product, the cart and the recent views; never one in the cart, already looked at, bought,
  out of stock or not described by name.

Each product is a dict: ``product_id``, ``name``, ``price``, ``currency``, ``stock``, ``url``,
``image_url``, ``previous_price``, ``in_stock``, ``low_stock`` (1 to ``LOW_STOCK`` left),
``stock_note`` ("Only 2 left", "Sold out" or ""), and in the cart also ``quantity`` and
``line_total``.

``alert_stale`` is the send-time re-check of catalog alerts: a price-drop mail whose product
now costs more than the price it announced, or a back-in-stock mail whose product is out of
stock again, is dropped as ``expired`` with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from engine.decide.workflow import ALERT_EVENTS
from engine.store import Store, schema

CATALOG_VARIABLES = frozenset(
    {"product", "cart", "cart_total", "recently_viewed", "recommendations"}
)
PRICE_DROPPED, BACK_IN_STOCK = ALERT_EVENTS["price_drop"], ALERT_EVENTS["back_in_stock"]
LOW_STOCK = 5
RECENT_DAYS = 30
RECENT_LIMIT = 6
RECOMMEND_LIMIT = 4
SEEDS = 8  # products recommendations start from
_CHUNK = 500


def _event(context: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    event = context.get("event")
    if not isinstance(event, dict):
        return "", {}
    props = event.get("properties")
    return str(event.get("name") or ""), props if isinstance(props, dict) else {}


def is_alert(context: Mapping[str, Any]) -> bool:
    return _event(context)[0] in (PRICE_DROPPED, BACK_IN_STOCK)


def _trigger_product(context: Mapping[str, Any]) -> str | None:
    value = _event(context)[1].get("product_id")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return value.strip() if isinstance(value, str) and value.strip() else None


def product_view(row: Any) -> dict[str, Any]:
    """One ``products`` row as templates see it."""
    stock = row.stock
    out = stock is not None and stock <= 0
    low = stock is not None and 0 < stock <= LOW_STOCK
    return {
        "product_id": row.id,
        "name": row.name,
        "price": row.price,
        "previous_price": row.previous_price,
        "currency": row.currency,
        "stock": stock,
        "url": row.url,
        "image_url": row.image_url,
        "in_stock": not out,
        "low_stock": low,
        "stock_note": "Sold out" if out else (f"Only {stock} left" if low else ""),
    }


def alert_stale(context: Mapping[str, Any]) -> str | None:
    """Why a catalog alert must not go out any more (None: it still holds, or cannot tell)."""
    name, props = _event(context)
    current = context.get("product")
    if name not in (PRICE_DROPPED, BACK_IN_STOCK) or not isinstance(current, dict):
        return None
    if name == PRICE_DROPPED:
        announced, now = props.get("price"), current.get("price")
        if isinstance(announced, int | float) and isinstance(now, int | float) and now > announced:
            product = current["product_id"]
            return f"expired: the price of {product} went back up ({announced:g} -> {now:g})"
        return None
    if not current.get("in_stock", True):
        return f"expired: {current['product_id']} is out of stock again"
    return None


def attach(
    store: Store,
    contexts: Sequence[tuple[str, dict[str, Any]]],
    now: float,
) -> int:
    """Add the catalog data to each ``(contact id, render context)`` (in place); returns how
    many contexts got it. One read transaction for all of them."""
    if not contexts:
        return 0
    contacts = sorted({cid for cid, _ in contexts})
    cp, p, pairs = schema.contact_products, schema.products, schema.product_pairs
    interests: dict[str, list[Any]] = {}
    with store.begin() as conn:
        since = now - RECENT_DAYS * 86_400.0
        for start in range(0, len(contacts), _CHUNK):
            part = contacts[start : start + _CHUNK]
            rows = conn.execute(
                sa.select(cp).where(
                    cp.c.contact_id.in_(part),
                    sa.or_(cp.c.cart_quantity > 0, cp.c.viewed_at > since, cp.c.bought_at > since),
                )
            )
            for row in rows:
                interests.setdefault(row.contact_id, []).append(row)
        seeds: dict[int, list[str]] = {}
        wanted: set[str] = set()
        for n, (cid, context) in enumerate(contexts):
            mine = _seeds(_trigger_product(context), interests.get(cid, []))
            seeds[n] = mine
            wanted.update(mine)
            wanted.update(row.product_id for row in interests.get(cid, []))
        scores = _pair_scores(conn, pairs, sorted(seeds_union(seeds)))
        for related in scores.values():
            wanted.update(related)
        products = _products(conn, p, sorted(wanted))
    for n, (cid, context) in enumerate(contexts):
        _fill(context, interests.get(cid, []), products, seeds[n], scores)
    return len(contexts)


def seeds_union(seeds: Mapping[int, list[str]]) -> set[str]:
    return {pid for ids in seeds.values() for pid in ids}


def _seeds(trigger: str | None, rows: list[Any]) -> list[str]:
    looked = sorted(
        (r for r in rows if r.viewed_at is not None or r.cart_quantity > 0),
        key=lambda r: max(r.viewed_at or 0.0, r.carted_at or 0.0),
        reverse=True,
    )
    ordered = ([trigger] if trigger else []) + [r.product_id for r in looked]
    return list(dict.fromkeys(ordered))[:SEEDS]


def _pair_scores(conn: Connection, pairs: sa.Table, ids: list[str]) -> dict[str, dict[str, float]]:
    scores: dict[str, dict[str, float]] = {}
    for start in range(0, len(ids), _CHUNK):
        part = ids[start : start + _CHUNK]
        for row in conn.execute(sa.select(pairs).where(pairs.c.product_id.in_(part))):
            scores.setdefault(row.product_id, {})[row.other_id] = row.score
    return scores


def _products(conn: Connection, p: sa.Table, ids: list[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(ids), _CHUNK):
        part = ids[start : start + _CHUNK]
        for row in conn.execute(sa.select(p).where(p.c.id.in_(part))):
            found[row.id] = product_view(row)
    return found


def _fill(
    context: dict[str, Any],
    rows: list[Any],
    products: Mapping[str, dict[str, Any]],
    seeds: list[str],
    scores: Mapping[str, Mapping[str, float]],
) -> None:
    trigger = _trigger_product(context)
    if trigger is not None and trigger in products:
        context["product"] = dict(products[trigger])
    cart: list[dict[str, Any]] = []
    for row in sorted(rows, key=lambda r: (-(r.carted_at or 0.0), r.product_id)):
        product = products.get(row.product_id)
        if row.cart_quantity > 0 and product is not None:
            price = product["price"]
            line = price * row.cart_quantity if isinstance(price, int | float) else None
            cart.append({**product, "quantity": row.cart_quantity, "line_total": line})
    context["cart"] = cart
    context["cart_total"] = sum(
        item["line_total"] for item in cart if item["in_stock"] and item["line_total"] is not None
    )
    viewed = sorted(
        (r for r in rows if r.viewed_at is not None), key=lambda r: (-r.viewed_at, r.product_id)
    )
    context["recently_viewed"] = [
        dict(products[r.product_id]) for r in viewed if products.get(r.product_id, {}).get("name")
    ][:RECENT_LIMIT]
    seen = {r.product_id for r in rows} | set(seeds)
    total: dict[str, float] = {}
    for seed in seeds:
        for other, score in scores.get(seed, {}).items():
            if other not in seen:
                total[other] = total.get(other, 0.0) + score
    ranked = sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))
    context["recommendations"] = [
        dict(products[pid])
        for pid, _ in ranked
        if pid in products and products[pid]["in_stock"] and products[pid]["name"]
    ][:RECOMMEND_LIMIT]
