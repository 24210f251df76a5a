"""Turn a ``TemplateSource`` into compiled Jinja templates, doing every slow step once.

Per template, at load: Jinja syntax check of each part (errors carry the author's line),
MJML -> HTML, CSS inlining, the plain-text part derived from the HTML, the preheader
inserted, and Jinja compilation. What is left for each send is three Jinja renders.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import css_inline
from jinja2 import Environment, Template, TemplateSyntaxError
from mjml import mjml2html

from engine.errors import HeaderInvalid, TemplateInvalid
from engine.mime import parse_address
from engine.render.placeholders import Protected, check, protect, restore
from engine.render.templates import FORMATS, TEMPLATE_ID, TemplateSource
from engine.render.text import text_template

# Styles stay in <head> too (media queries, client resets) besides being inlined, because
# clients that honour <style> need the responsive rules. No remote stylesheet is ever fetched:
# rendering is I/O-free.
_INLINER = css_inline.CSSInliner(
    keep_style_tags=True, keep_link_tags=True, load_remote_stylesheets=False
)
_BODY_TAG = re.compile(r"<body\b[^>]*>", re.IGNORECASE)
_MJML_POSITION = re.compile(r"position (\d+)")
# Hidden preview text; the trailing zero-width run keeps clients from filling the rest of the
# inbox preview line with the first words of the body.
_PREHEADER = (
    '<div style="display:none;font-size:1px;line-height:1px;max-height:0;max-width:0;'
    'opacity:0;overflow:hidden;mso-hide:all;">{}' + "&#847;&zwnj;&nbsp;" * 12 + "</div>"
)


@dataclass(frozen=True, slots=True)
class CompiledTemplate:
    """A template ready to render many times."""

    source: TemplateSource
    subject: Template
    html: Template
    text: Template | None  # None: derive the text part from the rendered HTML at send time
    text_derived: bool  # the text template was derived from the HTML (tidy it after render)
    html_source: str  # what ``html`` was compiled from: MJML output with the Jinja put back
    # (offset in html_source, line in the author's body) for each Jinja construct
    html_constructs: tuple[tuple[int, int], ...]
    preheader_line: int | None  # the line of html_source holding the preheader

    def locate(self, part: str, line: int) -> tuple[str, int | None]:
        """Map a line of a compiled part to what the author wrote: ``(part, line or None)``."""
        if part != "body":
            return part, line
        if line == self.preheader_line:
            return "preheader", None
        best: int | None = None
        for offset, source_line in self.html_constructs:
            if self.html_source.count("\n", 0, offset) + 1 > line:
                break
            best = source_line
        return part, best


def filename(source: TemplateSource, part: str) -> str:
    """The name compiled code carries, so tracebacks show which template part failed."""
    return f"<{source.id}:{part}>"


def _compile(env: Environment, source: TemplateSource, part: str, text: str) -> Template:
    name = filename(source, part)
    try:
        code = env.compile(text, name=name, filename=name)
    except TemplateSyntaxError as exc:
        raise TemplateInvalid(
            f"template {source.id!r} v{source.version}: {part} line {exc.lineno}: {exc.message}"
        ) from exc
    # A plain copy of the globals, not Jinja's ChainMap over the environment's: every render
    # copies them into its context, and copying the ChainMap (its Python __iter__ and
    # __getitem__) was a fifth of rendering an order confirmation. Nothing adds globals to
    # an environment once templates are compiled.
    return env.template_class.from_code(env, code, dict(env.make_globals(None)), None)


def _parse(env: Environment, source: TemplateSource, part: str, text: str) -> None:
    try:
        env.parse(text)
    except TemplateSyntaxError as exc:
        raise TemplateInvalid(
            f"template {source.id!r} v{source.version}: {part} line {exc.lineno}: {exc.message}"
        ) from exc


def _check_fields(source: TemplateSource) -> None:
    where = f"template {source.id!r} v{source.version}"
    if not TEMPLATE_ID.fullmatch(source.id):
        raise TemplateInvalid(f"{where}: id must be lowercase letters, digits, '-', '_'")
    if source.format not in FORMATS:
        raise TemplateInvalid(f"{where}: format must be one of {FORMATS}, not {source.format!r}")
    if not source.body.strip():
        raise TemplateInvalid(f"{where}: body is empty")
    if source.from_address is not None:
        try:
            parse_address(source.from_address)
        except HeaderInvalid as exc:
            raise TemplateInvalid(f"{where}: from address: {exc}") from exc


def _mjml(protected: Protected, source: TemplateSource) -> str:
    try:
        return mjml2html(protected.markup)
    except Exception as exc:  # a native extension: whatever it raises means "bad MJML"
        # mrml reports byte offsets into what it was given; map them to the author's line.
        message = str(exc)
        m = _MJML_POSITION.search(message)
        where = "body"
        if m:
            raw = protected.markup.encode("utf-8", "surrogatepass")[: int(m.group(1))]
            offset = len(raw.decode("utf-8", "ignore"))
            where = f"body line {protected.source_line(offset)}"
        raise TemplateInvalid(
            f"template {source.id!r} v{source.version}: {where}: MJML: {message}"
        ) from exc


def _inline(markup: str, source: TemplateSource) -> str:
    try:
        return _INLINER.inline(markup)
    except Exception as exc:  # css_inline.InlineError and whatever else the extension raises
        raise TemplateInvalid(
            f"template {source.id!r} v{source.version}: body: CSS inlining: {exc}"
        ) from exc


def compile_source(
    source: TemplateSource, *, html_env: Environment, text_env: Environment
) -> CompiledTemplate:
    """Compile every part of ``source``; raise ``TemplateInvalid`` naming the part and line."""
    _check_fields(source)
    where = f"template {source.id!r} v{source.version}"
    subject = _compile(text_env, source, "subject", source.subject)
    text = None if source.text is None else _compile(text_env, source, "text", source.text)
    if source.preheader:
        _parse(html_env, source, "preheader", source.preheader)
    _parse(html_env, source, "body", source.body)

    protected = protect(html_env, source.body)
    markup = protected.markup
    if source.format == "mjml":
        markup = _mjml(protected, source)
        check(protected, markup, stage="MJML", where=f"{where}: body")
    markup = _inline(markup, source)
    check(protected, markup, stage="CSS inlining", where=f"{where}: body")

    derived = False
    if text is None:
        try:
            text = _compile(text_env, source, "text", text_template(protected, markup))
            derived = True
        except TemplateInvalid:
            text = None  # unusual markup around Jinja: derive from the rendered HTML instead

    html_source, constructs = restore(protected, markup)
    preheader_line = None
    if source.preheader:
        # On a line of its own (a preview line has no line breaks), so a render error on that
        # line is known to come from the preheader.
        block = "\n" + _PREHEADER.format(" ".join(source.preheader.splitlines())) + "\n"
        m = _BODY_TAG.search(html_source)
        at = m.end() if m else 0
        html_source = html_source[:at] + block + html_source[at:]
        preheader_line = html_source.count("\n", 0, at) + 2
        constructs = tuple((o + len(block) if o >= at else o, n) for o, n in constructs)
    try:
        html = _compile(html_env, source, "body", html_source)
    except TemplateInvalid as exc:  # the source parsed, so a conversion step broke it
        raise TemplateInvalid(f"{exc} (in the HTML compiled from the body)") from exc
    return CompiledTemplate(
        source, subject, html, text, derived, html_source, constructs, preheader_line
    )
