"""Deterministic assignment: one contact, one experiment, always the same arm.

The arm comes from a hash of the experiment id and the contact id, so every node, every replay
and every later enrollment of the contact agree without storing anything first. The first
``holdout`` share of the hash range is the holdout; the rest is split by the variants' weights.
Once an experiment's winner is promoted, every contact outside the holdout gets the winner
(the holdout keeps measuring the lift of sending at all).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from engine.experiments.model import HOLDOUT, Experiment

_SCALE = float(1 << 64)


def bucket(experiment_id: str, contact_id: str) -> float:
    """A number in [0, 1), uniform over contacts, fixed per (experiment, contact)."""
    raw = f"{experiment_id}\x1f{contact_id}".encode()
    digest = hashlib.blake2b(raw, digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def assign(experiment: Experiment, contact_id: str, winner: str | None = None) -> str:
    """The arm of this contact: a variant id, or ``HOLDOUT`` (gets nothing)."""
    u = bucket(experiment.id, contact_id)
    if u < experiment.holdout:
        return HOLDOUT
    if winner is not None and experiment.variant(winner) is not None:
        return winner
    total = sum(v.weight for v in experiment.variants)
    point = (u - experiment.holdout) / (1.0 - experiment.holdout) * total
    seen = 0.0
    for variant in experiment.variants:
        seen += variant.weight
        if point < seen:
            return variant.id
    return experiment.variants[-1].id


def arm_for(
    experiment: Experiment, contact_id: str, winners: Mapping[str, str] | None = None
) -> str:
    """``assign`` with the promoted winners (experiment id -> variant id) applied."""
    return assign(experiment, contact_id, (winners or {}).get(experiment.id))
