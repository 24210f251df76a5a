"""How fast a route may send: rate limits, per-domain concurrency, adaptive throttling, and the
error-rate watch that pauses a route. Pure state machines: no I/O, time comes from a clock.

- Route rate: a token bucket of ``per_second`` (bucket size ``burst``, default one second's
  worth, at least 1) and sliding windows: at most ``per_minute`` transactions started in any
  60 s and ``per_hour`` in any 3600 s. 0 means no limit.
- Per recipient domain: at most ``concurrency`` transactions at once and a rate of its own
  (same shape), from the route's defaults or a rule for that domain.
- Adaptive throttling (per domain, additive increase / multiplicative decrease): when, within
  ``window`` seconds, at least ``min_deferrals`` replies were 4xx and they are at least
  ``ratio`` of the replies, the domain's rate is multiplied by ``decrease`` (down to ``floor``
  of its base) and the window starts over. Every ``recover_every`` seconds without a cut the
  factor grows by ``increase`` until it is back to 1. A domain without a configured rate is
  throttled relative to the rate it was actually getting replies at when first cut.
- :class:`ErrorWatch`: a route whose share of errors over a sliding window passes a threshold
  (with a minimum number of samples) should pause itself.
- :class:`Share`: the limits are the cluster's; each deliver node enforces its share of them
  (``Limiter.in_force``), given by :mod:`engine.deliver.presence`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.errors import ConfigError

MINUTE = 60.0
HOUR = 3600.0
_MAX_IDLE_DOMAINS = 10_000  # domain states kept while idle; beyond, idle ones are dropped


class TimeSource(Protocol):
    """Anything with ``now()`` in seconds (monotonic in the engine, ManualClock in tests)."""

    def now(self) -> float: ...


@dataclass(frozen=True)
class Rate:
    """A rate limit; every 0 means "no limit" for that part."""

    per_second: float = 0.0
    per_minute: int = 0
    per_hour: int = 0
    burst: float = 0.0  # token bucket size; 0: max(1, per_second)

    def __post_init__(self) -> None:
        for name in ("per_second", "per_minute", "per_hour", "burst"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value < 0 or math.isnan(value):
                raise ConfigError(f"{name} must be 0 (no limit) or positive, got {value!r}")

    @property
    def unlimited(self) -> bool:
        return not (self.per_second or self.per_minute or self.per_hour)

    def as_dict(self) -> dict[str, float]:
        return {
            "per_second": self.per_second,
            "per_minute": self.per_minute,
            "per_hour": self.per_hour,
            "burst": self.burst,
        }


@dataclass(frozen=True)
class DomainRule:
    """Limits for one recipient domain; ``None`` parts fall back to the route's defaults."""

    concurrency: int | None = None
    rate: Rate | None = None

    def __post_init__(self) -> None:
        if self.concurrency is not None and self.concurrency < 0:
            raise ConfigError(f"concurrency must be 0 (no limit) or positive: {self.concurrency}")


@dataclass(frozen=True)
class RouteLimits:
    """Everything :class:`Limiter` enforces for one route."""

    rate: Rate = field(default_factory=Rate)
    domain_concurrency: int = 0  # per recipient domain; 0: no limit
    domain_rate: Rate = field(default_factory=Rate)  # per recipient domain, by default
    domains: Mapping[str, DomainRule] = field(default_factory=dict)  # lower-case domain -> rule

    def __post_init__(self) -> None:
        if self.domain_concurrency < 0:
            raise ConfigError(
                f"domain_concurrency must be 0 (no limit) or positive: {self.domain_concurrency}"
            )

    def for_domain(self, domain: str) -> tuple[int, Rate]:
        """(concurrency, rate) for recipients at ``domain``."""
        rule = self.domains.get(domain)
        if rule is None:
            return self.domain_concurrency, self.domain_rate
        concurrency = self.domain_concurrency if rule.concurrency is None else rule.concurrency
        return concurrency, rule.rate if rule.rate is not None else self.domain_rate

    def as_dict(self) -> dict[str, Any]:
        return {
            "rate": self.rate.as_dict(),
            "domain_concurrency": self.domain_concurrency,
            "domain_rate": self.domain_rate.as_dict(),
            "domains": {
                name: {
                    "concurrency": rule.concurrency,
                    "rate": rule.rate.as_dict() if rule.rate is not None else None,
                }
                for name, rule in sorted(self.domains.items())
            },
        }


@dataclass(frozen=True)
class Share:
    """This node's part of a route's cluster-wide limits: one of ``members`` deliver nodes
    serving the route, ``rank`` its place among them (see :mod:`engine.deliver.presence`).

    Rates (``per_second``, ``burst``) are divided by ``members``. Counts (``per_minute``,
    ``per_hour``, concurrency) are divided too, the remainder going to the lowest ranks so the
    parts add up to the limit; a count smaller than ``members`` becomes 1 per node (0 would
    mean "no limit"). ``held``: not (yet) in touch with the other nodes, so this node cannot
    know its part: it sends nothing on a limited route until it is.
    """

    members: int = 1
    rank: int = 0
    held: bool = False

    def __post_init__(self) -> None:
        if self.members < 1 or not 0 <= self.rank < self.members:
            raise ConfigError(f"share: rank {self.rank} of {self.members} members")

    @property
    def whole(self) -> bool:
        return self.members == 1 and not self.held

    def count(self, limit: int) -> int:
        if not limit or self.members == 1:
            return limit
        base, extra = divmod(limit, self.members)
        return max(1, base + (1 if self.rank < extra else 0))

    def rate(self, rate: Rate) -> Rate:
        if rate.unlimited or self.members == 1:
            return rate
        return Rate(
            per_second=rate.per_second / self.members,
            per_minute=self.count(rate.per_minute),
            per_hour=self.count(rate.per_hour),
            burst=rate.burst / self.members,
        )

    def of(self, limits: RouteLimits) -> RouteLimits:
        """The part of ``limits`` this node enforces."""
        if self.members == 1:
            return limits
        return RouteLimits(
            rate=self.rate(limits.rate),
            domain_concurrency=self.count(limits.domain_concurrency),
            domain_rate=self.rate(limits.domain_rate),
            domains={
                name: DomainRule(
                    concurrency=None if rule.concurrency is None else self.count(rule.concurrency),
                    rate=None if rule.rate is None else self.rate(rule.rate),
                )
                for name, rule in limits.domains.items()
            },
        )

    def as_dict(self) -> dict[str, Any]:
        return {"members": self.members, "rank": self.rank, "held": self.held}


def has_limits(limits: RouteLimits) -> bool:
    """Whether anything in ``limits`` is limited (then it is shared between the nodes)."""
    return bool(
        not limits.rate.unlimited
        or limits.domain_concurrency
        or not limits.domain_rate.unlimited
        or any(
            rule.concurrency or (rule.rate is not None and not rule.rate.unlimited)
            for rule in limits.domains.values()
        )
    )


@dataclass(frozen=True)
class Adaptive:
    """The adaptive throttling rule (see the module docstring); ``enabled=False`` turns it off."""

    enabled: bool = True
    window: float = 60.0
    min_deferrals: int = 5
    ratio: float = 0.3
    decrease: float = 0.5
    floor: float = 0.05
    increase: float = 0.1
    recover_every: float = 30.0

    def __post_init__(self) -> None:
        checks = (
            ("window", self.window > 0),
            ("min_deferrals", self.min_deferrals >= 1),
            ("ratio", 0 < self.ratio <= 1),
            ("decrease", 0 < self.decrease < 1),
            ("floor", 0 < self.floor <= 1),
            ("increase", 0 < self.increase <= 1),
            ("recover_every", self.recover_every > 0),
        )
        for name, ok in checks:
            if not ok:
                raise ConfigError(f"throttle {name}: out of range: {getattr(self, name)!r}")


class TokenBucket:
    """``rate`` tokens per second, at most ``capacity`` saved up; one token per transaction."""

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self._stamp = now

    def _fill(self, now: float) -> None:
        if now > self._stamp:
            self.tokens = min(self.capacity, self.tokens + (now - self._stamp) * self.rate)
        self._stamp = max(self._stamp, now)

    def delay(self, now: float) -> float:
        """Seconds until a token is there (0: now)."""
        self._fill(now)
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate

    def take(self, now: float) -> None:
        self._fill(now)
        self.tokens -= 1.0

    def reset(self, rate: float, capacity: float, now: float) -> None:
        self._fill(now)
        self.rate = rate
        self.capacity = capacity
        self.tokens = min(self.tokens, capacity)


class SlidingWindow:
    """At most ``limit`` events in any ``span`` seconds (exact: keeps each event's time)."""

    def __init__(self, span: float, limit: int) -> None:
        self.span = span
        self.limit = limit
        self._stamps: deque[float] = deque()

    def _expire(self, now: float) -> None:
        edge = now - self.span
        stamps = self._stamps
        while stamps and stamps[0] <= edge:
            stamps.popleft()

    def count(self, now: float) -> int:
        self._expire(now)
        return len(self._stamps)

    def delay(self, now: float) -> float:
        if not self.limit:
            return 0.0
        self._expire(now)
        if len(self._stamps) < self.limit:
            return 0.0
        return self._stamps[len(self._stamps) - self.limit] + self.span - now

    def take(self, now: float) -> None:
        if self.limit:  # without a limit nothing is kept (an hour at 2,500/s is 9M entries)
            self._stamps.append(now)


class RateGate:
    """A :class:`Rate` in force: its bucket and windows; ``factor`` scales ``per_second``."""

    def __init__(self, rate: Rate, now: float, factor: float = 1.0, base: float = 0.0) -> None:
        self._minute = SlidingWindow(MINUTE, 0)
        self._hour = SlidingWindow(HOUR, 0)
        self._bucket: TokenBucket | None = None
        self.rate = rate
        self.per_second = 0.0
        self.update(rate, now, factor=factor, base=base)

    def update(self, rate: Rate, now: float, *, factor: float = 1.0, base: float = 0.0) -> None:
        """New limits; the windows keep their history (so a change cannot reset a window)."""
        self.rate = rate
        self._minute.limit = rate.per_minute
        self._hour.limit = rate.per_hour
        per_second = (rate.per_second or base) * factor if factor < 1.0 else rate.per_second
        self.per_second = per_second
        if per_second <= 0:
            self._bucket = None
            return
        capacity = rate.burst or max(1.0, per_second)
        if factor < 1.0:
            capacity = min(capacity, max(1.0, per_second))  # a throttled domain gets no burst
        if self._bucket is None:
            self._bucket = TokenBucket(per_second, capacity, now)
        else:
            self._bucket.reset(per_second, capacity, now)

    @property
    def open(self) -> bool:
        """Nothing to enforce (no rate, no windows)."""
        return self._bucket is None and not self._minute.limit and not self._hour.limit

    def delay(self, now: float) -> float:
        if self.open:
            return 0.0
        wait = self._bucket.delay(now) if self._bucket is not None else 0.0
        return max(wait, self._minute.delay(now), self._hour.delay(now))

    def take(self, now: float) -> None:
        if self._bucket is not None:
            self._bucket.take(now)
        self._minute.take(now)
        self._hour.take(now)

    def counts(self, now: float) -> dict[str, int]:
        """Transactions in the windows that have a limit (others keep no history)."""
        counts = {}
        if self._minute.limit:
            counts["last_minute"] = self._minute.count(now)
        if self._hour.limit:
            counts["last_hour"] = self._hour.count(now)
        return counts


class _Domain:
    __slots__ = ("active", "base", "deferrals", "factor", "gate", "last_change", "samples")

    def __init__(self, rate: Rate, now: float) -> None:
        self.active = 0
        self.factor = 1.0
        self.base = 0.0  # per_second the factor scales, when the domain has no rate of its own
        self.gate = RateGate(rate, now)
        self.last_change = now
        self.samples: deque[tuple[float, bool]] = deque()  # (time, deferred)
        self.deferrals = 0  # deferred ones among samples (kept, not counted per reply)


class Limiter:
    """The limits of one route in force, with the state they need.

    :meth:`acquire` before a transaction (0: go, the slot is taken; else seconds to wait,
    ``inf`` until a :meth:`release`), :meth:`release` after it, :meth:`record` each reply.
    """

    def __init__(
        self,
        limits: RouteLimits,
        clock: TimeSource,
        adaptive: Adaptive | None = None,
        share: Share | None = None,
    ) -> None:
        self._clock = clock
        self.adaptive = adaptive or Adaptive()
        now = clock.now()
        self.limits = limits  # the route's limits, for the whole cluster
        self.share = share or Share()
        self._in_force = self.share.of(limits)  # this node's part of them
        self._held = self.share.held and has_limits(limits)
        self._route = RateGate(self._in_force.rate, now)
        self._domains: dict[str, _Domain] = {}

    @property
    def in_force(self) -> RouteLimits:
        """The limits this node enforces: its share of :attr:`limits`."""
        return self._in_force

    def set_limits(self, limits: RouteLimits) -> None:
        """Change the limits live; transactions in progress and window history are kept."""
        self.limits = limits
        self._refresh()

    def set_share(self, share: Share) -> None:
        """This node's part of the limits changed (a node joined or left); history is kept."""
        self.share = share
        self._refresh()

    def _refresh(self) -> None:
        now = self._clock.now()
        self._in_force = self.share.of(self.limits)
        self._held = self.share.held and has_limits(self.limits)
        self._route.update(self._in_force.rate, now)
        for name, state in self._domains.items():
            self._apply(name, state, now)

    def _apply(self, name: str, state: _Domain, now: float) -> None:
        _, rate = self._in_force.for_domain(name)
        state.gate.update(rate, now, factor=state.factor, base=state.base)

    def _state(self, domain: str, now: float) -> _Domain:
        state = self._domains.get(domain)
        if state is None:
            if len(self._domains) >= _MAX_IDLE_DOMAINS:
                self._prune()
            state = _Domain(self._in_force.for_domain(domain)[1], now)
            self._domains[domain] = state
        elif state.factor < 1.0:
            self._recover(domain, state, now)
        return state

    def _prune(self) -> None:
        for name in [n for n, s in self._domains.items() if not s.active and s.factor >= 1.0]:
            del self._domains[name]

    def acquire(self, domain: str) -> float:
        """Take a slot for one transaction to ``domain`` now (0.0), or say how long to wait
        (``inf``: until a :meth:`release` or a new share)."""
        if self._held:
            return math.inf
        now = self._clock.now()
        wait = self._route.delay(now)
        state = self._state(domain, now)
        concurrency, _ = self._in_force.for_domain(domain)
        if concurrency and state.active >= concurrency:
            return math.inf
        wait = max(wait, state.gate.delay(now))
        if wait > 0:
            return wait
        self._route.take(now)
        state.gate.take(now)
        state.active += 1
        return 0.0

    def release(self, domain: str) -> None:
        """A transaction to ``domain`` that :meth:`acquire` let through has ended."""
        state = self._domains.get(domain)
        if state is not None and state.active > 0:
            state.active -= 1

    def record(self, domain: str, *, deferred: bool) -> bool:
        """A reply from the relay for ``domain``; True when this just slowed the domain down."""
        rule = self.adaptive
        if not rule.enabled:
            return False
        now = self._clock.now()
        state = self._state(domain, now)
        samples = state.samples
        samples.append((now, deferred))
        state.deferrals += deferred
        edge = now - rule.window
        while samples and samples[0][0] <= edge:
            state.deferrals -= samples.popleft()[1]
        deferrals = state.deferrals
        if deferrals < rule.min_deferrals or deferrals < rule.ratio * len(samples):
            return False
        if state.factor >= 1.0 and not self._in_force.for_domain(domain)[1].per_second:
            first = samples[0][0]
            state.base = max(1.0, len(samples) / max(1.0, now - first))
        state.factor = max(rule.floor, state.factor * rule.decrease)
        state.last_change = now
        samples.clear()
        state.deferrals = 0
        self._apply(domain, state, now)
        return True

    def _recover(self, domain: str, state: _Domain, now: float) -> None:
        rule = self.adaptive
        steps = int((now - state.last_change) // rule.recover_every)
        if steps <= 0:
            return
        state.factor = min(1.0, state.factor + steps * rule.increase)
        state.last_change += steps * rule.recover_every
        if state.factor >= 1.0:
            state.factor = 1.0
            state.base = 0.0
        self._apply(domain, state, now)

    def throttle_factor(self, domain: str) -> float:
        """1.0, or the share of its rate the domain is held to right now."""
        return self._state(domain, self._clock.now()).factor

    def snapshot(self) -> dict[str, Any]:
        """The limits and the state for listing (active domains and throttled ones only)."""
        now = self._clock.now()
        domains: dict[str, Any] = {}
        for name, state in list(self._domains.items()):
            if state.factor < 1.0:
                self._recover(name, state, now)
            if state.active or state.factor < 1.0 or name in self.limits.domains:
                domains[name] = {
                    "active": state.active,
                    "throttle": round(state.factor, 3),
                    "per_second": state.gate.per_second,
                    **state.gate.counts(now),
                }
        return {
            "limits": self.limits.as_dict(),
            "share": self.share.as_dict(),
            "per_second": self._route.per_second,
            **self._route.counts(now),
            "domains": domains,
        }


@dataclass(frozen=True)
class PauseRule:
    """Pause the route when, over ``window`` seconds and at least ``min_sample`` attempts, the
    share of errors reaches ``error_rate`` (0 turns the watch off)."""

    error_rate: float = 0.5
    window: float = 60.0
    min_sample: int = 20

    def __post_init__(self) -> None:
        if not 0 <= self.error_rate <= 1:
            raise ConfigError(f"pause_error_rate must be between 0 and 1, got {self.error_rate}")
        if self.window <= 0:
            raise ConfigError(f"pause_window must be positive, got {self.window}")
        if self.min_sample < 1:
            raise ConfigError(f"pause_min_sample must be at least 1, got {self.min_sample}")


class ErrorWatch:
    """A sliding window of a route's attempts and whether each was an error."""

    def __init__(self, rule: PauseRule, clock: TimeSource) -> None:
        self.rule = rule
        self._clock = clock
        self._samples: deque[tuple[float, bool]] = deque()
        self._errors = 0

    def _expire(self, now: float) -> None:
        edge = now - self.rule.window
        samples = self._samples
        while samples and samples[0][0] <= edge:
            _, error = samples.popleft()
            self._errors -= error

    def record(self, *, error: bool) -> str | None:
        """One attempt; returns why the route should pause, or None."""
        rule = self.rule
        now = self._clock.now()
        self._samples.append((now, error))
        self._errors += error
        self._expire(now)
        total = len(self._samples)
        if not rule.error_rate or total < rule.min_sample:
            return None
        share = self._errors / total
        if share < rule.error_rate:
            return None
        return (
            f"error rate {share:.0%} over the last {rule.window:g} s "
            f"({self._errors} of {total} attempts) reached the threshold {rule.error_rate:.0%}"
        )

    def reset(self) -> None:
        self._samples.clear()
        self._errors = 0

    def rate(self) -> tuple[int, int]:
        """(errors, attempts) in the window now."""
        self._expire(self._clock.now())
        return self._errors, len(self._samples)
