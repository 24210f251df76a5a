"""The text form of segment conditions: exact round trips over many generated trees, the
canonical form, and positioned errors for bad text."""

from __future__ import annotations

import random

import pytest

from engine.segments.model import (
    AllOf,
    AnyOf,
    Condition,
    Consent,
    EventCount,
    InSegment,
    Not,
    PropertyFilter,
    SegmentInvalid,
    Subscription,
    TraitAge,
    TraitCompare,
    TraitExists,
    Value,
)
from engine.segments.text import format_condition, parse_condition

_WORDS = ["plan", "age", "address.country", "tags", "signed_up_at", "score_2", "_x"]
_EVENTS = ["Product Viewed", "Order Completed", "Signed Up", "Page Viewed", "a/b: c!"]
_TEXTS = ["pro", "", 'with "quotes"', "back\\slash", "tab\there", "naïve ☃", "line\nbreak"]


def _scalar(rng: random.Random) -> Value:
    kind = rng.randrange(6)
    if kind == 0:
        return rng.choice(_TEXTS)
    if kind == 1:
        return rng.randint(-(10**12), 10**12)
    if kind == 2:
        return rng.choice([0.5, -3.25, 1e-05, 1e16, 123456.789, -0.0, 100.0])
    if kind == 3:
        return rng.choice([True, False])
    if kind == 4:
        return None
    return rng.randint(0, 9)


def _compare(rng: random.Random) -> tuple[str, str, Value]:
    path = rng.choice(_WORDS)
    op = rng.choice(["=", "!=", "<", ">", "<=", ">=", "in", "contains"])
    if op == "in":
        return path, op, tuple(_scalar(rng) for _ in range(rng.randrange(4)))
    return path, op, _scalar(rng)


def _window(rng: random.Random) -> int:
    return rng.choice([1, 59, 60, 90, 600, 3600, 5400, 86_400, 604_800, 1_209_600, 7 * 3601])


def _atom(rng: random.Random) -> Condition:
    kind = rng.randrange(8)
    if kind == 0:
        return TraitCompare(*_compare(rng))
    if kind == 1:
        return TraitExists(rng.choice(_WORDS), rng.choice([True, False]))
    if kind == 2:
        return TraitAge(rng.choice(_WORDS), rng.choice(["before", "after"]), _window(rng))
    if kind == 3:
        return Subscription(rng.choice([True, False]))
    if kind == 4:
        return Consent(rng.choice(["email_marketing", "location", "sms"]))
    if kind == 5:
        return InSegment(rng.choice(["vip", "cart-abandoners", "2024_promo"]))
    filters = tuple(PropertyFilter(*_compare(rng)) for _ in range(rng.randrange(3)))
    quantifier = rng.choice(["at least", "at most", "exactly"])
    return EventCount(rng.choice(_EVENTS), filters, quantifier, rng.randrange(4), _window(rng))


def tree(rng: random.Random, depth: int = 0) -> Condition:
    kind = rng.randrange(6) if depth < 4 else 5
    if kind == 0:
        return AllOf(tuple(tree(rng, depth + 1) for _ in range(rng.randint(2, 4))))
    if kind == 1:
        return AnyOf(tuple(tree(rng, depth + 1) for _ in range(rng.randint(2, 4))))
    if kind == 2:
        return Not(tree(rng, depth + 1))
    return _atom(rng)


@pytest.mark.parametrize("seed", range(20))
def test_generated_trees_round_trip_exactly(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(100):
        original = tree(rng)
        text = format_condition(original)
        parsed = parse_condition(text)
        assert parsed == original, text
        assert format_condition(parsed) == text


def test_nesting_is_kept_by_parentheses() -> None:
    a, b, c = InSegment("a"), InSegment("b"), InSegment("c")
    nested = AllOf((AllOf((a, b)), c))
    assert format_condition(nested) == "(in segment a and in segment b) and in segment c"
    assert parse_condition(format_condition(nested)) == nested
    flat = parse_condition("in segment a and in segment b and in segment c")
    assert flat == AllOf((a, b, c))
    assert parse_condition("in segment a and in segment b or in segment c") == AnyOf(
        (AllOf((a, b)), c)
    )
    assert parse_condition("not in segment a and in segment b") == AllOf((Not(a), b))


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        (
            '`Product Viewed` where product_id = "X" at least 1 time in the last 10m',
            '`Product Viewed` where product_id = "X" at least once in the last 10 minutes',
        ),
        (
            "`Order Completed` exactly 0 times in the last 600 seconds",
            "no `Order Completed` in the last 10 minutes",
        ),
        ("trait  plan='pro'", 'trait plan = "pro"'),
        ("trait signed_up_at before 720h ago", "trait signed_up_at before 30 days ago"),
        ('trait x in [1,2.5 , "a"]', 'trait x in [1, 2.5, "a"]'),
        (
            "((in segment a))\n  or\n  unsubscribed from marketing",
            "in segment a or unsubscribed from marketing",
        ),
        (
            "not (trait a exists and trait b is missing)",
            "not (trait a exists and trait b is missing)",
        ),
        (
            "`Signed Up` at most 3 times in the last 1h30m",
            "`Signed Up` at most 3 times in the last 90 minutes",
        ),
    ],
)
def test_text_is_read_into_its_canonical_form(written: str, canonical: str) -> None:
    if "'" in written:  # single quotes are not strings: a clear error instead
        with pytest.raises(SegmentInvalid, match="line 1, col 13: unexpected character"):
            parse_condition(written)
        return
    assert format_condition(parse_condition(written)) == canonical


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "line 1, col 1: expected a condition, found the end"),
        ("trait plan =", "line 1, col 13: expected a value"),
        (
            "`Product Viewed` at least lots of times in the last 10 minutes",
            "line 1, col 27: expected a number after 'least', found 'lots'",
        ),
        (
            "`Product Viewed` at least once in the past 10 minutes",
            "line 1, col 39: expected 'last' after 'the', found 'past'",
        ),
        (
            "`Product Viewed` at least once in the last 10 fortnights",
            "col 47: expected a unit (seconds, minutes, hours, days or weeks) after '10'",
        ),
        ('trait plan = "pro"\nand in segment Vip', "line 2, col 16: expected a segment id"),
        ('trait plan in "pro"', "line 1, col 12: 'in' needs a list"),
        ("trait plan = [1]", "line 1, col 12: '=' compares with one value, not a list"),
        ("(trait a exists", "line 1, col 16: expected ')' after 'exists', found the end"),
        ("trait a exists trait b exists", "col 16: expected 'and', 'or' or the end"),
        ("no `Order Completed` at least once in the last 1h", "col 22: expected 'in the last'"),
        ("`` at least once in the last 1h", "line 1, col 1: empty event name"),
        ("trait a = 1e999", "number out of range"),
        ("consented to Location", "col 14: expected a consent purpose"),
        ("`X` at least once in the last 0 minutes", "a duration must be above 0"),
        ("`X` at least once in the last 1.5s", "not whole seconds"),
    ],
)
def test_bad_text_is_a_positioned_error(text: str, message: str) -> None:
    with pytest.raises(SegmentInvalid) as caught:
        parse_condition(text)
    assert message in str(caught.value)


def test_invalid_trees_cannot_be_built() -> None:
    with pytest.raises(SegmentInvalid, match="at least two"):
        AllOf((InSegment("a"),))
    with pytest.raises(SegmentInvalid, match="not a number"):
        TraitCompare("a", "=", float("nan"))
    with pytest.raises(SegmentInvalid, match="bad segment id"):
        InSegment("Not An Id")
