"""limits.py on a ManualClock: token bucket, sliding windows, domain concurrency and rate,
adaptive throttling (cut on a deferral spike, recovery by itself) and the auto-pause watch."""

from __future__ import annotations

import math

import pytest

from engine.clock import ManualClock
from engine.deliver.limits import (
    Adaptive,
    DomainRule,
    ErrorWatch,
    Limiter,
    PauseRule,
    Rate,
    RouteLimits,
)
from engine.errors import ConfigError


def test_route_token_bucket_allows_a_burst_then_the_rate() -> None:
    clock = ManualClock()
    limiter = Limiter(RouteLimits(rate=Rate(per_second=2)), clock)
    assert [limiter.acquire(f"d{i}.test") for i in range(2)] == [0.0, 0.0]  # burst = 2
    assert limiter.acquire("d2.test") == pytest.approx(0.5)
    clock.advance(0.25)
    assert limiter.acquire("d2.test") == pytest.approx(0.25)
    clock.advance(0.25)
    assert limiter.acquire("d2.test") == 0.0
    assert limiter.acquire("d3.test") == pytest.approx(0.5)


def test_explicit_burst_of_one_spaces_every_transaction() -> None:
    clock = ManualClock()
    limiter = Limiter(RouteLimits(rate=Rate(per_second=10, burst=1)), clock)
    assert limiter.acquire("a.test") == 0.0
    assert limiter.acquire("b.test") == pytest.approx(0.1)


def test_sliding_minute_and_hour_windows() -> None:
    clock = ManualClock()
    limiter = Limiter(RouteLimits(rate=Rate(per_minute=3, per_hour=4)), clock)
    for _ in range(3):
        assert limiter.acquire("a.test") == 0.0
        clock.advance(10)
    # t=30: three in the last minute, the first at t=0 leaves the window at t=60.
    assert limiter.acquire("a.test") == pytest.approx(30)
    clock.advance(30)
    assert limiter.acquire("a.test") == 0.0  # the fourth this hour
    clock.advance(60)
    assert limiter.acquire("a.test") == pytest.approx(3600 - 120)  # the hour is full
    state = limiter.snapshot()
    assert state["last_minute"] == 0 and state["last_hour"] == 4


def test_domain_concurrency_blocks_only_that_domain_until_released() -> None:
    clock = ManualClock()
    limits = RouteLimits(domain_concurrency=5, domains={"gmail.com": DomainRule(concurrency=2)})
    limiter = Limiter(limits, clock)
    assert limiter.acquire("gmail.com") == 0.0
    assert limiter.acquire("gmail.com") == 0.0
    assert limiter.acquire("gmail.com") == math.inf
    for _ in range(5):
        assert limiter.acquire("outlook.com") == 0.0  # the route default: 5
    assert limiter.acquire("outlook.com") == math.inf
    limiter.release("gmail.com")
    assert limiter.acquire("gmail.com") == 0.0
    assert limiter.snapshot()["domains"]["gmail.com"]["active"] == 2


def test_domain_rate_rule_and_default() -> None:
    clock = ManualClock()
    limits = RouteLimits(
        domain_rate=Rate(per_second=1),
        domains={"gmail.com": DomainRule(rate=Rate(per_second=4, burst=1))},
    )
    limiter = Limiter(limits, clock)
    assert limiter.acquire("gmail.com") == 0.0
    assert limiter.acquire("gmail.com") == pytest.approx(0.25)
    assert limiter.acquire("other.test") == 0.0
    assert limiter.acquire("other.test") == pytest.approx(1.0)


def test_set_limits_live_keeps_transactions_in_progress() -> None:
    clock = ManualClock()
    limiter = Limiter(RouteLimits(), clock)
    for _ in range(3):
        assert limiter.acquire("gmail.com") == 0.0
    limiter.set_limits(RouteLimits(domain_concurrency=2, rate=Rate(per_second=100)))
    assert limiter.acquire("gmail.com") == math.inf  # 3 still running
    limiter.release("gmail.com")
    limiter.release("gmail.com")
    assert limiter.acquire("gmail.com") == 0.0
    assert limiter.snapshot()["limits"]["domain_concurrency"] == 2


def test_deferral_spike_cuts_the_domain_rate_which_recovers_by_itself() -> None:
    clock = ManualClock()
    rule = Adaptive(window=60, min_deferrals=3, ratio=0.5, decrease=0.5, increase=0.25)
    limits = RouteLimits(domains={"slow.test": DomainRule(rate=Rate(per_second=8))})
    limiter = Limiter(limits, clock, rule)
    assert not limiter.record("slow.test", deferred=False)
    assert not limiter.record("slow.test", deferred=True)
    assert not limiter.record("slow.test", deferred=True)
    assert limiter.record("slow.test", deferred=True)  # 3 of 4 deferred: cut
    assert limiter.throttle_factor("slow.test") == 0.5
    assert limiter.snapshot()["domains"]["slow.test"]["per_second"] == 4
    assert limiter.throttle_factor("fast.test") == 1.0  # other domains untouched
    # The window started over: one more deferral is not a new spike.
    assert not limiter.record("slow.test", deferred=True)
    for _ in range(2):
        limiter.record("slow.test", deferred=True)
    assert limiter.throttle_factor("slow.test") == 0.25
    clock.advance(30)
    assert limiter.throttle_factor("slow.test") == 0.5  # +0.25 per recover_every
    clock.advance(90)
    assert limiter.throttle_factor("slow.test") == 1.0
    assert limiter.snapshot()["domains"]["slow.test"]["per_second"] == 8


def test_a_domain_without_a_rate_is_throttled_relative_to_what_it_got() -> None:
    clock = ManualClock()
    rule = Adaptive(window=10, min_deferrals=5, ratio=0.5, decrease=0.5)
    limiter = Limiter(RouteLimits(), clock, rule)
    for _ in range(10):  # 10 replies in 5 s, all deferred: it was getting ~2/s
        clock.advance(0.5)
        if limiter.record("busy.test", deferred=True):
            break
    assert limiter.throttle_factor("busy.test") == 0.5
    assert limiter.acquire("busy.test") == 0.0
    wait = limiter.acquire("busy.test")
    assert 0 < wait <= 1.0  # now held to about 1/s
    assert limiter.acquire("other.test") == 0.0


def test_throttling_can_be_turned_off() -> None:
    limiter = Limiter(RouteLimits(), ManualClock(), Adaptive(enabled=False, min_deferrals=1))
    assert not any(limiter.record("a.test", deferred=True) for _ in range(20))


def test_error_watch_needs_a_minimum_sample_and_forgets_old_errors() -> None:
    clock = ManualClock()
    watch = ErrorWatch(PauseRule(error_rate=0.5, window=60, min_sample=4), clock)
    assert watch.record(error=True) is None
    assert watch.record(error=True) is None
    assert watch.record(error=True) is None  # 3 of 3, but fewer than 4 attempts
    clock.advance(61)  # those left the window
    assert watch.record(error=True) is None
    assert watch.record(error=False) is None
    assert watch.record(error=False) is None
    reason = watch.record(error=True)  # 2 of 4
    assert reason is not None and "50%" in reason and "2 of 4" in reason
    watch.reset()
    assert watch.rate() == (0, 0)


def test_error_watch_off_at_zero() -> None:
    watch = ErrorWatch(PauseRule(error_rate=0, min_sample=1), ManualClock())
    assert watch.record(error=True) is None


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Rate(per_second=-1), "per_second"),
        (lambda: Rate(per_minute=-5), "per_minute"),
        (lambda: RouteLimits(domain_concurrency=-1), "domain_concurrency"),
        (lambda: DomainRule(concurrency=-2), "concurrency"),
        (lambda: Adaptive(decrease=1.5), "decrease"),
        (lambda: PauseRule(error_rate=2), "pause_error_rate"),
        (lambda: PauseRule(min_sample=0), "pause_min_sample"),
    ],
)
def test_bad_limits_are_config_errors(make: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make()  # type: ignore[operator]
