"""The renderer: compiled templates in memory, one ``render`` per email."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from jinja2 import Template, meta

from engine.errors import RenderError
from engine.render.compile import CompiledTemplate, compile_source, filename
from engine.render.environment import make_environment
from engine.render.templates import TemplateSource
from engine.render.text import html_to_text, tidy

# A subject is one header line: any line break, tab or other control character (C0, DEL, C1,
# Unicode line/paragraph separators) with the spaces around it becomes a single space.
_SUBJECT_BREAKS = re.compile(r"[ ]*[\x00-\x1f\x7f-\x9f\u2028\u2029]+[ ]*")


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    """One personalized email, ready for ``engine.mime.build_message``."""

    subject: str
    html: str
    text: str
    from_address: str | None
    template_id: str
    template_version: int


def one_line(text: str) -> str:
    """``text`` as a single line: breaks, tabs and control characters become spaces."""
    return _SUBJECT_BREAKS.sub(" ", text).strip()


class Renderer:
    """Compiled email templates by id; pure and I/O-free, so the console can preview with it.

    ``load`` does the slow work (MJML, CSS inlining, compilation) once; ``render`` only runs
    Jinja. Safe to share between threads: a load swaps in a new immutable entry.
    """

    def __init__(self, sources: Iterable[TemplateSource] = ()) -> None:
        self._html_env = make_environment(autoescape=True)
        self._text_env = make_environment(autoescape=False)
        self._templates: dict[str, CompiledTemplate] = {}
        self._variables: dict[str, frozenset[str]] = {}
        for source in sources:
            self.load(source)

    def load(self, source: TemplateSource) -> None:
        """Compile and cache ``source``, replacing whatever version of it was loaded before.

        The latest call wins whatever its version number: callers decide which version is
        current. Raises ``TemplateInvalid`` naming the part and line; the previously loaded
        version then stays in use.
        """
        current = self._templates.get(source.id)
        if current is not None and current.source == source:
            return
        self._templates[source.id] = compile_source(
            source, html_env=self._html_env, text_env=self._text_env
        )
        parts = (source.subject, source.body, source.text or "", source.preheader or "")
        self._variables[source.id] = frozenset().union(
            *(meta.find_undeclared_variables(self._text_env.parse(part)) for part in parts)
        )

    def variables(self, template_id: str) -> frozenset[str]:
        """The context variables a loaded template reads (empty for an unknown id), so the
        deliver stage loads data such as the catalog only for the templates that use it."""
        return self._variables.get(template_id, frozenset())

    def has(self, template_id: str) -> bool:
        """Whether a template with this id is loaded."""
        return template_id in self._templates

    def source(self, template_id: str) -> TemplateSource:
        """The loaded source of ``template_id``; ``KeyError`` when it is not loaded."""
        return self._templates[template_id].source

    def render(self, template_id: str, context: Mapping[str, Any]) -> RenderedEmail:
        """Render every part for one recipient.

        ``context`` conventionally holds ``contact``, ``traits``, ``event``, ``properties``,
        ``unsubscribe_url`` and ``shop``. Missing values render empty; anything else going wrong
        (unknown template, sandbox violation, an error raised in the template) is a
        ``RenderError`` naming the template, part and line.
        """
        compiled = self._templates.get(template_id)
        if compiled is None:
            raise RenderError(f"unknown template {template_id!r}")
        variables = dict(context)
        subject = one_line(self._run(compiled, "subject", compiled.subject, variables))
        html = self._run(compiled, "body", compiled.html, variables)
        if compiled.text is None:
            text = html_to_text(html)
        else:
            text = self._run(compiled, "text", compiled.text, variables)
            if compiled.text_derived:
                text = tidy(text)
        source = compiled.source
        return RenderedEmail(subject, html, text, source.from_address, source.id, source.version)

    @staticmethod
    def _run(
        compiled: CompiledTemplate, part: str, template: Template, variables: dict[str, Any]
    ) -> str:
        try:
            return template.render(variables)
        except Exception as exc:  # a template may raise anything; none may escape raw
            raise _render_error(compiled, part, exc) from exc


def _template_line(tb: TracebackType | None, name: str) -> int | None:
    """The innermost line of the compiled part in a (Jinja-rewritten) traceback."""
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == name:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _render_error(compiled: CompiledTemplate, part: str, exc: Exception) -> RenderError:
    source = compiled.source
    shown_part: str = part
    line = _template_line(exc.__traceback__, filename(source, part))
    if line is not None:
        shown_part, line = compiled.locate(part, line)
    at = f" line {line}" if line is not None else ""
    kind = type(exc).__name__
    return RenderError(f"template {source.id!r} v{source.version}: {shown_part}{at}: {kind}: {exc}")
