"""Offer codes against a real store: generated codes verify and tampering fails, pool codes are
never given twice (concurrent draws, a second decision of the same send, a restart), value
rules pick the first rule that holds, pools import with clear refusals."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import sqlalchemy as sa

from engine.offers.codes import ALPHABET, generated_code
from engine.offers.issue import (
    PoolImportError,
    choose_value,
    import_pool,
    issue_codes,
    pool_counts,
    read_pool_codes,
)
from engine.offers.model import Offer, OfferBook, parse_offer
from engine.offers.verify import verify_code
from engine.store import Store, open_store, schema

SECRET = b"s" * 32
RULES = {
    "kind": "generated",
    "prefix": "SAVE",
    "value": "10%",
    "rules": [
        {"segment": "vip", "value": "20%"},
        {"where": [{"trait": "lifetime_value", "op": "gt", "value": 500}], "value": "15%"},
    ],
}


def offer(kind: str = "generated", **changes: Any) -> Offer:
    parsed = parse_offer("welcome10", {**RULES, "kind": kind, **changes}, "offers")
    return OfferBook({parsed.id: parsed}, SECRET).bind({})[parsed.id]


def intent(contact: str, key: str, now: float = 1000.0) -> dict[str, Any]:
    return {"contact_id": contact, "dedup_key": key, "decided_at": now, "context": {}}


def add_contact(store: Store, cid: str, traits: dict[str, Any] | None = None) -> None:
    with store.begin() as conn:
        conn.execute(
            schema.contacts.insert(),
            {
                "id": cid,
                "email": f"{cid}@example.com",
                "traits": traits or {},
                "consent": {},
                "first_seen_at": 0.0,
                "last_seen_at": 0.0,
                "updated_at": 0.0,
            },
        )


def issue(store: Store, *requests: tuple[dict[str, Any], Offer]) -> list[Any]:
    with store.begin() as conn:
        return issue_codes(conn, list(requests))


def test_generated_code_shape_and_stability() -> None:
    code = generated_code(SECRET, "welcome10", "SAVE", "ann", "key-1")
    prefix, first, second = code.split("-")
    assert prefix == "SAVE" and len(first) == len(second) == 4
    assert set(first + second) <= set(ALPHABET)
    assert code == generated_code(SECRET, "welcome10", "SAVE", "ann", "key-1")
    others = {
        generated_code(SECRET, "welcome10", "SAVE", "bob", "key-1"),
        generated_code(SECRET, "welcome10", "SAVE", "ann", "key-2"),
        generated_code(SECRET, "other", "SAVE", "ann", "key-1"),
        generated_code(b"t" * 32, "welcome10", "SAVE", "ann", "key-1"),
    }
    assert code not in others and len(others) == 4
    with pytest.raises(ValueError, match="at least 16 bytes"):
        generated_code(b"short", "welcome10", "SAVE", "ann", "key-1")


def test_generated_codes_verify_and_tampering_fails(store: Store) -> None:
    add_contact(store, "ann")
    first = intent("ann", "key-1")
    assert issue(store, (first, offer())) == []
    code = first["context"]["offer"]["code"]
    assert first["context"]["offer"]["value"] == "10%"
    with store.begin() as conn:
        good = verify_code(conn, code, SECRET)
        assert good.valid and good.contact_id == "ann" and good.offer_id == "welcome10"
        assert good.value == "10%" and good.kind == "generated"
        # Typed back in lower case with a look-alike letter: still the same code.
        assert verify_code(conn, code.lower().replace("0", "o"), SECRET).valid
        # One character changed: unknown.
        last = code[-1]
        bent = code[:-1] + (ALPHABET[(ALPHABET.index(last) + 1) % 32])
        assert not verify_code(conn, bent, SECRET).valid
        assert "unknown code" in verify_code(conn, bent, SECRET).reason
        # Another engine's key: the signature fails.
        assert "signature does not match" in verify_code(conn, code, b"t" * 32).reason
        # The record altered in the store (given to someone else): the signature fails.
        t = schema.offer_codes
        conn.execute(sa.update(t).where(t.c.code == code).values(contact_id="mallory"))
        forged = verify_code(conn, code, SECRET)
        assert not forged.valid and "signature does not match" in forged.reason
        assert "not a code" in verify_code(conn, "   ", SECRET).reason


def test_the_same_send_decided_twice_gets_the_same_code(store: Store) -> None:
    add_contact(store, "ann")
    for kind in ("generated", "pool"):
        own = offer(kind)
        if kind == "pool":
            with store.begin() as conn:
                import_pool(conn, own.id, ["P-1", "P-2", "P-3"], 0.0)
        a, b = intent("ann", f"{kind}-key"), intent("ann", f"{kind}-key")
        issue(store, (a, own))
        issue(store, (b, own))
        assert a["context"]["offer"]["code"] == b["context"]["offer"]["code"]
    with store.begin() as conn:
        assert pool_counts(conn)["welcome10"] == {"available": 2, "issued": 2}


def test_value_rules_first_match_wins(store: Store) -> None:
    own = offer()
    assert choose_value(own, {}, set(), 0.0) == "10%"
    assert choose_value(own, {"lifetime_value": 900}, set(), 0.0) == "15%"
    assert choose_value(own, {"lifetime_value": 400}, set(), 0.0) == "10%"
    assert choose_value(own, {"lifetime_value": 900}, {"vip"}, 0.0) == "20%"
    # Through the store: segment membership and traits as they are when the code is issued.
    add_contact(store, "vip-ann", {"lifetime_value": 50})
    add_contact(store, "big-bob", {"lifetime_value": 501})
    add_contact(store, "new-cy", {})
    with store.begin() as conn:
        conn.execute(
            schema.segment_members.insert(),
            {"segment_id": "vip", "contact_id": "vip-ann", "entered_at": 0.0},
        )
    sends = [intent(c, f"k-{c}") for c in ("vip-ann", "big-bob", "new-cy")]
    issue(store, *[(s, offer()) for s in sends])
    assert [s["context"]["offer"]["value"] for s in sends] == ["20%", "15%", "10%"]


def test_offer_definitions_are_checked() -> None:
    with pytest.raises(ValueError, match="kind must be"):
        parse_offer("x", {"kind": "coupon", "value": "5%"}, "offers")
    with pytest.raises(ValueError, match="value is missing"):
        parse_offer("x", {"kind": "pool"}, "offers")
    with pytest.raises(ValueError, match="prefix must be"):
        parse_offer("x", {"kind": "generated", "prefix": "save-", "value": "5%"}, "offers")
    with pytest.raises(ValueError, match=r"rules\[0\]: unknown key\(s\) segmnet"):
        parse_offer("x", {"kind": "pool", "value": "5%", "rules": [{"segmnet": "vip"}]}, "o")
    with pytest.raises(ValueError, match="only trait conditions"):
        rule = {"where": [{"activity": "Order Completed", "within": "1d", "op": "gte", "value": 1}]}
        parse_offer("x", {"kind": "pool", "value": "5%", "rules": [{**rule, "value": "1"}]}, "o")


def test_pool_import_refuses_repeats_and_known_codes(store: Store) -> None:
    assert read_pool_codes(["code", "A-1", "", "B-2,unused", '"C-3"'], "f.csv") == [
        "A-1",
        "B-2",
        "C-3",
    ]
    with pytest.raises(PoolImportError, match=r"f.txt:3: code 'A-1' appears twice"):
        read_pool_codes(["A-1", "B-2", "A-1"], "f.txt")
    with pytest.raises(PoolImportError, match="no codes found"):
        read_pool_codes(["code", ""], "f.txt")
    with store.begin() as conn:
        assert import_pool(conn, "spring", ["A-1", "B-2"], 0.0) == 2
    known = r"already known, e.g. 'B-2' \(offer spring\)"
    with pytest.raises(PoolImportError, match=known), store.begin() as conn:
        import_pool(conn, "summer", ["Z-9", "B-2"], 0.0)
    with store.begin() as conn:
        assert pool_counts(conn) == {"spring": {"available": 2, "issued": 0}}


def test_an_exhausted_pool_is_reported_not_raised(store: Store) -> None:
    add_contact(store, "ann")
    own = offer("pool")
    with store.begin() as conn:
        import_pool(conn, own.id, ["ONLY-1"], 0.0)
    first, second = intent("ann", "k1"), intent("ann", "k2")
    exhausted = issue(store, (first, own), (second, own))
    assert first["context"]["offer"]["code"] == "ONLY-1"
    assert [e.intent for e in exhausted] == [second] and "offer" not in second["context"]


def _draw_concurrently(url: str, workers: int, per_worker: int) -> list[str]:
    own = offer("pool")
    codes: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(workers)

    def work(n: int) -> None:
        store = open_store(url, migrate=False)  # migrated already; alembic is not thread-safe
        try:
            start.wait()
            for i in range(per_worker):
                send = intent(f"c{n}", f"w{n}-{i}")
                with store.begin() as conn:
                    exhausted = issue_codes(conn, [(send, own)])
                if not exhausted:
                    with lock:
                        codes.append(send["context"]["offer"]["code"])
        except BaseException as exc:  # reported by the test
            errors.append(exc)
        finally:
            store.dispose()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return codes


def test_concurrent_draws_never_repeat_a_code_and_survive_a_restart(store_url: str) -> None:
    store = open_store(store_url)
    try:
        with store.begin() as conn:
            import_pool(conn, "welcome10", [f"POOL-{i:03d}" for i in range(50)], 0.0)
    finally:
        store.dispose()  # the draws below open their own connections, like separate workers
    codes = _draw_concurrently(store_url, workers=4, per_worker=15)  # 60 draws, 50 codes
    assert len(codes) == 50 and len(set(codes)) == 50
    # A restart (a new engine on the same store): the same sends get their codes back, and the
    # pool stays empty for new ones.
    store = open_store(store_url)
    try:
        with store.begin() as conn:
            rows = conn.execute(sa.select(schema.offer_codes)).all()
        assert {r.state for r in rows} == {"issued"}
        issued = {r.intent_key: r.code for r in rows}
        key, code = sorted(issued.items())[0]
        again = intent("anyone", key)
        fresh = intent("anyone", "never-seen")
        exhausted = issue(store, (again, offer("pool")), (fresh, offer("pool")))
        assert again["context"]["offer"]["code"] == code
        assert [e.intent for e in exhausted] == [fresh]
    finally:
        store.dispose()
