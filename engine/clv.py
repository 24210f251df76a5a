"""Customer lifetime value: what each contact's orders came to, kept on the contact's row.

Every ``Order Completed`` event adds to its contact's ``lifetime_value`` the order's amount
(the first number among the ``revenue``, ``total`` and ``value`` properties, as conversions
read revenue; an order without one counts as an order of 0), adds one to ``orders``, and
moves ``first_order_at`` / ``last_order_at`` (the event's timestamp). The average order value
is ``lifetime_value / orders``. Amounts are added as they are, whatever their ``currency``
property says, as the conversion revenue is: send amounts in one reporting currency.
The event model has no refund event, so nothing is subtracted.

Decide applies a batch's orders in its own transaction (``apply_orders``: one ``UPDATE`` per
contact with orders in the batch, no query at all for a batch without orders), after the
contacts are written, so each order counts exactly once like everything decide does
(``processed_events``). The columns outlive ``activity`` retention. ``rebuild`` recomputes them
from the activity the store still holds (history from before the columns existed, or imported
events), page by page with progress.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from engine.events import Event
from engine.store import Store, schema

ORDER_EVENT = "Order Completed"
AMOUNT_PROPERTIES = ("revenue", "total", "value")  # as engine.experiments.conversions
FIELDS = ("lifetime_value", "orders", "average_order_value", "first_order_at", "last_order_at")
PAGE = 500


def order_amount(properties: Mapping[str, Any]) -> float:
    """The order's amount: the first number among revenue, total, value; else 0."""
    for name in AMOUNT_PROPERTIES:
        value = properties.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return 0.0


@dataclass(slots=True)
class OrderTotals:
    """One contact's orders (of a batch, or of all its history)."""

    value: float = 0.0
    orders: int = 0
    first_at: float | None = None
    last_at: float | None = None

    def add(self, amount: float, ts: float) -> None:
        self.value += amount
        self.orders += 1
        self.first_at = ts if self.first_at is None else min(self.first_at, ts)
        self.last_at = ts if self.last_at is None else max(self.last_at, ts)


def value_fields(
    lifetime_value: float | None,
    orders: int | None,
    first_order_at: float | None,
    last_order_at: float | None,
) -> dict[str, Any]:
    """The fields templates and segments see (``contact.lifetime_value`` ...)."""
    value = float(lifetime_value or 0.0)
    count = int(orders or 0)
    return {
        "lifetime_value": round(value, 2),
        "orders": count,
        "average_order_value": round(value / count, 2) if count else 0.0,
        "first_order_at": first_order_at,
        "last_order_at": last_order_at,
    }


def batch_totals(events: Iterable[Event]) -> dict[str, OrderTotals]:
    """The orders among ``events``, summed per contact."""
    totals: dict[str, OrderTotals] = {}
    for event in events:
        if event.activity_name == ORDER_EVENT:
            totals.setdefault(event.contact_key, OrderTotals()).add(
                order_amount(event.properties), event.timestamp
            )
    return totals


def _add_statement() -> sa.Update:
    c = schema.contacts
    first, last = sa.bindparam("b_first", type_=sa.Float), sa.bindparam("b_last", type_=sa.Float)
    return (
        sa.update(c)
        .where(c.c.id == sa.bindparam("b_id"))
        .values(
            lifetime_value=c.c.lifetime_value + sa.bindparam("b_value", type_=sa.Float),
            orders=c.c.orders + sa.bindparam("b_orders", type_=sa.Integer),
            first_order_at=sa.case(
                (sa.or_(c.c.first_order_at.is_(None), c.c.first_order_at > first), first),
                else_=c.c.first_order_at,
            ),
            last_order_at=sa.case(
                (sa.or_(c.c.last_order_at.is_(None), c.c.last_order_at < last), last),
                else_=c.c.last_order_at,
            ),
        )
    )


_ADD = _add_statement()


# The same update for the SQLite hot path (engine/decide/lite.py): Core's per-row parameter
# processing of the executemany above was 4-10% of the engine's samples on an orders backlog.
_LITE_ADD = (
    "UPDATE contacts SET lifetime_value = lifetime_value + ?, orders = orders + ?, "
    "first_order_at = CASE WHEN first_order_at IS NULL OR first_order_at > ? THEN ? "
    "ELSE first_order_at END, "
    "last_order_at = CASE WHEN last_order_at IS NULL OR last_order_at < ? THEN ? "
    "ELSE last_order_at END WHERE id = ?"
)


def apply_orders(conn: Connection, events: Iterable[Event], *, raw_sqlite: bool = False) -> int:
    """Add this batch's orders to their contacts (rows already written); returns how many
    contacts changed. Nothing is executed when the batch has no order. ``raw_sqlite``: run
    it on the SQLite cursor (the decide hot path's ``sql.lite``)."""
    totals = batch_totals(events)
    if not totals:
        return 0
    if raw_sqlite:
        from engine.decide import lite  # the decide package imports this module

        rows = [
            (t.value, t.orders, t.first_at, t.first_at, t.last_at, t.last_at, cid)
            for cid, t in sorted(totals.items())
        ]
        lite.run_many(conn, _LITE_ADD, rows)
        return len(totals)
    conn.execute(
        _ADD,
        [
            {"b_id": cid, "b_value": t.value, "b_orders": t.orders, "b_first": t.first_at,
             "b_last": t.last_at}
            for cid, t in sorted(totals.items())
        ],
    )  # fmt: skip
    return len(totals)


def contact_values(conn: Connection, contact_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``value_fields`` of each stored contact among ``contact_ids``."""
    c = schema.contacts
    wanted = sorted(set(contact_ids))
    out: dict[str, dict[str, Any]] = {}
    for start in range(0, len(wanted), PAGE):
        rows = conn.execute(
            sa.select(
                c.c.id, c.c.lifetime_value, c.c.orders, c.c.first_order_at, c.c.last_order_at
            ).where(c.c.id.in_(wanted[start : start + PAGE]))
        )
        for row in rows:
            out[row.id] = value_fields(*row[1:])
    return out


Progress = Callable[[int, int], None]  # (contacts done, contacts in all)
AfterPage = Callable[[Connection, list[str]], None]  # in the page's transaction, values written


def rebuild(
    store: Store,
    progress: Progress | None = None,
    *,
    page: int = PAGE,
    after_page: AfterPage | None = None,
) -> dict[str, Any]:
    """Recompute every contact's value from the stored ``Order Completed`` activity.

    Page by page of contact ids, each in its own transaction that first locks the page's rows
    (a no-op update: on SQLite the write lock, on PostgreSQL the rows), so a decide batch
    adding an order to one of them either commits before the page reads the activity or
    waits and adds its order on top. ``after_page`` runs in each page's transaction once its
    values are written (the command re-evaluates the segments reading them there). Returns
    counts and the oldest activity kept (orders older than ``activity_days`` were pruned from
    activity and cannot be recounted)."""
    c, a = schema.contacts, schema.activity
    with store.begin() as conn:
        total = int(conn.execute(sa.select(sa.func.count()).select_from(c)).scalar_one())
        oldest = conn.execute(sa.select(sa.func.min(a.c.ts)).where(a.c.name == ORDER_EVENT))
        oldest_order = oldest.scalar()
    done = with_orders = order_count = 0
    value_sum = 0.0
    after = ""
    while True:
        with store.begin() as conn:
            ids = list(
                conn.execute(
                    sa.select(c.c.id).where(c.c.id > after).order_by(c.c.id).limit(page)
                ).scalars()
            )
            if not ids:
                break
            conn.execute(sa.update(c).where(c.c.id.in_(ids)).values(orders=c.c.orders))
            totals = {cid: OrderTotals() for cid in ids}
            found = conn.execute(
                sa.select(a.c.contact_id, a.c.properties, a.c.ts).where(
                    a.c.contact_id.in_(ids), a.c.name == ORDER_EVENT
                )
            )
            for cid, properties, ts in found:
                props = properties if isinstance(properties, dict) else {}
                totals[cid].add(order_amount(props), ts)
            conn.execute(
                sa.update(c)
                .where(c.c.id == sa.bindparam("b_id"))
                .values(
                    lifetime_value=sa.bindparam("b_value"),
                    orders=sa.bindparam("b_orders"),
                    first_order_at=sa.bindparam("b_first"),
                    last_order_at=sa.bindparam("b_last"),
                ),
                [
                    {"b_id": cid, "b_value": t.value, "b_orders": t.orders,
                     "b_first": t.first_at, "b_last": t.last_at}
                    for cid, t in totals.items()
                ],
            )  # fmt: skip
            if after_page is not None:
                after_page(conn, ids)
        for t in totals.values():
            if t.orders:
                with_orders += 1
                order_count += t.orders
                value_sum += t.value
        done += len(ids)
        after = ids[-1]
        if progress is not None:
            progress(done, max(total, done))
    return {
        "contacts": done,
        "with_orders": with_orders,
        "orders": order_count,
        "lifetime_value": round(value_sum, 2),
        "oldest_order_at": oldest_order,
    }
