"""``campaign-engine clv ...``: recompute lifetime values from history, show one contact's."""

from __future__ import annotations

import getpass
import sys
import time
from datetime import UTC, datetime

from engine.clv import contact_values, rebuild
from engine.errors import ConfigError
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

    summary = rebuild(store, progress)
    if not quiet and summary["contacts"]:
        print(file=sys.stderr)
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
