"""The workflow editor's control verbs (``workflows.*``; envelope in engine/control.py).

- ``workflows.list`` -> ``{"workflows": [...]}``: each workflow's id, name, category, trigger
  (in words), ``live_version`` (the enabled one, or null), ``latest`` and ``versions``;
- ``workflows.get {workflow, version?}`` -> one version (default: the live one, else the
  newest): ``definition`` (JSON, as stored), ``toml`` (the same as TOML text), ``enabled``,
  ``live_version``, ``versions`` and ``problems`` (see validate);
- ``workflows.versions {workflow}`` -> every version: version, name, enabled, created_at,
  source;
- ``workflows.validate {definition | text}`` -> ``{valid, problems: [{step, problem}],
  definition}``: every problem at once (engine/decide/workflow_check.py), ``text`` is TOML;
- ``workflows.save {definition | text, base_version?, enable?}`` -> a new version (refused
  while it has problems, and when ``base_version`` is not the newest any more). It does not
  change which version is live unless ``enable`` is true. Audited;
- ``workflows.enable {workflow, version}`` -> that version becomes the live one (every other
  version of the workflow is switched off); audited;
- ``workflows.disable {workflow, version}`` -> the live version (named, so the caller says
  which one it means) is switched off: the workflow starts no new enrollments; audited;
- ``workflows.step_counts {workflow, version?}`` -> per step of that version (default: live):
  entered, waiting, sent, exited, converted; and the enrollment totals.

Enrollments already running keep the version they started with, whatever is enabled later.
Every change publishes ``workflows.changed`` (core NATS); every node reloads the workflows
from the store (:func:`follow_workflow_changes`), so decide everywhere starts enrollments on
the same version without a restart. Bad arguments and bad definitions are refused with a
message naming the problem, and nothing changes.
"""

from __future__ import annotations

import asyncio
import logging
import re
import tomllib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa

from engine import notices
from engine.authoring import library as template_library
from engine.control import ControlError, ControlServer, check_keys, required_text
from engine.decide.registry import load_stored_workflows
from engine.decide.workflow import CATALOG_KINDS, EventMatch, parse_workflow
from engine.decide.workflow_check import Problem, check_workflow
from engine.decide.workflow_toml import to_toml
from engine.deliver.routes import known_routes
from engine.errors import WorkflowInvalid
from engine.store import schema

if TYPE_CHECKING:
    from engine.decide import WorkflowRegistry
    from engine.node import Node

log = logging.getLogger(__name__)

CHANGED_SUBJECT = "workflows.changed"
"""Core NATS subject: ``{"workflow", "version", "node"}`` after a save, enable or disable."""
MAX_DEFINITION = 200_000  # bytes of JSON (or characters of TOML) a draft may take
_W = schema.workflows
WORKFLOW_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,99}")  # as engine/decide/workflow.py takes


def describe_trigger(trigger: EventMatch) -> str:
    """The trigger in words: ``Product Added``, ``enters segment vip``, ``catalog price drop``."""
    if trigger.segment is not None:
        return f"enters segment {trigger.segment}"
    if trigger.catalog is not None:
        kind = trigger.catalog.kind if trigger.catalog.kind in CATALOG_KINDS else "change"
        return f"catalog {kind.replace('_', ' ')}"
    return " or ".join(trigger.events)


def _workflow_id(args: dict[str, Any]) -> str:
    wid = required_text(args, "workflow", 100)
    if not WORKFLOW_ID.fullmatch(wid):
        raise ControlError(
            f"bad workflow id {wid!r}: lower-case letters, digits, - and _ (at most 100)"
        )
    return wid


def _version_arg(args: dict[str, Any], key: str = "version") -> int | None:
    value = args.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ControlError(f"{key} must be a version number (1 or more)")
    return value


def draft_definition(args: dict[str, Any]) -> dict[str, Any]:
    """The draft from ``definition`` (an object) or ``text`` (TOML), exactly one of them."""
    if ("definition" in args) == ("text" in args):
        raise ControlError("give the draft as definition (an object) or text (TOML), not both")
    if "text" in args:
        text = required_text(args, "text", MAX_DEFINITION)
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ControlError(f"the text is not valid TOML: {exc}") from exc
    else:
        data = args["definition"]
        if not isinstance(data, dict):
            raise ControlError("definition must be an object (a workflow as JSON)")
        if len(orjson.dumps(data)) > MAX_DEFINITION:
            raise ControlError(f"definition is too large (at most {MAX_DEFINITION:,} bytes)")
    # The table keeps version and enabled in their own columns.
    return {k: v for k, v in data.items() if k not in ("version", "enabled")}


def _versions(conn: sa.Connection, wid: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        sa.select(_W.c.version, _W.c.name, _W.c.enabled, _W.c.created_at, _W.c.source)
        .where(_W.c.id == wid)
        .order_by(_W.c.version.desc())
    ).all()
    return [
        {
            "version": r.version,
            "name": r.name,
            "enabled": bool(r.enabled),
            "created_at": r.created_at,
            "source": r.source,
        }
        for r in rows
    ]


def _live(versions: list[dict[str, Any]]) -> int | None:
    """The live version: the highest enabled one (engine/decide/registry.py)."""
    return next((v["version"] for v in versions if v["enabled"]), None)


def _audit(
    conn: sa.Connection, actor: str, action: str, target: str, detail: dict[str, Any], now: float
) -> int | None:
    inserted = conn.execute(
        schema.audit_log.insert(),
        {
            "ts": now,
            "actor": actor[:200],
            "action": action,
            "target": target[:400],
            "count": 1,
            "detail": detail,
        },
    )
    key = inserted.inserted_primary_key
    return int(key[0]) if key and key[0] is not None else None


def step_counts(conn: sa.Connection, wid: str, version: int, step_ids: list[str]) -> dict[str, Any]:
    """Per step of ``wid`` v``version``: how many enrollments reached it (entered), wait at
    it, ended there (exited), and its sent mails and the conversions they earned."""
    e, log_, i, c = schema.enrollments, schema.enrollment_log, schema.intents, schema.conversions
    mine = sa.and_(e.c.workflow_id == wid, e.c.workflow_version == version)
    keys = ("entered", "waiting", "sent", "exited", "converted")
    steps = {s: dict.fromkeys(keys, 0) for s in step_ids}

    def put(rows: Any, key: str) -> None:
        for step_id, n in rows:
            if step_id in steps:
                steps[step_id][key] = int(n)

    put(
        conn.execute(
            sa.select(log_.c.step_id, sa.func.count(sa.distinct(log_.c.enrollment_id)))
            .join(e, e.c.id == log_.c.enrollment_id)
            .where(mine, log_.c.step_id.is_not(None))
            .group_by(log_.c.step_id)
        ).all(),
        "entered",
    )
    for state, key in (("waiting", "waiting"), ("exited", "exited")):
        put(
            conn.execute(
                sa.select(e.c.step_id, sa.func.count())
                .where(mine, e.c.state == state)
                .group_by(e.c.step_id)
            ).all(),
            key,
        )
    put(
        conn.execute(
            sa.select(i.c.step_id, sa.func.count())
            .where(i.c.workflow_id == wid, i.c.workflow_version == version, i.c.status == "sent")
            .group_by(i.c.step_id)
        ).all(),
        "sent",
    )
    put(
        conn.execute(
            sa.select(c.c.step_id, sa.func.count())
            .join(i, i.c.id == c.c.intent_id)
            .where(c.c.workflow_id == wid, i.c.workflow_version == version)
            .group_by(c.c.step_id)
        ).all(),
        "converted",
    )
    states: dict[str, int] = {
        str(state): int(n)
        for state, n in conn.execute(
            sa.select(e.c.state, sa.func.count()).where(mine).group_by(e.c.state)
        ).all()
    }
    totals = {k: int(states.get(k, 0)) for k in ("active", "waiting", "completed", "exited")}
    totals["entered"] = sum(states.values())
    return {"steps": steps, "enrollments": totals}


def register_workflow_operations(control: ControlServer, node: Node) -> None:
    """Register the workflow editor's verbs on the node's control server."""

    store = node.require_store

    def registry() -> WorkflowRegistry:
        found = node.components.get("library")
        if found is None:
            raise ControlError("the workflows are not loaded on this node")
        return found.workflows  # type: ignore[no-any-return]

    def overrides(wid: str) -> dict[str, Any]:
        return dict(node.settings.workflows.get(wid, {}))

    def problems_of(conn: sa.Connection, definition: dict[str, Any]) -> list[Problem]:
        wid = definition.get("id")
        return check_workflow(
            definition,
            templates=set(template_library.latest_versions(conn)),
            routes=set(known_routes(node.settings)),
            overrides=overrides(wid) if isinstance(wid, str) else None,
        )

    def known(conn: sa.Connection, wid: str) -> list[dict[str, Any]]:
        versions = _versions(conn, wid)
        if not versions:
            names = conn.execute(sa.select(_W.c.id).distinct().order_by(_W.c.id)).scalars().all()
            raise ControlError(
                f"there is no workflow {wid!r} (workflows: {', '.join(names) or 'none yet'})"
            )
        return versions

    def row_of(conn: sa.Connection, wid: str, version: int) -> Any:
        row = conn.execute(sa.select(_W).where(_W.c.id == wid, _W.c.version == version)).first()
        if row is None:
            numbers = ", ".join(str(v["version"]) for v in _versions(conn, wid))
            raise ControlError(f"workflow {wid!r} has no version {version} (versions: {numbers})")
        return row

    async def changed(wid: str, version: int) -> None:
        """Reload here at once, and tell every other node to reload."""
        await reload_workflows(node)
        if node.nc is not None:
            notice = {"workflow": wid, "version": version, "node": node.settings.engine.node}
            await node.nc.publish(CHANGED_SUBJECT, orjson.dumps(notice))

    # -- verbs --------------------------------------------------------------------------------

    async def workflows_list(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, ())
        index = registry().index

        def run() -> list[dict[str, Any]]:
            with store().begin() as conn:
                rows = conn.execute(
                    sa.select(
                        _W.c.id, _W.c.version, _W.c.enabled, _W.c.name, _W.c.category
                    ).order_by(_W.c.id, _W.c.version.desc())
                ).all()
            out: dict[str, dict[str, Any]] = {}
            for r in rows:
                entry = out.setdefault(
                    r.id,
                    {
                        "id": r.id,
                        "name": r.name,
                        "category": r.category,
                        "latest": r.version,
                        "versions": 0,
                        "live_version": None,
                        "trigger": "",
                    },
                )
                entry["versions"] += 1
                if r.enabled and entry["live_version"] is None:
                    entry["live_version"] = r.version
            for wid, entry in out.items():
                wf = index.get(wid, entry["live_version"] or entry["latest"])
                if wf is not None:
                    entry["name"], entry["category"] = wf.name, wf.category
                    entry["trigger"] = describe_trigger(wf.trigger)
            return list(out.values())

        return {"workflows": await asyncio.to_thread(run)}

    async def workflows_get(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, ("workflow", "version"))
        wid = _workflow_id(args)
        asked = _version_arg(args)

        def run() -> dict[str, Any]:
            with store().begin() as conn:
                versions = known(conn, wid)
                live = _live(versions)
                version = asked or live or versions[0]["version"]
                row = row_of(conn, wid, version)
                definition = dict(row.definition)
                problems = problems_of(conn, definition)
            return {
                "id": wid,
                "version": version,
                "name": row.name,
                "category": row.category,
                "enabled": bool(row.enabled),
                "live_version": live,
                "latest": versions[0]["version"],
                "created_at": row.created_at,
                "source": row.source,
                "definition": definition,
                "toml": to_toml(definition),
                "versions": versions,
                "problems": [p.as_dict() for p in problems],
            }

        return await asyncio.to_thread(run)

    async def workflows_versions(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, ("workflow",))
        wid = _workflow_id(args)

        def run() -> dict[str, Any]:
            with store().begin() as conn:
                versions = known(conn, wid)
            return {"workflow": wid, "live_version": _live(versions), "versions": versions}

        return await asyncio.to_thread(run)

    async def workflows_validate(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, ("definition", "text"))
        definition = draft_definition(args)

        def run() -> list[Problem]:
            with store().begin() as conn:
                return problems_of(conn, definition)

        problems = await asyncio.to_thread(run)
        return {
            "valid": not problems,
            "problems": [p.as_dict() for p in problems],
            "definition": definition,
            "toml": _toml_or_none(definition),
        }

    async def workflows_save(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, ("definition", "text", "base_version", "enable"))
        definition = draft_definition(args)
        base = _version_arg(args, "base_version")
        enable = args.get("enable", False)
        if not isinstance(enable, bool):
            raise ControlError("enable must be true or false")
        now = node.clock.now()

        def run() -> dict[str, Any]:
            with store().begin() as conn:
                problems = problems_of(conn, definition)
                if problems:
                    listed = "; ".join(str(p) for p in problems[:5])
                    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
                    raise ControlError(f"not saved: {listed}{more}")
                wf = parse_workflow(definition, source="console", overrides=None)
                versions = _versions(conn, wf.id)
                latest = versions[0]["version"] if versions else None
                if base is not None and latest != base:
                    raise ControlError(
                        f"not saved: workflow {wf.id!r} is at version {latest}, not {base}"
                        " (someone saved meanwhile); load it, merge and save again"
                    )
                if latest is not None:
                    newest = row_of(conn, wf.id, latest)
                    if dict(newest.definition) == definition:
                        return {"workflow": wf.id, "version": latest, "changed": False}
                version = (latest or 0) + 1
                if enable:
                    conn.execute(sa.update(_W).where(_W.c.id == wf.id).values(enabled=False))
                conn.execute(
                    _W.insert(),
                    {
                        "id": wf.id,
                        "version": version,
                        "name": wf.name,
                        "category": wf.category,
                        "definition": definition,
                        "enabled": enable,
                        "source": "console",
                        "created_at": now,
                    },
                )
                audit_id = _audit(
                    conn,
                    actor,
                    "workflows.save",
                    f"workflow {wf.id} v{version}" + (" (enabled)" if enable else ""),
                    {"workflow": wf.id, "version": version, "enabled": enable},
                    now,
                )
            return {
                "workflow": wf.id,
                "version": version,
                "enabled": enable,
                "changed": True,
                "audit_id": audit_id,
            }

        try:
            result = await asyncio.to_thread(run)
        except WorkflowInvalid as exc:  # check_workflow ran the parser; kept for safety
            raise ControlError(f"not saved: {exc}") from exc
        except sa.exc.IntegrityError as exc:  # the same version saved on another node
            raise ControlError(
                "not saved: someone else saved this workflow at the same moment; load it"
                " and save again"
            ) from exc
        if result["changed"]:
            await changed(result["workflow"], result["version"])
        return result

    async def set_enabled(args: dict[str, Any], actor: str, enable: bool) -> Any:
        check_keys(args, ("workflow", "version"))
        wid = _workflow_id(args)
        version = _version_arg(args)
        if version is None:
            raise ControlError("version is required (the version to enable or disable)")
        now = node.clock.now()
        verb = "workflows.enable" if enable else "workflows.disable"

        def run() -> dict[str, Any]:
            with store().begin() as conn:
                versions = known(conn, wid)
                row = row_of(conn, wid, version)
                live = _live(versions)
                if enable:
                    if live == version:
                        return {"workflow": wid, "version": version, "changed": False}
                    problems = problems_of(conn, dict(row.definition))
                    if problems:
                        listed = "; ".join(str(p) for p in problems[:5])
                        raise ControlError(f"not enabled: v{version} has problems: {listed}")
                else:
                    if live is None:
                        return {"workflow": wid, "version": version, "changed": False}
                    if live != version:
                        raise ControlError(
                            f"not disabled: v{version} is not the live version of {wid!r}"
                            f" (v{live} is); nothing changed"
                        )
                # One live version at a time: enabling one switches the others off, and
                # disabling switches off older ones an import may have left enabled too.
                conn.execute(sa.update(_W).where(_W.c.id == wid).values(enabled=False))
                if enable:
                    conn.execute(
                        sa.update(_W)
                        .where(_W.c.id == wid, _W.c.version == version)
                        .values(enabled=True)
                    )
                audit_id = _audit(
                    conn,
                    actor,
                    verb,
                    f"workflow {wid} v{version}",
                    {"workflow": wid, "version": version, "previous_live": live},
                    now,
                )
            return {
                "workflow": wid,
                "version": version,
                "changed": True,
                "previous_live": live,
                "audit_id": audit_id,
            }

        result = await asyncio.to_thread(run)
        if result["changed"]:
            await changed(wid, version)
        result["live_version"] = version if enable else None
        return result

    async def workflows_enable(args: dict[str, Any], actor: str) -> Any:
        return await set_enabled(args, actor, True)

    async def workflows_disable(args: dict[str, Any], actor: str) -> Any:
        return await set_enabled(args, actor, False)

    async def workflows_step_counts(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, ("workflow", "version"))
        wid = _workflow_id(args)
        asked = _version_arg(args)
        now = node.clock.now()

        def run() -> dict[str, Any]:
            with store().begin() as conn:
                versions = known(conn, wid)
                version = asked or _live(versions) or versions[0]["version"]
                row = row_of(conn, wid, version)
                raw_steps = row.definition.get("steps") or []
                ids = [s["id"] for s in raw_steps if isinstance(s, dict) and "id" in s]
                counts = step_counts(conn, wid, version, ids)
            return {"workflow": wid, "version": version, "at": now, **counts}

        return await asyncio.to_thread(run)

    for verb, handler in (
        ("workflows.list", workflows_list),
        ("workflows.get", workflows_get),
        ("workflows.versions", workflows_versions),
        ("workflows.validate", workflows_validate),
        ("workflows.save", workflows_save),
        ("workflows.enable", workflows_enable),
        ("workflows.disable", workflows_disable),
        ("workflows.step_counts", workflows_step_counts),
    ):
        control.register(verb, handler)


def _toml_or_none(definition: dict[str, Any]) -> str | None:
    try:
        return to_toml(definition)
    except ValueError:
        return None


async def reload_workflows(node: Node) -> None:
    """Load every stored workflow version into this node's registry (swapped as a whole)."""
    found = node.components.get("library")
    store = node.store
    if found is None or store is None:
        return
    loaded = await asyncio.to_thread(
        load_stored_workflows, store, overrides=node.settings.workflows
    )
    found.workflows.replace(loaded)
    live = {wid: wf.version for wid, wf in found.workflows.index.live.items() if wf.enabled}
    log.info("workflows reloaded: live %s", live)


async def follow_workflow_changes(node: Node) -> Callable[[], Awaitable[None]]:
    """Subscribe to ``workflows.changed``: a notice from another node reloads the workflows
    from the store. Notices that arrive during a reload are folded into one more reload.

    Returns the coroutine function that unsubscribes (for the node's shutdown stack).
    """
    nc = node.nc
    if nc is None:
        raise ControlError("not connected to NATS")
    me = node.settings.engine.node
    reload = notices.folded(lambda: reload_workflows(node))

    async def on_notice(notice: dict[str, Any]) -> None:
        if str(notice["node"]) != me:  # the node that made the change reloaded already
            await reload()

    return await notices.follow(
        nc,
        CHANGED_SUBJECT,
        on_notice,
        errors=(sa.exc.SQLAlchemyError, WorkflowInvalid),
        what="reload the workflows",
    )
