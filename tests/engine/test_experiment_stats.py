"""The experiment statistics on simulated traffic with known true rates (seeded, pure).

Each run draws conversions per exposure for every arm and looks at the results after every
batch of exposures, as the console does when it is watched continuously.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine.experiments.stats import ALPHA, decide, difference_cs, wilson

RUNS = 1000
LOOK_EVERY = 50
EXPOSURES = 3000  # per arm


def simulate(rates: list[float], runs: int, seed: int) -> np.ndarray:
    """Cumulative conversions per run, arm and look: shape (runs, arms, looks)."""
    rng = np.random.default_rng(seed)
    looks = EXPOSURES // LOOK_EVERY
    draws = rng.binomial(LOOK_EVERY, rates, size=(runs, looks, len(rates)))
    return np.cumsum(draws, axis=1).transpose(0, 2, 1)


@pytest.mark.parametrize(("rate", "arms"), [(0.10, 2), (0.03, 2), (0.10, 3)])
def test_watched_continuously_a_a_tests_declare_a_winner_at_most_alpha_of_the_time(
    rate: float, arms: int
) -> None:
    conversions = simulate([rate] * arms, RUNS, seed=7 + arms)
    false_winners = 0
    for run in conversions:
        for look in range(run.shape[1]):
            n = (look + 1) * LOOK_EVERY
            decision = decide({f"v{a}": (int(run[a, look]), n) for a in range(arms)})
            if decision.state == "decided":
                false_winners += 1
                break
    # At most alpha, with room for the simulation's own error (3 standard errors).
    assert false_winners / RUNS <= ALPHA + 3 * (ALPHA * (1 - ALPHA) / RUNS) ** 0.5


def test_a_real_difference_is_found_and_the_better_arm_wins() -> None:
    conversions = simulate([0.10, 0.14], 200, seed=11)
    winners: list[str | None] = []
    for run in conversions:
        winner = None
        for look in range(run.shape[1]):
            n = (look + 1) * LOOK_EVERY
            decision = decide({"a": (int(run[0, look]), n), "b": (int(run[1, look]), n)})
            if decision.state == "decided":
                winner = decision.winner
                break
        winners.append(winner)
    assert winners.count("b") >= 0.8 * len(winners)
    assert winners.count("a") <= 0.02 * len(winners)


def test_the_confidence_sequence_covers_the_true_difference_at_all_looks_at_once() -> None:
    truth = (0.05, 0.08)
    conversions = simulate(list(truth), RUNS, seed=5)
    missed = 0
    for run in conversions:
        for look in range(run.shape[1]):
            n = (look + 1) * LOOK_EVERY
            cs = difference_cs(int(run[0, look]), n, int(run[1, look]), n)
            if not cs.low <= truth[1] - truth[0] <= cs.high:
                missed += 1
                break
    assert missed / RUNS <= ALPHA + 3 * (ALPHA * (1 - ALPHA) / RUNS) ** 0.5


@pytest.mark.parametrize("rate", [0.02, 0.1, 0.4])
def test_each_arms_estimate_lands_within_its_interval_about_95_percent_of_the_time(
    rate: float,
) -> None:
    rng = np.random.default_rng(3)
    n = 2000
    hits = rng.binomial(n, rate, size=RUNS)
    covered = 0
    for x in hits:
        interval = wilson(int(x), n)
        assert interval.low <= interval.estimate <= interval.high
        covered += interval.low <= rate <= interval.high
    assert 0.93 <= covered / RUNS <= 0.97


def test_too_few_exposures_decide_nothing_and_edges_are_sane() -> None:
    assert decide({"a": (0, 10), "b": (10, 10)}).state == "collecting"
    assert decide({"a": (0, 500)}).state == "running"
    assert decide({"a": (0, 1000), "b": (300, 1000)}).winner == "b"
    assert wilson(0, 0) == wilson(0, 0)  # no exposures: the whole range
    assert (wilson(0, 0).low, wilson(0, 0).high) == (0.0, 1.0)
    cs = difference_cs(0, 200, 0, 200)
    assert cs.low < 0 < cs.high  # nothing seen: zero stays possible
