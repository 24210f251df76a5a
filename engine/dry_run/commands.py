"""``campaign-engine dry-run``: a draft workflow or segment over the recorded events, printed.

It runs in the CLI's own process against the store and the NATS the engines use (the local
stack's when no ``--nats`` is given), so no engine needs to be running; progress goes to
stderr, the answer to stdout (``--json``: the verbs' result as JSON).
"""

from __future__ import annotations

import sys
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from engine.config import Settings
from engine.dry_run.run import Progress, dry_run_segment, dry_run_workflow, window_seconds
from engine.errors import ConfigError, DryRunError


def read_workflow(path: Path) -> dict[str, Any]:
    """A workflow file (TOML, or JSON as exported) as the dict ``parse_workflow`` takes."""
    try:
        text = path.read_text(encoding="utf-8")
        data = orjson.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except OSError as exc:
        raise DryRunError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise DryRunError(f"{path}: not valid TOML: {exc}") from exc
    except orjson.JSONDecodeError as exc:
        raise DryRunError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise DryRunError(f"{path}: a workflow must be a table")
    return data


def _stamp(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC")


def summary(result: dict[str, Any]) -> str:
    """The result in a few lines for people."""
    emails = result["emails"]
    lines = []
    if result["kind"] == "workflow":
        lines.append(f"Dry run of workflow {result['workflow']} ({result['name']})")
    else:
        lines.append(f"Dry run of segment: {result['text']}")
    lines.append(
        f"  events {_stamp(result.get('from'))} .. {_stamp(result.get('until'))}: "
        f"{result['events']['scanned']:,} scanned"
        + ("" if result.get("complete", True) else " (incomplete)")
    )
    if result["kind"] == "workflow":
        e = result["enrollments"]
        lines.append(
            f"  enrollments: {e['entered']:,} entered, {e['converted']:,} converted, "
            f"{e['exited']:,} exited, {e['completed']:,} completed, {e['waiting']:,} still waiting"
        )
        skipped = result["skipped"]
        lines.append(
            f"  skipped: {skipped['no_consent']:,} without consent, "
            f"{skipped['reentry']:,} by reentry"
        )
    else:
        c = result["contacts"]
        lines.append(
            f"  contacts: {c['seen']:,} seen, {c['entered']:,} entered, {c['exited']:,} left, "
            f"{c['members_at_end']:,} members at the end"
        )
    lines += [f"  warning: {w}" for w in result.get("warnings", [])]
    lines.append(
        f"  emails that would go out: {emails['would_send']:,} to {emails['recipients']:,} "
        f"contacts; {emails.get('capped', 0):,} capped, {emails['suppressed']:,} suppressed, "
        f"{emails['no_email']:,} without an address"
    )
    if emails.get("deferred_quiet_hours"):
        lines.append(f"  deferred by quiet hours: {emails['deferred_quiet_hours']:,}")
    for row in result["caps"]:
        lines.append(
            f"  cap binds {row['period']}: {row['capped']:,} sends to {row['contacts']:,} "
            f"contacts ({row['limit']})"
        )
    if result["per_hour"]:
        lines.append("  per hour:")
        lines += [f"    {_stamp(h['hour'])}  {h['count']:,}" for h in result["per_hour"]]
    if result["per_domain"]:
        lines.append("  per domain:")
        lines += [f"    {d['domain']:<30} {d['count']:,}" for d in result["per_domain"][:10]]
    if result["sample"]:
        lines.append("  sample:")
        lines += [f"    {_stamp(s['at'])}  {s['email']}" for s in result["sample"][:10]]
    return "\n".join(lines)


def read_draft(
    workflow: Path | None, segment: Path | None
) -> tuple[dict[str, Any] | None, str | None]:
    """The draft named on the command line: a workflow definition, or a segment's text."""
    if workflow is not None:
        return read_workflow(workflow), None
    assert segment is not None
    try:
        return None, segment.read_text(encoding="utf-8")
    except OSError as exc:
        raise DryRunError(f"{segment}: cannot read: {exc.strerror or exc}") from exc


async def dry_run_command(
    settings: Settings,
    *,
    definition: dict[str, Any] | None,
    text: str | None,
    since: str,
    max_events: int,
    nats: str | None,
    as_json: bool,
) -> int:
    from engine import bus
    from engine.access import SERVICE_USER
    from engine.commands import open_migrated
    from engine.library import load_library
    from engine.node import SERVICE_SECRET, Connection, read_secret_file
    from engine.segments.definitions import load_segments
    from engine.segments.membership import SegmentIndex

    since_s = window_seconds(since)
    url, token = nats, settings.nats.token
    user, password = settings.nats.user, settings.nats.password
    if not url:
        conn = Connection.load(settings.data_path)
        if conn is None:
            raise ConfigError(
                f"no local stack found in {settings.data_path} (its NATS keeps the recording); "
                "start one with 'campaign-engine run' or pass --nats URL"
            )
        url, token, user = conn.nats_url, "", SERVICE_USER
        password = read_secret_file(settings.data_path / SERVICE_SECRET, create=False)
    store = open_migrated(settings)
    nc = None
    progress = Progress()
    try:
        nc = await bus.connect(
            url, token=token or None, user=user or None, password=password, name="dry-run"
        )
        js = nc.jetstream()
        if definition is not None:
            library = load_library(store, settings)
            task = dry_run_workflow(
                js,
                store,
                definition,
                since_s=since_s,
                until=time.time(),
                pacing=library.workflows.pacing,
                template_routes=library.template_routes,
                offers=library.workflows.offers,
                max_events=max_events,
                progress=progress,
                has_template=library.renderer.has,
            )
        else:
            assert text is not None
            index = SegmentIndex.build(load_segments(store))
            task = dry_run_segment(
                js,
                store,
                text,
                index=index,
                since_s=since_s,
                until=time.time(),
                max_events=max_events,
                progress=progress,
            )
        result = await task
    finally:
        if nc is not None:
            await nc.drain()
        store.dispose()
    print(f"scanned {progress.scanned:,} of {progress.total:,} recorded events", file=sys.stderr)
    if as_json:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    else:
        print(summary(result))
    return 0
