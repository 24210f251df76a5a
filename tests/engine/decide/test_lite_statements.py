"""The decide hot path's raw SQLite statements: IN lists padded so their text repeats."""

from __future__ import annotations

import sqlalchemy as sa

from engine.decide import lite
from engine.store import Store, schema
from tests.engine.sqlite_support import plan, traced


def test_padding_repeats_the_last_value_up_to_a_power_of_two() -> None:
    assert lite.padded([]) == []
    assert lite.padded(["a"]) == ["a"]
    assert lite.padded(["a", "b"]) == ["a", "b"]
    assert lite.padded(["a", "b", "c"]) == ["a", "b", "c", "c"]
    assert lite.padded(list("abcde")) == [*"abcde", "e", "e", "e"]
    assert len(lite.padded([str(n) for n in range(500)])) == 512
    assert lite.in_list(["x", "y", "z"]) == ("?, ?, ?, ?", ["x", "y", "z", "z"])


def test_batches_of_different_sizes_run_the_same_statement(store: Store) -> None:
    with store.begin() as conn, traced(conn) as seen:
        lite.contacts(conn, ["a", "b", "c", "d", "e"])
        lite.contacts(conn, ["a", "b", "c", "d", "e", "f", "g"])
        lite.activity(conn, ["a", "b", "c"], ["Order Completed"], 0.0)
        lite.activity(conn, ["a", "b", "c", "d"], ["Order Completed"], 0.0)
    # The trace shows values in place; the statements differ only in them.
    shapes = {s.split(" WHERE ")[0] + str(s.count(",")) for s in seen}
    assert len(shapes) == 2, seen


def test_claimed_events_come_back_once_each_with_the_padding(store: Store) -> None:
    with store.begin() as conn:
        assert lite.claim_events(conn, [("m1", 1, 10.0)]) == {"m1"}
    with store.begin() as conn:
        rows = [("m1", 1, 11.0), ("m2", 2, 11.0), ("m3", 3, 11.0)]  # padded to four
        assert lite.claim_events(conn, rows) == {"m2", "m3"}
    with store.begin() as conn:
        found = conn.execute(sa.select(schema.processed_events.c.message_id)).scalars().all()
    assert sorted(found) == ["m1", "m2", "m3"]


def test_cancelling_timers_reads_the_enrollments_own_timers(store: Store) -> None:
    """Without statistics SQLite's planner found "this enrollment's pending timers" through the
    (state, fire_at) index: every pending timer of every contact, for each enrollment."""
    timers = [
        {"id": f"t{n}", "enrollment_id": f"e{n % 4}", "contact_id": f"c{n % 4}", "step_id": "s",
         "kind": "delay", "fire_at": 100.0 + n, "state": "fired" if n == 0 else "pending"}
        for n in range(12)
    ]  # fmt: skip
    with store.begin() as conn:
        conn.execute(schema.timers.insert(), timers)
    with store.begin() as conn:
        with traced(conn) as seen:
            lite.cancel_timers(conn, ["e0", "e2", "e9"])
        (statement,) = [s for s in seen if s.startswith("UPDATE timers")]
        steps = plan(conn, statement)
    assert any("ix_timers_enrollment_id" in step for step in steps), steps
    assert not any("ix_timers_state_fire_at" in step for step in steps), steps
    with store.begin() as conn:
        states = dict(conn.execute(sa.select(schema.timers.c.id, schema.timers.c.state)).all())
    cancelled = {t for t, state in states.items() if state == "cancelled"}
    assert cancelled == {"t2", "t4", "t6", "t8", "t10"}  # e0's and e2's pending ones
    assert states["t0"] == "fired"  # a timer that already fired stays so
