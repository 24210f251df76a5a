"""The driver: read the recording, feed a simulation chunk by chunk, report progress.

The store reads of each chunk and the simulation itself run on a worker thread, the stream
reads on the event loop; between chunks the run checks whether it was cancelled.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from nats.js import JetStreamContext

from engine.decide.batch import decode_delivery
from engine.decide.durations import format_duration, parse_duration
from engine.decide.workflow import SendStep, Workflow, parse_workflow
from engine.dry_run.recording import Recording
from engine.dry_run.segments import SegmentSimulation
from engine.dry_run.workflows import WorkflowSimulation, check_replayable
from engine.errors import DryRunError
from engine.events import Event
from engine.ingest.validate import parse_event
from engine.offers.model import OfferBook
from engine.pacing.policy import Pacing
from engine.segments.membership import SegmentIndex
from engine.segments.preview import parse_draft
from engine.store import Store

MAX_EVENTS = 200_000
"""Events a dry run scans unless asked for more."""
MOST_EVENTS = 2_000_000
"""The most anyone may ask for (memory: every contact met is held while it runs)."""
MOST_WINDOW_S = 31 * 86_400.0
CHUNK = 500


class Simulation(Protocol):
    def feed(self, events: Sequence[Event | str]) -> None: ...

    def finish(self, *, complete: bool = True) -> dict[str, Any]: ...


@dataclass
class Progress:
    """How far a run got (read from other tasks while it runs)."""

    scanned: int = 0
    total: int = 0


def window_seconds(raw: object) -> float:
    """``since``: a duration (``"24h"``, ``"7d"``) or seconds; ``DryRunError`` if not one."""
    if isinstance(raw, bool):
        raise DryRunError(f"since must be a duration such as 1h, 24h or 7d, got {raw!r}")
    if isinstance(raw, int | float):
        seconds = float(raw)
    else:
        try:
            seconds = parse_duration(raw)
        except ValueError as exc:
            raise DryRunError(f"since: {exc}") from None
    if not 0 < seconds <= MOST_WINDOW_S:
        raise DryRunError(
            f"since must be more than 0 and at most {format_duration(MOST_WINDOW_S)}, got {raw!r}"
        )
    return seconds


def check_max_events(raw: object) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= MOST_EVENTS:
        raise DryRunError(f"max_events must be a whole number from 1 to {MOST_EVENTS:,}")
    return raw


async def replay(
    js: JetStreamContext,
    simulation: Simulation,
    *,
    start: float,
    max_events: int = MAX_EVENTS,
    progress: Progress | None = None,
    cancelled: Callable[[], bool] = lambda: False,
    chunk: int = CHUNK,
) -> dict[str, Any]:
    """Run ``simulation`` over the events recorded since ``start`` (the stream's clock)."""
    progress = progress if progress is not None else Progress()
    recording = await Recording.open(js, start, max_events=max_events)
    progress.total = recording.total
    try:
        async for deliveries in recording.chunks(chunk):
            if cancelled():
                raise DryRunError("the dry run was cancelled")
            events = [decode_delivery(d, parse_event) for d in deliveries]
            await asyncio.to_thread(simulation.feed, events)
            progress.scanned += len(deliveries)
    finally:
        await recording.close()
    complete = progress.scanned >= progress.total
    result = await asyncio.to_thread(lambda: simulation.finish(complete=complete))
    result["window"] = {"start": start, "recorded_from": recording.first_at}
    return result


async def dry_run_workflow(
    js: JetStreamContext,
    store: Store,
    definition: Mapping[str, Any],
    *,
    since_s: float,
    until: float,
    pacing: Pacing,
    template_routes: Mapping[str, str] | None = None,
    offers: OfferBook | None = None,
    max_events: int = MAX_EVENTS,
    progress: Progress | None = None,
    cancelled: Callable[[], bool] = lambda: False,
    has_template: Callable[[str], bool] | None = None,
) -> dict[str, Any]:
    """A draft workflow definition (as ``parse_workflow`` takes it) over the last ``since_s``
    seconds of recorded events; the simulation's clock ends at ``until``. ``has_template``
    (the renderer's ``has``) lets the result warn about send steps naming no template."""
    workflow = draft_workflow(definition, offers)
    simulation = WorkflowSimulation(
        workflow, store=store, pacing=pacing, template_routes=template_routes, until=until
    )
    result = await replay(
        js,
        simulation,
        start=time.time() - since_s,
        max_events=max_events,
        progress=progress,
        cancelled=cancelled,
    )
    result["warnings"] = template_warnings(workflow, has_template)
    return result


def template_warnings(workflow: Workflow, has_template: Callable[[str], bool] | None) -> list[str]:
    """Send steps (and experiment arms) naming a template the engine does not have: counted as
    sends here, they would fail to render when live."""
    if has_template is None:
        return []
    names: list[tuple[str, str]] = []
    for step in workflow.steps:
        if isinstance(step, SendStep):
            names.append((step.id, step.template))
            if step.experiment is not None:
                names += [(step.id, v.template) for v in step.experiment.variants if v.template]
    return [
        f"step {step_id!r}: there is no template {name!r} (its mail would fail to render)"
        for step_id, name in dict.fromkeys(names)
        if not has_template(name)
    ]


def draft_workflow(definition: Mapping[str, Any], offers: OfferBook | None = None) -> Workflow:
    """The draft, validated as a save would validate it; ``WorkflowInvalid`` or
    ``DryRunError`` (a trigger the recording cannot replay) if not runnable."""
    if not isinstance(definition, Mapping):
        raise DryRunError("definition must be a workflow (a JSON object / TOML table)")
    workflow = parse_workflow(definition, source="draft")
    if offers is not None:
        workflow = dataclasses.replace(workflow, offers=offers.bind(workflow.offers))
    check_replayable(workflow)
    return workflow


async def dry_run_segment(
    js: JetStreamContext,
    store: Store,
    text: str,
    *,
    index: SegmentIndex,
    since_s: float,
    until: float,
    max_events: int = MAX_EVENTS,
    progress: Progress | None = None,
    cancelled: Callable[[], bool] = lambda: False,
) -> dict[str, Any]:
    """A draft segment (its text form) over the last ``since_s`` seconds of recorded events;
    ``SegmentInvalid`` (positioned) if the text is not a segment."""
    condition = parse_draft(text, index)
    simulation = SegmentSimulation(condition, store=store, index=index, until=until)
    return await replay(
        js,
        simulation,
        start=time.time() - since_s,
        max_events=max_events,
        progress=progress,
        cancelled=cancelled,
    )
