"""Evaluating a segment's condition tree for one contact at one moment.

Three questions over the same ``Profile``:

- ``holds`` - is the contact in the segment now;
- ``explain`` - the tree with, at each node, whether it held and the value it looked at
  (the answer to "why is X (not) in S");
- ``next_change`` - the earliest future moment at which time alone may flip an atom: an event
  leaving (or, with a timestamp ahead of now, entering) a window, a date trait crossing
  "N days ago". Membership is re-checked then, so contacts enter and leave on time.

Windows count events with ``now - within < ts <= now``: an event at ``ts`` stops counting at
``ts + within`` exactly. ``trait d before N ago`` holds from ``d + N`` on; ``after`` until then.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from engine.decide.conditions import compare, lookup
from engine.segments.model import (
    VALUE_MEASURES,
    AllOf,
    AnyOf,
    Condition,
    Consent,
    EventCount,
    InSegment,
    Not,
    OrderValue,
    PropertyFilter,
    Subscription,
    TraitAge,
    TraitCompare,
    TraitExists,
    Value,
)
from engine.segments.text import format_condition

_OPS = {"=": "eq", "!=": "ne", "<": "lt", ">": "gt", "<=": "lte", ">=": "gte",
        "in": "in", "contains": "contains"}  # fmt: skip


@dataclass(slots=True)
class Profile:
    """What a segment may look at for one contact."""

    contact_id: str
    traits: Mapping[str, Any] = field(default_factory=dict)
    unsubscribed: bool = False
    consent: Mapping[str, Any] = field(default_factory=dict)
    activity: list[tuple[str, float, Mapping[str, Any]]] = field(default_factory=list)
    memberships: dict[str, bool] = field(default_factory=dict)  # other segments, current
    value: Mapping[str, Any] = field(default_factory=dict)  # engine.clv.value_fields, if read


def _compare(op: str, actual: Any, value: Value) -> bool:
    expected = list(value) if isinstance(value, tuple) else value
    return compare(_OPS[op], actual, expected)


def _matches(filters: Sequence[PropertyFilter], properties: Mapping[str, Any]) -> bool:
    return all(_compare(f.op, lookup(properties, f.path), f.value) for f in filters)


def as_time(value: Any) -> float | None:
    """A date trait as epoch seconds: a number, or ISO 8601 text (naive means UTC)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    return None


def count_events(node: EventCount, profile: Profile, now: float) -> int:
    since = now - node.within
    return sum(
        1
        for name, ts, props in profile.activity
        if name == node.event and since < ts <= now and _matches(node.where, props)
    )


def _quantity_holds(node: EventCount, n: int) -> bool:
    if node.quantifier == "at least":
        return n >= node.count
    if node.quantifier == "at most":
        return n <= node.count
    return n == node.count


def _atom(node: Condition, profile: Profile, now: float) -> tuple[bool, Any]:
    """Whether an atom holds, and the value it looked at."""
    if isinstance(node, TraitCompare):
        actual = lookup(profile.traits, node.path)
        return _compare(node.op, actual, node.value), actual
    if isinstance(node, TraitExists):
        actual = lookup(profile.traits, node.path)
        return (actual is not None) == node.exists, actual
    if isinstance(node, TraitAge):
        actual = lookup(profile.traits, node.path)
        moment = as_time(actual)
        if moment is None:
            return False, actual
        crossed = now >= moment + node.seconds
        return (crossed if node.relation == "before" else not crossed), actual
    if isinstance(node, Subscription):
        return node.subscribed != profile.unsubscribed, (
            "unsubscribed" if profile.unsubscribed else "subscribed"
        )
    if isinstance(node, Consent):
        entry = profile.consent.get(node.purpose)
        granted = isinstance(entry, Mapping) and entry.get("granted") is True
        return granted, entry
    if isinstance(node, EventCount):
        n = count_events(node, profile, now)
        return _quantity_holds(node, n), n
    if isinstance(node, InSegment):
        member = profile.memberships.get(node.segment_id, False)
        return member, member
    if isinstance(node, OrderValue):
        # A contact without orders has a value of 0 and 0 orders (never "missing").
        actual = profile.value.get(VALUE_MEASURES[node.measure], 0)
        return _compare(node.op, actual, node.value), actual
    raise TypeError(f"not a segment condition: {node!r}")


def holds(node: Condition, profile: Profile, now: float) -> bool:
    """Whether the contact meets the condition at ``now``."""
    if isinstance(node, AllOf):
        return all(holds(part, profile, now) for part in node.parts)
    if isinstance(node, AnyOf):
        return any(holds(part, profile, now) for part in node.parts)
    if isinstance(node, Not):
        return not holds(node.inner, profile, now)
    return _atom(node, profile, now)[0]


def explain(node: Condition, profile: Profile, now: float) -> dict[str, Any]:
    """``{"condition": text, "held": bool, "value"?: looked-at value, "parts"?: [...]}``."""
    out: dict[str, Any] = {"condition": format_condition(node)}
    if isinstance(node, AllOf | AnyOf):
        parts = [explain(part, profile, now) for part in node.parts]
        combine = all if isinstance(node, AllOf) else any
        out["held"] = combine(p["held"] for p in parts)
        out["parts"] = parts
    elif isinstance(node, Not):
        inner = explain(node.inner, profile, now)
        out["held"] = not inner["held"]
        out["parts"] = [inner]
    else:
        held, value = _atom(node, profile, now)
        out["held"] = held
        out["value"] = value
    return out


def next_change(node: Condition, profile: Profile, now: float) -> float | None:
    """The earliest moment after ``now`` at which time alone may change an atom's truth."""
    best: float | None = None

    def consider(moment: float) -> None:
        nonlocal best
        if moment > now and (best is None or moment < best):
            best = moment

    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, AllOf | AnyOf):
            stack.extend(current.parts)
        elif isinstance(current, Not):
            stack.append(current.inner)
        elif isinstance(current, EventCount):
            for name, ts, props in profile.activity:
                if name == current.event and _matches(current.where, props):
                    consider(ts)  # an event stamped ahead of now starts counting then
                    consider(ts + current.within)
        elif isinstance(current, TraitAge):
            moment = as_time(lookup(profile.traits, current.path))
            if moment is not None:
                consider(moment + current.seconds)
    return best
