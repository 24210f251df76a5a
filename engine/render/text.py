"""HTML to a readable plain-text part.

Links become ``text (url)``, block elements start new lines (paragraph-like ones leave a blank
line), table cells are separated by a space, whitespace collapses, and what a reader cannot see
(``<head>``, ``display:none`` preheaders) is left out.

Parsing 20 KB of MJML output with ``html.parser`` costs milliseconds, far over the render
budget, so the renderer runs this once per template at load time over the markup that still
holds Jinja placeholders (see ``placeholders``) and keeps the result as a Jinja template of its
own: at send time the text part is one more cheap render plus ``tidy``. ``html_to_text`` is the
same conversion applied to finished HTML.

Breaks are written as marker characters and only collapsed by ``tidy``, after rendering: in
``<table>{% for %}<tr>..</tr>{% endfor %}</table>`` the break before the first row and the
breaks between rows are the same text in the template, and only the rendered output shows
which of them meet.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

from engine.render.placeholders import Protected

# A piece of output: literal text, or the index of a Jinja construct.
Part = str | int

LINE, PARAGRAPH, GAP = "\x01", "\x02", "\x03"

_PARAGRAPH = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "hr"})
_LINE = frozenset(
    {"div", "tr", "li", "br", "blockquote", "pre", "dl", "dt", "dd", "section", "header"}
    | {"footer", "article", "aside", "nav", "center", "address", "figure", "main", "form"}
)
_CELL = frozenset({"td", "th"})
_SKIP = frozenset({"head", "style", "script", "title", "template", "noscript"})
_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"}
    | {"track", "wbr"}
)
_HIDDEN = re.compile(r"display\s*:\s*none", re.IGNORECASE)
_SPACE = re.compile(r"\s+")
_MARKERS = re.compile("[\x01-\x03]")
_LINK_SCHEMES = ("http://", "https://", "mailto:", "tel:")


def _marker(tag: str) -> str:
    if tag in _PARAGRAPH:
        return PARAGRAPH
    if tag in _LINE:
        return LINE
    return GAP if tag in _CELL else ""


class _Extractor(HTMLParser):
    """Collects text parts; Jinja placeholders (when ``protected`` is given) become indices."""

    def __init__(self, protected: Protected | None) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[Part] = []
        self._protected = protected
        self._pattern = protected.pattern() if protected else None
        self._stack: list[tuple[str, bool]] = []  # open elements: (tag, starts hidden region)
        self._hidden = 0
        self._pre = 0
        self._links: list[tuple[list[Part], int]] = []  # (href parts, index where text begins)

    def _split(self, text: str) -> list[Part]:
        """Literal text with any placeholder tokens in it turned into construct indices."""
        if self._pattern is None:
            return [text] if text else []
        parts: list[Part] = []
        pos = 0
        for m in self._pattern.finditer(text):
            if m.start() > pos:
                parts.append(text[pos : m.start()])
            parts.append(int(m.group(1) or m.group(2) or m.group(3)))
            pos = m.end()
        if pos < len(text):
            parts.append(text[pos:])
        return parts

    def _render(self, parts: list[Part]) -> str:
        """The parts as one string (constructs as their source), for comparing label and URL."""
        constructs = self._protected.constructs if self._protected else ()
        text = "".join(p if isinstance(p, str) else constructs[p].source for p in parts)
        return _MARKERS.sub("", text).strip()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "img":
            return  # decoration in a text part; a link around only an image is dropped too
        if not self._hidden:
            self.parts.append(_marker(tag))
        if tag in _VOID:
            return
        hides = tag in _SKIP or "hidden" in values or bool(_HIDDEN.search(values.get("style", "")))
        self._stack.append((tag, hides))
        self._hidden += hides
        if tag == "pre":
            self._pre += 1
        elif tag == "a":
            self._links.append((self._split(values.get("href", "").strip()), len(self.parts)))
        elif tag == "li" and not self._hidden:
            self.parts.append("- ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if not any(open_tag == tag for open_tag, _ in self._stack):
            return  # a stray end tag: ignore it, as browsers do
        while self._stack:
            open_tag, hides = self._stack.pop()
            if open_tag == "a":
                self._close_link()
            self._hidden -= hides
            if open_tag == "pre":
                self._pre -= 1
            if open_tag == tag:
                break
        if not self._hidden:
            self.parts.append(_marker(tag))

    def _close_link(self) -> None:
        href, start = self._links.pop()
        if self._hidden or not href:
            return
        first = href[0]
        if isinstance(first, str) and not first.lower().startswith(_LINK_SCHEMES):
            return  # "#top", "javascript:", relative links: nothing a reader can follow
        label = self._render(self.parts[start:])
        if label and label != self._render(href):
            self.parts += [" (", *href, ")"]

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts += self._split(data if self._pre else _SPACE.sub(" ", data))

    def handle_comment(self, data: str) -> None:
        if self._protected is None or self._pattern is None:
            return
        # A placeholder is either the whole comment, or inside a longer one: MJML writes the
        # Jinja found between sections into its Outlook conditional comments
        # (<!--[if mso | IE]></td></tr><!--{% for %}--><tr><td><![endif]-->), where it still
        # shapes the HTML. Statements are kept wherever they are, even in hidden regions, since
        # dropping one half of an {% if %}...{% endif %} pair would unbalance the template;
        # output is kept only where a reader sees it.
        whole = self._pattern.fullmatch(f"<!--{data}-->") is not None
        constructs = self._protected.constructs
        for m in self._pattern.finditer(data):
            index = int(m.group(1) or m.group(2) or m.group(3))
            if not constructs[index].outputs or (whole and not self._hidden):
                self.parts.append(index)


# At load time a run of markers inside one literal stretch of the text template is reduced to
# its strongest marker (with the spaces around it dropped); ``tidy`` then only meets the runs
# that touch Jinja constructs, so one callback per run stays cheap.
_ANY_RUN = re.compile("[ \t]*[\x01-\x03][ \t\x01-\x03]*")
_RUN = re.compile("[\x01-\x03][ \t\x01-\x03]*")
_BREAKS = {PARAGRAPH: "\n\n", LINE: "\n", GAP: " "}


def _strongest(m: re.Match[str]) -> str:
    run = m.group()
    return PARAGRAPH if PARAGRAPH in run else LINE if LINE in run else GAP


def _collapse(m: re.Match[str]) -> str:
    return _BREAKS[_strongest(m)]


def tidy(text: str) -> str:
    """Collapse break markers and the spaces around them; the strongest break in a run wins."""
    text = _RUN.sub(_collapse, text)
    # Values next to breaks or to each other can still leave doubled or dangling spaces;
    # str.replace loops are far cheaper here than regex passes over the whole text.
    for pair, single in ((" \n", "\n"), ("\n ", "\n"), ("  ", " ")):
        while pair in text:
            text = text.replace(pair, single)
    return text.strip()


def html_to_text(html: str) -> str:
    """The plain-text version of finished HTML."""
    parser = _Extractor(None)
    parser.feed(html)
    parser.close()
    return tidy("".join(p for p in parser.parts if isinstance(p, str)))


def text_template(protected: Protected, markup: str) -> str:
    """Jinja source of the plain-text part, from ``markup`` still holding placeholders.

    Rendered with autoescape off and passed through ``tidy``, it gives what ``html_to_text``
    makes of the rendered HTML (whitespace inside values is kept as it is).
    """
    parser = _Extractor(protected)
    parser.feed(markup)
    parser.close()
    constructs = protected.constructs
    out: list[str] = []
    literal: list[str] = []
    for part in [*parser.parts, -1]:
        if isinstance(part, str):
            literal.append(part)
            continue
        # A literal "{" could join a neighbour into Jinja syntax ("{" + "{{ x }}"), so every
        # literal brace is printed by Jinja itself.
        text = _ANY_RUN.sub(_strongest, "".join(literal))
        out.append(text.replace("{", '{{ "{" }}'))
        literal = []
        if part >= 0:
            out.append(constructs[part].source)
    return "".join(out)
