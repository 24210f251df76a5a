"""Lint an email template: what would go wrong or break the rules, each with its line.

Checks (``code``: what it means):
- ``syntax``: the template does not compile (Jinja or MJML), with the part and line;
- ``undefined``: a variable that is not in the render context and not set in the template
  (a typo such as ``{{ contcat.first_name }}`` renders empty in every email);
- ``unseen-field``: ``contact.X`` or ``properties.X`` that no contact or event in the stream
  has (a warning: it renders empty until such data arrives);
- ``no-unsubscribe``: marketing mail without ``{{ unsubscribe_url }}`` (CAN-SPAM, RFC 8058);
- ``no-postal-address``: marketing mail without the sender's postal address (CAN-SPAM);
- ``html-size``: HTML over 102 KB, where Gmail clips the message;
- ``img-alt``: an image without alt text (blocked images and screen readers show nothing);
- ``sandbox``: something the sandbox refuses (private attributes, changing data), found in the
  source or when rendering with the given or sample data;
- ``render``: any other error rendering with that data.

Pure: the caller passes the render context and the fields seen.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import nodes
from jinja2.exceptions import SecurityError, TemplateSyntaxError

from engine.clv import FIELDS as VALUE_FIELDS
from engine.errors import RenderError, TemplateInvalid
from engine.render import Renderer, TemplateSource
from engine.render.environment import make_environment

GMAIL_CLIP_BYTES = 102 * 1024
"""Gmail shows "[Message clipped]" past this much HTML."""

CONTEXT_NAMES = frozenset({"contact", "traits", "event", "properties", "unsubscribe_url", "shop"})
"""What the deliver stage puts in every render context (engine/deliver/compose.py)."""
JINJA_NAMES = frozenset({"loop", "caller", "varargs", "kwargs", "self", "super"})
KNOWN_FIELDS: dict[str, frozenset[str]] = {
    "event": frozenset({"name", "properties", "ts"}),
    "shop": frozenset({"name", "url", "address"}),
}
CONTACT_ALWAYS = frozenset({"id", "email", *VALUE_FIELDS})  # contact.X always there
MUTATING = frozenset(
    {"append", "extend", "insert", "pop", "popitem", "remove", "clear", "update"}
    | {"setdefault", "add", "discard", "sort", "reverse"}
)
_IMAGE = re.compile(r"<(img|mj-image)\b((?:[^>\"']|\"[^\"]*\"|'[^']*')*)>", re.IGNORECASE)
_ALT = re.compile(r"\balt\s*=", re.IGNORECASE)
_POSTAL = re.compile(
    r"\b\d{1,6}\s+[A-Za-z][\w .'-]{1,60}\b(street|st\.|avenue|ave\.?|road|rd\.?|boulevard|"
    r"blvd\.?|lane|ln\.?|drive|dr\.?|way|court|ct\.?|place|pl\.?|square|sq\.?)(\W|$)"
    r"|\bp\.?\s?o\.?\s+box\s+\d+|\b(stra(ss|ß)e|str\.|weg|platz|rue|calle|via)\s+\d+",
    re.IGNORECASE,
)
_PROBLEM = re.compile(
    r"^template '[^']*' v\S+: (?P<part>subject|body|text|preheader)(?: line (?P<line>\d+))?: "
    r"(?P<rest>.*)$",
    re.DOTALL,
)
_PARTS = ("subject", "preheader", "body", "text")


@dataclass(frozen=True, slots=True)
class Finding:
    """One lint finding; ``line`` is 1-based in ``part`` (None: the whole part)."""

    code: str
    severity: str  # "error" | "warning"
    part: str
    line: int | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity,
            "part": self.part,
            "line": self.line,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class FieldsSeen:
    """Names seen in the stream: contact traits, and event properties (all events together)."""

    traits: frozenset[str] = frozenset()
    properties: frozenset[str] = frozenset()


_ENV = make_environment(autoescape=True)


def _parts(source: TemplateSource) -> Iterator[tuple[str, str]]:
    for part in _PARTS:
        text = source.body if part == "body" else getattr(source, part)
        if text:
            yield part, text


def _problem(message: str) -> tuple[str, int | None, str]:
    m = _PROBLEM.match(message)
    if m is None:
        return "body", None, message
    line = int(m.group("line")) if m.group("line") else None
    return m.group("part"), line, m.group("rest")


def _end_line(text: str) -> int:
    """Where a missing footer belongs: the closing body tag's line, else the last line."""
    lower = text.lower()
    for tag in ("</mj-body>", "</body>"):
        at = lower.rfind(tag)
        if at >= 0:
            return text.count("\n", 0, at) + 1
    return text.count("\n") + 1


def _path(node: nodes.Node) -> tuple[str, ...] | None:
    """``contact.first_name`` as ("contact", "first_name"); None when not rooted in a name."""
    attrs: list[str] = []
    while True:
        if isinstance(node, nodes.Getattr):
            attrs.append(node.attr)
            node = node.node
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            if not isinstance(node.arg.value, str):
                return None
            attrs.append(node.arg.value)
            node = node.node
        elif isinstance(node, nodes.Name):
            return (node.name, *reversed(attrs))
        else:
            return None


def _check_ast(part: str, tree: nodes.Template, fields: FieldsSeen | None) -> Iterator[Finding]:
    stored = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    stored |= {n.name for n in tree.find_all(nodes.Macro)}
    for imported in tree.find_all(nodes.FromImport):
        stored |= {name if isinstance(name, str) else name[1] for name in imported.names}
    known = CONTEXT_NAMES | JINJA_NAMES | set(_ENV.globals) | stored
    reported: set[tuple[str, int]] = set()
    for name in tree.find_all(nodes.Name):
        if (
            name.ctx == "load"
            and name.name not in known
            and (name.name, name.lineno) not in reported
        ):
            reported.add((name.name, name.lineno))
            close = sorted(CONTEXT_NAMES, key=lambda c: _distance(c, name.name))[0]
            hint = f"; did you mean {close!r}?" if _distance(close, name.name) <= 2 else ""
            yield Finding(
                "undefined",
                "error",
                part,
                name.lineno,
                f"{name.name!r} is not defined: it renders empty in every email{hint}"
                f" (the context has {', '.join(sorted(CONTEXT_NAMES))})",
            )
    for attr in tree.find_all(nodes.Getattr):
        if attr.attr.startswith("_"):
            yield Finding(
                "sandbox",
                "error",
                part,
                attr.lineno,
                f"the sandbox refuses access to {attr.attr!r}: private attributes are unsafe",
            )
    for call in tree.find_all(nodes.Call):
        target = call.node
        if isinstance(target, nodes.Getattr) and target.attr in MUTATING:
            yield Finding(
                "sandbox",
                "error",
                part,
                call.lineno,
                f"the sandbox refuses .{target.attr}(): templates cannot change data"
                " (use {% set %} to build new values)",
            )
    yield from _check_fields(part, tree, stored, fields)


def _check_fields(
    part: str, tree: nodes.Template, stored: Collection[str], fields: FieldsSeen | None
) -> Iterator[Finding]:
    seen: set[tuple[str, ...]] = set()
    # ``{{ traits.code | default("WELCOME10") }}``: the author planned for its absence.
    defaulted = {id(f.node) for f in tree.find_all(nodes.Filter) if f.name in ("default", "d")}
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        path = _path(node)
        if path is None or len(path) < 2 or path[0] in stored:
            continue
        if id(node) in defaulted and path[0] not in KNOWN_FIELDS:
            continue
        root, field = path[0], path[1]
        key = (root, field)
        if key in seen:
            continue
        seen.add(key)
        if root in KNOWN_FIELDS and field not in KNOWN_FIELDS[root]:
            known = ", ".join(sorted(KNOWN_FIELDS[root]))
            yield Finding(
                "undefined",
                "error",
                part,
                node.lineno,
                f"{root}.{field} does not exist: {root} has {known}",
            )
        elif fields is None:
            continue
        elif root in ("contact", "traits") and fields.traits:
            always = CONTACT_ALWAYS if root == "contact" else frozenset()
            if field not in fields.traits and field not in always:
                yield Finding(
                    "unseen-field",
                    "warning",
                    part,
                    node.lineno,
                    f"{root}.{field}: no contact in the stream has the trait {field!r};"
                    " it renders empty",
                )
        elif root == "properties" and fields.properties and field not in fields.properties:
            yield Finding(
                "unseen-field",
                "warning",
                part,
                node.lineno,
                f"properties.{field}: no event in the stream has the property {field!r};"
                " it renders empty",
            )


def _distance(a: str, b: str) -> int:
    """Levenshtein distance (names are short)."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def _uses(trees: Mapping[str, nodes.Template], name: str, attr: str | None = None) -> bool:
    for tree in trees.values():
        for node in tree.find_all(nodes.Getattr if attr else nodes.Name):
            if attr is None and isinstance(node, nodes.Name) and node.name == name:
                return True
            if isinstance(node, nodes.Getattr) and node.attr == attr:
                path = _path(node)
                if path is not None and path[:2] == (name, attr):
                    return True
    return False


def _images(body: str) -> Iterator[Finding]:
    for m in _IMAGE.finditer(body):
        if not _ALT.search(m.group(2)):
            line = body.count("\n", 0, m.start()) + 1
            yield Finding(
                "img-alt",
                "warning",
                "body",
                line,
                f"<{m.group(1)}> has no alt text: blocked images and screen readers show nothing",
            )


def _size(body: str, html: str) -> Finding | None:
    size = len(html.encode("utf-8"))
    if size <= GMAIL_CLIP_BYTES:
        return None
    # Where, roughly, the clip falls in what the author wrote.
    share = GMAIL_CLIP_BYTES / size
    data = body.encode("utf-8")
    line = data[: int(len(data) * share)].count(b"\n") + 1
    return Finding(
        "html-size",
        "error",
        "body",
        line,
        f"the HTML is {size / 1024:,.0f} KB: Gmail clips messages over 102 KB"
        ' (the rest, the unsubscribe link too, hides behind "View entire message")',
    )


def lint_template(
    source: TemplateSource,
    *,
    context: Mapping[str, Any] | None = None,
    fields: FieldsSeen | None = None,
    marketing: bool = True,
    shop: Mapping[str, Any] | None = None,
) -> list[Finding]:
    """Every finding for ``source``, sorted by part and line.

    ``context``: a render context (a real contact and event, or sample data) to render with,
    for the size and the runtime sandbox checks; ``fields``: what the stream has shown;
    ``marketing``: whether the unsubscribe link and postal address are required; ``shop``:
    the configured shop (an empty postal address there is reported too).
    """
    findings: list[Finding] = []
    trees: dict[str, nodes.Template] = {}
    for part, text in _parts(source):
        try:
            trees[part] = _ENV.parse(text)
        except TemplateSyntaxError as exc:
            findings.append(Finding("syntax", "error", part, exc.lineno, exc.message or str(exc)))
    renderer: Renderer | None = None
    if len(trees) == len(list(_parts(source))):
        try:
            renderer = Renderer([source])
        except TemplateInvalid as exc:
            part, line, rest = _problem(str(exc))
            findings.append(Finding("syntax", "error", part, line, rest))
    for part, tree in trees.items():
        findings.extend(_check_ast(part, tree, fields))
    if marketing and "body" in trees:  # a body that does not parse says nothing yet
        end = _end_line(source.body)
        if not _uses(trees, "unsubscribe_url"):
            findings.append(
                Finding(
                    "no-unsubscribe",
                    "error",
                    "body",
                    end,
                    "no unsubscribe link: marketing mail must carry {{ unsubscribe_url }}"
                    " (CAN-SPAM; Gmail and Yahoo require one-click unsubscribe)",
                )
            )
        if _uses(trees, "shop", "address"):
            if shop is not None and not str(shop.get("address") or "").strip():
                findings.append(
                    Finding(
                        "no-postal-address",
                        "warning",
                        "body",
                        end,
                        "{{ shop.address }} is empty: set the postal address in the engine's"
                        " [shop] settings (CAN-SPAM)",
                    )
                )
        elif not _POSTAL.search(source.body):
            findings.append(
                Finding(
                    "no-postal-address",
                    "error",
                    "body",
                    end,
                    "no postal address: marketing mail must show the sender's physical address"
                    " (CAN-SPAM); add {{ shop.address }} to the footer",
                )
            )
    findings.extend(_images(source.body))
    if renderer is not None and context is not None:
        try:
            rendered = renderer.render(source.id, context)
        except RenderError as exc:
            part, line, rest = _problem(str(exc))
            sandbox = isinstance(exc.__cause__, SecurityError)
            findings.append(Finding("sandbox" if sandbox else "render", "error", part, line, rest))
        else:
            clipped = _size(source.body, rendered.html)
            if clipped is not None:
                findings.append(clipped)
    order = {part: i for i, part in enumerate(_PARTS)}
    findings.sort(key=lambda f: (order.get(f.part, 9), f.line or 0, f.code))
    return findings
