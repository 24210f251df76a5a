"""Jinja survives MJML and CSS inlining: the constructs that break without placeholders."""

from __future__ import annotations

import re
from typing import Any

import pytest
from jinja2 import Environment

from engine.errors import TemplateInvalid
from engine.render import RenderedEmail, Renderer, TemplateSource
from engine.render.placeholders import protect

ITEMS = [
    {"name": "Everyday Mug", "price": 18, "quantity": 2},
    {"name": "Linen Apron", "price": 38.5, "quantity": 1},
    {"name": "Workshop Tote", "price": 20, "quantity": 3},
]


def mjml(column: str, head: str = "", body_extra: str = "") -> str:
    return (
        f"<mjml><mj-head>{head}</mj-head><mj-body>"
        f"<mj-section><mj-column>{column}</mj-column></mj-section>{body_extra}"
        "</mj-body></mjml>"
    )


def render(body: str, fmt: str = "mjml", **context: Any) -> RenderedEmail:
    renderer = Renderer([TemplateSource("t", 1, "T", "subject", body, format=fmt)])
    return renderer.render("t", context)


def visible(html: str) -> str:
    """The HTML without tags, comments and head, whitespace collapsed: what a reader sees."""
    html = re.sub(r"(?s)<head.*?</head>|<!--.*?-->", "", html)
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def test_for_loop_inside_mj_text() -> None:
    body = mjml(
        "<mj-text><ul>{% for p in properties.products %}"
        "<li>{{ p.name }}: {{ p.price | money }}</li>{% endfor %}</ul></mj-text>"
    )
    email = render(body, properties={"products": ITEMS})
    assert visible(email.html).count("<li>") == 0
    assert re.findall(r"<li>(.*?)</li>", email.html) == [
        "Everyday Mug: $18.00",
        "Linen Apron: $38.50",
        "Workshop Tote: $20.00",
    ]
    assert email.text == "- Everyday Mug: $18.00\n- Linen Apron: $38.50\n- Workshop Tote: $20.00"


def test_for_loop_over_table_rows_survives_foster_parenting() -> None:
    # html5ever moves text found directly inside <table> before the table; a bare
    # "{% for %}" there would end up looping over nothing.
    body = mjml(
        "<mj-table>{% for p in products %}<tr><td>{{ p.name }}</td>"
        "<td>{{ p.quantity }}</td></tr>{% endfor %}</mj-table>"
    )
    email = render(body, products=ITEMS)
    rows = re.findall(r"<tr><td[^>]*>([^<]*)</td><td[^>]*>([^<]*)</td></tr>", email.html)
    assert rows == [("Everyday Mug", "2"), ("Linen Apron", "1"), ("Workshop Tote", "3")]
    assert email.text == "Everyday Mug 2\nLinen Apron 1\nWorkshop Tote 3"


@pytest.mark.parametrize("tbody", [False, True])
def test_for_loop_over_table_rows_in_an_html_body(tbody: bool) -> None:
    rows = "{% for p in products %}<tr><td>{{ p.name }}</td></tr>{% endfor %}"
    table = f"<table><tbody>{rows}</tbody></table>" if tbody else f"<table>{rows}</table>"
    body = f"<html><head><style>td {{ color: #333; }}</style></head><body>{table}</body></html>"
    email = render(body, fmt="html", products=ITEMS)
    names = re.findall(r'<td style="color: #333;">([^<]*)</td>', email.html)
    assert names == ["Everyday Mug", "Linen Apron", "Workshop Tote"]
    # html5ever adds the implied <tbody> after the loop's start, so without an explicit one
    # each row gets its own (valid HTML, displayed the same); with one, there is one.
    assert email.html.count("<tbody>") == (1 if tbody else 3)


def test_for_loop_around_mjml_sections_and_elements() -> None:
    section = (
        "{% for p in products %}<mj-section><mj-column>"
        "<mj-text>{{ p.name }}</mj-text>{% if p.quantity > 1 %}<mj-text>x{{ p.quantity }}"
        "</mj-text>{% endif %}</mj-column></mj-section>{% endfor %}"
    )
    body = mjml("<mj-text>Your cart</mj-text>", body_extra=section)
    email = render(body, products=ITEMS)
    assert visible(email.html) == ("Your cart Everyday Mug x2 Linen Apron Workshop Tote x3")
    assert email.text == "Your cart\n\nEveryday Mug\nx2\n\nLinen Apron\n\nWorkshop Tote\nx3"


def test_less_than_inside_a_statement() -> None:
    # mrml refuses "<" outside markup: "unable to parse next template".
    body = mjml("<mj-text>{% if n < 3 %}few{% else %}many{% endif %}</mj-text>")
    assert render(body, n=1).text == "few"
    assert render(body, n=5).text == "many"


def test_quotes_inside_attribute_values() -> None:
    # mrml backslash-escapes the inner quotes: default(\"friend\") is no longer Jinja.
    body = mjml(
        '<mj-image src="{{ img | http_url }}" alt=\'{{ name | default("friend") }}\' />'
        '<mj-button href="{{ url }}?a=1&amp;b={{ b | urlencode }}">Go</mj-button>'
    )
    email = render(body, img="https://cdn.example/i.png", url="https://s.example/x", b="a b")
    assert 'alt="friend"' in email.html
    assert 'src="https://cdn.example/i.png"' in email.html
    assert 'href="https://s.example/x?a=1&amp;b=a%20b"' in email.html
    hostile = render(body, name='"><script>x</script>', img="javascript:alert(1)")
    assert "<script>x" not in hostile.html
    assert "javascript:" not in hostile.html


def test_jinja_in_head_title_preview_and_styles() -> None:
    head = (
        "<mj-title>{{ shop.name }} news</mj-title>"
        "<mj-preview>{% if first %}{{ first }}, {% endif %}hello</mj-preview>"
        "<mj-style>.brand div { color: {{ color }} !important; }</mj-style>"
    )
    body = mjml('<mj-text css-class="brand">Hi</mj-text>', head=head)
    email = render(body, shop={"name": "Northwind"}, first="Jane", color="#1f4e3d")
    assert "<title>Northwind news</title>" in email.html
    assert "Jane, hello" in email.html
    assert "color: #1f4e3d" in email.html
    assert email.text == "Hi"  # the preview and the title are not body text


def test_comments_raw_set_macro_and_whitespace_control() -> None:
    # A macro's markup goes through MJML and the HTML parser where it is written, so it is
    # defined inside <mj-text>: directly in a column MJML would wrap <b> in a table row.
    column = (
        "{# a note for authors #}{% set greeting = 'Hello' %}"
        "<mj-text>{% macro badge(t) %}<b>{{ t }}</b>{% endmacro %}"
        "{{ greeting }} {{ badge(name) }} {% raw %}{{ literally }}{% endraw %}"
        "  {%- if true %} trimmed{% endif -%}  !</mj-text>"
    )
    email = render(mjml(column), name="Jane")
    assert "Hello <b>Jane</b> {{ literally }} trimmed!" in email.html
    assert email.text == "Hello Jane {{ literally }} trimmed!"


def test_autoescape_holds_after_conversion() -> None:
    body = mjml("<mj-text>{{ name }}</mj-text>")
    email = render(body, name="<img src=x onerror=alert(1)>&")
    assert "&lt;img src=x onerror=alert(1)&gt;&amp;" in email.html
    assert "<img src=x" not in email.html
    assert email.text == "<img src=x onerror=alert(1)>&"


def test_jinja_around_head_elements_is_reported() -> None:
    body = mjml("<mj-text>x</mj-text>", head="{% if x %}\n<mj-title>T</mj-title>{% endif %}")
    renderer = Renderer()
    with pytest.raises(TemplateInvalid, match=r"body line 1: MJML dropped '\{% if x %\}'"):
        renderer.load(TemplateSource("t", 1, "T", "s", body, format="mjml"))


def test_markup_moved_by_the_html_parser_is_reported() -> None:
    # mj-raw in a column lands inside <tbody>, where the HTML parser moves a <b> (and the
    # Jinja inside it) in front of the table, out of the {% if %} around it.
    body = mjml("<mj-text>x</mj-text>{% if show %}<mj-raw><b>{{ name }}</b></mj-raw>{% endif %}")
    with pytest.raises(
        TemplateInvalid, match=r"CSS inlining moved '\{\{ name \}\}' before '\{% if show %\}'"
    ):
        Renderer().load(TemplateSource("t", 1, "T", "s", body, format="mjml"))


def test_placeholders_never_collide_with_the_source() -> None:
    env = Environment()
    source = "<p>{{ a }}</p><td x='{{ b }}'>cc{% if c %}</td>{% endif %}"
    protected = protect(env, source)
    assert protected.prefix not in source
    assert "{{" not in protected.markup and "{%" not in protected.markup
    tokens = re.findall(re.escape(protected.prefix) + r"\d+z", protected.markup)
    assert len(tokens) == len(protected.constructs) == 4
    # Text content gets comments (they stay put in tables); tags and the rest get tokens.
    assert [c.in_text for c in protected.constructs] == [True, False, True, True]
