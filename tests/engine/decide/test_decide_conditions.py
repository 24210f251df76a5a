"""The condition language: ops, activity counts in windows, inactivity, combinations."""

from __future__ import annotations

from typing import Any

import pytest

from engine.decide.conditions import Facts, compare, parse_condition
from engine.decide.profiles import RecentActivity, clean_email, clean_timezone

NOW = 1_800_000_000.0


def facts(
    traits: dict[str, Any] | None = None,
    properties: dict[str, Any] | None = None,
    activity: RecentActivity | None = None,
    previous_seen: float | None = None,
) -> Facts:
    return Facts(traits or {}, properties or {}, NOW, previous_seen, activity or RecentActivity())


@pytest.mark.parametrize(
    ("op", "actual", "expected", "result"),
    [
        ("eq", "pro", "pro", True),
        ("eq", "pro", "free", False),
        ("eq", 1, 1.0, True),
        ("eq", True, 1, False),  # a flag is not a number
        ("ne", None, "pro", True),
        ("ne", "pro", "pro", False),
        ("lt", 5, 10, True),
        ("lte", 10, 10, True),
        ("gt", 10, 10, False),
        ("gte", 10, 10, True),
        ("gt", "100", 10, False),  # no coercion from text
        ("gt", None, 0, False),
        ("lt", "apple", "banana", True),
        ("in", "de", ["de", "at"], True),
        ("in", "fr", ["de", "at"], False),
        ("contains", "summer sale", "sale", True),
        ("contains", ["a", "b"], "b", True),
        ("contains", ["a", "b"], "c", False),
        ("contains", 5, 5, False),
        ("exists", 0, True, True),
        ("exists", None, True, False),
        ("exists", None, False, True),
    ],
)
def test_ops(op: str, actual: Any, expected: Any, result: bool) -> None:
    assert compare(op, actual, expected) is result


def test_traits_properties_and_dotted_paths() -> None:
    plan = parse_condition({"trait": "plan", "op": "eq", "value": "pro"}, "c")
    assert plan.holds(facts(traits={"plan": "pro"}))
    assert not plan.holds(facts(traits={"plan": "free"}))
    country = parse_condition({"trait": "address.country", "op": "in", "value": ["DE"]}, "c")
    assert country.holds(facts(traits={"address": {"country": "DE"}}))
    assert not country.holds(facts(traits={"address": "DE"}))
    total = parse_condition({"property": "total", "op": "gte", "value": 100}, "c")
    assert total.holds(facts(properties={"total": 120.5}))
    assert not total.holds(facts(properties={"total": 99}))


def test_activity_counts_only_the_window_and_the_same_property() -> None:
    views = RecentActivity()
    views.add("Product Viewed", NOW - 3700, {"product_id": "p1"})  # outside the hour
    views.add("Product Viewed", NOW - 1800, {"product_id": "p1"})
    views.add("Product Viewed", NOW - 60, {"product_id": "p2"})
    views.add("Product Added", NOW - 30, {"product_id": "p1"})
    views.add("Product Viewed", NOW, {"product_id": "p1"})
    three = parse_condition(
        {
            "activity": "Product Viewed",
            "same": "product_id",
            "within": "1h",
            "op": "gte",
            "value": 3,
        },
        "c",
    )
    two = parse_condition(
        {
            "activity": "Product Viewed",
            "same": ["product_id"],
            "within": "1h",
            "op": "eq",
            "value": 2,
        },
        "c",
    )
    any_product = parse_condition(
        {"activity": "Product Viewed", "within": "1h", "op": "eq", "value": 3}, "c"
    )
    on_p1 = facts(properties={"product_id": "p1"}, activity=views)
    assert not three.holds(on_p1)
    assert two.holds(on_p1)
    assert any_product.holds(on_p1)
    assert three.describe() == "count of Product Viewed with the same product_id within 1h gte 3"


def test_inactive_for_needs_a_previous_visit_long_enough_ago() -> None:
    away = parse_condition({"inactive_for": "30d"}, "c")
    assert not away.holds(facts(previous_seen=None))  # a first visit is not a return
    assert not away.holds(facts(previous_seen=NOW - 29 * 86400))
    assert away.holds(facts(previous_seen=NOW - 30 * 86400))


def test_combinations() -> None:
    cond = parse_condition(
        {
            "any": [
                {
                    "all": [
                        {"trait": "plan", "op": "eq", "value": "pro"},
                        {"property": "total", "op": "gt", "value": 50},
                    ]
                },
                {"not": {"trait": "country", "op": "exists"}},
            ]
        },
        "c",
    )
    assert cond.holds(facts(traits={"plan": "pro", "country": "DE"}, properties={"total": 60}))
    assert not cond.holds(facts(traits={"plan": "pro", "country": "DE"}, properties={"total": 40}))
    assert cond.holds(facts(traits={}, properties={}))
    assert cond.describe().startswith("any(all(trait plan eq 'pro'; property total gt 50); not(")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"trait": "plan", "property": "x", "op": "eq", "value": 1}, "exactly one of"),
        ({"trait": "plan", "op": "eq"}, "op eq needs a value"),
        ({"trait": "plan", "op": "in", "value": "a"}, "op in needs a list"),
        ({"trait": "plan", "op": "gt", "value": [1]}, "op gt needs a number or text"),
        ({"activity": "Viewed", "op": "gte", "value": 3}, "needs within"),
        ({"activity": "Viewed", "within": "an hour", "op": "gte", "value": 3}, "bad duration"),
        ({"all": []}, "non-empty list"),
        ({"inactive_for": "30d", "op": "eq"}, r"unknown key\(s\) op"),
        ("plan = pro", "must be a table"),
    ],
)
def test_malformed_conditions(raw: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_condition(raw, "where[0]")


def test_email_and_timezone_cleaning() -> None:
    assert clean_email(" ann@example.com ") == "ann@example.com"
    for bad in (
        "ann",
        "ann@",
        "@example.com",
        "ann@localhost",
        "a b@example.com",
        "a@x.com\r\nBcc: x",
        5,
    ):
        assert clean_email(bad) is None
    assert clean_timezone("Europe/Berlin") == "Europe/Berlin"
    assert clean_timezone("Mars/Olympus") is None
