"""Order value per experiment arm against the holdout: what the exposed contacts spent after.

For each contact exposed to an experiment, its **first exposure** fixes its arm and the start
of its window; the measure is the sum of its ``Order Completed`` amounts (engine/clv.py) with
``exposed_at < ts <= exposed_at + window``: the revenue per exposed contact over the window.
Per arm: contacts, mean revenue per contact with a 95% interval, and for each variant the
difference against the holdout (the incremental revenue per contact the mail brought) with a
95% interval (Welch, normal approximation). Also the arm's mean **lifetime value** now (all
orders, before exposure too): a balance check, since assignment is random, not an effect.

What it is, precisely:
- intention to treat: every exposed contact counts, mailed or not (a holdout contact gets
  nothing); a contact moved to a promoted arm later keeps the arm of its first exposure;
- a contact exposed less than ``window`` ago is counted with the orders it had so far (so
  ``matured`` says how many have had the whole window); randomization keeps the arms
  comparable either way, but means grow until every contact has matured;
- read from ``activity``, which keeps ``activity_days`` (90 by default): a window longer than
  that loses orders;
- the intervals are fixed-sample intervals for reading the figures, not an always-valid
  decision rule: the decision stays with the conversions' confidence sequence.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from engine.clv import ORDER_EVENT, order_amount
from engine.experiments.stats import Z95, Interval
from engine.store import schema

DEFAULT_WINDOW_S = 30 * 86_400.0


@dataclass(slots=True)
class ArmValue:
    """Running sums of one arm's contacts."""

    contacts: int = 0
    matured: int = 0
    revenue: float = 0.0
    revenue_sq: float = 0.0
    lifetime: float = 0.0

    def mean(self) -> float:
        return self.revenue / self.contacts if self.contacts else 0.0

    def variance(self) -> float:
        """The sample variance of revenue per contact (0 with fewer than two)."""
        n = self.contacts
        if n < 2:
            return 0.0
        return max(0.0, (self.revenue_sq - self.revenue * self.revenue / n) / (n - 1))


def mean_interval(arm: ArmValue, z: float = Z95) -> Interval:
    """The arm's mean revenue per contact with its normal-approximation interval."""
    if arm.contacts == 0:
        return Interval(0.0, 0.0, 0.0)
    half = z * math.sqrt(arm.variance() / arm.contacts)
    return Interval(arm.mean(), arm.mean() - half, arm.mean() + half)


def difference_interval(base: ArmValue, arm: ArmValue, z: float = Z95) -> Interval | None:
    """mean(arm) - mean(base) with Welch's standard error; None without two of each."""
    if base.contacts < 2 or arm.contacts < 2:
        return None
    estimate = arm.mean() - base.mean()
    half = z * math.sqrt(arm.variance() / arm.contacts + base.variance() / base.contacts)
    return Interval(estimate, estimate - half, estimate + half)


def arm_values(
    conn: Connection, experiment_ids: Iterable[str], window_s: float, now: float
) -> dict[str, dict[str, ArmValue]]:
    """Per experiment and arm, the sums over its exposed contacts (see the module docstring)."""
    wanted = sorted(set(experiment_ids))
    out: dict[str, dict[str, ArmValue]] = {}
    if not wanted:
        return out
    e, c, a = schema.experiment_exposures, schema.contacts, schema.activity
    first_rows = conn.execute(
        sa.select(
            e.c.experiment_id, e.c.contact_id, e.c.variant, sa.func.min(e.c.exposed_at),
            c.c.lifetime_value,
        )
        .select_from(e.outerjoin(c, c.c.id == e.c.contact_id))
        .where(e.c.experiment_id.in_(wanted))
        .group_by(e.c.experiment_id, e.c.contact_id, e.c.variant, c.c.lifetime_value)
    ).all()  # fmt: skip
    first: dict[tuple[str, str], tuple[str, float, float]] = {}
    for exp_id, cid, variant, at, lifetime in first_rows:
        key = (exp_id, cid)
        if key not in first or at < first[key][1]:
            first[key] = (variant, float(at), float(lifetime or 0.0))
    starts = (
        sa.select(e.c.experiment_id, e.c.contact_id, sa.func.min(e.c.exposed_at).label("at"))
        .where(e.c.experiment_id.in_(wanted))
        .group_by(e.c.experiment_id, e.c.contact_id)
        .subquery()
    )
    orders = conn.execute(
        sa.select(starts.c.experiment_id, a.c.contact_id, a.c.properties)
        .select_from(a.join(starts, starts.c.contact_id == a.c.contact_id))
        .where(a.c.name == ORDER_EVENT, a.c.ts > starts.c.at, a.c.ts <= starts.c.at + window_s)
    )
    spent: dict[tuple[str, str], float] = {}
    for exp_id, cid, properties in orders:
        props = properties if isinstance(properties, Mapping) else {}
        spent[(exp_id, cid)] = spent.get((exp_id, cid), 0.0) + order_amount(props)
    for (exp_id, cid), (variant, at, lifetime) in first.items():
        arm = out.setdefault(exp_id, {}).setdefault(variant, ArmValue())
        value = spent.get((exp_id, cid), 0.0)
        arm.contacts += 1
        arm.matured += at + window_s <= now
        arm.revenue += value
        arm.revenue_sq += value * value
        arm.lifetime += lifetime
    return out


def describe_arm(arm: ArmValue, holdout: ArmValue | None, is_holdout: bool) -> dict[str, Any]:
    """The wire form of one arm's value figures (``experiments.results``)."""
    mean = mean_interval(arm)
    row: dict[str, Any] = {
        "contacts": arm.contacts,
        "matured": arm.matured,
        "revenue": round(arm.revenue, 2),
        "revenue_per_contact": mean.estimate,
        "revenue_per_contact_low": mean.low,
        "revenue_per_contact_high": mean.high,
        "clv_mean": arm.lifetime / arm.contacts if arm.contacts else 0.0,
    }
    if holdout is not None and not is_holdout:
        diff = difference_interval(holdout, arm)
        if diff is not None:
            row.update(
                incremental=diff.estimate, incremental_low=diff.low, incremental_high=diff.high
            )
    return row
