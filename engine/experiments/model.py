"""What a workflow file says about experiments: variants of a send or wait step, the holdout.

A ``send`` step may carry::

    experiment = "cart-subject"     # optional; default "<workflow id>.<step id>"
    holdout = 10                    # percent of contacts that get nothing (0 to 50, default 0)
    promote = true                  # promote the winner automatically once decided (audited)
    variants = [
      { id = "a", weight = 1, subject = "You left something behind" },
      { id = "b", weight = 1, subject = "Still thinking it over?", template = "cart-b" },
    ]

A variant of a send step may replace ``template``, ``subject``, ``sender`` (the From address)
and ``route``. A ``wait`` step's variants each give a ``duration`` (a split on the delay).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

HOLDOUT = "holdout"  # the variant name of the group that gets nothing
MAX_HOLDOUT_PERCENT = 50.0
EXPERIMENT_KEYS = frozenset({"experiment", "holdout", "promote", "variants"})
SEND_VARIANT_KEYS = frozenset({"id", "weight", "template", "subject", "sender", "route"})
WAIT_VARIANT_KEYS = frozenset({"id", "weight", "duration"})
_ID = re.compile(r"[a-z0-9][a-z0-9_.-]{0,99}")


@dataclass(frozen=True, slots=True)
class Variant:
    """One arm: its id, its share of the non-holdout contacts, and what it changes."""

    id: str
    weight: float
    template: str | None = None
    subject: str | None = None
    sender: str | None = None
    route: str | None = None
    duration: float | None = None

    def overrides(self) -> dict[str, str]:
        """The mail's subject and sender this arm replaces (for the render context)."""
        out = {}
        if self.subject is not None:
            out["subject"] = self.subject
        if self.sender is not None:
            out["sender"] = self.sender
        return out


@dataclass(frozen=True, slots=True)
class Experiment:
    """An experiment on one step: the arms, the holdout share (0..0.5) and auto-promotion."""

    id: str
    workflow_id: str
    step_id: str
    variants: tuple[Variant, ...]
    holdout: float = 0.0
    promote: bool = False
    _total: float = field(default=0.0, repr=False, compare=False)

    def arms(self) -> tuple[str, ...]:
        """Every arm's name, the holdout last when there is one."""
        names = tuple(v.id for v in self.variants)
        return (*names, HOLDOUT) if self.holdout > 0 else names

    def variant(self, name: str) -> Variant | None:
        return next((v for v in self.variants if v.id == name), None)


def parse_experiment(
    raw: Mapping[str, Any],
    *,
    workflow_id: str,
    step_id: str,
    kind: str,
    duration: Callable[[object, str], float],
) -> Experiment | None:
    """The step's experiment, or None when it declares none; ``ValueError`` names the problem.

    ``kind`` is the step type (``send`` or ``wait``); ``duration`` parses a wait arm's delay.
    """
    where = f"step {step_id!r}"
    present = EXPERIMENT_KEYS & set(raw)
    if not present:
        return None
    if "variants" not in raw:
        if raw.get("holdout") in (None, 0):
            raise ValueError(f"{where}: {', '.join(sorted(present))} without variants")
        if kind != "send":
            raise ValueError(f"{where}: a holdout on a wait step needs variants")
    exp_id = raw.get("experiment", f"{workflow_id}.{step_id}")
    if not isinstance(exp_id, str) or not _ID.fullmatch(exp_id):
        raise ValueError(
            f"{where}: experiment must be lower-case letters, digits, '-', '_' or '.', "
            f"got {exp_id!r}"
        )
    holdout = raw.get("holdout", 0)
    if (
        not isinstance(holdout, int | float)
        or isinstance(holdout, bool)
        or not 0 <= holdout <= MAX_HOLDOUT_PERCENT
    ):
        raise ValueError(f"{where}: holdout must be a percentage from 0 to 50, got {holdout!r}")
    promote = raw.get("promote", False)
    if not isinstance(promote, bool):
        raise ValueError(f"{where}: promote must be true or false, got {promote!r}")
    variants = _variants(raw.get("variants"), where, kind, duration)
    return Experiment(
        id=exp_id,
        workflow_id=workflow_id,
        step_id=step_id,
        variants=variants,
        holdout=float(holdout) / 100.0,
        promote=promote,
        _total=sum(v.weight for v in variants),
    )


def _variants(
    raw: object, where: str, kind: str, duration: Callable[[object, str], float]
) -> tuple[Variant, ...]:
    if raw is None:
        # Only a holdout: everyone else gets the step as written.
        return (Variant("control", 1.0),)
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{where}: variants must be a list of tables")
    allowed = SEND_VARIANT_KEYS if kind == "send" else WAIT_VARIANT_KEYS
    out: list[Variant] = []
    for index, item in enumerate(raw):
        at = f"{where}.variants[{index}]"
        if not isinstance(item, Mapping):
            raise ValueError(f"{at} must be a table")
        extra = sorted(set(item) - allowed)
        if extra:
            raise ValueError(f"{at}: unknown key(s) {', '.join(extra)}")
        vid = item.get("id")
        if not isinstance(vid, str) or not _ID.fullmatch(vid) or vid == HOLDOUT:
            raise ValueError(f"{at}: id must be a short lower-case name (not 'holdout')")
        if any(v.id == vid for v in out):
            raise ValueError(f"{at}: the variant id {vid!r} is used twice")
        weight = item.get("weight", 1)
        if not isinstance(weight, int | float) or isinstance(weight, bool) or weight <= 0:
            raise ValueError(f"{at}: weight must be a positive number, got {weight!r}")
        texts = {}
        for key in ("template", "subject", "sender", "route"):
            value = item.get(key)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"{at}: {key} must be non-empty text")
            if isinstance(value, str) and any(c in value for c in "\r\n"):
                raise ValueError(f"{at}: {key} must be one line")
            texts[key] = value.strip() if isinstance(value, str) else None
        delay = None
        if kind == "wait":
            if "duration" not in item:
                raise ValueError(f"{at}: a wait variant needs a duration")
            delay = duration(item["duration"], f"{at}.duration")
        out.append(Variant(vid, float(weight), duration=delay, **texts))
    if len(out) < 2 and kind == "wait":
        raise ValueError(f"{where}: a split on the delay needs at least two variants")
    return tuple(out)
