"""The workflows the decide stage runs: an in-memory index over every stored version.

Enrollments continue on the version they entered with, so every version stays loaded
(``load_stored_workflows``). The *live* version of a workflow is its highest enabled version
(the console enables one version at a time, so that is the one it enabled; an import marks
its new version enabled, so that becomes live); only the live version starts new enrollments.
A workflow with no enabled version starts none. The index is rebuilt and swapped as a whole,
so a batch in progress on another thread keeps a consistent view.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from engine.decide.conditions import merge_windows
from engine.decide.workflow import Workflow, workflow_from_definition
from engine.offers.model import OfferBook
from engine.pacing.policy import Pacing
from engine.store import Store, schema


@dataclass(frozen=True)
class WorkflowIndex:
    """One consistent snapshot of the loaded workflows and what the decide stage looks up."""

    versions: Mapping[tuple[str, int], Workflow] = field(default_factory=dict)
    # Per workflow id: the live version (the highest enabled one), else the highest version.
    live: Mapping[str, Workflow] = field(default_factory=dict)
    triggers: Mapping[str, tuple[Workflow, ...]] = field(default_factory=dict)
    goal_events: frozenset[str] = frozenset()
    awaited_events: frozenset[str] = frozenset()
    activity_windows: Mapping[str, float] = field(default_factory=dict)
    counting_events: frozenset[str] = frozenset()  # events whose decisions may count activity
    segment_triggers: Mapping[str, tuple[Workflow, ...]] = field(default_factory=dict)
    catalog_triggers: Mapping[str, tuple[Workflow, ...]] = field(default_factory=dict)  # by kind
    template_routes: Mapping[str, str] = field(default_factory=dict)  # template id -> route

    @classmethod
    def build(
        cls, workflows: Iterable[Workflow], template_routes: Mapping[str, str] | None = None
    ) -> WorkflowIndex:
        versions = {(wf.id, wf.version): wf for wf in workflows}
        live: dict[str, Workflow] = {}
        for wf in versions.values():
            held = live.get(wf.id)
            if held is None or (wf.enabled, wf.version) > (held.enabled, held.version):
                live[wf.id] = wf
        triggers: dict[str, list[Workflow]] = {}
        on_segment: dict[str, list[Workflow]] = {}
        on_catalog: dict[str, list[Workflow]] = {}
        for wf in sorted(live.values(), key=lambda w: w.id):
            if wf.enabled:
                for name in wf.trigger.events:
                    triggers.setdefault(name, []).append(wf)
                if wf.trigger.segment is not None:
                    on_segment.setdefault(wf.trigger.segment, []).append(wf)
                if wf.trigger.catalog is not None:
                    on_catalog.setdefault(wf.trigger.catalog.kind, []).append(wf)
        every = list(versions.values())
        return cls(
            template_routes=dict(template_routes or {}),
            versions=versions,
            live=live,
            triggers={name: tuple(wfs) for name, wfs in triggers.items()},
            segment_triggers={sid: tuple(wfs) for sid, wfs in on_segment.items()},
            catalog_triggers={kind: tuple(wfs) for kind, wfs in on_catalog.items()},
            goal_events=frozenset(n for wf in every if wf.goal for n in wf.goal.events),
            awaited_events=frozenset(n for wf in every for n in wf.awaited_events()),
            activity_windows=merge_windows(wf.activity_windows() for wf in every),
            counting_events=frozenset(
                name
                for wf in every
                if wf.activity_windows()
                for name in (
                    *wf.trigger.events,
                    *(wf.goal.events if wf.goal else ()),
                    *wf.awaited_events(),
                )
            ),
        )

    def get(self, workflow_id: str, version: int | None = None) -> Workflow | None:
        if version is None:
            return self.live.get(workflow_id)
        return self.versions.get((workflow_id, version))

    def triggered_by(self, event_name: str) -> tuple[Workflow, ...]:
        """Enabled workflows whose trigger names this event (live versions)."""
        return self.triggers.get(event_name, ())

    def needs_enrollments(self, event_name: str) -> bool:
        """Whether an event of this name may touch existing enrollments or reentry rules."""
        if event_name in self.goal_events or event_name in self.awaited_events:
            return True
        return any(wf.reentry.mode != "always" for wf in self.triggered_by(event_name))


class WorkflowRegistry:
    """The workflows known to this node; ``index`` is the current snapshot.

    ``offers``: the offers configured in the settings and the key that signs generated codes;
    every workflow loaded here sees them next to its own ``[offers.NAME]`` tables. ``pacing``
    (caps and quiet hours from the settings) applies to every send they decide.
    ``template_routes``: the route each template names (template id -> route), taken by send
    steps that name none.
    """

    def __init__(
        self,
        workflows: Iterable[Workflow] = (),
        offers: OfferBook | None = None,
        *,
        pacing: Pacing | None = None,
        template_routes: Mapping[str, str] | None = None,
    ) -> None:
        self.offers = offers or OfferBook()
        self.pacing = pacing or Pacing()
        self.index = WorkflowIndex.build(self._bound(workflows), template_routes)

    def replace(
        self, workflows: Iterable[Workflow], *, template_routes: Mapping[str, str] | None = None
    ) -> None:
        """Swap in a new set of workflows (all versions); the template routes stay unless
        given."""
        routes = self.index.template_routes if template_routes is None else template_routes
        self.index = WorkflowIndex.build(self._bound(workflows), routes)

    def set_template_routes(self, template_routes: Mapping[str, str]) -> None:
        """Swap in the routes templates name (the workflows stay as they are)."""
        self.index = dataclasses.replace(self.index, template_routes=dict(template_routes))

    def _bound(self, workflows: Iterable[Workflow]) -> list[Workflow]:
        return [dataclasses.replace(wf, offers=self.offers.bind(wf.offers)) for wf in workflows]

    def add(self, workflow: Workflow) -> None:
        """Add or replace one workflow version."""
        self.replace([*self.index.versions.values(), workflow])

    def get(self, workflow_id: str, version: int | None = None) -> Workflow | None:
        """A version of a workflow, or its live version (else its newest)."""
        return self.index.get(workflow_id, version)

    def active(self) -> list[Workflow]:
        """The live version of each enabled workflow."""
        return [wf for wf in self.index.live.values() if wf.enabled]


def load_stored_workflows(
    store: Store, *, overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> list[Workflow]:
    """Every workflow version in the store, validated, with its stored ``enabled`` flag."""
    overrides = overrides or {}
    table = schema.workflows
    with store.begin() as conn:
        rows = conn.execute(sa.select(table).order_by(table.c.id, table.c.version)).all()
    newest = {row.id: row.version for row in rows}  # ordered by version
    out = []
    for row in rows:
        mine = dict(overrides.get(row.id, {}))
        if row.version != newest[row.id]:
            # An older version may not declare a parameter the settings override for the newest
            # (the newest is checked strictly, so a misspelt setting is still an error).
            declared = row.definition.get("params", {})
            mine = {k: v for k, v in mine.items() if k in declared}
        source = f"store: workflow {row.id} v{row.version}"
        out.append(
            workflow_from_definition(
                row.definition,
                version=row.version,
                enabled=bool(row.enabled),
                params=mine,
                source=source,
            )
        )
    return out
