"""The rules that turn what happened to a message into the intent's outcome (pure functions).

- 2xx to the final dot: ``sent``.
- No reply, final dot written: ``uncertain`` (it may have been delivered; never resent).
- No reply, final dot not written: ``queued`` again soon (it cannot have been delivered).
- 5xx: ``bounced``; an RFC 3463 "bad address" code also suppresses the address. A 552 "too
  many recipients" is temporary (RFC 5321 4.5.3.1.10), like 452.
- 4xx (or a reply that makes no sense where it came): ``deferred`` with backoff.
- After ``max_attempts`` attempts: ``failed``; a retry that would come later than
  ``retry_lifetime`` after the event: ``expired``.
"""

from __future__ import annotations

import random

from engine.deliver.model import (
    BOUNCED,
    DEFERRED,
    EXPIRED,
    FAILED,
    QUEUED,
    SENT,
    UNCERTAIN,
    ClaimedIntent,
    Job,
    Outcome,
)
from engine.deliver.policy import (
    DeliveryTuning,
    is_hard_bounce,
    requeue_delay,
    retry_delay,
    too_many_recipients,
)
from engine.deliver.smtp import TransactionResult


def after_transaction(
    job: Job, result: TransactionResult, now: float, tuning: DeliveryTuning, rng: random.Random
) -> Outcome:
    """The outcome of one transaction that ran (``result.aborted`` is the caller's business)."""
    reply = result.reply
    attempts = job.intent.attempts + 1
    if result.delivered:
        assert reply is not None
        return attempted(job, SENT, str(reply), now, accepted=True)
    if reply is None and result.dot_written:
        return attempted(job, UNCERTAIN, f"uncertain: {result.error} after the final dot", now)
    if reply is None:
        reason = f"connection lost before the final dot: {result.error}"
        return retry_or_fail(job, now, reason, now + requeue_delay(attempts, tuning), tuning)
    if reply.permanent and not too_many_recipients(reply):
        outcome = attempted(job, BOUNCED, str(reply), now)
        if is_hard_bounce(reply):
            outcome.suppress_address = job.intent.to_addr
        return outcome
    at = now + retry_delay(attempts, tuning, rng)
    if at > job.intent.received_at + tuning.retry_lifetime:
        lifetime = f"{tuning.retry_lifetime / 3600:g} h"
        reason = f"expired: still deferred after {attempts} attempts and {lifetime}; last: {reply}"
        return attempted(job, EXPIRED, reason, now)
    return retry_or_fail(job, now, str(reply), at, tuning, status=DEFERRED)


def after_crash(job: Job, error: BaseException, now: float, *, hand_back: bool) -> Outcome:
    """Sending raised or was cancelled: uncertain once the dot marker is committed (the dot
    may be out), else handed back (``hand_back``: store trouble, shutdown) or failed (a bug)."""
    if job.dot_at is not None:
        reason = f"uncertain: interrupted after the dot marker ({type(error).__name__})"
        return attempted(job, UNCERTAIN, reason, now)
    if hand_back:
        return handed_back(job.intent, f"not sent: {error or type(error).__name__}", None)
    return failed(job.intent, f"internal error: {type(error).__name__}: {error}", now)


def retry_or_fail(
    job: Job,
    now: float,
    reason: str,
    at: float,
    tuning: DeliveryTuning,
    *,
    status: str = QUEUED,
) -> Outcome:
    """``status`` (queued or deferred) until ``max_attempts`` attempts, then failed."""
    attempts = job.intent.attempts + 1
    if attempts >= tuning.max_attempts:
        return attempted(job, FAILED, f"gave up after {attempts} attempts; last: {reason}", now)
    outcome = attempted(job, status, reason, None)
    outcome.next_attempt_at = at
    outcome.counted = status != QUEUED  # resending after a lost connection is no outcome
    return outcome


def attempted(
    job: Job, status: str, reply: str, finished_at: float | None, *, accepted: bool = False
) -> Outcome:
    """The outcome of an attempt on the wire (attempts + 1, render data kept)."""
    return Outcome(
        intent_id=job.intent.id,
        workflow_id=job.intent.workflow_id,
        status=status,
        attempts=job.intent.attempts + 1,
        reply=reply,
        rendered_at=job.rendered_at,
        message_id=job.message_id,
        dot_at=job.dot_at if status in (SENT, UNCERTAIN) else None,
        accepted_at=finished_at if accepted else None,
        finished_at=finished_at,
    )


def failed(intent: ClaimedIntent, reason: str, now: float) -> Outcome:
    """Failed before any attempt (render error, unusable address, a bug)."""
    return Outcome(
        intent_id=intent.id,
        workflow_id=intent.workflow_id,
        status=FAILED,
        attempts=intent.attempts,
        reply=reason,
        finished_at=now,
    )


def handed_back(intent: ClaimedIntent, reason: str | None, retry_at: float | None) -> Outcome:
    """Back to ``queued`` untried: not an attempt and not an outcome (``retry_at`` None: now)."""
    return Outcome(
        intent_id=intent.id,
        workflow_id=intent.workflow_id,
        status=QUEUED,
        attempts=intent.attempts,
        reply=reason,
        next_attempt_at=retry_at,
        counted=False,
    )
