"""Demo traffic: a simulated shop producing a realistic Segment e-commerce event stream.

Two layers:

- ``DemoShop`` is the generator. It is pure and seeded: a population of shoppers and a product
  catalog are built from the seed, and every call to ``next_event()`` advances one of a pool of
  concurrent shopping sessions by one step and returns that step's Segment event (a JSON-ready
  dict). No I/O. The content of the stream (who does what, in which order, with which
  properties) is a function of the seed alone; the ``messageId`` and ``timestamp`` of each event
  come from the injected ``new_id`` and ``clock`` (by default ``engine.ids.new_id`` and
  ``time.time``), so two runs with the same seed never collide in JetStream's duplicate window.
- ``run_demo`` publishes the stream at a given rate to NATS (JetStream with acks, pipelined, or
  core NATS), and ``run_demo_http`` posts it to the HTTP tracking API (``/v1/batch``). Both pace
  by schedule: event *k* is due at ``start + k / rate``; each tick publishes every event that has
  come due (no sleep per event), so the achieved rate is accurate from 0.1/s to several
  thousand/s. A producer that falls more than ``MAX_LAG_S`` behind skips the missed slots (counted
  in ``DemoStats.missed``) rather than bursting.

The sessions follow Segment's e-commerce spec v2: ``Products Searched``, ``Product List Viewed``,
``Product Viewed`` (often several times for the same product: browse abandonment), ``Product
Added``, ``Product Removed``, ``Cart Viewed``, ``Checkout Started``, ``Order Completed``; most
carts are abandoned. Orders are later followed by ``Order Shipped`` and ``Order Delivered``.
Prospects browse anonymously and some sign up (``Signed Up`` then ``identify``); registered
shoppers log in (``identify`` with both ``userId`` and ``anonymousId``) and come back for their
carts. Logged-in shoppers now and then answer the app's location prompt (``Consent Updated``,
purpose ``location``) and, with consent, walk past a store (``Geofence Entered``). Page views
are ``page`` events; every event carries a ``context`` with ``ip`` (documentation
ranges), ``userAgent``, ``timezone`` and ``library.name == "campaign-demo"``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import heapq
import inspect
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from engine import bus
from engine.ids import new_id as default_new_id

log = logging.getLogger(__name__)

SegmentEvent = dict[str, Any]
"""A Segment event as a JSON-ready dict (the wire format of the EVENTS stream)."""

LIBRARY: Final = "campaign-demo"
MAX_LAG_S: Final = 1.0
"""A producer further behind its schedule than this skips the missed slots instead of bursting."""
MIN_TICK_S: Final = 0.004
"""Shortest sleep between ticks: at 3,000/s a tick publishes about a dozen events."""
MAX_TICK_S: Final = 0.05
"""Longest sleep between checks of the stop event."""
CHUNK_S: Final = 0.05
"""At most this much of the schedule is published per step before the pacer looks again."""
END_SLACK_S: Final = 0.1
"""When the window has closed, events overdue by more than this are counted missed, not sent."""
PROGRESS_INTERVAL_S: Final = 1.0
YIELD_EVERY: Final = 256
"""While catching up, give the event loop a turn (acks, other tasks) every this many events."""

DEFAULT_DOMAINS: Final = (
    "gmail.com",
    "gmail.com",
    "gmail.com",
    "outlook.com",
    "outlook.com",
    "yahoo.com",
    "icloud.com",
    "example.com",
)
"""Mailbox domains of the simulated shoppers (repeats weight the choice).

These are real consumer domains, chosen so per-domain sending limits behave realistically. The
addresses are invented, but some may exist: route demo traffic to the local capture inbox, or
pass ``domains=SAFE_DOMAINS`` when a real relay is configured.
"""
SAFE_DOMAINS: Final = ("example.com", "example.net", "example.org")
"""RFC 2606 reserved domains: nothing sent to them can reach a person."""

# ---------------------------------------------------------------- catalog

_CATALOG_SPEC: Final[tuple[tuple[str, str, tuple[tuple[str, float, str], ...]], ...]] = (
    (
        "Apparel",
        "Northwind",
        (
            ("Organic Cotton Crew Tee", 24.00, "White"),
            ("Merino Wool Sweater", 89.00, "Oatmeal"),
            ("Slim Fit Chinos", 59.00, "Khaki"),
            ("Linen Button-Down Shirt", 49.00, "Sky Blue"),
            ("Quilted Puffer Jacket", 149.00, "Black"),
            ("Everyday Hoodie", 54.00, "Heather Grey"),
            ("Packable Rain Jacket", 119.00, "Olive"),
            ("Stretch Denim Jeans", 69.00, "Indigo"),
            ("Fleece Quarter Zip", 64.00, "Navy"),
            ("Performance Running Shorts", 32.00, "Charcoal"),
        ),
    ),
    (
        "Footwear",
        "Stride & Co",
        (
            ("Classic Leather Sneaker", 95.00, "White"),
            ("Trail Running Shoe", 129.00, "Slate"),
            ("Suede Chelsea Boot", 165.00, "Tobacco"),
            ("Canvas Slip-On", 45.00, "Natural"),
            ("Waterproof Hiking Boot", 179.00, "Brown"),
            ("Wool Lounge Slipper", 58.00, "Grey"),
            ("Court Tennis Shoe", 85.00, "White/Green"),
            ("Everyday Sandal", 39.00, "Tan"),
            ("Lightweight Road Runner", 139.00, "Coral"),
            ("Leather Penny Loafer", 120.00, "Cognac"),
        ),
    ),
    (
        "Accessories",
        "Fieldhouse",
        (
            ("Leather Weekender Bag", 198.00, "Chestnut"),
            ("Canvas Tote Bag", 28.00, "Natural"),
            ("Polarized Sunglasses", 75.00, "Tortoise"),
            ("Merino Beanie", 29.00, "Rust"),
            ("Full-Grain Leather Belt", 45.00, "Black"),
            ("Minimalist Card Wallet", 39.00, "Brown"),
            ("Travel Backpack 30L", 110.00, "Black"),
            ("Cashmere Scarf", 95.00, "Camel"),
            ("Analog Field Watch", 149.00, "Green Dial"),
            ("Insulated Water Bottle", 32.00, "Sage"),
        ),
    ),
    (
        "Home",
        "Hearth & Loom",
        (
            ("Linen Duvet Cover", 159.00, "Queen / Flax"),
            ("Waffle Bath Towel Set", 64.00, "White"),
            ("Ceramic Table Lamp", 89.00, "Sand"),
            ("Wool Throw Blanket", 98.00, "Charcoal"),
            ("Scented Soy Candle", 24.00, "Cedar"),
            ("Stoneware Planter", 36.00, "Speckled"),
            ("Cotton Quilt", 139.00, "King / Indigo"),
            ("Down Alternative Pillow", 49.00, "Standard"),
            ("Jute Area Rug", 129.00, "5x8"),
            ("Hand-Blown Glass Vase", 34.00, "Clear"),
        ),
    ),
    (
        "Kitchen",
        "Copper Pot",
        (
            ("Cast Iron Skillet", 45.00, "10 inch"),
            ("Pour-Over Coffee Set", 52.00, "Glass"),
            ("Chef's Knife", 89.00, "8 inch"),
            ("Ceramic Dinnerware Set", 119.00, "16 piece"),
            ("Stainless Cookware Set", 299.00, "10 piece"),
            ("Bamboo Cutting Board", 29.00, "Large"),
            ("French Press", 39.00, "34 oz"),
            ("Enameled Dutch Oven", 179.00, "Cherry"),
            ("Espresso Cups Set of 4", 34.00, "Matte Black"),
            ("Linen Apron", 32.00, "Olive"),
        ),
    ),
    (
        "Outdoors",
        "Ridgeline",
        (
            ("Two-Person Tent", 229.00, "Green"),
            ("Down Sleeping Bag", 189.00, "20F"),
            ("Compact Camp Stove", 69.00, "Standard"),
            ("Carbon Trekking Poles", 79.00, "Pair"),
            ("Rechargeable Headlamp", 35.00, "Black"),
            ("Packable Daypack", 55.00, "Blue"),
            ("Folding Camp Chair", 65.00, "Grey"),
            ("Insulated Cooler", 149.00, "45 qt"),
            ("Camping Hammock", 59.00, "Orange"),
            ("Merino Hiking Socks", 22.00, "3 pack"),
        ),
    ),
)

# (what the shopper types, what it matches in product names and categories)
_SEARCHES: Final = (
    ("sneakers", "sneaker"),
    ("jacket", "jacket"),
    ("coffee", "coffee"),
    ("tent", "tent"),
    ("wool", "wool"),
    ("leather", "leather"),
    ("boots", "boot"),
    ("bag", "bag"),
    ("candle", "candle"),
    ("knife", "knife"),
    ("linen", "linen"),
    ("running shoes", "run"),
    ("merino", "merino"),
    ("cast iron", "cast iron"),
    ("camping", "camp"),
    ("blanket", "blanket"),
    ("kitchen", "kitchen"),
)


@dataclass(frozen=True, slots=True)
class Product:
    """One catalog product."""

    product_id: str
    sku: str
    name: str
    category: str
    brand: str
    variant: str
    price: float
    url: str
    image_url: str

    def properties(self) -> dict[str, Any]:
        """The product's Segment e-commerce properties (a fresh dict)."""
        return {
            "product_id": self.product_id,
            "sku": self.sku,
            "category": self.category,
            "name": self.name,
            "brand": self.brand,
            "variant": self.variant,
            "price": self.price,
            "currency": "USD",
            "url": self.url,
            "image_url": self.image_url,
        }


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def build_catalog() -> tuple[Product, ...]:
    """The shop's 60 products (the same for every seed)."""
    products: list[Product] = []
    for category, brand, items in _CATALOG_SPEC:
        for name, price, variant in items:
            n = len(products) + 1
            slug = _slug(name)
            products.append(
                Product(
                    product_id=f"prod_{n:03d}",
                    sku=f"{category[:3].upper()}-{n:04d}",
                    name=name,
                    category=category,
                    brand=brand,
                    variant=variant,
                    price=price,
                    url=f"https://shop.example/p/{slug}",
                    image_url=f"https://shop.example/img/{slug}.jpg",
                )
            )
    return tuple(products)


# ---------------------------------------------------------------- shoppers

_FIRST_NAMES: Final = (
    "Emma", "Liam", "Olivia", "Noah", "Ava", "Elijah", "Sophia", "James", "Isabella", "William",
    "Mia", "Benjamin", "Charlotte", "Lucas", "Amelia", "Henry", "Harper", "Alexander", "Evelyn",
    "Daniel", "Abigail", "Michael", "Emily", "Sebastian", "Ella", "Mateo", "Scarlett", "Jack",
    "Grace", "Owen", "Chloe", "Samuel", "Priya", "Arjun", "Mei", "Hiroshi", "Yuki", "Sofia",
    "Diego", "Camila", "Lucia", "Omar", "Layla", "Fatima", "Ahmed", "Zara", "Noor", "Kwame",
    "Amara", "Chidi", "Ingrid", "Lars", "Freya", "Niamh", "Aoife", "Sean", "Marta", "Pavel",
    "Elena", "Ravi", "Ananya", "Jin", "Hana", "Luca", "Giulia", "Mateus", "Beatriz", "Tariq",
)  # fmt: skip
_LAST_NAMES: Final = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
    "Martinez", "Hernandez", "Lopez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson",
    "Martin", "Lee", "Thompson", "White", "Harris", "Clark", "Lewis", "Robinson", "Walker", "Young",
    "Allen", "King", "Wright", "Scott", "Nguyen", "Hill", "Flores", "Green", "Adams", "Nelson",
    "Baker", "Hall", "Campbell", "Mitchell", "Carter", "Roberts", "Patel", "Shah", "Kim", "Park",
    "Chen", "Wang", "Tanaka", "Sato", "Okafor", "Mensah", "Haddad", "Khan", "Silva", "Santos",
    "Rossi", "Bianchi", "Novak", "Kowalski", "Larsen", "Andersson", "Murphy", "O'Brien", "Walsh",
)  # fmt: skip

# (IANA zone, weight): a US-heavy shop with customers in several other regions.
_TIMEZONES: Final = (
    ("America/New_York", 24),
    ("America/Chicago", 14),
    ("America/Denver", 6),
    ("America/Los_Angeles", 16),
    ("America/Phoenix", 2),
    ("America/Toronto", 4),
    ("America/Sao_Paulo", 3),
    ("Europe/London", 9),
    ("Europe/Berlin", 6),
    ("Europe/Paris", 4),
    ("Asia/Kolkata", 3),
    ("Asia/Tokyo", 4),
    ("Australia/Sydney", 5),
)
_USER_AGENTS: Final = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:127.0) Gecko/20100101 Firefox/127.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36 Edg/126.0.0.0",
    "Mozilla/5.0 (Linux; Android 13; SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/125.0.0.0 Mobile Safari/537.36",
)
# RFC 5737 documentation networks: plausible-looking addresses that belong to nobody.
_IP_NETS: Final = ("192.0.2", "198.51.100", "203.0.113")
_REFERRERS: Final = (
    "",
    "",
    "https://www.google.com/",
    "https://www.google.com/",
    "https://www.bing.com/",
    "https://www.instagram.com/",
    "https://www.facebook.com/",
    "https://www.pinterest.com/",
)
_CARRIERS: Final = ("UPS", "FedEx", "USPS", "DHL")
_TAX_RATE: Final = 0.08
_FREE_SHIPPING_OVER: Final = 75.0
_SHIPPING_FEE: Final = 6.95
_SIGNUP_EPOCH: Final = 1_640_995_200  # 2022-01-01T00:00:00Z; sign-up dates of existing customers


# The shop's bricks-and-mortar stores, for ``Geofence Entered`` (the store-nearby workflow).
STORES = (("s-01", "Harbour Street"), ("s-02", "Old Town"), ("s-03", "Riverside Mall"))


@dataclass(slots=True)
class Shopper:
    """One simulated person. Mutable: sessions change login state, carts and sign-ups."""

    index: int
    user_id: str
    anonymous_id: str
    first_name: str
    last_name: str
    email: str
    timezone: str
    ip: str
    user_agent: str
    created_at: str
    registered: bool
    """Has an account (a ``userId`` the shop knows); prospects become registered by signing up."""
    identified: bool = False
    """An ``identify`` with this shopper's traits has been sent in this run."""
    logged_in: bool = False
    cart_id: str = ""
    cart: list[tuple[Product, int]] = field(default_factory=list)
    orders: int = 0
    location_consent: bool = False
    """Has allowed the app to use their location (``Consent Updated`` purpose location)."""

    def traits(self) -> dict[str, Any]:
        """The shopper's identify traits."""
        return {
            "email": self.email,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "created_at": self.created_at,
        }


def _iso_seconds(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _email_local(first: str, last: str, rng: random.Random) -> str:
    f, la = first.lower(), re.sub(r"[^a-z]", "", last.lower())
    style = rng.random()
    if style < 0.35:
        return f"{f}.{la}"
    if style < 0.55:
        return f"{f}{la}{rng.randint(1, 99)}"
    if style < 0.70:
        return f"{f[0]}{la}"
    if style < 0.85:
        return f"{f}_{la}{rng.randint(70, 99)}"
    return f"{f}.{la}{rng.randint(1, 9999)}"


def build_population(
    rng: random.Random, count: int, domains: Sequence[str], registered_share: float = 0.6
) -> list[Shopper]:
    """``count`` shoppers drawn from ``rng``: unique ids and addresses, plausible names."""
    zones = [zone for zone, _ in _TIMEZONES]
    weights = [weight for _, weight in _TIMEZONES]
    seen: set[str] = set()
    shoppers: list[Shopper] = []
    for index in range(count):
        first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
        local = _email_local(first, last, rng)
        domain = rng.choice(domains)
        email = f"{local}@{domain}"
        while email in seen:
            email = f"{local}{rng.randint(100, 99999)}@{domain}"
        seen.add(email)
        shoppers.append(
            Shopper(
                index=index,
                user_id=f"u_{rng.getrandbits(48):012x}",
                anonymous_id=_uuid4(rng),
                first_name=first,
                last_name=last,
                email=email,
                timezone=rng.choices(zones, weights)[0],
                ip=f"{rng.choice(_IP_NETS)}.{rng.randint(1, 254)}",
                user_agent=rng.choice(_USER_AGENTS),
                created_at=_iso_seconds(_SIGNUP_EPOCH + rng.randint(0, 3 * 365 * 86_400)),
                registered=rng.random() < registered_share,
            )
        )
    return shoppers


def _uuid4(rng: random.Random) -> str:
    """A version-4-shaped UUID drawn from ``rng`` (deterministic, unlike ``uuid.uuid4``)."""
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


# ---------------------------------------------------------------- the generator


class DemoShop:
    """A simulated shop: shoppers running concurrent sessions, as a stream of Segment events.

    ``next_event()`` is pure apart from the injected ``clock`` and ``new_id``: for a given seed
    the sequence of events (types, users, names, properties, traits, context) is always the same.

    Args:
        seed: seeds the population, the catalog choices and every decision in the sessions.
        shoppers: population size.
        active_sessions: sessions in progress at once; their events interleave, so a session's
            steps are spread over about ``active_sessions`` events of the stream.
        clock: epoch seconds for the ``timestamp`` field.
        new_id: ``messageId`` factory.
        domains: mailbox domains for shopper addresses (see ``DEFAULT_DOMAINS``).
        registered_share: the share of the population that already has an account.
    """

    def __init__(
        self,
        seed: int = 1,
        *,
        shoppers: int = 5_000,
        active_sessions: int = 64,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = default_new_id,
        domains: Sequence[str] = DEFAULT_DOMAINS,
        registered_share: float = 0.6,
    ) -> None:
        if shoppers < active_sessions or active_sessions < 1:
            raise ValueError("need at least one active session and as many shoppers as sessions")
        self.seed = seed
        self._rng = random.Random(seed)
        self._clock = clock
        self._new_id = new_id
        self.products: tuple[Product, ...] = build_catalog()
        self.shoppers: list[Shopper] = build_population(
            self._rng, shoppers, domains, registered_share
        )
        self._by_category: dict[str, list[Product]] = {}
        for product in self.products:
            self._by_category.setdefault(product.category, []).append(product)
        self._search_results: dict[str, list[Product]] = {
            query: [
                p for p in self.products if token in p.name.lower() or token in p.category.lower()
            ]
            for query, token in _SEARCHES
        }
        self.emitted = 0
        """Events returned by ``next_event`` so far."""
        self._busy: set[int] = set()
        self._sessions: list[Iterator[SegmentEvent]] = [
            self._new_session() for _ in range(active_sessions)
        ]
        # Events due later in the stream (shipping, delivery): (due_at_count, seq, event builder).
        self._later: list[tuple[int, int, Callable[[], SegmentEvent]]] = []
        self._later_seq = 0
        self._ts_second = -1
        self._ts_prefix = ""

    # -- public API -----------------------------------------------------------------------------

    def next_event(self) -> SegmentEvent:
        """The next event of the stream (a fresh dict the caller may modify)."""
        self.emitted += 1
        later = self._later
        if later and later[0][0] <= self.emitted:
            return heapq.heappop(later)[2]()
        sessions = self._sessions
        slot = self._rng.randrange(len(sessions))
        while True:
            event = next(sessions[slot], None)
            if event is not None:
                return event
            sessions[slot] = self._new_session()

    def events(self, count: int) -> list[SegmentEvent]:
        """The next ``count`` events."""
        return [self.next_event() for _ in range(count)]

    # -- event building -------------------------------------------------------------------------

    def _timestamp(self) -> str:
        """Now as ISO 8601 UTC with milliseconds (the per-second prefix is cached)."""
        now = self._clock()
        second = int(now)
        if second != self._ts_second:
            self._ts_second = second
            self._ts_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._ts_prefix}.{int((now - second) * 1000):03d}Z"

    def _event(
        self,
        shopper: Shopper,
        kind: str,
        name: str | None,
        properties: dict[str, Any] | None = None,
        traits: dict[str, Any] | None = None,
        *,
        server: bool = False,
    ) -> SegmentEvent:
        event: SegmentEvent = {"messageId": self._new_id(), "type": kind}
        if shopper.logged_in or server:
            event["userId"] = shopper.user_id
        if not server:
            event["anonymousId"] = shopper.anonymous_id
        if kind == "track":
            event["event"] = name
        elif name is not None:
            event["name"] = name
        if properties is not None:
            event["properties"] = properties
        if traits is not None:
            event["traits"] = traits
        event["context"] = {
            "ip": shopper.ip,
            "userAgent": shopper.user_agent,
            "timezone": shopper.timezone,
            "library": {"name": LIBRARY, "version": "1.0"},
        }
        event["timestamp"] = self._timestamp()
        return event

    def _track(self, shopper: Shopper, name: str, properties: dict[str, Any]) -> SegmentEvent:
        return self._event(shopper, "track", name, properties)

    def _page(self, shopper: Shopper, name: str, path: str, title: str) -> SegmentEvent:
        return self._event(
            shopper,
            "page",
            name,
            {
                "title": f"{title} | Shop Example",
                "url": f"https://shop.example{path}",
                "path": path,
                "referrer": self._rng.choice(_REFERRERS),
            },
        )

    def _identify(self, shopper: Shopper) -> SegmentEvent:
        shopper.identified = True
        return self._event(shopper, "identify", None, traits=shopper.traits())

    def _product_viewed(self, shopper: Shopper, product: Product) -> SegmentEvent:
        return self._track(shopper, "Product Viewed", product.properties())

    def _list_viewed(
        self, shopper: Shopper, list_id: str, category: str, products: Sequence[Product]
    ) -> SegmentEvent:
        items = [
            {
                "product_id": p.product_id,
                "sku": p.sku,
                "name": p.name,
                "price": p.price,
                "category": p.category,
                "position": i + 1,
                "url": p.url,
                "image_url": p.image_url,
            }
            for i, p in enumerate(products)
        ]
        return self._track(
            shopper,
            "Product List Viewed",
            {"list_id": list_id, "category": category, "products": items},
        )

    def _cart_items(self, shopper: Shopper) -> list[dict[str, Any]]:
        items = []
        for position, (product, quantity) in enumerate(shopper.cart, start=1):
            item = product.properties()
            del item["currency"]
            item["quantity"] = quantity
            item["position"] = position
            items.append(item)
        return items

    def _hex(self, bits: int = 64) -> str:
        return f"{self._rng.getrandbits(bits):0{bits // 4}x}"

    # -- sessions -------------------------------------------------------------------------------

    def _new_session(self) -> Iterator[SegmentEvent]:
        rng = self._rng
        shoppers = self.shoppers
        index = rng.randrange(len(shoppers))
        while index in self._busy:
            index = rng.randrange(len(shoppers))
        self._busy.add(index)
        return self._session(shoppers[index])

    def _session(self, shopper: Shopper) -> Iterator[SegmentEvent]:
        """One visit, as a state machine: landing, browsing, cart, checkout, leaving."""
        try:
            yield from self._visit(shopper)
        finally:
            shopper.logged_in = False
            self._busy.discard(shopper.index)

    def _visit(self, shopper: Shopper) -> Iterator[SegmentEvent]:
        rng = self._rng
        shopper.logged_in = shopper.registered and rng.random() < 0.7
        if shopper.logged_in and (not shopper.identified or rng.random() < 0.15):
            yield self._identify(shopper)
        if shopper.logged_in:
            yield from self._location(shopper)

        # Landing.
        product: Product = rng.choice(self.products)
        listed: Sequence[Product] = ()
        landing = rng.random()
        if shopper.cart and landing < 0.3:
            state = "cart"  # back for the cart (a reminder email, a saved tab)
        elif landing < 0.5:
            yield self._page(shopper, "Home", "/", "Home")
            state = "browse"
        elif landing < 0.8:
            yield self._product_viewed(shopper, product)  # from an ad or a search engine
            state = "product"
        else:
            category = rng.choice(tuple(self._by_category))
            yield self._page(shopper, "Category", f"/c/{_slug(category)}", category)
            listed = self._by_category[category]
            yield self._list_viewed(shopper, f"category_{_slug(category)}", category, listed)
            state = "list"
        if rng.random() < 0.12:
            return  # bounced

        for _step in range(60):
            r = rng.random()
            if state == "browse":
                if r < 0.14:
                    query = rng.choice(_SEARCHES)[0]
                    yield self._track(shopper, "Products Searched", {"query": query})
                    listed = self._search_results[query][:8]
                    if listed:
                        yield self._list_viewed(shopper, "search_results", "Search", listed)
                        state = "list"
                elif r < 0.32:
                    category = rng.choice(tuple(self._by_category))
                    listed = self._by_category[category]
                    yield self._list_viewed(
                        shopper, f"category_{_slug(category)}", category, listed
                    )
                    state = "list"
                elif r < 0.80:
                    product = rng.choice(self.products)
                    yield self._product_viewed(shopper, product)
                    state = "product"
                elif r < 0.86:
                    page = rng.choice((("Sale", "/sale"), ("New Arrivals", "/new"), ("Home", "/")))
                    yield self._page(shopper, page[0], page[1], page[0])
                elif r < 0.89 and not shopper.registered:
                    # Creates an account while browsing (the "10% off your first order" banner).
                    yield self._page(shopper, "Sign Up", "/account/new", "Create an account")
                    yield from self._sign_up(shopper, "banner")
                else:
                    return
            elif state == "list":
                if r < 0.8 and listed:
                    product = rng.choice(listed)
                    yield self._product_viewed(shopper, product)
                    state = "product"
                elif r < 0.9:
                    state = "browse"
                else:
                    return
            elif state == "product":
                if r < 0.27:
                    yield self._product_viewed(shopper, product)  # looking again
                elif r < 0.43:
                    quantity = 1 if rng.random() < 0.85 else rng.randint(2, 3)
                    yield self._add_to_cart(shopper, product, quantity)
                    state = "added"
                elif r < 0.68:
                    same = self._by_category[product.category]
                    product = rng.choice(same)  # "you may also like"
                    yield self._product_viewed(shopper, product)
                elif r < 0.80:
                    state = "browse"
                else:
                    return  # browse abandonment
            elif state == "added":
                if r < 0.33:
                    state = "browse"
                elif r < 0.75:
                    state = "cart"
                else:
                    return  # cart abandonment
            elif state == "cart":
                if not shopper.cart:
                    state = "browse"
                    continue
                yield self._page(shopper, "Cart", "/cart", "Your Cart")
                yield self._track(
                    shopper,
                    "Cart Viewed",
                    {"cart_id": shopper.cart_id, "products": self._cart_items(shopper)},
                )
                if r < 0.07 and len(shopper.cart) > 1:
                    removed, quantity = shopper.cart.pop(rng.randrange(len(shopper.cart)))
                    props = removed.properties()
                    props.update(cart_id=shopper.cart_id, quantity=quantity)
                    yield self._track(shopper, "Product Removed", props)
                elif r < 0.52:
                    state = "checkout"
                elif r < 0.72:
                    state = "browse"
                else:
                    return  # cart abandonment
            elif state == "checkout":
                if not shopper.logged_in:
                    if shopper.registered:
                        if r < 0.15:
                            return  # forgot the password
                        shopper.logged_in = True
                        yield self._identify(shopper)  # logs in: userId + anonymousId
                    else:
                        if r < 0.3:
                            return  # would not create an account
                        yield from self._sign_up(shopper, "checkout")
                yield from self._checkout(shopper)
                return
        return

    def _location(self, shopper: Shopper) -> Iterator[SegmentEvent]:
        """The app asks for location consent now and then (most say yes, some take it back);
        shoppers who gave it sometimes walk past a store (``Geofence Entered``)."""
        rng = self._rng
        if rng.random() < 0.05:
            granted = not shopper.location_consent or rng.random() < 0.3
            shopper.location_consent = granted and rng.random() < 0.8
            props = {
                "purpose": "location",
                "granted": shopper.location_consent,
                "method": "app_prompt",
                "source": rng.choice(("ios", "android")),
            }
            yield self._track(shopper, "Consent Updated", props)
        if shopper.location_consent and rng.random() < 0.1:
            store_id, store_name = rng.choice(STORES)
            props = {
                "store_id": store_id,
                "store_name": store_name,
                "distance_m": rng.randint(20, 700),
            }
            yield self._track(shopper, "Geofence Entered", props)

    def _add_to_cart(self, shopper: Shopper, product: Product, quantity: int) -> SegmentEvent:
        if not shopper.cart_id:
            shopper.cart_id = f"cart_{self._hex()}"
        for i, (item, held) in enumerate(shopper.cart):
            if item is product:
                shopper.cart[i] = (item, held + quantity)
                break
        else:
            shopper.cart.append((product, quantity))
        props = product.properties()
        props.update(cart_id=shopper.cart_id, quantity=quantity, position=len(shopper.cart))
        return self._track(shopper, "Product Added", props)

    def _sign_up(self, shopper: Shopper, where: str) -> Iterator[SegmentEvent]:
        """A prospect creates an account: ``Signed Up`` (with traits), then ``identify``."""
        shopper.registered = True
        shopper.logged_in = True
        shopper.created_at = _iso_seconds(self._clock())
        traits = {
            "email": shopper.email,
            "first_name": shopper.first_name,
            "last_name": shopper.last_name,
        }
        yield self._event(
            shopper,
            "track",
            "Signed Up",
            {"method": "email", "source": where, **traits},
            traits=dict(traits),
        )
        yield self._identify(shopper)

    def _checkout(self, shopper: Shopper) -> Iterator[SegmentEvent]:
        rng = self._rng
        items = self._cart_items(shopper)
        subtotal = round(sum(p.price * q for p, q in shopper.cart), 2)
        coupon = None
        discount = 0.0
        if shopper.orders == 0 and rng.random() < 0.4:
            coupon, discount = "WELCOME10", round(subtotal * 0.10, 2)
        elif rng.random() < 0.1:
            coupon, discount = "SPRING15", round(subtotal * 0.15, 2)
        shipping = 0.0 if subtotal - discount >= _FREE_SHIPPING_OVER else _SHIPPING_FEE
        tax = round((subtotal - discount) * _TAX_RATE, 2)
        total = round(subtotal - discount + shipping + tax, 2)
        revenue = round(subtotal - discount, 2)
        checkout_id = f"chk_{self._hex()}"
        order_id = f"ord_{self._hex(48)}"
        started: dict[str, Any] = {
            "checkout_id": checkout_id,
            "order_id": order_id,
            "cart_id": shopper.cart_id,
            "affiliation": "Shop Example",
            "value": total,
            "revenue": revenue,
            "shipping": shipping,
            "tax": tax,
            "discount": discount,
            "currency": "USD",
            "products": items,
        }
        if coupon:
            started["coupon"] = coupon
        yield self._page(shopper, "Checkout", "/checkout", "Checkout")
        yield self._track(shopper, "Checkout Started", started)
        if rng.random() < 0.4:
            return  # abandoned at payment
        completed: dict[str, Any] = {
            "order_id": order_id,
            "checkout_id": checkout_id,
            "cart_id": shopper.cart_id,
            "affiliation": "Shop Example",
            "subtotal": subtotal,
            "total": total,
            "revenue": revenue,
            "shipping": shipping,
            "tax": tax,
            "discount": discount,
            "currency": "USD",
            "products": [dict(item) for item in items],
        }
        if coupon:
            completed["coupon"] = coupon
        yield self._track(shopper, "Order Completed", completed)
        shopper.orders += 1
        shopper.cart = []
        shopper.cart_id = ""
        if rng.random() < 0.9:
            self._ship_later(shopper, order_id, items)

    def _ship_later(self, shopper: Shopper, order_id: str, items: list[dict[str, Any]]) -> None:
        """Schedule ``Order Shipped`` and usually ``Order Delivered`` further down the stream."""
        rng = self._rng
        carrier = rng.choice(_CARRIERS)
        if carrier == "UPS":
            number = "1Z" + "".join(rng.choices("0123456789ABCDEFGHJKLMNPRSTUVWXY", k=16))
            url = f"https://www.ups.com/track?tracknum={number}"
        elif carrier == "FedEx":
            number = str(rng.randrange(10**11, 10**12))
            url = f"https://www.fedex.com/fedextrack/?trknbr={number}"
        elif carrier == "USPS":
            number = "9400" + str(rng.randrange(10**17, 10**18))
            url = f"https://tools.usps.com/go/TrackConfirmAction?tLabels={number}"
        else:
            number = str(rng.randrange(10**9, 10**10))
            url = f"https://www.dhl.com/us-en/home/tracking.html?tracking-id={number}"
        shipping = {
            "order_id": order_id,
            "carrier": carrier,
            "tracking_number": number,
            "tracking_url": url,
        }
        ship_at = self.emitted + rng.randint(300, 3_000)

        def shipped() -> SegmentEvent:
            products = [dict(item) for item in items]
            return self._event(
                shopper, "track", "Order Shipped", dict(shipping, products=products), server=True
            )

        self._schedule(ship_at, shipped)
        if rng.random() < 0.92:

            def delivered() -> SegmentEvent:
                return self._event(shopper, "track", "Order Delivered", dict(shipping), server=True)

            self._schedule(ship_at + rng.randint(1_000, 6_000), delivered)

    def _schedule(self, at: int, build: Callable[[], SegmentEvent]) -> None:
        self._later_seq += 1
        heapq.heappush(self._later, (at, self._later_seq, build))


def activity_name(event: SegmentEvent) -> str:
    """The name an event counts under (the engine's ``Event.activity_name`` convention)."""
    kind = event.get("type")
    if kind == "track":
        return str(event.get("event"))
    if kind == "page":
        return "Page Viewed"
    if kind == "identify":
        return "Identified"
    return str(kind)


# ---------------------------------------------------------------- publishing


@dataclass(slots=True)
class DemoStats:
    """What a demo run did.

    ``published`` counts events handed to the transport; ``acked`` those the server confirmed
    (JetStream ack or HTTP 2xx), of which ``duplicates`` were already in the stream; ``errors``
    counts events refused or failed; ``unacked`` those still unconfirmed when the run ended
    (after ``ack_timeout``); ``missed`` the schedule slots skipped because the producer fell
    more than ``MAX_LAG_S`` behind.
    """

    target_rate: float
    published: int = 0
    acked: int = 0
    duplicates: int = 0
    errors: int = 0
    unacked: int = 0
    missed: int = 0
    elapsed: float = 0.0
    by_name: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None

    @property
    def achieved_rate(self) -> float:
        """Events published per second of the run."""
        return self.published / self.elapsed if self.elapsed > 0 else 0.0

    def snapshot(self) -> DemoStats:
        """A copy (for progress callbacks)."""
        return replace(self, by_name=dict(self.by_name))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (control API, CLI)."""
        return {
            "target_rate": self.target_rate,
            "published": self.published,
            "acked": self.acked,
            "duplicates": self.duplicates,
            "errors": self.errors,
            "unacked": self.unacked,
            "missed": self.missed,
            "elapsed": round(self.elapsed, 3),
            "achieved_rate": round(self.achieved_rate, 1),
            "by_name": dict(self.by_name),
            "last_error": self.last_error,
        }


ProgressCallback = Callable[[DemoStats], Awaitable[None] | None]


async def _report(callback: ProgressCallback | None, stats: DemoStats) -> None:
    if callback is None:
        return
    result = callback(stats.snapshot())
    if inspect.isawaitable(result):
        await result


async def _pace(
    rate: float,
    duration: float | None,
    stop: asyncio.Event | None,
    stats: DemoStats,
    emit: Callable[[int], Awaitable[bool]],
    tick: Callable[[], Awaitable[None]],
    min_tick: float = MIN_TICK_S,
) -> None:
    """Call ``emit(n)`` with the events due on the schedule ``start + k / rate``.

    Runs until ``duration`` has passed (the whole window, so the achieved rate is honest), ``stop``
    is set, or ``emit`` returns False. ``tick`` runs about once a second (progress, housekeeping).
    Between steps it sleeps at least ``min_tick`` (while on schedule), so each ``emit`` gets
    about ``rate * min_tick`` events.
    """
    loop = asyncio.get_running_loop()
    total = None if duration is None else max(0, round(rate * duration))
    start = loop.time()
    end = None if duration is None else start + duration
    backlog_cap = max(1, int(rate * MAX_LAG_S))
    end_slack = max(8, int(rate * END_SLACK_S))
    chunk = max(1, int(rate * CHUNK_S))
    issued = 0
    next_tick = start + PROGRESS_INTERVAL_S
    try:
        while stop is None or not stop.is_set():
            now = loop.time()
            due = int((now - start) * rate) + 1  # event k is due at start + k / rate
            if total is not None:
                due = min(due, total)
            count = due - issued
            # Too far behind (mid-run, or with the window over): skip the slots, do not burst.
            late = count - (end_slack if end is not None and now >= end else backlog_cap)
            if late > 0:
                stats.missed += late
                issued += late
                count -= late
            if count > 0:
                count = min(count, chunk)
                issued += count
                if not await emit(count):
                    break
                now = loop.time()
            if now >= next_tick:
                next_tick = now + PROGRESS_INTERVAL_S
                await tick()
            if total is not None and issued >= total:
                assert end is not None
                if now >= end:
                    break
                delay = min(end - now, MAX_TICK_S)
            elif issued < due:
                delay = 0.0  # behind: carry on after letting other tasks run
            else:
                delay = min(max(start + issued / rate - now, min_tick), MAX_TICK_S)
                if end is not None:
                    delay = max(0.0, min(delay, end - now))  # do not sleep past the window
            await asyncio.sleep(delay)
    finally:
        stats.elapsed = loop.time() - start


class _AckWindow:
    """Pipelined JetStream publishing: up to ``limit`` unacknowledged messages in flight.

    Each publish carries a reply subject under one private inbox; a single subscription counts
    the acks. Unlike ``js.publish_async`` it never leaks a slot: replies lost to a reconnect are
    expired after ``timeout`` seconds and counted as ``unacked``.
    """

    def __init__(self, nc: NatsClient, stats: DemoStats, limit: int, timeout: float) -> None:
        self._nc = nc
        self._stats = stats
        self._limit = limit
        self._timeout = timeout
        self._inbox = nc.new_inbox()
        self._cut = len(self._inbox) + 1
        self._pending: dict[int, float] = {}
        self._seq = 0
        self._room = asyncio.Event()
        self._room.set()
        self._empty = asyncio.Event()
        self._empty.set()
        self._sub: Any = None

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(f"{self._inbox}.*", cb=self._on_reply)

    async def close(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def publish(self, subject: str, payload: bytes, msg_id: str) -> None:
        while len(self._pending) >= self._limit:
            self._room.clear()
            try:
                await asyncio.wait_for(self._room.wait(), self._timeout)
            except TimeoutError:
                self.expire()
        self._seq += 1
        self._pending[self._seq] = time.monotonic()
        self._empty.clear()
        await self._nc.publish(
            subject, payload, reply=f"{self._inbox}.{self._seq}", headers={"Nats-Msg-Id": msg_id}
        )

    async def _on_reply(self, msg: Msg) -> None:
        try:
            seq = int(msg.subject[self._cut :])
        except ValueError:
            return
        if self._pending.pop(seq, None) is None:
            return  # already expired
        stats = self._stats
        if not msg.data:
            stats.errors += 1
            status = (msg.headers or {}).get("Status", "?")
            stats.last_error = f"JetStream publish failed (status {status}: no stream?)"
        else:
            try:
                reply = orjson.loads(msg.data)
            except orjson.JSONDecodeError:
                reply = {"error": {"description": msg.data[:200].decode("utf-8", "replace")}}
            if "error" in reply:
                stats.errors += 1
                stats.last_error = str(reply["error"].get("description", reply["error"]))
            else:
                stats.acked += 1
                if reply.get("duplicate"):
                    stats.duplicates += 1
        self._settled()

    def _settled(self) -> None:
        if len(self._pending) < self._limit:
            self._room.set()
        if not self._pending:
            self._empty.set()

    def expire(self, *, everything: bool = False) -> None:
        """Give up on acks older than the timeout (or on all of them)."""
        if not self._pending:
            return
        horizon = time.monotonic() - self._timeout
        stale = [s for s, t in self._pending.items() if everything or t <= horizon]
        for seq in stale:
            del self._pending[seq]
        if stale:
            self._stats.unacked += len(stale)
            self._stats.last_error = f"{len(stale)} publishes not acknowledged in time"
        self._settled()

    async def wait_empty(self) -> None:
        try:
            await asyncio.wait_for(self._empty.wait(), self._timeout)
        except TimeoutError:
            pass
        self.expire(everything=True)


async def run_demo(
    nc_or_js: NatsClient | JetStreamContext,
    *,
    rate: float,
    duration: float | None = None,
    stop: asyncio.Event | None = None,
    subject_prefix: str = "events",
    use_jetstream: bool = True,
    on_progress: ProgressCallback | None = None,
    seed: int = 1,
    shop: DemoShop | None = None,
    bench_stamp: bool = False,
    max_inflight: int = 4_096,
    ack_timeout: float = 10.0,
    backlog: Callable[[], float] | None = None,
    max_backlog_s: float = 2.0,
) -> DemoStats:
    """Publish demo traffic at ``rate`` events/s for ``duration`` s (None: until stopped).

    ``backlog`` (events published but not yet processed, e.g. the decide consumer's lag): while
    it is above ``max_backlog_s`` seconds of traffic the shop holds back, skipping its slots
    (counted in ``missed``). Run inside the engine, a demo asked for more than the engine can
    take would otherwise keep the event loop busy publishing and starve the stages it feeds.

    Each event goes to ``<subject_prefix>.<type>.<contact token>`` with header ``Nats-Msg-Id`` =
    its messageId.
    With ``use_jetstream`` the publishes carry reply subjects and up to ``max_inflight`` acks are
    pipelined; otherwise they are plain core-NATS publishes (still captured by the stream, no
    confirmation). ``bench_stamp`` adds ``properties.bench_sent_at`` (epoch seconds, taken just
    before the publish) to every track and page event. ``on_progress`` (sync or async) gets a
    snapshot about once a second and at the end. Stops early when ``stop`` is set; cancelling
    the task also stops it cleanly. Returns counts per event name and the achieved rate.
    """
    if rate <= 0:
        raise ValueError("rate must be above 0 events per second")
    if isinstance(nc_or_js, JetStreamContext):
        nc: NatsClient = nc_or_js._nc  # nats-py keeps the connection here
    else:
        nc = nc_or_js
    shop = shop if shop is not None else DemoShop(seed)
    stats = DemoStats(target_rate=rate)
    by_name = stats.by_name
    next_event = shop.next_event
    dumps = orjson.dumps
    prefix = f"{subject_prefix}."
    window = _AckWindow(nc, stats, max_inflight, ack_timeout) if use_jetstream else None

    held_back_above = max(100.0, rate * max_backlog_s)

    async def emit(count: int) -> bool:
        if backlog is not None and backlog() > held_back_above:
            stats.missed += count
            return True
        for i in range(count):
            event = next_event()
            name = activity_name(event)
            by_name[name] = by_name.get(name, 0) + 1
            if bench_stamp and "properties" in event:
                event["properties"]["bench_sent_at"] = time.time()
            msg_id = event["messageId"]
            payload = dumps(event)
            contact = bus.wire_contact_key(event)
            subject = prefix + event["type"]
            if contact is not None:  # the contact's partition (engine.bus)
                subject += "." + bus.contact_token(contact)
            try:
                if window is not None:
                    await window.publish(subject, payload, msg_id)
                else:
                    await nc.publish(subject, payload, headers={"Nats-Msg-Id": msg_id})
            except Exception as exc:  # nats raises several unrelated types
                stats.errors += 1
                stats.last_error = f"publish failed: {exc!r}"
                if nc.is_closed:
                    return False
                continue
            stats.published += 1
            if i % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)
        return True

    async def tick() -> None:
        if window is not None:
            window.expire()
        await _report(on_progress, stats)

    if window is not None:
        await window.start()
    try:
        await _pace(rate, duration, stop, stats, emit, tick)
        if window is not None:
            await window.wait_empty()
        elif not nc.is_closed:
            await nc.flush(timeout=max(1, round(ack_timeout)))
    finally:
        if window is not None:
            await window.close()
    await _report(on_progress, stats)
    return stats


async def run_demo_http(
    url: str,
    write_key: str,
    rate: float,
    duration: float | None,
    *,
    stop: asyncio.Event | None = None,
    seed: int = 1,
    shop: DemoShop | None = None,
    bench_stamp: bool = False,
    batch_size: int = 100,
    flush_interval: float = 0.05,
    concurrency: int = 8,
    timeout: float = 10.0,
    on_progress: ProgressCallback | None = None,
) -> DemoStats:
    """Post demo traffic to the HTTP tracking API: ``POST <url>/v1/batch`` at ``rate`` events/s.

    ``url`` is the API's base URL (or the full ``/v1/batch`` URL). Authentication is Segment's:
    HTTP basic auth with the write key as the user name and an empty password. Due events are
    gathered for up to ``flush_interval`` seconds (less when a full batch is due sooner) and go
    out in batches of at most ``batch_size``, with up to ``concurrency`` requests in flight.
    ``bench_sent_at`` is stamped when a batch is sent. ``acked`` counts events in 2xx responses,
    ``errors`` events in other responses or failed requests.
    """
    import aiohttp

    if rate <= 0:
        raise ValueError("rate must be above 0 events per second")
    endpoint = url.rstrip("/")
    if not endpoint.endswith("/v1/batch"):
        endpoint += "/v1/batch"
    shop = shop if shop is not None else DemoShop(seed)
    stats = DemoStats(target_rate=rate)
    by_name = stats.by_name
    slots = asyncio.Semaphore(concurrency)
    inflight: set[asyncio.Task[None]] = set()
    # Segment's scheme: the write key is the user name, the password is empty.
    basic = base64.b64encode(f"{write_key}:".encode()).decode("ascii")
    headers = {"Content-Type": "application/json", "Authorization": f"Basic {basic}"}

    async def post(session: aiohttp.ClientSession, batch: list[SegmentEvent]) -> None:
        try:
            body = orjson.dumps({"batch": batch, "sentAt": shop._timestamp()})
            async with session.post(endpoint, data=body, headers=headers) as resp:
                if 200 <= resp.status < 300:
                    stats.acked += len(batch)
                else:
                    text = (await resp.text())[:200]
                    stats.errors += len(batch)
                    stats.last_error = f"HTTP {resp.status}: {text}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            stats.errors += len(batch)
            stats.last_error = f"POST {endpoint} failed: {exc!r}"
        finally:
            slots.release()

    client_timeout = aiohttp.ClientTimeout(total=timeout)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(timeout=client_timeout, connector=connector) as session:

        async def emit(count: int) -> bool:
            while count > 0:
                size = min(count, batch_size)
                count -= size
                batch = [shop.next_event() for _ in range(size)]
                for event in batch:
                    name = activity_name(event)
                    by_name[name] = by_name.get(name, 0) + 1
                await slots.acquire()
                if bench_stamp:
                    sent_at = time.time()
                    for event in batch:
                        if "properties" in event:
                            event["properties"]["bench_sent_at"] = sent_at
                task = asyncio.create_task(post(session, batch))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
                stats.published += size
            return True

        async def tick() -> None:
            await _report(on_progress, stats)

        try:
            gather = max(MIN_TICK_S, min(flush_interval, batch_size / rate))
            await _pace(rate, duration, stop, stats, emit, tick, gather)
        finally:
            if inflight:
                await asyncio.gather(*inflight, return_exceptions=True)
    await _report(on_progress, stats)
    return stats
