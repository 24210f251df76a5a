"""The catalog's part of a decide batch, inside the batch's transaction.

Per batch that has product events: one query for the products it names, one for the shopper
contacts' product rows (the products of the batch, carts, and recent views), the events applied
in stream order in memory, then one upsert each for the changed products, contact rows and
pairs, and one insert for the fan-out jobs. A batch without product events costs nothing.

A fan-out job is only recorded here (one row per alert workflow); ``engine.catalog.fanout``
walks the product's contacts later, a chunk per transaction, so a product viewed by 100,000
people does not hold up the batch that changed its price.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql import Insert

from engine.catalog.products import (
    ORDER_COMPLETED,
    PRODUCT_ADDED,
    PRODUCT_REMOVED,
    PRODUCT_UPDATED,
    PRODUCT_VIEWED,
    ProductFacts,
    products_of,
    touches_products,
)
from engine.decide import lite
from engine.decide.registry import WorkflowIndex
from engine.decide.workflow import ALERT_EVENTS, Workflow
from engine.events import Event
from engine.store import schema

PAIR_WINDOW = 86_400.0  # products looked at within a day of each other count as a pair
PAIR_PEERS = 10  # at most this many other products paired with one view
VIEWED_WEIGHT = 1.0
BOUGHT_WEIGHT = 2.0  # bought together says more than viewed together
_CHUNK = 500


@dataclass(slots=True)
class Product:
    """A ``products`` row as the batch sees it."""

    id: str
    name: str | None = None
    price: float | None = None
    previous_price: float | None = None
    currency: str | None = None
    stock: int | None = None
    url: str | None = None
    image_url: str | None = None
    source: str = "event"
    price_changed_at: float | None = None
    stock_changed_at: float | None = None
    updated_at: float = 0.0
    changed: bool = False

    @property
    def out_of_stock(self) -> bool:
        return self.stock is not None and self.stock <= 0

    def row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "price": self.price,
            "previous_price": self.previous_price,
            "currency": self.currency,
            "stock": self.stock,
            "url": self.url,
            "image_url": self.image_url,
            "source": self.source,
            "price_changed_at": self.price_changed_at,
            "stock_changed_at": self.stock_changed_at,
            "updated_at": self.updated_at,
        }


@dataclass(slots=True)
class Interest:
    """A ``contact_products`` row: what one contact did with one product."""

    contact_id: str
    product_id: str
    viewed_at: float | None = None
    carted_at: float | None = None
    cart_quantity: int = 0
    bought_at: float | None = None
    looked_out_at: float | None = None
    changed: bool = False

    @property
    def looked_at(self) -> float | None:
        return max((t for t in (self.viewed_at, self.carted_at) if t is not None), default=None)

    def row(self) -> dict[str, Any]:
        return {
            "contact_id": self.contact_id,
            "product_id": self.product_id,
            "viewed_at": self.viewed_at,
            "carted_at": self.carted_at,
            "cart_quantity": self.cart_quantity,
            "bought_at": self.bought_at,
            "looked_out_at": self.looked_out_at,
        }


@dataclass
class CatalogOutcome:
    """What the catalog part of a batch changed."""

    products: int = 0
    fanouts: list[str] = field(default_factory=list)  # new job ids


def _later(a: float | None, b: float) -> float:
    return b if a is None else max(a, b)


def fanout_id(message_id: str, workflow_id: str) -> str:
    """One job per catalog event and workflow, stable if the batch is ever decided again."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{message_id}\x1f{workflow_id}".encode())
    return digest.hexdigest()


class CatalogBatch:
    """Applies one batch's product events (call ``apply`` inside the batch's transaction)."""

    def __init__(self, conn: Connection, index: WorkflowIndex, now: float) -> None:
        self.conn = conn
        self.index = index
        self.now = now
        self.products: dict[str, Product] = {}
        self.interests: dict[tuple[str, str], Interest] = {}
        self.by_contact: dict[str, dict[str, Interest]] = {}
        self.pairs: dict[tuple[str, str], float] = {}
        self.jobs: list[dict[str, Any]] = []

    def apply(self, events: Sequence[Event]) -> CatalogOutcome:
        found = [(e, list(products_of(e.activity_name, e.properties))) for e in events]
        found = [(e, facts) for e, facts in found if facts]
        if not found:
            return CatalogOutcome()
        self._load_products({f.product_id for _, facts in found for f in facts})
        shoppers = [e for e, _ in found if e.activity_name != PRODUCT_UPDATED]
        if shoppers:
            self._load_interests(
                {e.contact_key for e in shoppers},
                {f.product_id for _, facts in found for f in facts},
                min(e.timestamp for e in shoppers) - PAIR_WINDOW,
            )
        for event, facts in found:
            if event.activity_name == PRODUCT_UPDATED:
                for item in facts:
                    self._catalog(event, item)
            else:
                self._shopper(event, facts)
        self._write()
        changed = sum(1 for p in self.products.values() if p.changed)
        return CatalogOutcome(changed, [job["id"] for job in self.jobs])

    # -- loading ---------------------------------------------------------------------------

    def _load_products(self, ids: Iterable[str]) -> None:
        p = schema.products
        wanted = sorted(ids)
        lite_db = self.conn.dialect.name == "sqlite"
        for start in range(0, len(wanted), _CHUNK):
            part = wanted[start : start + _CHUNK]
            if lite_db:  # the hot path: SQLite's own cursor (see engine.decide.lite)
                places, padded = lite.in_list(part)
                statement = f"SELECT {_PRODUCT_COLUMNS} FROM products WHERE id IN ({places})"
                for values in lite.run(self.conn, statement, padded):
                    self.products[values[0]] = Product(*values)
                continue
            for row in self.conn.execute(sa.select(p).where(p.c.id.in_(part))):
                self.products[row.id] = Product(
                    row.id, row.name, row.price, row.previous_price, row.currency, row.stock,
                    row.url, row.image_url, row.source, row.price_changed_at,
                    row.stock_changed_at, row.updated_at,
                )  # fmt: skip

    def _load_interests(self, contacts: set[str], products: set[str], since: float) -> None:
        cp = schema.contact_products
        ids, names = sorted(contacts), sorted(products)
        lite_db = self.conn.dialect.name == "sqlite"
        for start in range(0, len(ids), _CHUNK):
            part = ids[start : start + _CHUNK]
            if lite_db and len(names) <= _CHUNK:
                who, contacts_in = lite.in_list(part)
                what, products_in = lite.in_list(names)
                statement = (
                    f"SELECT {_INTEREST_COLUMNS} FROM contact_products "
                    f"WHERE contact_id IN ({who}) AND (product_id IN ({what}) "
                    "OR cart_quantity > 0 OR viewed_at > ? OR carted_at > ?)"
                )
                values_in = [*contacts_in, *products_in, since, since]
                for values in lite.run(self.conn, statement, values_in):
                    self._remember(Interest(*values))
                continue
            query = sa.select(cp).where(
                cp.c.contact_id.in_(part),
                sa.or_(
                    cp.c.product_id.in_(names),
                    cp.c.cart_quantity > 0,
                    cp.c.viewed_at > since,
                    cp.c.carted_at > since,
                ),
            )
            for row in self.conn.execute(query):
                found = Interest(
                    row.contact_id, row.product_id, row.viewed_at, row.carted_at,
                    row.cart_quantity, row.bought_at, row.looked_out_at,
                )  # fmt: skip
                self._remember(found)

    def _remember(self, interest: Interest) -> Interest:
        self.interests[(interest.contact_id, interest.product_id)] = interest
        self.by_contact.setdefault(interest.contact_id, {})[interest.product_id] = interest
        return interest

    def _interest(self, contact_id: str, product_id: str) -> Interest:
        found = self.interests.get((contact_id, product_id))
        return found or self._remember(Interest(contact_id, product_id))

    # -- applying ----------------------------------------------------------------------------

    def _product(self, product_id: str) -> Product:
        product = self.products.get(product_id)
        if product is None:
            product = self.products[product_id] = Product(product_id, updated_at=self.now)
        return product

    def _catalog(self, event: Event, item: ProductFacts) -> None:
        """The catalog source's word: update the product; a price drop or a restock of a
        product the catalog already described starts the alert workflows."""
        product = self._product(item.product_id)
        described = product.source == "catalog"
        old_price, was_out = product.price, product.out_of_stock
        self._describe(product, item, event.timestamp)
        product.source = "catalog"
        product.changed = True
        if not described:
            return  # values from shopper events are not trusted to start alerts
        if old_price is not None and old_price > 0 and product.price is not None:
            drop = (old_price - product.price) / old_price * 100
            if drop > 0:
                for wf in self.index.catalog_triggers.get("price_drop", ()):
                    assert wf.trigger.catalog is not None
                    if drop + 1e-9 >= wf.trigger.catalog.min_drop_percent:
                        self._job(wf, event, product, previous_price=old_price, drop=drop)
        if was_out and product.stock is not None and product.stock > 0:
            for wf in self.index.catalog_triggers.get("back_in_stock", ()):
                self._job(wf, event, product, previous_price=None, drop=None)

    def _describe(self, product: Product, item: ProductFacts, ts: float) -> bool:
        """Apply what ``item`` says; True if anything about the product changed."""
        changed = False
        if item.price is not None and item.price != product.price:
            product.previous_price = product.price
            product.price = item.price
            product.price_changed_at = ts
            changed = True
        if item.stock is not None and item.stock != product.stock:
            product.stock = item.stock
            product.stock_changed_at = ts
            changed = True
        for key in ("name", "currency", "url", "image_url"):
            value = getattr(item, key)
            if value is not None and value != getattr(product, key):
                setattr(product, key, value)
                changed = True
        if changed:
            product.updated_at = self.now
        return changed

    def _shopper(self, event: Event, facts: list[ProductFacts]) -> None:
        contact, ts, name = event.contact_key, event.timestamp, event.activity_name
        for item in facts:
            product = self._product(item.product_id)
            # A shopper event rewrites the row only when it says something new (most views
            # of a product repeat what the last one said).
            if product.source != "catalog" and self._describe(product, item, ts):
                product.changed = True
        if name == PRODUCT_VIEWED:
            self._looked(contact, facts[0], ts, carted=False)
        elif name == PRODUCT_ADDED:
            self._looked(contact, facts[0], ts, carted=True)
        elif name == PRODUCT_REMOVED:
            interest = self._interest(contact, facts[0].product_id)
            interest.cart_quantity = max(0, interest.cart_quantity - facts[0].quantity)
            interest.changed = True
        elif name == ORDER_COMPLETED:
            self._bought(contact, facts, ts)

    def _looked(self, contact: str, item: ProductFacts, ts: float, *, carted: bool) -> None:
        interest = self._interest(contact, item.product_id)
        if interest.looked_at is None or interest.looked_at <= ts - PAIR_WINDOW:
            # The first look in a while: pair it with the other products looked at lately.
            others = [
                i
                for i in self.by_contact.get(contact, {}).values()
                if i.product_id != item.product_id
                and i.looked_at is not None
                and ts - PAIR_WINDOW < i.looked_at <= ts
            ]
            others.sort(key=lambda i: i.looked_at or 0.0, reverse=True)
            for other in others[:PAIR_PEERS]:
                self._pair(item.product_id, other.product_id, VIEWED_WEIGHT)
        if carted:
            interest.carted_at = _later(interest.carted_at, ts)
            interest.cart_quantity = min(interest.cart_quantity + item.quantity, 10_000)
        else:
            interest.viewed_at = _later(interest.viewed_at, ts)
        if self._product(item.product_id).out_of_stock:
            interest.looked_out_at = _later(interest.looked_out_at, ts)
        interest.changed = True

    def _bought(self, contact: str, facts: list[ProductFacts], ts: float) -> None:
        for interest in self.by_contact.get(contact, {}).values():
            if interest.cart_quantity:  # an order empties the cart
                interest.cart_quantity = 0
                interest.changed = True
        ids = list(dict.fromkeys(f.product_id for f in facts))
        for product_id in ids:
            interest = self._interest(contact, product_id)
            interest.bought_at = _later(interest.bought_at, ts)
            interest.cart_quantity = 0
            interest.changed = True
        for i, a in enumerate(ids[:PAIR_PEERS]):
            for b in ids[i + 1 : PAIR_PEERS]:
                self._pair(a, b, BOUGHT_WEIGHT)

    def _pair(self, a: str, b: str, weight: float) -> None:
        for key in ((a, b), (b, a)):
            self.pairs[key] = self.pairs.get(key, 0.0) + weight

    def _job(
        self,
        wf: Workflow,
        event: Event,
        product: Product,
        *,
        previous_price: float | None,
        drop: float | None,
    ) -> None:
        assert wf.trigger.catalog is not None
        kind = wf.trigger.catalog.kind
        properties: dict[str, Any] = {
            "product_id": product.id,
            "name": product.name,
            "price": product.price,
            "currency": product.currency,
            "stock": product.stock,
            "url": product.url,
            "image_url": product.image_url,
        }
        if drop is not None:
            properties["previous_price"] = previous_price
            properties["drop_percent"] = round(drop, 1)
        self.jobs.append(
            {
                "id": fanout_id(event.message_id, wf.id),
                "workflow_id": wf.id,
                "workflow_version": wf.version,
                "kind": kind,
                "product_id": product.id,
                "event": {"name": ALERT_EVENTS[kind], "properties": properties,
                          "ts": event.timestamp, "message_id": event.message_id},
                "state": "pending",
                "after": None,
                "enrolled": 0,
                "skipped": 0,
                "created_at": self.now,
                "finished_at": None,
            }
        )  # fmt: skip

    # -- writing -----------------------------------------------------------------------------

    def _write(self) -> None:
        conn = self.conn
        if conn.dialect.name == "sqlite":
            self._write_lite()
            return
        sql = _statements(conn.dialect.name)
        rows = [p.row() for p in self.products.values() if p.changed]
        if rows:
            conn.execute(sql.products, rows)
        rows = [i.row() for i in self.interests.values() if i.changed]
        if rows:
            conn.execute(sql.interests, rows)
        if self.pairs:
            pairs = sorted(self.pairs.items())
            rows = [{"product_id": a, "other_id": b, "score": w} for (a, b), w in pairs]
            conn.execute(sql.pairs, rows)
        if self.jobs:
            conn.execute(sql.jobs, self.jobs)

    def _write_lite(self) -> None:
        """``_write`` on SQLite's own cursor: the same upserts, without SQLAlchemy's
        per-execute cost (most of a product event's decide time when it went through Core)."""
        conn = self.conn
        rows = [_product_values(p) for p in self.products.values() if p.changed]
        if rows:
            lite.run_many(conn, _LITE_UPSERT_PRODUCTS, rows)
        interests = [_interest_values(i) for i in self.interests.values() if i.changed]
        if interests:
            lite.run_many(conn, _LITE_UPSERT_INTERESTS, interests)
        if self.pairs:
            pairs = [(a, b, w) for (a, b), w in sorted(self.pairs.items())]
            lite.run_many(conn, _LITE_UPSERT_PAIRS, pairs)
        if self.jobs:
            lite.insert(conn, schema.catalog_fanouts, self.jobs, conflict=["id"])


_PRODUCT_FIELDS = (
    "id", "name", "price", "previous_price", "currency", "stock", "url", "image_url", "source",
    "price_changed_at", "stock_changed_at", "updated_at",
)  # fmt: skip
_PRODUCT_COLUMNS = ", ".join(_PRODUCT_FIELDS)
_INTEREST_FIELDS = (
    "contact_id", "product_id", "viewed_at", "carted_at", "cart_quantity", "bought_at",
    "looked_out_at",
)  # fmt: skip
_INTEREST_COLUMNS = ", ".join(_INTEREST_FIELDS)
_LITE_UPSERT_PRODUCTS = (
    f"INSERT INTO products ({_PRODUCT_COLUMNS}) VALUES ({', '.join('?' * len(_PRODUCT_FIELDS))}) "
    "ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _PRODUCT_FIELDS[1:])
)
_LITE_UPSERT_INTERESTS = (
    f"INSERT INTO contact_products ({_INTEREST_COLUMNS}) "
    f"VALUES ({', '.join('?' * len(_INTEREST_FIELDS))}) "
    "ON CONFLICT (contact_id, product_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _INTEREST_FIELDS[2:])
)
_LITE_UPSERT_PAIRS = (
    "INSERT INTO product_pairs (product_id, other_id, score) VALUES (?, ?, ?) "
    "ON CONFLICT (product_id, other_id) DO UPDATE SET score = product_pairs.score + excluded.score"
)


def _product_values(p: Product) -> tuple[Any, ...]:
    return (
        p.id, p.name, p.price, p.previous_price, p.currency, p.stock, p.url, p.image_url,
        p.source, p.price_changed_at, p.stock_changed_at, p.updated_at,
    )  # fmt: skip


def _interest_values(i: Interest) -> tuple[Any, ...]:
    return (
        i.contact_id, i.product_id, i.viewed_at, i.carted_at, i.cart_quantity, i.bought_at,
        i.looked_out_at,
    )  # fmt: skip


@dataclass(frozen=True)
class _Statements:
    products: Insert
    interests: Insert
    pairs: Insert
    jobs: Insert


@functools.cache
def _statements(dialect: str) -> _Statements:
    """The batch's writes, built once per dialect (building costs more than running them)."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    p, cp, pp = schema.products, schema.contact_products, schema.product_pairs
    products = insert(p)
    interests = insert(cp)
    keys = ["contact_id", "product_id"]
    pairs = insert(pp)
    return _Statements(
        products=products.on_conflict_do_update(
            index_elements=["id"],
            set_={c.name: products.excluded[c.name] for c in p.c if c.name != "id"},
        ),
        interests=interests.on_conflict_do_update(
            index_elements=keys,
            set_={c.name: interests.excluded[c.name] for c in cp.c if c.name not in keys},
        ),
        pairs=pairs.on_conflict_do_update(
            index_elements=["product_id", "other_id"],
            set_={"score": pp.c.score + pairs.excluded.score},
        ),
        jobs=insert(schema.catalog_fanouts).on_conflict_do_nothing(),
    )


def apply_catalog(
    conn: Connection, index: WorkflowIndex, events: Sequence[Event], now: float
) -> CatalogOutcome:
    """The catalog part of a decide batch (nothing at all when no event names a product)."""
    relevant = [e for e in events if touches_products(e.activity_name)]
    if not relevant:
        return CatalogOutcome()
    return CatalogBatch(conn, index, now).apply(relevant)
