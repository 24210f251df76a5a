"""Intent and event ids: 32 hex digits, unique, and in the order they were made."""

from __future__ import annotations

import re

import pytest

from engine import ids


def test_ids_made_in_one_millisecond_sort_in_the_order_they_were_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ids.time, "time", lambda: 1_800_000_000.0005)
    made = [ids.new_id() for _ in range(1_000)]
    assert made == sorted(made)
    assert len(set(made)) == len(made)
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in made)
    assert {i[:12] for i in made} == {f"{1_800_000_000_000:012x}"}


def test_a_clock_stepping_back_never_makes_an_earlier_id(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_800_000_000.0]
    monkeypatch.setattr(ids.time, "time", lambda: now[0])
    first = ids.new_id()
    now[0] -= 5  # NTP steps the wall clock back
    second = ids.new_id()
    assert second > first
    now[0] += 10
    third = ids.new_id()
    assert third > second
    assert third[:12] == f"{1_800_000_005_000:012x}"


def test_the_random_part_overflowing_borrows_the_next_millisecond(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ids.time, "time", lambda: 1_800_000_000.0)
    monkeypatch.setattr(ids, "_last_ms", 1_800_000_000_000)
    monkeypatch.setattr(ids, "_last_random", ids._RANDOM_MAX)
    borrowed = ids.new_id()
    assert borrowed == f"{1_800_000_000_001:012x}{0:020x}"


def test_a_dedup_key_is_a_fact_of_the_decision_and_sorts_by_when_it_happened() -> None:
    key = ids.dedup_key("cart", "send", "ann", "evt-1", 1_800_000_000.7071)
    assert key == ids.dedup_key("cart", "send", "ann", "evt-1", 1_800_000_000.7071)
    assert len(key) == 33 and key.startswith(f"{1_800_000_000_707:011x}")
    assert key != ids.dedup_key("cart", "send", "bob", "evt-1", 1_800_000_000.7071)
    assert key != ids.dedup_key("cart", "send2", "ann", "evt-1", 1_800_000_000.7071)
    later = [ids.dedup_key("cart", "send", f"c{n}", "evt", 1_800_000_000.708) for n in range(50)]
    assert min(later) > key  # a later millisecond sorts after: the index grows at its end
    assert ids.dedup_key("cart", "send", "ann", "evt-1", -5).startswith("0" * 11)
