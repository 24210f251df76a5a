"""Order value per experiment arm against the holdout: exact sums from the store (first
exposure, window edges, orders before exposure left out), and on simulated contacts with known
true revenue per contact the estimates and intervals land where they should."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import sqlalchemy as sa

from engine.experiments.model import HOLDOUT, Experiment, Variant
from engine.experiments.results import experiment_results
from engine.experiments.value import ArmValue, difference_interval, mean_interval
from engine.store import Store, schema

DAY = 86_400.0
T0 = 1_700_000_000.0
EXP = Experiment("shop.remind", "shop", "remind", (Variant("a", 1), Variant("b", 1)), 0.2)
_ids = itertools.count(1)


def contact(cid: str, lifetime: float = 0.0) -> dict[str, object]:
    return {"id": cid, "traits": {}, "consent": {}, "first_seen_at": T0, "last_seen_at": T0,
            "updated_at": T0, "lifetime_value": lifetime}  # fmt: skip


def exposure(cid: str, arm: str, at: float, experiment: str = EXP.id) -> dict[str, object]:
    n = next(_ids)
    return {"id": f"x{n}", "experiment_id": experiment, "workflow_id": "shop",
            "step_id": "remind", "variant": arm, "contact_id": cid, "enrollment_id": f"e{n}",
            "exposed_at": at}  # fmt: skip


def order(cid: str, at: float, **amount: float) -> dict[str, object]:
    return {"contact_id": cid, "name": "Order Completed", "properties": amount,
            "message_id": f"m{next(_ids)}", "ts": at}  # fmt: skip


def arms(store: Store, window: float = 7 * DAY, now: float = T0 + 30 * DAY) -> dict[str, dict]:
    [result] = experiment_results(store, [EXP], value_window_s=window, now=now)
    assert result["value_window_s"] == window
    return {row["variant"]: row["value"] for row in result["variants"]}


def test_revenue_after_first_exposure_within_the_window_exactly(any_store: Store) -> None:
    with any_store.begin() as conn:
        conn.execute(
            schema.contacts.insert(),
            [contact("ann", 500), contact("bob", 40), contact("cy", 0), contact("dee", 90)],
        )
        conn.execute(
            schema.experiment_exposures.insert(),
            [
                exposure("ann", "a", T0),
                exposure("ann", "a", T0 + 3 * DAY),  # a later enrollment: the first one counts
                exposure("bob", "a", T0 + DAY),
                exposure("bob", "b", T0 + 2 * DAY),  # after a promotion: keeps arm a
                exposure("cy", "b", T0),
                exposure("dee", HOLDOUT, T0),
                exposure("dee", "a", T0, experiment="other.exp"),  # another experiment
            ],
        )
        conn.execute(
            schema.activity.insert(),
            [
                order("ann", T0 - DAY, total=400),  # before exposure: lifetime value only
                order("ann", T0 + DAY, total=60),
                order("ann", T0 + 7 * DAY, revenue=40, total=99),  # the window's last moment
                order("ann", T0 + 7 * DAY + 1, total=1000),  # after the window
                order("bob", T0 + 2 * DAY, value=40),
                order("dee", T0 + 6 * DAY, total=90),
                {**order("dee", T0 + DAY, total=5), "name": "Product Viewed"},
            ],
        )
    found = arms(any_store, now=T0 + 7.5 * DAY)
    a, b, hold = found["a"], found["b"], found[HOLDOUT]
    # bob, exposed at T0 + 1 d, has not had the whole window yet
    assert (a["contacts"], a["revenue"], a["matured"]) == (2, 140.0, 1)
    assert a["revenue_per_contact"] == 70.0
    assert a["clv_mean"] == 270.0
    assert (b["contacts"], b["revenue"], b["revenue_per_contact"]) == (1, 0.0, 0.0)
    assert (hold["contacts"], hold["revenue"], hold["clv_mean"]) == (1, 90.0, 90.0)
    assert "incremental" not in a  # one holdout contact: no interval for the difference
    sd = np.std([100.0, 40.0], ddof=1)
    assert a["revenue_per_contact_high"] - 70.0 == pytest.approx(1.959964 * sd / np.sqrt(2))
    # A one-day window: ann's order and bob's, each exactly a day after its first exposure.
    short = arms(any_store, window=DAY)
    assert short["a"]["revenue"] == 100.0 and short[HOLDOUT]["revenue"] == 0.0
    assert arms(any_store, window=DAY - 1)["a"]["revenue"] == 0.0


def test_estimates_land_within_their_intervals_on_simulated_contacts(any_store: Store) -> None:
    """Known truth: a contact buys within the window with probability p_arm, spending an
    exponential amount of mean 80, so the true revenue per contact is 80 p."""
    rng = np.random.default_rng(11)
    truth = {"a": 80 * 0.30, "b": 80 * 0.22, HOLDOUT: 80 * 0.15}
    probability = {"a": 0.30, "b": 0.22, HOLDOUT: 0.15}
    contacts, exposures, orders = [], [], []
    for arm, n in (("a", 1200), ("b", 1200), (HOLDOUT, 600)):
        for i in range(n):
            cid = f"{arm}-{i}"
            at = T0 + rng.uniform(0, DAY)
            contacts.append(contact(cid))
            exposures.append(exposure(cid, arm, at))
            if rng.random() < probability[arm]:
                orders.append(order(cid, at + rng.uniform(1, 6 * DAY), total=rng.exponential(80)))
            orders.append(order(cid, at - DAY, total=rng.exponential(80)))  # before: ignored
    with any_store.begin() as conn:
        conn.execute(schema.contacts.insert(), contacts)
        conn.execute(schema.experiment_exposures.insert(), exposures)
        conn.execute(schema.activity.insert(), orders)
    found = arms(any_store)
    for arm, true_mean in truth.items():
        row = found[arm]
        assert row["matured"] == row["contacts"]
        assert row["revenue_per_contact_low"] < true_mean < row["revenue_per_contact_high"]
    for arm in ("a", "b"):
        row = found[arm]
        true_lift = truth[arm] - truth[HOLDOUT]
        assert row["incremental_low"] < true_lift < row["incremental_high"]
    assert found["a"]["incremental_low"] > 0  # a real lift of 12 per contact is seen


def test_the_intervals_cover_the_truth_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(5)
    runs, covered_mean, covered_lift = 400, 0, 0
    for _ in range(runs):
        arms = {}
        for name, p, n in (("a", 0.25, 400), ("h", 0.15, 300)):
            spent = np.where(rng.random(n) < p, rng.exponential(80, n), 0.0)
            arms[name] = ArmValue(
                contacts=n, revenue=float(spent.sum()), revenue_sq=float((spent**2).sum())
            )
        mean = mean_interval(arms["a"])
        covered_mean += mean.low < 80 * 0.25 < mean.high
        lift = difference_interval(arms["h"], arms["a"])
        assert lift is not None
        covered_lift += lift.low < 80 * 0.10 < lift.high
    assert 0.92 <= covered_mean / runs <= 0.98
    assert 0.92 <= covered_lift / runs <= 0.98


def test_no_contacts_give_zeros_not_errors(any_store: Store) -> None:
    found = arms(any_store)
    assert found["a"]["contacts"] == 0 and found["a"]["revenue_per_contact"] == 0.0
    assert difference_interval(ArmValue(), ArmValue()) is None
    with any_store.begin() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.activity)).scalar() == 0
