"""Conditions over a contact's traits, an event's properties and the contact's recent activity.

Written in workflow files as TOML tables, exactly one kind per table:

- ``{ trait = "plan", op = "eq", value = "pro" }`` - a profile trait (dotted paths reach nested
  values: ``trait = "address.country"``);
- ``{ property = "total", op = "gte", value = 100 }`` - a property of the event in question (the
  trigger for triggers and branches, the awaited event in ``wait_until``, the goal event);
- ``{ activity = "Product Viewed", same = "product_id", within = "1h", op = "gte", value = 3 }`` -
  how many such events the contact had in the window ending at the decision (the current event
  included), optionally only those whose listed properties equal the event's;
- ``{ inactive_for = "30d" }`` - the contact's previous last-seen, before the triggering event,
  is at least that long ago (never true for a contact's first event);
- ``{ all = [...] }``, ``{ any = [...] }``, ``{ not = {...} }`` - combinations.

Ops: eq, ne, lt, lte, gt, gte, in, contains, exists. Values are compared as they are (no
string-to-number coercion); ordering ops only compare two numbers or two strings, otherwise they
are false. A missing value is ``None``: ``exists`` is false, ``ne`` is true, the rest are false.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from engine.decide.durations import format_duration, parse_duration

OPS = ("eq", "ne", "lt", "lte", "gt", "gte", "in", "contains", "exists")
_KINDS = ("trait", "property", "activity", "inactive_for", "all", "any", "not")


class ActivityLookup(Protocol):
    """A contact's recent events, as the decide stage has them in memory."""

    def count(self, name: str, since: float, until: float, same: Mapping[str, Any]) -> int:
        """Events named ``name`` with ``since < ts <= until`` whose ``same`` properties match."""
        ...


@dataclass(frozen=True, slots=True)
class Facts:
    """What a condition may look at."""

    traits: Mapping[str, Any]
    properties: Mapping[str, Any]
    at: float  # the moment of the decision; activity windows end here
    previous_seen: float | None  # the contact's last-seen before the triggering event
    activity: ActivityLookup


class Condition:
    """Base of the condition kinds; ``holds`` evaluates, ``describe`` reads back for traces."""

    __slots__ = ()

    def holds(self, facts: Facts) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def activity_windows(self) -> dict[str, float]:
        """Event names counted by this condition, each with the longest window it looks back."""
        return {}


def lookup(values: Mapping[str, Any], path: str) -> Any:
    """``values[path]``, else the dotted path walked through nested tables, else ``None``."""
    if path in values:
        return values[path]
    current: Any = values
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return None
        current = current[part]
    return current


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equal(a: object, b: object) -> bool:
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    return a == b


def compare(op: str, actual: Any, expected: Any) -> bool:
    """Apply ``op`` to a looked-up value and the value written in the condition."""
    if op == "exists":
        return (actual is not None) == bool(expected)
    if op == "eq":
        return _equal(actual, expected)
    if op == "ne":
        return not _equal(actual, expected)
    if op == "in":
        return isinstance(expected, list) and any(_equal(actual, e) for e in expected)
    if op == "contains":
        if isinstance(actual, str) and isinstance(expected, str):
            return expected in actual
        if isinstance(actual, list):
            return any(_equal(item, expected) for item in actual)
        return isinstance(actual, Mapping) and expected in actual
    both_numbers = _is_number(actual) and _is_number(expected)
    if not (both_numbers or (isinstance(actual, str) and isinstance(expected, str))):
        return False
    if op == "lt":
        return bool(actual < expected)
    if op == "lte":
        return bool(actual <= expected)
    if op == "gt":
        return bool(actual > expected)
    return bool(actual >= expected)  # gte


@dataclass(frozen=True, slots=True)
class Compare(Condition):
    """A trait or event property compared with a value."""

    source: str  # trait | property
    path: str
    op: str
    value: Any

    def holds(self, facts: Facts) -> bool:
        values = facts.traits if self.source == "trait" else facts.properties
        return compare(self.op, lookup(values, self.path), self.value)

    def describe(self) -> str:
        return f"{self.source} {self.path} {self.op} {self.value!r}"


@dataclass(frozen=True, slots=True)
class ActivityCount(Condition):
    """How many times the contact did ``event`` within the window, compared with a value."""

    event: str
    within: float
    op: str
    value: Any
    same: tuple[str, ...] = ()

    def holds(self, facts: Facts) -> bool:
        same = {name: lookup(facts.properties, name) for name in self.same}
        n = facts.activity.count(self.event, facts.at - self.within, facts.at, same)
        return compare(self.op, n, self.value)

    def describe(self) -> str:
        same = f" with the same {', '.join(self.same)}" if self.same else ""
        window = format_duration(self.within)
        return f"count of {self.event}{same} within {window} {self.op} {self.value!r}"

    def activity_windows(self) -> dict[str, float]:
        return {self.event: self.within}


@dataclass(frozen=True, slots=True)
class InactiveFor(Condition):
    """The contact was last seen, before the triggering event, at least ``seconds`` earlier."""

    seconds: float

    def holds(self, facts: Facts) -> bool:
        return facts.previous_seen is not None and facts.at - facts.previous_seen >= self.seconds

    def describe(self) -> str:
        return f"inactive for {format_duration(self.seconds)}"


@dataclass(frozen=True, slots=True)
class Combined(Condition):
    """``all`` (every part holds) or ``any`` (at least one does)."""

    mode: str  # all | any
    parts: tuple[Condition, ...]

    def holds(self, facts: Facts) -> bool:
        if self.mode == "all":
            return all(part.holds(facts) for part in self.parts)
        return any(part.holds(facts) for part in self.parts)

    def describe(self) -> str:
        return f"{self.mode}({'; '.join(part.describe() for part in self.parts)})"

    def activity_windows(self) -> dict[str, float]:
        return merge_windows(part.activity_windows() for part in self.parts)


@dataclass(frozen=True, slots=True)
class Negated(Condition):
    """``not``: the inner condition does not hold."""

    inner: Condition

    def holds(self, facts: Facts) -> bool:
        return not self.inner.holds(facts)

    def describe(self) -> str:
        return f"not({self.inner.describe()})"

    def activity_windows(self) -> dict[str, float]:
        return self.inner.activity_windows()


def merge_windows(windows: Any) -> dict[str, float]:
    """Union of ``activity_windows`` results, keeping the longest window per event name."""
    merged: dict[str, float] = {}
    for item in windows:
        for name, within in item.items():
            merged[name] = max(within, merged.get(name, 0.0))
    return merged


def all_hold(conditions: Sequence[Condition], facts: Facts) -> bool:
    """True when every condition holds (an empty list holds)."""
    return all(condition.holds(facts) for condition in conditions)


def parse_condition(raw: object, where: str) -> Condition:
    """Build a condition from its TOML table; ``ValueError`` naming ``where`` if malformed."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: a condition must be a table, got {raw!r}")
    kinds = [k for k in _KINDS if k in raw]
    if len(kinds) != 1:
        raise ValueError(f"{where}: a condition needs exactly one of {', '.join(_KINDS)}")
    kind = kinds[0]
    if kind in ("all", "any"):
        _only(raw, {kind}, where)
        items = raw[kind]
        if not isinstance(items, list) or not items:
            raise ValueError(f"{where}: {kind} needs a non-empty list of conditions")
        parts = tuple(parse_condition(item, f"{where}.{kind}[{i}]") for i, item in enumerate(items))
        return Combined(kind, parts)
    if kind == "not":
        _only(raw, {"not"}, where)
        return Negated(parse_condition(raw["not"], f"{where}.not"))
    if kind == "inactive_for":
        _only(raw, {"inactive_for"}, where)
        return InactiveFor(_duration(raw["inactive_for"], f"{where}.inactive_for"))
    if kind == "activity":
        _only(raw, {"activity", "same", "within", "op", "value"}, where)
        event = raw["activity"]
        if not isinstance(event, str) or not event:
            raise ValueError(f"{where}: activity must name an event")
        if "within" not in raw:
            raise ValueError(f'{where}: an activity count needs within (e.g. within = "1h")')
        op, value = _op_value(raw, where)
        return ActivityCount(
            event, _duration(raw["within"], f"{where}.within"), op, value, _names(raw, where)
        )
    _only(raw, {kind, "op", "value"}, where)
    path = raw[kind]
    if not isinstance(path, str) or not path:
        raise ValueError(f"{where}: {kind} must name a {kind}")
    op, value = _op_value(raw, where)
    return Compare(kind, path, op, value)


def parse_conditions(raw: object, where: str) -> tuple[Condition, ...]:
    """A ``where`` list: conditions that must all hold."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ValueError(f"{where}: expected a list of conditions")
    return tuple(parse_condition(item, f"{where}[{i}]") for i, item in enumerate(raw))


def _only(raw: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(raw) - allowed)
    if extra:
        raise ValueError(f"{where}: unknown key(s) {', '.join(extra)}")


def _duration(raw: object, where: str) -> float:
    try:
        return parse_duration(raw)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc


def _names(raw: Mapping[str, Any], where: str) -> tuple[str, ...]:
    same = raw.get("same", ())
    if isinstance(same, str):
        same = [same]
    if not isinstance(same, list | tuple) or not all(isinstance(s, str) and s for s in same):
        raise ValueError(f"{where}: same must be a property name or a list of them")
    return tuple(same)


def _op_value(raw: Mapping[str, Any], where: str) -> tuple[str, Any]:
    op = raw.get("op")
    if op not in OPS:
        raise ValueError(f"{where}: op must be one of {', '.join(OPS)}, got {op!r}")
    if op == "exists":
        value = raw.get("value", True)
        if not isinstance(value, bool):
            raise ValueError(f"{where}: exists takes value = true or false")
        return op, value
    if "value" not in raw:
        raise ValueError(f"{where}: op {op} needs a value")
    value = raw["value"]
    if op == "in" and not isinstance(value, list):
        raise ValueError(f"{where}: op in needs a list value")
    if op in ("lt", "lte", "gt", "gte") and not (_is_number(value) or isinstance(value, str)):
        raise ValueError(f"{where}: op {op} needs a number or text value")
    return op, value
