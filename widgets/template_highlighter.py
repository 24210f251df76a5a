"""Syntax highlighting for Jinja2 inside HTML or MJML (a ``QSyntaxHighlighter``).

HTML: tags, attribute names, quoted values, comments and entities. Jinja: ``{{ … }}``
expressions, ``{% … %}`` statements (keywords in bold) and ``{# … #}`` comments, drawn over the
HTML so a Jinja expression inside an attribute value still stands out. Multi-line HTML and Jinja
comments carry over line ends through the block state. Colours follow the palette (light and
dark themes); call ``rehighlight()`` after a palette change.
"""

from __future__ import annotations

import re

from PySide6.QtGui import (
    QColor,
    QFont,
    QPalette,
    QSyntaxHighlighter,
    QTextCharFormat,
    QTextDocument,
)

from widgets import theme

_TAG = re.compile(r"</?[A-Za-z][\w:-]*|/?>")
_ATTR = re.compile(r"\s([A-Za-z_:][\w:.-]*)(?==)")
_STRING = re.compile(r"\"[^\"]*\"|'[^']*'")
_ENTITY = re.compile(r"&[#\w]+;")
_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
_KEYWORD = re.compile(
    r"\b(if|elif|else|endif|for|endfor|in|not|and|or|is|set|endset|with|endwith|macro|endmacro"
    r"|call|endcall|filter|endfilter|raw|endraw|include|import|from|as|true|false|none)\b"
)
_FILTER = re.compile(r"\|\s*([A-Za-z_]\w*)")

NORMAL, IN_HTML_COMMENT, IN_JINJA_COMMENT = 0, 1, 2

# (light, dark) colours per kind of token.
_COLOURS = {
    "tag": ("#1d4ed8", "#7aa2f7"),
    "attr": ("#9333ea", "#bb9af7"),
    "string": ("#15803d", "#9ece6a"),
    "comment": ("#6b7280", "#7f8699"),
    "entity": ("#b45309", "#e0af68"),
    "jinja": ("#be123c", "#f7768e"),
    "jinja_bg": ("#fff1f2", "#2a2130"),
    "keyword": ("#9f1239", "#ff9e64"),
    "filter": ("#0e7490", "#7dcfff"),
}


class TemplateHighlighter(QSyntaxHighlighter):
    """Highlights Jinja2 + HTML/MJML in a ``QTextDocument``.

    Signals: none.
    """

    def __init__(self, document: QTextDocument, palette: QPalette | None = None) -> None:
        super().__init__(document)
        self.formats: dict[str, QTextCharFormat] = {}
        self.set_palette(palette or QPalette())

    def set_palette(self, palette: QPalette) -> None:
        """Pick the colours for ``palette`` (light or dark) and highlight again."""
        dark = theme.is_dark(palette)
        self.formats = {}
        for kind, (light, night) in _COLOURS.items():
            fmt = QTextCharFormat()
            fmt.setForeground(QColor(night if dark else light))
            self.formats[kind] = fmt
        self.formats["comment"].setFontItalic(True)
        jinja_bg = QColor(_COLOURS["jinja_bg"][1 if dark else 0])
        for kind in ("jinja", "keyword", "filter"):
            self.formats[kind].setBackground(jinja_bg)
        self.formats["keyword"].setFontWeight(QFont.Weight.Bold)
        self.rehighlight()

    def highlightBlock(self, text: str) -> None:
        self.setCurrentBlockState(NORMAL)
        start = 0
        previous = self.previousBlockState()
        if previous in (IN_HTML_COMMENT, IN_JINJA_COMMENT):
            end_mark = "-->" if previous == IN_HTML_COMMENT else "#}"
            end = text.find(end_mark)
            if end < 0:
                self.setFormat(0, len(text), self.formats["comment"])
                self.setCurrentBlockState(previous)
                return
            start = end + len(end_mark)
            self.setFormat(0, start, self.formats["comment"])
        self._html(text, start)
        self._jinja(text, start)
        self._comments(text, start)

    def _html(self, text: str, start: int) -> None:
        for m in _TAG.finditer(text, start):
            self.setFormat(m.start(), m.end() - m.start(), self.formats["tag"])
        for m in _ATTR.finditer(text, start):
            self.setFormat(m.start(1), m.end(1) - m.start(1), self.formats["attr"])
        for m in _STRING.finditer(text, start):
            self.setFormat(m.start(), m.end() - m.start(), self.formats["string"])
        for m in _ENTITY.finditer(text, start):
            self.setFormat(m.start(), m.end() - m.start(), self.formats["entity"])

    def _jinja(self, text: str, start: int) -> None:
        for m in _JINJA.finditer(text, start):
            self.setFormat(m.start(), m.end() - m.start(), self.formats["jinja"])
            inner = m.group()
            for k in _KEYWORD.finditer(inner):
                self.setFormat(m.start() + k.start(), len(k.group()), self.formats["keyword"])
            for f in _FILTER.finditer(inner):
                self.setFormat(m.start() + f.start(1), len(f.group(1)), self.formats["filter"])

    def _comments(self, text: str, start: int) -> None:
        at = start
        while True:
            html = text.find("<!--", at)
            jinja = text.find("{#", at)
            found = [i for i in (html, jinja) if i >= 0]
            if not found:
                return
            begin = min(found)
            is_html = begin == html
            end_mark = "-->" if is_html else "#}"
            end = text.find(end_mark, begin + 2)
            if end < 0:
                self.setFormat(begin, len(text) - begin, self.formats["comment"])
                self.setCurrentBlockState(IN_HTML_COMMENT if is_html else IN_JINJA_COMMENT)
                return
            end += len(end_mark)
            self.setFormat(begin, end - begin, self.formats["comment"])
            at = end
