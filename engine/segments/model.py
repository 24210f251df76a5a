"""Segments as data: a definition is an id, a name, a version and a condition tree.

The tree nests ``AllOf`` / ``AnyOf`` / ``Not`` over atoms:

- ``TraitCompare`` - a profile trait against a value (``=``, ``!=``, ``<`` ... ``in``,
  ``contains``), ``TraitExists`` - the trait is there or missing;
- ``TraitAge`` - a date trait before/after a moment relative to now ("signed_up_at before 30 days
  ago"); the trait is epoch seconds or an ISO 8601 text;
- ``Subscription`` - subscribed to (or unsubscribed from) marketing mail, ``Consent`` - consent
  granted for a purpose;
- ``EventCount`` - how many events of a name (with property filters) the contact had in the
  last ``within`` seconds: at least / at most / exactly N ("no X" is exactly 0);
- ``InSegment`` - the contact is a member of another segment;
- ``OrderValue`` - the contact's lifetime value, order count or average order value (from its
  orders, engine/clv.py) against a number: ``clv > 200``, ``orders >= 3``.

The nodes are frozen and compare by value, so ``parse(format(tree)) == tree`` is testable.
Invalid nodes raise ``SegmentInvalid`` on construction.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from engine.errors import EngineError

SEGMENT_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,99}")
COMPARE_OPS = ("=", "!=", "<", ">", "<=", ">=", "in", "contains")
QUANTIFIERS = ("at least", "at most", "exactly")
PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
PURPOSE = re.compile(r"[a-z][a-z0-9_]{0,63}")
# The text form's word for each value measure, and the contact field it reads (engine/clv.py).
VALUE_MEASURES = {"clv": "lifetime_value", "orders": "orders", "aov": "average_order_value"}
VALUE_OPS = ("=", "!=", "<", ">", "<=", ">=")

Scalar = str | int | float | bool | None
Value = Scalar | tuple[Scalar, ...]


class SegmentInvalid(EngineError, ValueError):
    """A segment definition (or its text) is wrong; the message says where and why."""


def check_value(value: object, *, allow_list: bool = True) -> None:
    """Values are text, numbers (finite), true/false, null, or a tuple of those."""
    if isinstance(value, tuple):
        if not allow_list:
            raise SegmentInvalid("a list cannot contain a list")
        for item in value:
            check_value(item, allow_list=False)
        return
    if value is None or isinstance(value, str | bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SegmentInvalid(f"{value!r} is not a number a segment can compare with")
        return
    raise SegmentInvalid(f"unsupported value {value!r}")


class Condition:
    """Base of the node kinds."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class TraitCompare(Condition):
    path: str
    op: str
    value: Value

    def __post_init__(self) -> None:
        _check_path(self.path)
        if self.op not in COMPARE_OPS:
            raise SegmentInvalid(f"unknown operator {self.op!r}")
        check_value(self.value)
        if self.op == "in" and not isinstance(self.value, tuple):
            raise SegmentInvalid('\'in\' needs a list, e.g. ["a", "b"]')
        if self.op != "in" and isinstance(self.value, tuple) and self.op != "contains":
            raise SegmentInvalid(f"{self.op!r} compares with one value, not a list")


@dataclass(frozen=True, slots=True)
class TraitExists(Condition):
    path: str
    exists: bool = True

    def __post_init__(self) -> None:
        _check_path(self.path)


@dataclass(frozen=True, slots=True)
class TraitAge(Condition):
    """``path before N ago`` (the date is older than N) or ``after`` (more recent)."""

    path: str
    relation: str  # before | after
    seconds: int

    def __post_init__(self) -> None:
        _check_path(self.path)
        if self.relation not in ("before", "after"):
            raise SegmentInvalid(f"expected before or after, got {self.relation!r}")
        _check_window(self.seconds)


@dataclass(frozen=True, slots=True)
class Subscription(Condition):
    """Subscribed to marketing mail (never unsubscribed), or unsubscribed from it."""

    subscribed: bool


@dataclass(frozen=True, slots=True)
class Consent(Condition):
    """Consent granted for a purpose (``contacts.consent[purpose].granted``)."""

    purpose: str

    def __post_init__(self) -> None:
        if not PURPOSE.fullmatch(self.purpose):
            raise SegmentInvalid(f"bad consent purpose {self.purpose!r}")


@dataclass(frozen=True, slots=True)
class PropertyFilter:
    """``product_id = "X"`` on the counted events' properties."""

    path: str
    op: str
    value: Value

    def __post_init__(self) -> None:
        TraitCompare(self.path, self.op, self.value)  # same rules


@dataclass(frozen=True, slots=True)
class EventCount(Condition):
    event: str
    where: tuple[PropertyFilter, ...]
    quantifier: str  # at least | at most | exactly
    count: int
    within: int  # seconds

    def __post_init__(self) -> None:
        if not self.event or "`" in self.event or len(self.event) > 200:
            raise SegmentInvalid(f"bad event name {self.event!r}")
        if self.quantifier not in QUANTIFIERS:
            raise SegmentInvalid(f"unknown quantifier {self.quantifier!r}")
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 0:
            raise SegmentInvalid(f"a count is a whole number >= 0, got {self.count!r}")
        _check_window(self.within)


@dataclass(frozen=True, slots=True)
class InSegment(Condition):
    segment_id: str

    def __post_init__(self) -> None:
        if not SEGMENT_ID.fullmatch(self.segment_id):
            raise SegmentInvalid(f"bad segment id {self.segment_id!r}")


@dataclass(frozen=True, slots=True)
class OrderValue(Condition):
    """``clv > 200``: a measure of the contact's orders (``VALUE_MEASURES``) against a number."""

    measure: str
    op: str
    value: int | float

    def __post_init__(self) -> None:
        if self.measure not in VALUE_MEASURES:
            known = ", ".join(VALUE_MEASURES)
            raise SegmentInvalid(f"unknown order measure {self.measure!r} (one of {known})")
        if self.op not in VALUE_OPS:
            raise SegmentInvalid(f"{self.measure} compares with = != < > <= >=, not {self.op!r}")
        if isinstance(self.value, bool) or not isinstance(self.value, int | float):
            raise SegmentInvalid(f"{self.measure} compares with a number, got {self.value!r}")
        check_value(self.value)


@dataclass(frozen=True, slots=True)
class AllOf(Condition):
    parts: tuple[Condition, ...]

    def __post_init__(self) -> None:
        if len(self.parts) < 2:
            raise SegmentInvalid("'and' joins at least two conditions")


@dataclass(frozen=True, slots=True)
class AnyOf(Condition):
    parts: tuple[Condition, ...]

    def __post_init__(self) -> None:
        if len(self.parts) < 2:
            raise SegmentInvalid("'or' joins at least two conditions")


@dataclass(frozen=True, slots=True)
class Not(Condition):
    inner: Condition


@dataclass(frozen=True, slots=True)
class Segment:
    """One version of a segment definition."""

    id: str
    name: str
    version: int
    condition: Condition

    def __post_init__(self) -> None:
        if not SEGMENT_ID.fullmatch(self.id):
            raise SegmentInvalid(
                f"bad segment id {self.id!r}: lower-case letters, digits, - and _ (at most 100)"
            )
        if not self.name.strip() or len(self.name) > 200:
            raise SegmentInvalid("a segment needs a name of 1 to 200 characters")


def walk(condition: Condition) -> list[Condition]:
    """Every node of the tree, parents first."""
    out: list[Condition] = []
    stack = [condition]
    while stack:
        node = stack.pop()
        out.append(node)
        if isinstance(node, AllOf | AnyOf):
            stack.extend(reversed(node.parts))
        elif isinstance(node, Not):
            stack.append(node.inner)
    return out


def referenced_segments(condition: Condition) -> set[str]:
    return {n.segment_id for n in walk(condition) if isinstance(n, InSegment)}


def event_windows(condition: Condition) -> dict[str, int]:
    """Event names counted, each with its longest window."""
    out: dict[str, int] = {}
    for node in walk(condition):
        if isinstance(node, EventCount):
            out[node.event] = max(node.within, out.get(node.event, 0))
    return out


def trait_keys(condition: Condition) -> set[str]:
    """Top-level trait names the tree looks at (``address.country`` -> ``address``)."""
    return {
        n.path.split(".", 1)[0]
        for n in walk(condition)
        if isinstance(n, TraitCompare | TraitExists | TraitAge)
    }


def reads_value(condition: Condition) -> bool:
    """Whether the tree looks at the contact's order value (``OrderValue``)."""
    return any(isinstance(n, OrderValue) for n in walk(condition))


def _check_path(path: Any) -> None:
    if not isinstance(path, str) or not PATH.fullmatch(path) or len(path) > 200:
        raise SegmentInvalid(f"bad trait name {path!r}")


def _check_window(seconds: Any) -> None:
    if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds <= 0:
        raise SegmentInvalid(f"a window is a whole number of seconds > 0, got {seconds!r}")
