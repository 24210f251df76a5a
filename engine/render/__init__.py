"""Email rendering: sandboxed Jinja2 over HTML or MJML templates, compiled once, rendered fast.

Pure and I/O-free: the engine renders with it at send time, the console for previews.
"""

from __future__ import annotations

from engine.render.renderer import RenderedEmail, Renderer
from engine.render.templates import TemplateSource, load_template_dir, read_template
from engine.render.text import html_to_text

__all__ = [
    "RenderedEmail",
    "Renderer",
    "TemplateSource",
    "html_to_text",
    "load_template_dir",
    "read_template",
]
