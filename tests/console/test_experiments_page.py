"""The Experiments page: the empty state against a real engine, then real results.

The filled page shows what ``experiment_results`` computes over a real store with simulated
traffic of known true rates (a: 10%, b: 16%, holdout: 6%), as the engine's verb returns it,
with orders after exposure of known true revenue per contact (8, 12.8 and 4.8: the rate times
an exponential amount of mean 80) for the order value table.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from console.main_window import MainWindow
from console.pages.experiments import ExperimentsPage
from engine.experiments.model import Experiment, Variant
from engine.experiments.results import experiment_results
from engine.store import open_store, schema
from tests.console.conftest import run, save_screenshot, wait_until

EXPERIMENT = Experiment(
    id="cart.remind",
    workflow_id="abandoned-cart",
    step_id="remind",
    variants=(Variant("a", 1.0), Variant("b", 1.0)),
    holdout=0.1,
    promote=True,
)
TRUE_RATES = {"a": 0.10, "b": 0.16, "holdout": 0.06}
MEAN_ORDER = 80.0


def simulated_results(tmp: Path) -> list[dict[str, object]]:
    store = open_store(f"sqlite:///{tmp / 'sim.sqlite3'}")
    rng = np.random.default_rng(1)
    rows, contacts, orders = [], [], []
    for arm, n in (("a", 1800), ("b", 1800), ("holdout", 400)):
        for k in range(n):
            converted = bool(rng.random() < TRUE_RATES[arm])
            earlier = float(rng.exponential(MEAN_ORDER)) if rng.random() < 0.5 else 0.0
            contacts.append(
                {"id": f"c-{arm}-{k}", "traits": {}, "consent": {}, "first_seen_at": 0.0,
                 "last_seen_at": 0.0, "updated_at": 0.0, "lifetime_value": earlier}
            )  # fmt: skip
            if converted:
                orders.append(
                    {"contact_id": f"c-{arm}-{k}", "name": "Order Completed",
                     "properties": {"total": float(rng.exponential(MEAN_ORDER))},
                     "message_id": f"o-{arm}-{k}", "ts": 2.0}
                )  # fmt: skip
            rows.append(
                {
                    "id": f"{arm}-{k}", "experiment_id": EXPERIMENT.id,
                    "workflow_id": EXPERIMENT.workflow_id, "step_id": "remind", "variant": arm,
                    "contact_id": f"c-{arm}-{k}", "enrollment_id": f"e-{arm}-{k}",
                    "intent_id": None, "exposed_at": 1.0,
                    "converted_at": 2.0 if converted else None,
                    "revenue": 30.0 if converted else None,
                }
            )  # fmt: skip
    try:
        with store.begin() as conn:
            conn.execute(schema.experiment_exposures.insert(), rows)
            conn.execute(schema.contacts.insert(), contacts)
            conn.execute(schema.activity.insert(), orders)
        return experiment_results(store, [EXPERIMENT])
    finally:
        store.dispose()


def test_experiments_page_empty_then_with_results(
    qloop: asyncio.AbstractEventLoop, console: MainWindow, tmp_path: Path
) -> None:
    page = console.show_page("experiments")
    assert isinstance(page, ExperimentsPage)

    async def scenario() -> None:
        # The module's engine runs the starter workflows: no experiments, the teaching state.
        await wait_until(lambda: page.freshness.text() != "no data yet", timeout=15)
        assert page.states.currentWidget() is page.empty
        save_screenshot(console, "experiments-empty")
        # The order value window goes to the engine with the request, and it accepts it.
        page.value_window.setCurrentIndex(page.value_window.findData("7d"))
        assert page.results_args() == {"value_window": "7d"}
        answer = await page.client.request("experiments.results", page.results_args())
        assert answer == {"experiments": []}
        page.value_window.setCurrentIndex(page.value_window.findData("30d"))
        await wait_until(lambda: page._list_op is not None and page._list_op.done(), timeout=10)

        page.page_hidden()  # keep the engine's answers from replacing the simulated results
        results = simulated_results(tmp_path)
        page.set_results(results)  # type: ignore[arg-type]
        assert page.states.currentWidget() is page.splitter
        [exp] = page.experiments
        arms = {a["variant"]: a for a in exp["variants"]}
        for row in arms.values():  # coverage itself: tests/engine/test_experiment_stats.py
            assert row["rate"] == row["conversions"] / row["exposed"]
            assert row["rate_low"] < row["rate"] < row["rate_high"]
        assert exp["state"] == "decided" and exp["winner"] == "b"
        assert page.decision.text().startswith("winner found")
        assert page.arms.model().index(0, 0).data() == "a"
        assert "pt" in page.arms.model().index(1, 5).data()
        # Order value: each arm's interval holds its true revenue per contact, and b's lift.
        for arm, row in arms.items():
            value = row["value"]
            assert value["contacts"] == value["matured"] == row["exposed"]
            truth = TRUE_RATES[arm] * MEAN_ORDER
            assert value["revenue_per_contact_low"] < truth < value["revenue_per_contact_high"]
        lift = arms["b"]["value"]
        truth = (TRUE_RATES["b"] - TRUE_RATES["holdout"]) * MEAN_ORDER
        assert lift["incremental_low"] < truth < lift["incremental_high"]
        assert lift["incremental_low"] > 0
        model = page.values.model()
        assert [model.index(r, 0).data() for r in range(3)] == ["a", "b", "holdout"]
        assert model.index(2, 4).data() == "baseline"
        assert model.index(1, 4).data().startswith(f"{lift['incremental']:+,.2f}")
        assert "the 30 days after its first exposure" in page.value_note.text()
        page.arms.select_ids(["b"])
        assert page.promote_button.isEnabled()
        page.arms.select_ids(["holdout"])
        assert not page.promote_button.isEnabled()
        page.arms.select_ids(["b"])
        await asyncio.sleep(0.3)  # let the layout settle before the grab
        save_screenshot(console, "experiments")

    run(qloop, scenario(), timeout=60)
