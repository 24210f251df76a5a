"""The sandbox configuration: filters, lenient undefined values, dict-first lookups."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from jinja2.exceptions import SecurityError

from engine.render.environment import (
    LenientUndefined,
    format_date,
    http_url,
    make_environment,
    money,
    shop_link,
)


def render(source: str, autoescape: bool = False, **context: Any) -> str:
    return make_environment(autoescape=autoescape).from_string(source).render(context)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((12.5,), "$12.50"),
        ((12,), "$12.00"),
        ((1234567.891,), "$1,234,567.89"),
        (("12.5",), "$12.50"),
        ((" 7 ",), "$7.00"),
        ((2.675,), "$2.68"),  # half up on the decimal value people wrote, not the binary one
        ((-5,), "-$5.00"),
        ((-0.001,), "$0.00"),
        ((1250, "JPY"), "¥1,250"),
        ((10, "eur"), "€10.00"),
        ((10, "GBP"), "£10.00"),
        ((10, "CHF"), "10.00 CHF"),
        ((10, None), "$10.00"),
        ((None,), ""),
        (("free",), "free"),
        ((True,), "True"),
        (("nan",), "nan"),
        (("1e999999",), "1e999999"),
    ],
)
def test_money(args: tuple[Any, ...], expected: str) -> None:
    assert money(*args) == expected


def test_money_of_missing_values_is_empty() -> None:
    assert render("[{{ missing | money }}][{{ 3 | money(missing) }}]") == "[][$3.00]"


@pytest.mark.parametrize(
    ("value", "fmt", "expected"),
    [
        (0, None, "Jan 1, 1970"),
        (1_714_557_600.0, None, "May 1, 2024"),
        ("2024-05-01T12:00:00.000Z", None, "May 1, 2024"),
        ("2024-05-01T23:30:00-05:00", None, "May 2, 2024"),  # shown in UTC
        ("2024-05-01", "%Y/%m/%d", "2024/05/01"),
        (datetime(2024, 12, 24, tzinfo=UTC), "%d %B", "24 December"),
        ("next tuesday", None, "next tuesday"),
        (None, None, ""),
        (10**20, None, str(10**20)),
    ],
)
def test_date(value: Any, fmt: str | None, expected: str) -> None:
    assert format_date(value, fmt) == expected


def test_date_filter_in_a_template() -> None:
    assert render("{{ ts | date }} {{ ts | date('%Y') }} [{{ nope | date }}]", ts=0) == (
        "Jan 1, 1970 1970 []"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://cdn.shop.example/mug.jpg", "https://cdn.shop.example/mug.jpg"),
        ("http://shop.example/x", "http://shop.example/x"),
        ("javascript:alert(1)", ""),
        ("data:text/html,<script>", ""),
        ("//evil.example/x.jpg", ""),
        ("/relative.jpg", ""),
        ("https://shop.example/a b", ""),
        ("https://shop.example/\r\nx", ""),
        ("https://[::1", ""),
        (None, ""),
    ],
)
def test_http_url(value: Any, expected: str) -> None:
    assert http_url(value) == expected
    assert http_url(value, "fallback") == (expected or "fallback")


HOME = "https://shop.example"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://shop.example/p/mug", "https://shop.example/p/mug"),
        ("https://www.shop.example/p/mug", "https://www.shop.example/p/mug"),
        ("HTTPS://SHOP.EXAMPLE/p", "https://SHOP.EXAMPLE/p"),
        ("/p/mug?ref=mail", "https://shop.example/p/mug?ref=mail"),
        ("p/mug", "https://shop.example/p/mug"),
        ("https://evil.example/p/mug", HOME),
        ("https://shop.example.evil.example/", HOME),
        ("https://evilshop.example/", HOME),
        ("//evil.example/p", HOME),
        ("https://shop.example\\@evil.example/", HOME),
        ("javascript:alert(1)", HOME),
        ("https://shop.example/a\nb", HOME),
        ("", HOME),
        (None, HOME),
    ],
)
def test_shop_link(value: Any, expected: str) -> None:
    assert shop_link(value, HOME) == expected


def test_shop_link_in_a_template_with_missing_values() -> None:
    assert render("{{ item.url | shop_link(shop.url) }}", shop={"url": HOME}) == HOME
    assert render("[{{ item.url | shop_link(shop.url) }}]") == "[]"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("[{{ missing }}]", "[]"),
        ("[{{ missing.a.b['c'].d }}]", "[]"),
        ("[{{ contact.first_name }}]", "[]"),
        ("[{{ missing * 2 }}][{{ 2 + missing }}][{{ -missing }}]", "[][][]"),
        ("[{{ missing.upper() }}][{{ missing() }}]", "[][]"),
        ("{% if missing > 3 %}yes{% else %}no{% endif %}", "no"),
        ("{% if missing < 3 %}yes{% else %}no{% endif %}", "no"),
        ("{{ missing | int }} {{ missing | float }}", "0 0.0"),
        ("{% for x in missing %}{{ x }}{% else %}empty{% endfor %}", "empty"),
        ("{{ missing | default('friend') }}", "friend"),
        ("{{ missing | length }}", "0"),
        ("{% if missing is defined %}d{% else %}u{% endif %}", "u"),
    ],
)
def test_missing_data_renders_empty(source: str, expected: str) -> None:
    assert render(source) == expected


def test_undefined_class() -> None:
    env = make_environment(autoescape=True)
    assert env.undefined is LenientUndefined
    assert render("{{ x }}", autoescape=True) == ""


def test_dict_keys_win_over_dict_methods() -> None:
    traits = {"items": 3, "values": "v", "keys": "k"}
    assert render("{{ t.items }} {{ t.values }} {{ t.keys }}", t=traits) == "3 v k"
    # Without such a key the method is still there (harmless in the immutable sandbox).
    assert render("{{ t.items() | list }}", t={"a": 1}) == "[('a', 1)]"


def test_a_missing_key_is_undefined_as_with_stock_jinja() -> None:
    source = "[{{ p.tax }}][{{ p.tax | default('none') }}][{{ p.tax is defined }}][{{ p.a.b }}]"
    assert render(source, p={"a": {}}) == "[][none][False][]"
    assert render("{{ p.tax.rate | default(0) }}", p={}) == "0"
    # A dict method is still a method, a missing key that is no method undefined.
    assert render("{{ p.get('tax', 5) }} {{ p.nope is undefined }}", p={}) == "5 True"
    env = make_environment(autoescape=False)
    missing = env.getattr({}, "tax")
    assert isinstance(missing, LenientUndefined) and missing._undefined_name == "tax"


def test_autoescape_is_per_environment() -> None:
    assert render("{{ v }}", autoescape=True, v="<b>&") == "&lt;b&gt;&amp;"
    assert render("{{ v }}", autoescape=False, v="<b>&") == "<b>&"


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__ }}",
        "{{ x.__class__.__mro__ }}",
        "{{ ().__class__.__bases__[0].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ [].append(1) }}",
        "{{ {}.update(a=1) }}",
        "{{ '{0.__class__}'.format(x) }}",
        "{{ 'x' * 1000000 }}",
        "{{ [1] * 1000000 }}",
        "{{ 2 ** 100000 }}",
    ],
)
def test_sandbox_violations_raise(source: str) -> None:
    with pytest.raises(SecurityError):
        render(source, x={"a": 1})


def test_range_is_capped() -> None:
    with pytest.raises(OverflowError):
        render("{{ range(10**9) | length }}")
    assert render("{{ 'ab' * 3 }} {{ 2 ** 10 }}") == "ababab 1024"
