"""Deliver-stage tuning and the rules that turn an SMTP result into an intent outcome."""

from __future__ import annotations

import random
from dataclasses import dataclass

from engine.deliver.model import Reply

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
    requeue_first: float = 1.0  # connection lost before the dot: retry soon, with backoff
    requeue_max: float = 60.0
    route_backoff_first: float = 1.0  # relay unreachable: hand intents back this long
    route_backoff_max: float = 60.0
    idle_ping_after: float = 10.0  # NOOP a connection idle this long before using it
    idle_close_after: float = 120.0  # QUIT a connection idle this long
    drain_timeout: float = 30.0  # stop(): how long in-flight transactions may take to finish


def retry_delay(attempts: int, tuning: DeliveryTuning, rng: random.Random) -> float:
    """Seconds until the next try after ``attempts`` deferred attempts (1 for the first)."""
    base = min(tuning.retry_max, tuning.retry_first * 2.0 ** max(0, attempts - 1))
    jitter = tuning.retry_jitter
    return base * rng.uniform(1 - jitter, 1 + jitter)


def requeue_delay(attempts: int, tuning: DeliveryTuning) -> float:
    """Seconds before resending after the connection was lost before the final dot."""
    return min(tuning.requeue_max, tuning.requeue_first * 2.0 ** max(0, attempts - 1))


def is_hard_bounce(reply: Reply) -> bool:
    """A permanent reply that says the address does not exist (suppress it)."""
    return reply.permanent and reply.enhanced in HARD_BOUNCE_CODES
