"""The plain-text part: HTML conversion, and the load-time text template agreeing with it."""

from __future__ import annotations

import random
from typing import Any

import pytest

from engine.render import Renderer, TemplateSource, html_to_text


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("<p>One</p><p>Two</p>", "One\n\nTwo"),
        ("<div>One</div><div>Two</div>", "One\nTwo"),
        ("Line<br>break<br/>again", "Line\nbreak\nagain"),
        ("<p>  lots   of\n\n  space </p>", "lots of space"),
        ('<a href="https://s.example/x">Shop now</a>', "Shop now (https://s.example/x)"),
        ('<a href="https://s.example/x">https://s.example/x</a>', "https://s.example/x"),
        ('<a href="mailto:help@s.example">Write</a>', "Write (mailto:help@s.example)"),
        ('<a href="#top">Top</a>', "Top"),
        ('<a href="javascript:void(0)">Click</a>', "Click"),
        ('<a href="https://s.example"><img src="logo.png" alt="Logo"></a>Hi', "Hi"),
        ("<ul><li>one</li><li>two</li></ul>", "- one\n- two"),
        ("<table><tr><td>a</td><td>b</td></tr><tr><td>c</td><td>d</td></tr></table>", "a b\nc d"),
        ("<h1>Title</h1>Body", "Title\n\nBody"),
        ("<head><title>T</title><style>p{}</style></head><body>Hi</body>", "Hi"),
        ('<div style="display: none">preheader</div>Hi', "Hi"),
        ("<div hidden>secret</div>Hi", "Hi"),
        ("<script>alert(1)</script>Hi", "Hi"),
        ("Fish &amp; chips &mdash; &lt;3 &#128512;", "Fish & chips — <3 😀"),
        ("<!-- comment -->Hi<!--[if mso]>Outlook<![endif]-->", "Hi"),
        ("<b>bold</b> <i>and</i> <span>inline</span>", "bold and inline"),
        ("</div>stray end</p>", "stray end"),
        ("<pre>  keep\n  this</pre>", "keep\nthis"),  # indentation is not kept
        ("", ""),
    ],
)
def test_html_to_text(html: str, text: str) -> None:
    assert html_to_text(html) == text


def derived(body: str, fmt: str = "html") -> Renderer:
    return Renderer([TemplateSource("t", 1, "T", "s", body, format=fmt)])


def test_breaks_collapse_across_loops_and_conditions() -> None:
    renderer = derived(
        "<p>Intro</p><table>{% for i in items %}<tr><td>{{ i }}</td><td>x</td></tr>{% endfor %}"
        "</table>{% if more %}<p>More</p>{% endif %}<p>End</p>"
    )
    for items, more in (([], False), (["a"], True), (["a", "b", "c"], False)):
        rendered = renderer.render("t", {"items": items, "more": more})
        assert rendered.text == html_to_text(rendered.html)
    rendered = renderer.render("t", {"items": ["a", "b"], "more": True})
    assert rendered.text == "Intro\n\na x\nb x\n\nMore\n\nEnd"


def test_literal_braces_in_html_stay_literal_in_text() -> None:
    renderer = derived("<p>&#123;&#123; not jinja }} and { {{ value }} }</p>")
    assert renderer.render("t", {"value": 1}).text == "{{ not jinja }} and { 1 }"


def test_links_with_jinja_urls() -> None:
    renderer = derived(
        '<a href="{{ url }}">{{ label }}</a> <a href="{{ url }}">{{ url }}</a>'
        '<a href="https://s.example/p/{{ id }}?r=1&amp;q={{ q | urlencode }}">Product</a>'
    )
    rendered = renderer.render(
        "t", {"url": "https://s.example", "label": "Go", "id": 7, "q": "a b"}
    )
    assert rendered.text == (
        "Go (https://s.example) https://s.exampleProduct (https://s.example/p/7?r=1&q=a%20b)"
    )


def test_values_are_not_escaped_in_text() -> None:
    renderer = derived("<p>{{ name }} &amp; co</p>")
    rendered = renderer.render("t", {"name": "<Tom & Jerry>"})
    assert "&lt;Tom &amp; Jerry&gt; &amp; co" in rendered.html
    assert rendered.text == "<Tom & Jerry> & co"


def test_hidden_parts_keep_their_statements_balanced() -> None:
    renderer = derived(
        '{% if a %}<div style="display:none">{{ secret }}</div><p>shown {{ v }}</p>{% endif %}'
        "<p>after</p>"
    )
    assert renderer.render("t", {"a": True, "v": 1, "secret": "s"}).text == "shown 1\n\nafter"
    assert renderer.render("t", {"a": False}).text == "after"


def random_markup(rng: random.Random) -> str:
    pieces = [
        "<p>",
        "</p>",
        "<div>",
        "</div>",
        "<br>",
        "<table><tr><td>",
        "</td><td>",
        "</td></tr></table>",
        "<ul><li>",
        "</li></ul>",
        '<a href="https://s.example/{{ v }}">',
        "</a>",
        "{{ v }}",
        "{{ w }}",
        " ",
        "  ",
        "\n",
        "text",
        "more words",
        "&amp;",
        "{% if flag %}<b>on</b>{% else %}<i>off</i>{% endif %}",
        "{% for i in items %}<span>{{ i }}</span> {% endfor %}",
    ]
    return "".join(rng.choice(pieces) for _ in range(rng.randint(1, 25)))


def test_load_time_text_matches_conversion_of_the_rendered_html() -> None:
    rng = random.Random(7)
    # One known difference is left out: a link whose label is only values that render empty
    # keeps its "(url)" at load time (the label is not known to be empty yet), so every value
    # here renders something.
    contexts: list[dict[str, Any]] = [
        {"v": "x", "w": "w", "items": [0]},
        {"v": "x", "w": "two words", "flag": True, "items": [1, 2]},
        {"v": "y z", "w": "  padded  ", "flag": False, "items": ["a"]},
    ]
    for _ in range(150):
        renderer = derived(random_markup(rng))
        for ctx in contexts:
            rendered = renderer.render("t", ctx)
            assert rendered.text == html_to_text(rendered.html), rendered.html
