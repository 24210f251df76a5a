"""Carry Jinja constructs unharmed through MJML and CSS inlining.

MJML (mrml) and css-inline (html5ever) parse their input as markup, and Jinja is not markup:

- MJML rejects a ``<`` inside ``{% if a < b %}`` and backslash-escapes quotes in attribute values
  (``alt='{{ x|default("a") }}'`` comes out as ``default(\\"a\\")``);
- html5ever "foster-parents" text found directly inside ``<table>``/``<tr>``, so
  ``{% for %}<tr>...</tr>{% endfor %}`` would come out with both tags moved before the table
  and the loop emptied.

So before either tool runs, each construct (``{{ }}``, ``{% %}``, ``{# #}``, a whole
``{% raw %}`` block) is swapped for an inert placeholder, and swapped back afterwards. In text
content the placeholder is an HTML comment (comments stay where they are, even between table
rows); inside a tag, in raw-text elements (``<style>``, ``<title>``, ``<mj-preview>``...) and
inside comments it is a bare lowercase token (html5ever lowercases attribute names). After the
tools ran, ``check`` proves every placeholder survived and comment placeholders kept their order.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass

from jinja2 import Environment

from engine.errors import TemplateInvalid

# Elements whose content the HTML/MJML parsers treat as text, not markup: comments inside are
# either rejected (mj-title), dropped (mj-preview) or escaped (title), so tokens are used there.
_RAW_TEXT = frozenset(
    {"style", "script", "title", "textarea", "mj-style", "mj-title", "mj-preview", "mj-raw-text"}
)
_TAG_OPEN = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9:_-]*)|<[!?]")
_TAG_STOP = re.compile(r"[\"'>]")
_RAW_BLOCK = re.compile(r"\{%[-+]?\s*raw\s*[-+]?%\}")
_BEGIN = {"variable_begin", "block_begin", "comment_begin", "raw_begin"}
_END = {"variable_end", "block_end", "comment_end", "raw_end"}


@dataclass(frozen=True, slots=True)
class Construct:
    """One Jinja construct lifted out of the markup."""

    source: str  # exactly as written, e.g. "{% for p in properties.products %}"
    line: int  # 1-based line in the original template source
    outputs: bool  # True for {{ }} and raw blocks (they print), False for {% %} and {# #}
    in_text: bool  # True when replaced by a comment placeholder (text content)


@dataclass(frozen=True, slots=True)
class Protected:
    """Markup with placeholders, and what they stand for."""

    markup: str
    constructs: tuple[Construct, ...]
    prefix: str  # every placeholder token is f"{prefix}{index}z"
    # (offset in markup, offset in source, is data) at the start of each piece, to map the
    # positions MJML reports back to lines the author can find.
    offsets: tuple[tuple[int, int, bool], ...]
    source: str

    def pattern(self) -> re.Pattern[str]:
        """Matches a placeholder in any form the tools may leave it in.

        The construct's index is in whichever of the three groups matched.
        """
        p = re.escape(self.prefix)
        return re.compile(rf'<!--{p}(\d+)z-->|&lt;!--{p}(\d+)z--&gt;|{p}(\d+)z(?:="")?')

    def source_line(self, markup_offset: int) -> int:
        """The line in the original source for an offset into ``markup``."""
        src = 0
        for m_off, s_off, is_data in self.offsets:
            if m_off > markup_offset:
                break
            src = s_off + (markup_offset - m_off) if is_data else s_off
        return self.source.count("\n", 0, src) + 1


def _split(env: Environment, source: str) -> Iterator[tuple[str, str, int]]:
    """Yield ``("data", text, line)`` and ``("jinja", construct, line)`` pieces of ``source``."""
    data: list[str] = []
    construct: list[str] = []
    depth = 0  # >0 while inside a construct; raw blocks nest their begin/data/end tokens
    line = data_line = 1
    for lineno, kind, value in env.lexer.tokeniter(source, None):
        if depth == 0 and kind == "data":
            if not data:
                data_line = lineno
            data.append(value)
            continue
        if depth == 0:
            if data:
                yield "data", "".join(data), data_line
                data = []
            line = lineno
        construct.append(value)
        if kind in _BEGIN:
            depth += 1
        elif kind in _END:
            depth -= 1
            if depth == 0:
                yield "jinja", "".join(construct), line
                construct = []
    if data:
        yield "data", "".join(data), data_line


class _Context:
    """Tracks whether the next position in the markup is text content or not."""

    def __init__(self) -> None:
        self.mode = "text"  # text | tag | comment | raw
        self.quote = ""  # quote char while inside a quoted attribute value
        self.tag = ""  # name of the tag being read (lowercase)
        self.closing = False
        self.raw_end = ""  # "</style" etc. while inside a raw-text element

    def feed(self, data: str) -> None:
        i, n = 0, len(data)
        while i < n:
            if self.mode == "text":
                j = data.find("<", i)
                if j < 0:
                    return
                if data.startswith("<!--", j):
                    self.mode, i = "comment", j + 4
                    continue
                m = _TAG_OPEN.match(data, j)
                if m is None:
                    i = j + 1
                    continue
                self.mode, self.quote, i = "tag", "", m.end()
                self.closing = m.group(1) == "/"
                self.tag = (m.group(2) or "").lower()
            elif self.mode == "tag":
                if self.quote:
                    j = data.find(self.quote, i)
                    if j < 0:
                        return
                    self.quote, i = "", j + 1
                    continue
                m = _TAG_STOP.search(data, i)
                if m is None:
                    return
                if m.group() != ">":
                    self.quote, i = m.group(), m.end()
                    continue
                self_closing = data[m.start() - 1] == "/" if m.start() > 0 else False
                if self.tag in _RAW_TEXT and not self.closing and not self_closing:
                    self.mode, self.raw_end = "raw", f"</{self.tag}"
                else:
                    self.mode = "text"
                i = m.end()
            elif self.mode == "comment":
                j = data.find("-->", i)
                if j < 0:
                    return
                self.mode, i = "text", j + 3
            else:  # raw text: only the matching end tag ends it
                j = data.lower().find(self.raw_end, i)
                if j < 0:
                    return
                self.mode, self.quote, self.closing, self.tag = "tag", "", True, ""
                i = j + len(self.raw_end)


def protect(env: Environment, source: str) -> Protected:
    """Replace every Jinja construct in ``source`` with a placeholder.

    ``source`` must already have passed ``env.parse`` (syntax errors are reported there, with
    the author's line numbers).
    """
    # The token prefix is derived from the source so output is reproducible, and lengthened
    # until it cannot occur in the source by accident.
    digest = hashlib.blake2s(source.encode("utf-8", "surrogatepass")).hexdigest()
    size = 8
    while f"cc{digest[:size]}" in source.lower():
        size += 4
    prefix = f"cc{digest[:size]}j"
    ctx = _Context()
    out: list[str] = []
    constructs: list[Construct] = []
    offsets: list[tuple[int, int, bool]] = []
    m_off = s_off = 0
    for kind, text, line in _split(env, source):
        offsets.append((m_off, s_off, kind == "data"))
        s_off += len(text)
        if kind == "data":
            ctx.feed(text)
            out.append(text)
            m_off += len(text)
            continue
        in_text = ctx.mode == "text"
        token = f"{prefix}{len(constructs)}z"
        piece = f"<!--{token}-->" if in_text else token
        outputs = text.startswith("{{") or _RAW_BLOCK.match(text) is not None
        constructs.append(Construct(text, line, outputs, in_text))
        out.append(piece)
        m_off += len(piece)
    return Protected("".join(out), tuple(constructs), prefix, tuple(offsets), source)


def check(protected: Protected, markup: str, *, stage: str, where: str) -> None:
    """Raise ``TemplateInvalid`` unless every placeholder survived ``stage`` in order.

    Tokens may be duplicated (MJML copies ``mj-title`` into an ``aria-label``), comments must
    appear exactly once and in source order, or a loop or condition would wrap the wrong markup.
    """
    seen: dict[int, int] = {}
    order: list[int] = []
    for m in protected.pattern().finditer(markup):
        index = int(m.group(1) or m.group(2) or m.group(3))
        seen[index] = seen.get(index, 0) + 1
        if m.group(1) is not None:
            order.append(index)
    for index, construct in enumerate(protected.constructs):
        count = seen.get(index, 0)
        if count == 0 or (construct.in_text and count != 1):
            problem = "dropped" if count == 0 else "duplicated"
            raise TemplateInvalid(
                f"{where} line {construct.line}: {stage} {problem} {construct.source!r}; "
                "put Jinja inside text content or attribute values, not between MJML head "
                "elements or around attributes"
            )
    for first, second in itertools.pairwise(order):
        if second < first:
            moved, passed = protected.constructs[first], protected.constructs[second]
            raise TemplateInvalid(
                f"{where} line {moved.line}: {stage} moved {moved.source!r} before "
                f"{passed.source!r} (line {passed.line}); the HTML parser moves markup that "
                "is not allowed where it stands, e.g. text or inline tags directly in a table"
            )


def restore(protected: Protected, markup: str) -> tuple[str, tuple[tuple[int, int], ...]]:
    """Put the constructs back into ``markup`` (output of MJML/css-inline).

    Returns the Jinja source and ``(offset in it, line in the original)`` for each construct,
    so errors raised while rendering the compiled HTML can name the line the author wrote.
    """
    out: list[str] = []
    where: list[tuple[int, int]] = []
    pos = size = 0
    for m in protected.pattern().finditer(markup):
        chunk = markup[pos : m.start()]
        construct = protected.constructs[int(m.group(1) or m.group(2) or m.group(3))]
        size += len(chunk)
        where.append((size, construct.line))
        size += len(construct.source)
        out += (chunk, construct.source)
        pos = m.end()
    out.append(markup[pos:])
    return "".join(out), tuple(where)
