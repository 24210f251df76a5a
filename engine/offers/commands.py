"""``campaign-engine offers ...``: import a pool, verify a code, list the offers."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from engine.config import Settings
from engine.errors import ConfigError
from engine.offers.issue import PoolImportError, import_pool, pool_counts, read_pool_codes
from engine.offers.keys import offer_book
from engine.offers.model import Offer
from engine.offers.verify import verify_code
from engine.store import Store


def known_offers(store: Store, settings: Settings) -> dict[str, Offer]:
    """The offers in the settings and in the newest version of every stored workflow."""
    from engine.library import load_library

    offers = dict(offer_book(settings).offers)
    for wf in load_library(store, settings).workflows.index.live.values():
        offers.update(wf.offers)
    return offers


def offers_import(store: Store, settings: Settings, name: str, path: Path) -> int:
    offer = known_offers(store, settings).get(name)
    if offer is None or offer.kind != "pool":
        what = "is not a pool offer" if offer else "is not defined"
        raise ConfigError(
            f'offer {name!r} {what}: add [offers.{name}] with kind = "pool" to the settings '
            "or a workflow first"
        )
    try:
        with path.open(encoding="utf-8") as handle:
            codes = read_pool_codes(handle, str(path))
        with store.begin() as conn:
            added = import_pool(conn, name, codes, time.time())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except PoolImportError as exc:
        raise ConfigError(str(exc)) from exc
    print(f"offer {name}: {added:,} codes added to the pool")
    return 0


def offers_verify(store: Store, settings: Settings, code: str) -> int:
    """Exit 0 for a valid code, 1 for anything else (the reason in words)."""
    secret = offer_book(settings).secret
    with store.engine.connect() as conn:
        verdict = verify_code(conn, code, secret)
    print(f"{verdict.code}: {verdict.reason}")
    if verdict.offer_id:
        issued = (
            datetime.fromtimestamp(verdict.issued_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            if verdict.issued_at
            else "-"
        )
        print(f"  offer {verdict.offer_id} ({verdict.kind}), value {verdict.value or '-'}")
        print(f"  issued to {verdict.contact_id or '-'} at {issued}")
    return 0 if verdict.valid else 1


def offers_list(store: Store, settings: Settings) -> int:
    offers = known_offers(store, settings)
    with store.engine.connect() as conn:
        counts = pool_counts(conn)
    if not offers and not counts:
        print("No offers defined. Add [offers.NAME] to the settings or a workflow.")
        return 0
    print(f"{'OFFER':20}  {'KIND':9}  {'DEFAULT':8}  {'ISSUED':>8}  {'LEFT':>8}  RULES")
    for name in sorted(set(offers) | set(counts)):
        offer = offers.get(name)
        n = counts.get(name, {"available": 0, "issued": 0})
        left = str(n["available"]) if offer is None or offer.kind == "pool" else "-"
        rules = "; ".join(f"{r.describe()} -> {r.value}" for r in offer.rules) if offer else ""
        kind = offer.kind if offer else "(gone)"
        value = offer.value if offer else ""
        print(f"{name:20}  {kind:9}  {value:8}  {n['issued']:>8}  {left:>8}  {rules}")
    return 0
