"""The library of email templates and workflows: seeded from ``templates/``, versioned in the store.

A fresh database gets the starter templates and workflows, so the demo produces mail at once.
Importing a changed template or workflow adds a new version; unchanged ones are left alone.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from engine.config import Settings
from engine.decide import WorkflowRegistry
from engine.decide.registry import load_stored_workflows
from engine.decide.workflow import Workflow, load_workflow_file
from engine.errors import TemplateInvalid, WorkflowInvalid
from engine.render import Renderer, TemplateSource, read_template
from engine.store import Store, schema


def default_templates_dir() -> Path:
    """``templates/`` at the project root (beside the ``engine`` package)."""
    return Path(__file__).resolve().parent.parent / "templates"


@dataclass
class Library:
    """What the stages render and run: the latest templates and the enabled workflows."""

    renderer: Renderer
    workflows: WorkflowRegistry
    template_routes: Mapping[str, str] = field(default_factory=dict)  # template id -> route

    def set_template_route(self, template_id: str, route: str | None) -> None:
        """A template's newest version names this route (None: none): decide uses it now."""
        routes = {k: v for k, v in self.template_routes.items() if k != template_id}
        if route:
            routes[template_id] = route
        self.template_routes = routes
        self.workflows.set_template_routes(routes)


def _latest(conn: sa.Connection, table: sa.Table) -> list[dict[str, Any]]:
    newest = (
        sa.select(table.c.id, sa.func.max(table.c.version).label("version"))
        .group_by(table.c.id)
        .subquery()
    )
    stmt = sa.select(table).join(
        newest, sa.and_(table.c.id == newest.c.id, table.c.version == newest.c.version)
    )
    return [dict(r._mapping) for r in conn.execute(stmt)]


def _template_row(src: TemplateSource, version: int, source: str, now: float) -> dict[str, Any]:
    return {
        "id": src.id,
        "version": version,
        "name": src.name,
        "subject": src.subject,
        "body": src.body,
        "format": src.format,
        "text": src.text,
        "from_address": src.from_address,
        "preheader": src.preheader,
        "route": src.route,
        "source": source,
        "created_at": now,
    }


def _source_from_row(row: dict[str, Any]) -> TemplateSource:
    return TemplateSource(
        id=row["id"],
        version=row["version"],
        name=row["name"],
        subject=row["subject"],
        body=row["body"],
        format=row["format"],
        text=row["text"],
        from_address=row["from_address"],
        preheader=row["preheader"],
        route=row["route"],
    )


_CONTENT = ("name", "subject", "body", "format", "text", "from_address", "preheader", "route")


def import_templates(
    store: Store, dirs: list[Path], now: float, *, routes: Collection[str] | None = None
) -> int:
    """Add each template (a new version when its content changed); returns how many were added.

    ``routes``: the configured route names; a template naming another one is refused
    (TemplateInvalid) before anything is written.
    """
    sources = [read_template(directory) for directory in dirs]
    if routes is not None:
        from engine.deliver.routes import unknown_template_routes

        problems = unknown_template_routes(sources, routes)
        if problems:
            raise TemplateInvalid("; ".join(problems))
    # Compile everything first: a broken template must not land half an import.
    Renderer(sources)
    added = 0
    with store.begin() as conn:
        current = {row["id"]: row for row in _latest(conn, schema.email_templates)}
        for src in sources:
            old = current.get(src.id)
            row = _template_row(src, 1 if old is None else old["version"] + 1, "file", now)
            if old is not None and all(old[k] == row[k] for k in _CONTENT):
                continue
            conn.execute(schema.email_templates.insert(), row)
            added += 1
    return added


def import_workflows(
    store: Store, files: list[Path], now: float, *, routes: Collection[str] | None = None
) -> int:
    """Add each workflow (a new version when its definition changed).

    ``routes``: the configured route names; a send step naming another one is refused
    (WorkflowInvalid) before anything is written.
    """
    loaded: list[tuple[Workflow, Path]] = [(load_workflow_file(f), f) for f in files]
    if routes is not None:
        from engine.deliver.routes import unknown_routes

        problems = unknown_routes([wf for wf, _ in loaded], routes)
        if problems:
            raise WorkflowInvalid("; ".join(problems))
    added = 0
    with store.begin() as conn:
        current = {row["id"]: row for row in _latest(conn, schema.workflows)}
        for wf, path in loaded:
            definition = wf.to_definition()
            old = current.get(wf.id)
            if old is not None and old["definition"] == definition:
                continue
            conn.execute(
                schema.workflows.insert(),
                {
                    "id": wf.id,
                    "version": 1 if old is None else old["version"] + 1,
                    "name": wf.name,
                    "category": wf.category,
                    "definition": definition,
                    "enabled": wf.enabled,
                    "source": str(path),
                    "created_at": now,
                },
            )
            added += 1
    return added


def seed_library(store: Store, templates_dir: Path | None, now: float) -> None:
    """Load the starter templates and workflows into an empty store."""
    root = templates_dir or default_templates_dir()
    with store.begin() as conn:
        has_templates = conn.execute(sa.select(schema.email_templates.c.id).limit(1)).first()
        has_workflows = conn.execute(sa.select(schema.workflows.c.id).limit(1)).first()
    if not has_templates and (root / "emails").is_dir():
        dirs = sorted(p.parent for p in (root / "emails").glob("*/template.toml"))
        import_templates(store, dirs, now)
    if not has_workflows and (root / "workflows").is_dir():
        import_workflows(store, sorted((root / "workflows").glob("*.toml")), now)


def load_library(store: Store, settings: Settings) -> Library:
    """The latest version of every template, and every stored workflow version."""
    with store.begin() as conn:
        template_rows = _latest(conn, schema.email_templates)
    renderer = Renderer(_source_from_row(r) for r in template_rows)
    # Every version: enrollments continue on the version they entered with.
    workflows = load_stored_workflows(store, overrides=settings.workflows)
    from engine.offers.keys import offer_book
    from engine.pacing.policy import Pacing

    pacing = Pacing.from_settings(settings)
    # A send step that names no route takes its template's (the newest version's) route.
    template_routes = {r["id"]: r["route"] for r in template_rows if r["route"]}
    registry = WorkflowRegistry(
        workflows, offer_book(settings), pacing=pacing, template_routes=template_routes
    )
    return Library(renderer=renderer, workflows=registry, template_routes=template_routes)


def export_templates(store: Store, directory: Path) -> int:
    """Write the latest templates as folders in the same format ``templates/emails`` uses."""
    with store.begin() as conn:
        rows = _latest(conn, schema.email_templates)
    for row in rows:
        folder = directory / row["id"]
        folder.mkdir(parents=True, exist_ok=True)
        ext = "mjml" if row["format"] == "mjml" else "html"
        (folder / f"body.{ext}").write_text(row["body"], encoding="utf-8")
        if row["text"]:
            (folder / "body.txt").write_text(row["text"], encoding="utf-8")
        meta = {
            "name": row["name"],
            "version": row["version"],
            "subject": row["subject"],
            "format": row["format"],
        }
        if row["from_address"]:
            meta["from"] = row["from_address"]
        if row["preheader"]:
            meta["preheader"] = row["preheader"]
        if row["route"]:
            meta["route"] = row["route"]
        from engine.commands import to_toml

        (folder / "template.toml").write_text(to_toml(meta), encoding="utf-8")
    return len(rows)


def export_workflows(store: Store, directory: Path) -> int:
    """Write every workflow version as JSON (importable again)."""
    directory.mkdir(parents=True, exist_ok=True)
    with store.begin() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.select(schema.workflows))]
    for row in rows:
        data = {**row["definition"], "version": row["version"], "enabled": row["enabled"]}
        path = directory / f"{row['id']}.v{row['version']}.json"
        path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    return len(rows)


__all__ = [
    "Library",
    "default_templates_dir",
    "export_templates",
    "export_workflows",
    "import_templates",
    "import_workflows",
    "load_library",
    "seed_library",
]
