"""Statistics for experiment results, pure functions (no I/O).

- ``wilson``: the Wilson score interval for one arm's conversion rate (a fixed-sample 95%
  interval, for reading the rate; not for deciding).
- ``difference_cs``: an always-valid confidence sequence for the difference of two conversion
  rates. It holds at every moment simultaneously, so it may be watched continuously and
  stopped at any time without inflating the error: it is the normal-mixture boundary of
  Robbins (1970) as used by the mixture sequential probability ratio test (mSPRT) of Johari,
  Koomen, Pekelis and Walsh, "Always Valid Inference: Continuous Monitoring of A/B Tests"
  (Operations Research 70(3), 2022), in the form of Howard, Ramdas, McAuliffe and Sekhon,
  "Time-uniform, nonparametric, nonasymptotic confidence sequences" (Annals of Statistics
  49(2), 2021), eq. (14), applied to the difference estimate with its estimated variance V
  (information time 1/V), which is valid asymptotically (Waudby-Smith, Arbour, Sinha, Kennedy
  and Ramdas, "Time-uniform central limit theory and asymptotic confidence sequences", Annals
  of Statistics 2024)::

      half-width = sqrt( V (V + tau^2) / tau^2 * ( 2 ln(1/alpha) + ln((V + tau^2) / V) ) )

  ``tau`` (the mixture's spread, in rate units) tunes where the sequence is tightest; any
  value keeps the guarantee.
- ``decide``: the decision rule: an arm wins when its sequence against every other arm lies
  above zero, with ``alpha`` split over those comparisons (Bonferroni), after a minimum
  number of exposures per arm (the normal approximation needs some data).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

ALPHA = 0.05
TAU = 0.02  # the mixture spread: differences of about two points of conversion rate
MIN_EXPOSURES = 100  # per arm before any decision
Z95 = 1.959963984540054


@dataclass(frozen=True, slots=True)
class Interval:
    estimate: float
    low: float
    high: float

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def wilson(successes: int, n: int, z: float = Z95) -> Interval:
    """The Wilson score interval of a proportion (n = 0: the whole range)."""
    if n <= 0:
        return Interval(0.0, 0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


def _variance(successes: int, n: int) -> float:
    # Shrunk towards 1/2 by half a success and half a failure, so that 0 of n or n of n still
    # has some variance (else the sequence would collapse to a point after a few exposures).
    p = (successes + 0.5) / (n + 1)
    return p * (1 - p) / n


def difference_cs(
    xa: int, na: int, xb: int, nb: int, *, alpha: float = ALPHA, tau: float = TAU
) -> Interval:
    """Always-valid (1 - alpha) confidence sequence for rate(b) - rate(a)."""
    if na <= 0 or nb <= 0:
        return Interval(0.0, -1.0, 1.0)
    estimate = xb / nb - xa / na
    v = _variance(xa, na) + _variance(xb, nb)
    t2 = tau * tau
    half = math.sqrt(v * (v + t2) / t2 * (2 * math.log(1 / alpha) + math.log((v + t2) / v)))
    return Interval(estimate, max(-1.0, estimate - half), min(1.0, estimate + half))


@dataclass(frozen=True, slots=True)
class Decision:
    """``collecting`` (too few exposures), ``running`` (no winner yet) or ``decided``."""

    state: str
    winner: str | None = None
    detail: str = ""


def decide(
    arms: Mapping[str, tuple[int, int]],
    *,
    alpha: float = ALPHA,
    tau: float = TAU,
    min_exposures: int = MIN_EXPOSURES,
) -> Decision:
    """The decision over ``arms`` (name -> (conversions, exposures)); the holdout is left out
    by the caller (it gets nothing: it measures lift, it cannot win)."""
    if len(arms) < 2:
        return Decision("running", detail="one arm: nothing to compare")
    short = [name for name, (_, n) in arms.items() if n < min_exposures]
    if short:
        return Decision(
            "collecting", detail=f"waiting for {min_exposures} exposures in {', '.join(short)}"
        )
    level = alpha / (len(arms) - 1)
    leader = max(arms, key=lambda name: arms[name][0] / arms[name][1])
    xb, nb = arms[leader]
    for name, (xa, na) in arms.items():
        if name == leader:
            continue
        if difference_cs(xa, na, xb, nb, alpha=level, tau=tau).low <= 0:
            return Decision("running", detail=f"{leader} is not yet surely better than {name}")
    return Decision("decided", leader, f"{leader} beats every other arm (alpha {alpha:g})")
