"""Deliver-stage tuning and the rules that turn an SMTP result into an intent outcome."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from engine.deliver.limits import Adaptive, PauseRule
from engine.deliver.model import Reply
from engine.errors import ConfigError

if TYPE_CHECKING:
    from engine.config import DeliverySettings

# RFC 3463 codes that say the address itself is bad: suppress it for good.
# (5.1.7/5.1.8 are about our sender; 5.2.x mailbox states can be temporary in practice.)
HARD_BOUNCE_CODES = frozenset({"5.1.0", "5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10"})


@dataclass(frozen=True)
class DeliveryTuning:
    """Knobs of the deliver stage; the defaults suit one node on two cores.

    Retries after a 4xx: ``retry_first`` seconds, doubling up to ``retry_max``, each with
    +-``retry_jitter`` (a fraction) so a relay that was down does not get every retry at once.
    After ``max_attempts`` attempts (replies or connections lost mid-transaction) an intent
    ``failed``: that also stops a message that makes the relay drop the connection every time.
    A 4xx whose next retry would fall more than ``retry_lifetime`` seconds after the event was
    received makes the intent ``expired`` instead (Postfix's maximal_queue_lifetime).
    """

    lease_seconds: float = 60.0  # a claim's lease; renewed while the node holds the intent
    renew_every: float = 15.0  # lease renewal and expired-lease recovery cadence
    poll_interval: float = 1.0  # look for due intents (retries, missed notifies, other nodes)
    claim_batch: int = 100  # intents per claim transaction
    max_inflight: int = 256  # claimed and not yet finished, per service (rendered, queued)
    retry_first: float = 300.0
    retry_max: float = 3600.0
    retry_jitter: float = 0.2
    max_attempts: int = 12
    retry_lifetime: float = 432_000.0  # 5 days
    requeue_first: float = 1.0  # connection lost before the dot: retry soon, with backoff
    requeue_max: float = 60.0
    route_backoff_first: float = 1.0  # relay unreachable: hand intents back this long
    route_backoff_max: float = 60.0
    idle_ping_after: float = 10.0  # NOOP a connection idle this long before using it
    idle_close_after: float = 120.0  # QUIT a connection idle this long
    drain_timeout: float = 30.0  # stop(): how long in-flight transactions may take to finish
    pause_recheck: float = 10.0  # a paused route hands intents back for this long
    presence_interval: float = 1.0  # deliver nodes announce themselves this often (presence)
    presence_ttl: float = 3.0  # a node not heard from this long is dropped from the shares
    throttle: Adaptive = field(default_factory=Adaptive)  # per-domain adaptive throttling
    pause: PauseRule = field(default_factory=PauseRule)  # route auto-pause

    def __post_init__(self) -> None:
        for name in (
            "retry_first",
            "retry_max",
            "retry_lifetime",
            "requeue_first",
            "requeue_max",
            "route_backoff_first",
            "route_backoff_max",
            "lease_seconds",
            "pause_recheck",
            "presence_interval",
        ):
            if not getattr(self, name) > 0:
                raise ConfigError(f"delivery.{name} must be positive, got {getattr(self, name)}")
        if not self.presence_ttl >= 2 * self.presence_interval:
            raise ConfigError(
                f"delivery.presence_ttl must be at least twice presence_interval "
                f"({self.presence_interval:g} s), got {self.presence_ttl:g}: one late "
                "announcement would drop a live node"
            )
        if not 0 <= self.retry_jitter < 1:
            raise ConfigError(f"delivery.retry_jitter must be in [0, 1), got {self.retry_jitter}")
        for name in ("max_attempts", "claim_batch", "max_inflight"):
            if getattr(self, name) < 1:
                raise ConfigError(f"delivery.{name} must be at least 1, got {getattr(self, name)}")

    @classmethod
    def from_settings(cls, delivery: DeliverySettings) -> DeliveryTuning:
        """The tuning ``[delivery]`` describes (the rest keeps its defaults)."""
        own = {f.name for f in dataclasses.fields(cls)}
        values = {
            k: v for k, v in dataclasses.asdict(delivery).items() if k in own and k != "throttle"
        }
        try:
            throttle = Adaptive(
                enabled=delivery.throttle,
                window=delivery.throttle_window,
                min_deferrals=delivery.throttle_min_deferrals,
                ratio=delivery.throttle_ratio,
                decrease=delivery.throttle_decrease,
                floor=delivery.throttle_floor,
                increase=delivery.throttle_increase,
                recover_every=delivery.throttle_recover_every,
            )
            pause = PauseRule(
                error_rate=delivery.pause_error_rate,
                window=delivery.pause_window,
                min_sample=delivery.pause_min_sample,
            )
        except ConfigError as exc:
            raise ConfigError(f"delivery: {exc}") from None
        return cls(**values, throttle=throttle, pause=pause)


def retry_delay(attempts: int, tuning: DeliveryTuning, rng: random.Random) -> float:
    """Seconds until the next try after ``attempts`` deferred attempts (1 for the first)."""
    base = min(tuning.retry_max, tuning.retry_first * 2.0 ** max(0, attempts - 1))
    jitter = tuning.retry_jitter
    return base * rng.uniform(1 - jitter, 1 + jitter)


def requeue_delay(attempts: int, tuning: DeliveryTuning) -> float:
    """Seconds before resending after the connection was lost before the final dot."""
    return min(tuning.requeue_max, tuning.requeue_first * 2.0 ** max(0, attempts - 1))


def too_many_recipients(reply: Reply) -> bool:
    """452/552 "too many recipients" (RFC 5321 4.5.3.1.10): temporary whatever the code says."""
    if reply.code not in (452, 552):
        return False
    return reply.enhanced in ("4.5.3", "5.5.3") or "too many recipients" in reply.text.lower()


def is_hard_bounce(reply: Reply) -> bool:
    """A permanent reply that says the address does not exist (suppress it)."""
    return reply.permanent and reply.enhanced in HARD_BOUNCE_CODES
