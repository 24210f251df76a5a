"""The dry-run control verbs (envelope in engine/control.py).

- ``workflows.dry_run {definition, since, max_events?, wait?}``: ``definition`` a draft workflow
  as a JSON object (the TOML file's tables, as ``parse_workflow`` takes them);
- ``segments.dry_run {text, since, max_events?, wait?}``: ``text`` a draft segment;
- ``dry_runs.status {job, wait?}``; ``dry_runs.cancel {job}``.

``since`` is the window: a duration (``"1h"``, ``"24h"``, ``"7d"``) or seconds, at most 31 days
(the stream keeps ``nats.max_age_days``). ``max_events`` (default 200,000, at most 2,000,000)
bounds the events scanned: when the window holds more, the job fails at once with the count,
before anything is replayed. A dry run is a job on the node that took the request, because it
can take longer than a request may wait: the start replies at once (or after up to ``wait``
seconds, at most 30, if it finished by then) with the job's status ``{job, kind, label, state,
scanned, total, started_at, finished_at, result?, error?}``; ``state`` is ``running``, ``done``,
``failed`` or ``cancelled``. Ask ``dry_runs.status`` on the same node to follow it. Only the
user who started a job sees or cancels it; a node keeps the last 20 and runs at most 2 at once.

A bad draft, window or argument is refused at the start with the reason; nothing is written,
so nothing is audited.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from engine.control import ControlError, ControlServer, check_keys, required_text
from engine.dry_run.run import (
    MAX_EVENTS,
    Progress,
    check_max_events,
    draft_workflow,
    dry_run_segment,
    dry_run_workflow,
    window_seconds,
)
from engine.errors import DryRunError, EngineError
from engine.ids import new_id
from engine.segments.model import SegmentInvalid
from engine.segments.preview import parse_draft

if TYPE_CHECKING:
    from engine.node import Node

log = logging.getLogger(__name__)

KEEP = 20
RUNNING_MAX = 2
MOST_WAIT_S = 30.0
MAX_DEFINITION = 200_000  # bytes of JSON
MAX_TEXT = 20_000

Runner = Callable[[Progress, Callable[[], bool]], Awaitable[dict[str, Any]]]


@dataclass
class DryRunJob:
    """One dry run on this node."""

    id: str
    kind: str  # workflow | segment
    label: str  # the workflow id, or the segment text's start
    actor: str
    started_at: float
    progress: Progress = field(default_factory=Progress)
    state: str = "running"
    result: dict[str, Any] | None = None
    error: str | None = None
    finished_at: float | None = None
    cancel_asked: bool = False
    task: asyncio.Task[None] | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "job": self.id,
            "kind": self.kind,
            "label": self.label,
            "state": self.state,
            "scanned": self.progress.scanned,
            "total": self.progress.total,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }
        if self.result is not None:
            out["result"] = self.result
        if self.error is not None:
            out["error"] = self.error
        return out


class DryRunJobs:
    """The dry runs of one node: started, followed, cancelled, stopped with the node."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.jobs: dict[str, DryRunJob] = {}

    def start(self, kind: str, label: str, actor: str, runner: Runner) -> DryRunJob:
        running = [j for j in self.jobs.values() if j.state == "running"]
        if len(running) >= RUNNING_MAX:
            raise DryRunError(
                f"{len(running)} dry runs are already running on this node; wait for one to "
                "finish or cancel it"
            )
        job = DryRunJob(new_id(), kind, label, actor, self.clock())
        job.task = asyncio.create_task(self._run(job, runner), name=f"dry-run-{job.id}")
        self.jobs[job.id] = job
        finished = [j for j in self.jobs.values() if j.state != "running"]
        for old in sorted(finished, key=lambda j: j.started_at)[: max(0, len(self.jobs) - KEEP)]:
            del self.jobs[old.id]
        return job

    async def _run(self, job: DryRunJob, runner: Runner) -> None:
        try:
            job.result = await runner(job.progress, lambda: job.cancel_asked)
            job.state = "done"
        except asyncio.CancelledError:
            job.state, job.error = "cancelled", "the node stopped"
            raise
        except EngineError as exc:
            job.state = "cancelled" if job.cancel_asked else "failed"
            job.error = str(exc)
        except Exception as exc:  # a bug: the job says so, the node goes on
            log.exception("dry run %s failed", job.id)
            job.state, job.error = "failed", f"internal error: {type(exc).__name__}"
        finally:
            job.finished_at = self.clock()

    def get(self, job_id: str, actor: str) -> DryRunJob:
        job = self.jobs.get(job_id)
        if job is None or job.actor != actor:
            raise ControlError(f"no dry run {job_id!r} of yours on this node")
        return job

    async def wait(self, job: DryRunJob, seconds: float) -> None:
        if seconds > 0 and job.task is not None and not job.task.done():
            await asyncio.wait({job.task}, timeout=seconds)

    async def stop(self) -> None:
        tasks = [j.task for j in self.jobs.values() if j.task is not None and not j.task.done()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _wait_arg(args: dict[str, Any]) -> float:
    value = args.get("wait", 0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ControlError(f"wait must be a number of seconds from 0 to {MOST_WAIT_S:g}")
    if not 0 <= value <= MOST_WAIT_S:
        raise ControlError(f"wait must be a number of seconds from 0 to {MOST_WAIT_S:g}")
    return float(value)


def _common(args: dict[str, Any]) -> tuple[float, int, float]:
    if "since" not in args:
        raise ControlError("since is required: the window, e.g. 1h, 24h or 7d")
    try:
        since = window_seconds(args["since"])
        max_events = check_max_events(args.get("max_events", MAX_EVENTS))
    except DryRunError as exc:
        raise ControlError(str(exc)) from None
    return since, max_events, _wait_arg(args)


def register_dry_run_operations(control: ControlServer, node: Node) -> DryRunJobs:
    """Register the dry-run verbs; the node stops the returned jobs when it stops."""
    jobs = DryRunJobs()

    def needs() -> tuple[Any, Any]:
        if node.store is None or node.js is None:
            raise ControlError("this node is not connected to its store and NATS yet")
        return node.store, node.js

    async def workflows_dry_run(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, ("definition", "since", "max_events", "wait"))
        definition = args.get("definition")
        if not isinstance(definition, dict):
            raise ControlError("definition is required: the draft workflow as a JSON object")
        if len(orjson.dumps(definition)) > MAX_DEFINITION:
            raise ControlError(f"definition is too large (at most {MAX_DEFINITION:,} bytes)")
        since, max_events, wait = _common(args)
        store, js = needs()
        library = node.components["library"]
        workflow = draft_workflow(definition, library.workflows.offers)
        until = node.clock.now()

        def runner(progress: Progress, cancelled: Callable[[], bool]) -> Awaitable[Any]:
            return dry_run_workflow(
                js,
                store,
                definition,
                since_s=since,
                until=until,
                pacing=library.workflows.pacing,
                template_routes=library.template_routes,
                offers=library.workflows.offers,
                max_events=max_events,
                progress=progress,
                cancelled=cancelled,
                has_template=library.renderer.has,
            )

        job = jobs.start("workflow", workflow.id, actor, runner)
        await jobs.wait(job, wait)
        return job.as_dict()

    async def segments_dry_run(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, ("text", "since", "max_events", "wait"))
        text = required_text(args, "text", MAX_TEXT)
        since, max_events, wait = _common(args)
        store, js = needs()
        index = node.components["segments"].index
        try:
            parse_draft(text, index)
        except SegmentInvalid as exc:
            raise ControlError(str(exc)) from exc
        until = node.clock.now()

        def runner(progress: Progress, cancelled: Callable[[], bool]) -> Awaitable[Any]:
            return dry_run_segment(
                js,
                store,
                text,
                index=index,
                since_s=since,
                until=until,
                max_events=max_events,
                progress=progress,
                cancelled=cancelled,
            )

        label = " ".join(text.split())
        job = jobs.start("segment", label[:80], actor, runner)
        await jobs.wait(job, wait)
        return job.as_dict()

    async def dry_runs_status(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, ("job", "wait"))
        job = jobs.get(required_text(args, "job", 64), actor)
        await jobs.wait(job, _wait_arg(args))
        return job.as_dict()

    async def dry_runs_cancel(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, ("job",))
        job = jobs.get(required_text(args, "job", 64), actor)
        if job.state == "running":
            job.cancel_asked = True
            await jobs.wait(job, 5.0)
        return job.as_dict()

    control.register("workflows.dry_run", workflows_dry_run)
    control.register("segments.dry_run", segments_dry_run)
    control.register("dry_runs.status", dry_runs_status)
    control.register("dry_runs.cancel", dry_runs_cancel)
    return jobs
