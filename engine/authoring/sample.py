"""Sample data for previews: a made-up shopper and an event of the kind that triggers the mail.

Taken from the demo shop's simulation (engine/demo.py) with a fixed seed, so the sample is
realistic (products, prices, carts, orders) and the same on every call. Addresses are at
reserved example domains, so a test send of a sample can never reach a person.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from engine.demo import SAFE_DOMAINS, DemoShop, activity_name

SAMPLE_SEED = 7
_SEARCH = 20_000  # events generated at most while looking for the wanted kind
SAMPLE_TS = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC


@dataclass(frozen=True, slots=True)
class Sample:
    """A sample contact (id, email, traits) and event (name, properties, ts)."""

    contact_id: str
    email: str
    traits: dict[str, Any]
    event: dict[str, Any]


@lru_cache(maxsize=64)
def _find(event_name: str) -> tuple[str, str, tuple[tuple[str, Any], ...], Any] | None:
    shop = DemoShop(
        SAMPLE_SEED, shoppers=200, active_sessions=16, clock=lambda: SAMPLE_TS, domains=SAFE_DOMAINS
    )
    by_id = {s.user_id: s for s in shop.shoppers} | {s.anonymous_id: s for s in shop.shoppers}
    fallback = None
    for _ in range(_SEARCH):
        event = shop.next_event()
        name = activity_name(event)
        shopper = by_id.get(str(event.get("userId") or event.get("anonymousId")))
        if shopper is None:
            continue
        found = (shopper.user_id, shopper.email, tuple(shopper.traits().items()), event)
        if name == event_name:
            return found
        if fallback is None and event.get("type") == "track":
            fallback = found
    return fallback if not event_name else None


def sample_for(event_name: str) -> Sample:
    """A shopper and an ``event_name`` event of theirs (a generic shopper, no properties,
    when the demo shop never sends such an event)."""
    found = _find(event_name) or _find("")
    assert found is not None  # the demo shop always produces track events
    user_id, email, traits, event = found
    properties = event.get("properties") if event_name and _find(event_name) else {}
    return Sample(
        contact_id=user_id,
        email=email,
        traits=copy.deepcopy(dict(traits)),
        event={"name": event_name, "properties": copy.deepcopy(properties or {}), "ts": SAMPLE_TS},
    )
