"""Renderer: load-time errors, render-time errors, caching, one-line subjects, injection."""

from __future__ import annotations

import email
import email.policy
import re
from typing import Any

import pytest

import engine.render.renderer as renderer_module
from engine.errors import RenderError, TemplateInvalid
from engine.mime import build_message
from engine.render import RenderedEmail, Renderer, TemplateSource

MJML_BODY = """<mjml>
  <mj-body>
    <mj-section>
      <mj-column>
        <mj-text>Hi {{ contact.first_name | default("there") }}</mj-text>
        <mj-text>{{ properties.note }}</mj-text>
      </mj-column>
    </mj-section>
  </mj-body>
</mjml>
"""


def source(**overrides: Any) -> TemplateSource:
    fields: dict[str, Any] = {
        "id": "greeting",
        "version": 1,
        "name": "Greeting",
        "subject": "Hello {{ contact.first_name }}",
        "body": MJML_BODY,
        "format": "mjml",
    }
    fields.update(overrides)
    return TemplateSource(**fields)


def test_render_returns_every_part() -> None:
    renderer = Renderer([source(from_address="Shop <hello@shop.example>", preheader="Psst")])
    assert renderer.has("greeting") and not renderer.has("other")
    assert renderer.source("greeting").version == 1
    email_ = renderer.render("greeting", {"contact": {"first_name": "Jane"}})
    assert isinstance(email_, RenderedEmail)
    assert email_.subject == "Hello Jane"
    assert "Hi Jane" in email_.html
    assert email_.text == "Hi Jane"
    assert email_.from_address == "Shop <hello@shop.example>"
    assert (email_.template_id, email_.template_version) == ("greeting", 1)
    # The preheader sits hidden right after <body>, and stays out of the text part.
    after_body = email_.html.split("<body", 1)[1].split(">", 1)[1]
    assert after_body.lstrip().startswith('<div style="display:none;')
    assert "Psst" in after_body[:200]


def test_html_body_and_explicit_text_part() -> None:
    renderer = Renderer(
        [
            source(
                format="html",
                body="<p>Hi {{ name }}</p>",
                text="Hi {{ name }},\n  plain & simple\n",
            )
        ]
    )
    rendered = renderer.render("greeting", {"name": "<Jane>"})
    assert "<p>Hi &lt;Jane&gt;</p>" in rendered.html
    # Authored text is kept as written (Jinja drops one trailing newline, as always).
    assert rendered.text == "Hi <Jane>,\n  plain & simple"


def test_missing_data_never_fails() -> None:
    rendered = Renderer([source()]).render("greeting", {})
    assert rendered.subject == "Hello"
    assert rendered.text == "Hi there"


def test_unknown_template() -> None:
    with pytest.raises(RenderError, match="unknown template 'nope'"):
        Renderer().render("nope", {})
    with pytest.raises(KeyError):
        Renderer().source("nope")


# Subjects ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["Jane\r\nBcc: victim@x.example", "Jane\nBcc: v@x", "Jane\t\x00\x1b\u2028Bcc: v@x"]
)
def test_subject_is_one_line_whatever_the_data(name: str) -> None:
    renderer = Renderer([source(subject="Hi\t{{ contact.first_name }}\n  and welcome  ")])
    subject = renderer.render("greeting", {"contact": {"first_name": name}}).subject
    assert re.search(r"[\x00-\x1f\x7f\u2028]", subject) is None
    assert subject == "Hi " + re.sub(r"[\x00-\x1f\u2028]+", " ", name) + " and welcome"


def test_hostile_first_name_creates_no_header() -> None:
    renderer = Renderer([source()])
    hostile = "Jane\r\nBcc: victim@x.example\r\n\r\n<script>alert(1)</script>"
    rendered = renderer.render("greeting", {"contact": {"first_name": hostile}})
    assert "<script>" not in rendered.html
    raw = build_message(
        from_address="Shop <hello@shop.example>",
        to_address="jane@example.com",
        subject=rendered.subject,
        html=rendered.html,
        text=rendered.text,
        message_id="<i1@shop.example>",
        date=0,
    )
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["Bcc"] is None
    assert [name.lower() for name in message] == [
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
    ]
    assert message["Subject"] == "Hello Jane Bcc: victim@x.example <script>alert(1)</script>"


# Load-time errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"subject": "Hi {{ name "}, r"'greeting' v1: subject line 1: unexpected end"),
        ({"text": "ok\n{% if x %}\nno end"}, r"text line 2: Unexpected end of template"),
        ({"preheader": "{{ x | }}"}, r"preheader line 1: expected token 'name'"),
        (
            {"body": MJML_BODY.replace("{{ properties.note }}", "{% for x in y %}")},
            r"body line 6: Unexpected end of template.*'for'",
        ),
        ({"body": "<p>\n\n{% endif %}</p>", "format": "html"}, r"body line 3: Encountered unknown"),
        ({"body": "<p>{{ unknown_filter | nope }}</p>", "format": "html"}, r"body line 1: .*nope"),
        (
            {"body": MJML_BODY.replace("</mj-section>", "")},
            r"body: MJML: unexpected end of stream",
        ),
        ({"body": "<mjml>\n<mj-body>\n<mj-include path='x.mjml' />"}, r"body line 3: MJML: "),
        ({"format": "markdown"}, r"format must be one of"),
        ({"body": "   "}, r"body is empty"),
        ({"id": "Bad Id"}, r"id must be lowercase"),
        ({"from_address": "not an address"}, r"from address: address 'not an address'"),
        ({"from_address": "Shop <a@b.example>\r\nBcc: v@x"}, r"from address: control"),
    ],
)
def test_load_errors_name_the_part_and_line(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(TemplateInvalid, match=message):
        Renderer().load(source(**overrides))


def test_a_failed_load_keeps_the_previous_version() -> None:
    renderer = Renderer([source()])
    with pytest.raises(TemplateInvalid):
        renderer.load(source(version=2, subject="{% if %}"))
    assert renderer.source("greeting").version == 1
    assert renderer.render("greeting", {}).template_version == 1


def test_load_replaces_and_the_latest_load_wins() -> None:
    renderer = Renderer([source()])
    renderer.load(source(version=2, subject="Version two"))
    assert renderer.render("greeting", {}).subject == "Version two"
    renderer.load(source(version=1))  # an explicit roll-back is honoured
    assert renderer.render("greeting", {}).template_version == 1


def test_compiled_once_rendered_many(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    compile_source = renderer_module.compile_source

    def counting(src: TemplateSource, **kwargs: Any) -> Any:
        calls.append(src.id)
        return compile_source(src, **kwargs)

    monkeypatch.setattr(renderer_module, "compile_source", counting)
    renderer = Renderer([source()])
    renderer.load(source())  # the same source again: nothing to do
    for n in range(50):
        assert renderer.render("greeting", {"properties": {"note": n}}).text.endswith(str(n))
    assert calls == ["greeting"]


# Render-time errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        "{{ ''.__class__ }}",
        "{{ contact.__class__.__mro__ }}",
        "{{ ().__class__.__bases__[0].__subclasses__() }}",
        "{{ lipsum.__globals__ }}",
        "{{ contact.update({'email': 'x'}) }}",
        "{{ properties.products.append(1) }}",
        "{{ '{0.__class__}'.format(contact) }}",
        "{{ 'x' * 100000000 }}",
        "{{ range(100000000) | list }}",
    ],
)
def test_sandbox_violations_are_render_errors(payload: str) -> None:
    body = MJML_BODY.replace("{{ properties.note }}", payload)
    renderer = Renderer([source(body=body)])
    context = {"contact": {"first_name": "J"}, "properties": {"products": []}}
    with pytest.raises(RenderError, match=r"'greeting' v1: body line 6: \w+"):
        renderer.render("greeting", context)


def test_errors_raised_in_the_template_name_the_part_and_line() -> None:
    renderer = Renderer(
        [
            source(
                subject="{{ (properties.n | int) / 0 }}",
                preheader="{{ contact.first_name }}",
            ),
            source(
                id="pre",
                preheader="{{ 1 if contact.first_name.startswith(1) }}",
            ),
            source(id="body", body=MJML_BODY.replace("{{ properties.note }}", "{{ 1 / n }}")),
        ]
    )
    with pytest.raises(RenderError, match=r"'greeting' v1: subject line 1: ZeroDivisionError"):
        renderer.render("greeting", {})
    with pytest.raises(RenderError, match=r"'pre' v1: preheader: TypeError"):
        renderer.render("pre", {"contact": {"first_name": "Jane"}})
    with pytest.raises(RenderError, match=r"'body' v1: body line 6: ZeroDivisionError") as info:
        renderer.render("body", {"n": 0})
    assert isinstance(info.value.__cause__, ZeroDivisionError)


@pytest.mark.parametrize(
    ("payload", "value"),
    [
        ("{{ x | format(1, 2, 3) }}", "abc"),
        ("{% for a, b in x %}{% endfor %}", [1]),
        ("{{ x | sum }}", ["a", "b"]),
        ("{{ x | round }}", "abc"),
        ("{{ x.y() }}", {"y": 1}),
        ("{{ x | dictsort }}", [1]),
        ("{% if x > 1 %}{% endif %}", "2"),
    ],
)
def test_no_raw_jinja_exception_escapes(payload: str, value: Any) -> None:
    renderer = Renderer([source(format="html", body=f"<p>{payload}</p>")])
    with pytest.raises(RenderError, match=r"body line 1: \w+Error"):
        renderer.render("greeting", {"x": value})
