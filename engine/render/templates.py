"""Email template sources, and the on-disk layout of the starter emails.

A template directory holds one folder per template, named by its id::

    templates/emails/abandoned-cart/
        template.toml     name, version, subject, optional format/from/preheader/route
        body.mjml         or body.html: the Jinja2 source of the HTML part
        body.txt          optional: the Jinja2 source of the plain-text part

Reading only checks structure (the TOML, the keys, which files exist); Jinja and MJML errors are
reported by ``Renderer.load``, which names the part ("subject", "body", "text") and the line.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import TemplateInvalid

FORMATS = ("html", "mjml")
TEMPLATE_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,99}")
ROUTE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,99}")  # as [routes.NAME] in the settings

_KEYS = {
    "name": str,
    "version": int,
    "subject": str,
    "format": str,
    "from": str,
    "preheader": str,
    "route": str,
}
_REQUIRED = ("name", "version", "subject")


@dataclass(frozen=True, slots=True)
class TemplateSource:
    """One version of an email template, as authored (Jinja2 sources, not yet compiled)."""

    id: str  # e.g. "abandoned-cart"
    version: int
    name: str  # human name
    subject: str  # Jinja2 source
    body: str  # Jinja2 source, HTML or MJML
    format: str = "html"  # "html" | "mjml"
    text: str | None = None  # Jinja2 source of the plain-text part; None: derived from the HTML
    from_address: str | None = None  # "Name <addr@domain>"; None: the engine default
    preheader: str | None = None  # Jinja2 source of the inbox preview line
    route: str | None = None  # the route its sends take unless the send step names one


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TemplateInvalid(f"{path}: not UTF-8 text ({exc.reason})") from exc


def _settings(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(_read(path))
    except tomllib.TOMLDecodeError as exc:
        raise TemplateInvalid(f"{path}: {exc}") from exc
    for key, value in data.items():
        expected = _KEYS.get(key)
        if expected is None:
            known = ", ".join(_KEYS)
            raise TemplateInvalid(f"{path}: unknown key {key!r} (known keys: {known})")
        if not isinstance(value, expected) or isinstance(value, bool):
            raise TemplateInvalid(f"{path}: {key!r} must be a {expected.__name__}")
    missing = [key for key in _REQUIRED if key not in data]
    if missing:
        raise TemplateInvalid(f"{path}: missing {', '.join(map(repr, missing))}")
    if data["version"] < 1:
        raise TemplateInvalid(f"{path}: 'version' must be 1 or more")
    if "route" in data and not ROUTE_NAME.fullmatch(data["route"]):
        raise TemplateInvalid(
            f"{path}: 'route' must be a route name (lower-case letters, digits, '.', '_', '-'), "
            f"got {data['route']!r}"
        )
    return data


def read_template(folder: Path) -> TemplateSource:
    """Read one template folder; raise ``TemplateInvalid`` naming the file at fault."""
    if not TEMPLATE_ID.fullmatch(folder.name):
        raise TemplateInvalid(f"{folder}: a template id is lowercase letters, digits, '-', '_'")
    settings_path = folder / "template.toml"
    if not settings_path.is_file():
        raise TemplateInvalid(f"{settings_path}: missing")
    settings = _settings(settings_path)
    bodies = [folder / f"body.{fmt}" for fmt in FORMATS if (folder / f"body.{fmt}").is_file()]
    if len(bodies) != 1:
        found = "both body.html and body.mjml" if bodies else "no body.html or body.mjml"
        raise TemplateInvalid(f"{folder}: {found}; exactly one is needed")
    body_path = bodies[0]
    fmt = body_path.suffix[1:]
    if settings.get("format", fmt) != fmt:
        raise TemplateInvalid(f"{settings_path}: format {settings['format']!r} but {body_path}")
    text_path = folder / "body.txt"
    return TemplateSource(
        id=folder.name,
        version=settings["version"],
        name=settings["name"],
        subject=settings["subject"],
        body=_read(body_path),
        format=fmt,
        text=_read(text_path) if text_path.is_file() else None,
        from_address=settings.get("from"),
        preheader=settings.get("preheader"),
        route=settings.get("route"),
    )


def load_template_dir(path: Path) -> list[TemplateSource]:
    """Read every template folder under ``path`` (sorted by id).

    Folders whose names start with ``.`` or ``_`` are ignored; anything else that is not a
    valid template raises ``TemplateInvalid`` naming the file.
    """
    if not path.is_dir():
        raise TemplateInvalid(f"{path}: not a directory")
    folders = sorted(p for p in path.iterdir() if p.is_dir() and p.name[0] not in "._")
    return [read_template(folder) for folder in folders]
