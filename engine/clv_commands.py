"""``campaign-engine clv ...``: recompute lifetime values from history (and the membership of
the segments reading them), show one contact's."""

from __future__ import annotations

import getpass
import sys
import time
from datetime import UTC, datetime

from sqlalchemy import Connection

from engine.clv import contact_values, rebuild
from engine.errors import ConfigError
from engine.segments.definitions import load_segments
from engine.segments.membership import SegmentIndex, refresh
from engine.store import Store, schema


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli"


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def clv_rebuild(store: Store, *, quiet: bool = False) -> int:
    """Recompute every contact's value, with progress on stderr; audited."""
    started = time.monotonic()

    def progress(done: int, total: int) -> None:
        if not quiet:
            percent = 100 * done / total if total else 100.0
            print(f"\rcontacts {done:,} / {total:,} ({percent:.0f}%)", end="", file=sys.stderr)

    # The values change without events: the segments reading them are re-evaluated for each
    # page in its transaction, as a segment build does (engine/segments/build.py).
    index = SegmentIndex.build(load_segments(store))
    reading = frozenset(index.reads_value)
    moved = {"entered": 0, "exited": 0}

    def resegment(conn: Connection, ids: list[str]) -> None:
        changes, _ = refresh(conn, index, dict.fromkeys(ids, reading), time.time())
        for change in changes:
            moved[change.kind] += 1

    summary = rebuild(store, progress, after_page=resegment if reading else None)
    if not quiet and summary["contacts"]:
        print(file=sys.stderr)
    summary["segments"] = sorted(reading)
    summary["segment_changes"] = dict(moved)
    with store.begin() as conn:
        conn.execute(
            schema.audit_log.insert(),
            {
                "ts": time.time(), "actor": _actor(), "action": "clv.rebuild",
                "target": "contacts", "count": summary["contacts"], "detail": summary,
            },
        )  # fmt: skip
    print(
        f"lifetime value rebuilt for {summary['contacts']:,} contacts in "
        f"{time.monotonic() - started:.1f} s: {summary['with_orders']:,} with orders, "
        f"{summary['orders']:,} orders, {summary['lifetime_value']:,.2f} in all"
    )
    if reading:
        print(
            f"segments reading the value re-evaluated ({', '.join(sorted(reading))}): "
            f"{moved['entered']:,} entered, {moved['exited']:,} left"
        )
    print(
        f"orders counted from the activity kept (oldest order: "
        f"{_when(summary['oldest_order_at'])}); older orders were pruned by activity_days"
    )
    return 0


def clv_show(store: Store, contact: str) -> int:
    with store.begin() as conn:
        found = contact_values(conn, [contact]).get(contact)
    if found is None:
        raise ConfigError(f"there is no contact {contact!r}")
    print(f"contact            {contact}")
    print(f"lifetime value     {found['lifetime_value']:,.2f}")
    print(f"orders             {found['orders']:,}")
    print(f"average order      {found['average_order_value']:,.2f}")
    print(f"first order        {_when(found['first_order_at'])}")
    print(f"last order         {_when(found['last_order_at'])}")
    return 0
