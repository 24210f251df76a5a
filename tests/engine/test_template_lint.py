"""Template lint: each check finds what it should, on the right part and line, and only that."""

from __future__ import annotations

from typing import Any

from engine.authoring.lint import GMAIL_CLIP_BYTES, FieldsSeen, Finding, lint_template
from engine.render import TemplateSource

FOOTER = '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a> {{ shop.address }}</p>'
SHOP = {"name": "Demo Shop", "url": "https://shop.example", "address": "1 Example Street"}
CONTEXT: dict[str, Any] = {
    "contact": {"id": "c1", "email": "a@example.com", "first_name": "Ada"},
    "traits": {"first_name": "Ada"},
    "event": {"name": "Signed Up", "properties": {}, "ts": 0.0},
    "properties": {},
    "unsubscribe_url": "https://shop.example/u/x",
    "shop": SHOP,
}


def source(body: str, subject: str = "Hello", fmt: str = "html", **extra: Any) -> TemplateSource:
    return TemplateSource(
        id="t", version=1, name="T", subject=subject, body=body, format=fmt, **extra
    )


def lint(body: str, **kw: Any) -> list[Finding]:
    subject = kw.pop("subject", "Hello")
    return lint_template(source(body, subject=subject), shop=SHOP, context=CONTEXT, **kw)


def codes(findings: list[Finding]) -> list[tuple[str, str, int | None]]:
    return [(f.code, f.part, f.line) for f in findings]


def test_a_clean_template_has_no_findings() -> None:
    body = f"<html><body>\n<p>Hi {{{{ contact.first_name }}}}</p>\n{FOOTER}\n</body></html>"
    assert lint(body) == []


def test_undefined_variables_in_every_part_with_their_lines() -> None:
    body = (
        "<p>{% set total = 3 %}{{ total }}</p>\n"
        "{% for item in properties.products %}{{ item.name }}{{ loop.index }}{% endfor %}\n"
        "<p>{{ prodcuts }}</p>\n" + FOOTER
    )
    found = lint(body, subject="{{ contakt.first_name }} hi")
    assert codes(found) == [("undefined", "subject", 1), ("undefined", "body", 3)]
    assert "did you mean 'contact'" in found[0].message
    assert "'prodcuts' is not defined" in found[1].message


def test_fields_of_the_event_and_shop_are_known_and_unseen_traits_are_warned() -> None:
    body = (
        "{{ event.nmae }}\n{{ shop.phone }}\n{{ contact.plan }}\n{{ contact.email }}\n"
        "{{ properties.sku }}\n{{ contact.code | default('X') }}\n" + FOOTER
    )
    seen = FieldsSeen(traits=frozenset({"first_name"}), properties=frozenset({"price"}))
    found = lint(body, fields=seen)
    assert codes(found) == [
        ("undefined", "body", 1),
        ("undefined", "body", 2),
        ("unseen-field", "body", 3),
        ("unseen-field", "body", 5),
    ]
    assert [f.severity for f in found] == ["error", "error", "warning", "warning"]
    # Without knowledge of the stream, no guesses about traits.
    assert codes(lint(body)) == [("undefined", "body", 1), ("undefined", "body", 2)]


def test_marketing_mail_needs_an_unsubscribe_link_and_a_postal_address() -> None:
    body = "<html><body>\n<p>Hi</p>\n</body></html>"
    found = lint(body)
    assert codes(found) == [("no-postal-address", "body", 3), ("no-unsubscribe", "body", 3)]
    # A written-out address counts; transactional mail needs neither.
    written = '<p>Shop, 12 Harbour Road, Bristol</p><a href="{{ unsubscribe_url }}">x</a>'
    assert lint(written) == []
    assert lint(body, marketing=False) == []


def test_an_empty_configured_postal_address_is_reported() -> None:
    found = lint_template(source(FOOTER), shop={**SHOP, "address": ""}, context=CONTEXT)
    assert [(f.code, f.severity) for f in found] == [("no-postal-address", "warning")]


def test_images_without_alt_text() -> None:
    body = (
        "<mjml><mj-body><mj-section><mj-column>\n"
        '<mj-image src="https://x/a.png" />\n'
        '<mj-image src="https://x/b.png" alt="{{ contact.first_name }}" />\n'
        f"<mj-text>{FOOTER}</mj-text>\n"
        '<mj-text><img src="https://x/c.png" title="a > b"></mj-text>\n'
        "</mj-column></mj-section></mj-body></mjml>"
    )
    found = lint_template(source(body, fmt="mjml"), shop=SHOP, context=CONTEXT)
    assert codes(found) == [("img-alt", "body", 2), ("img-alt", "body", 5)]


def test_html_over_102_kb_is_clipped_by_gmail() -> None:
    filler = "<p>" + "x" * 1000 + "</p>\n"
    body = FOOTER + "\n" + filler * 120
    found = lint(body)
    assert [f.code for f in found] == ["html-size"]
    assert found[0].line is not None and 90 < found[0].line < 110  # about where the clip falls
    assert lint(FOOTER + "\n" + filler * 90) == []
    assert len((filler * 90).encode()) < GMAIL_CLIP_BYTES


def test_sandbox_violations_in_the_source_and_when_rendering() -> None:
    body = (
        FOOTER + "\n{{ contact.__class__ }}\n{{ properties.products.append(1) }}\n"
        "{{ 'ab' * 100000 }}\n"
    )
    found = lint(body)
    assert codes(found) == [("sandbox", "body", 2), ("sandbox", "body", 2), ("sandbox", "body", 3)]
    messages = sorted(f.message for f in found)
    assert "private attributes" in messages[2]
    assert ".append()" in messages[1]
    # The render stops at the first violation (line 2) and says what the sandbox refused.
    assert "SecurityError" in messages[0]
    repeat = lint(FOOTER + "\n{{ 'ab' * 100000 }}")
    assert codes(repeat) == [("sandbox", "body", 2)]
    assert "repetition" in repeat[0].message


def test_syntax_errors_carry_the_part_and_line() -> None:
    found = lint(FOOTER + "\n<p>\n{% if contact.first_name %}\n</p>")
    assert [(f.code, f.part) for f in found] == [("syntax", "body")]
    assert found[0].line == 3 and "endif" in found[0].message
    mjml = lint_template(
        source(f"<mjml><mj-body><mj-text>{FOOTER}</mj-body>", fmt="mjml"), shop=SHOP
    )
    assert [f.code for f in mjml] == ["syntax"] and "MJML" in mjml[0].message
    subject = lint(FOOTER, subject="Hi {{ contact.first_name }")
    assert codes(subject) == [("syntax", "subject", 1)]
