"""Every problem of a draft workflow at once, each tied to its step when it has one.

The parser (engine/decide/workflow.py) stops at the first problem, which is right for loading
but not for an editor: a marketer wants every broken step marked. This module walks the raw
definition for the graph problems (a target that does not exist, an unreachable step, a loop
that never waits, a wait with no timeout or duration, a send with no template or one that is
not in the library, a route that is not configured), then runs the parser and adds what it
says when that is something else. Pure: no I/O (the caller passes the template ids and
routes it knows).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from engine.decide.workflow import EXIT, STEP_TYPES, parse_workflow
from engine.errors import WorkflowInvalid

_SOURCE = "draft"
_STEP_IN_MESSAGE = re.compile(r"^step '([^']+)'")
_PARAM = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)$")
# Where each step type may go next, and the keys that name it (missing: the next step).
_TARGET_KEYS = {
    "send": ("next",),
    "wait": ("next",),
    "wait_until": ("on_event", "on_timeout"),
    "branch": ("then", "else"),
    "exit": (),
}
_WAITS = ("wait", "wait_until")


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a draft; ``step`` is the step's id, None for the whole workflow."""

    step: str | None
    problem: str

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "problem": self.problem}

    def __str__(self) -> str:
        return f"step {self.step!r}: {self.problem}" if self.step else self.problem


def step_targets(step: Mapping[str, Any], following: str | None) -> dict[str, str | None]:
    """Where a raw step may go, by key (``next``, ``then``, ...); None: past the last step."""
    kind = step.get("type")
    out: dict[str, str | None] = {}
    for key in _TARGET_KEYS.get(kind if isinstance(kind, str) else "", ()):
        value = step.get(key, following)
        out[key] = value if isinstance(value, str) or value is None else None
    return out


def check_workflow(
    definition: Mapping[str, Any],
    *,
    templates: Collection[str] | None = None,
    routes: Collection[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> list[Problem]:
    """Every problem of ``definition``, in step order, the whole workflow's first.

    ``templates``: the template ids a send may name (None: not checked); ``routes``: the
    configured routes (None: not checked); ``overrides``: the settings' parameters for it.
    """
    found: list[Problem] = []
    params = definition.get("params")
    params = params if isinstance(params, Mapping) else {}
    steps = _raw_steps(definition.get("steps"))
    found += _graph(steps)
    for step_id, step in steps:
        found += _step(step_id, step, params, templates, routes)
    try:
        parse_workflow(
            {k: v for k, v in definition.items() if k not in ("version", "enabled")},
            source=_SOURCE,
            overrides={k: v for k, v in (overrides or {}).items() if k in params},
        )
    except WorkflowInvalid as exc:
        message = str(exc).removeprefix(f"{_SOURCE}: ")
        hit = _STEP_IN_MESSAGE.match(message)
        if hit:
            said = Problem(hit.group(1), message[hit.end() :].lstrip(":. ").strip())
        else:
            said = Problem(None, message)
        if said.problem not in {p.problem for p in found}:  # the graph walk said it already
            found.append(said)
    order = {step_id: i for i, (step_id, _) in enumerate(steps)}
    unique = list(dict.fromkeys(found))
    return sorted(unique, key=lambda p: -1 if p.step is None else order.get(p.step, len(order)))


def _raw_steps(raw: object) -> list[tuple[str, Mapping[str, Any]]]:
    """The steps that have a usable id (the parser reports the others)."""
    if not isinstance(raw, list):
        return []
    return [
        (item["id"], item)
        for item in raw
        if isinstance(item, Mapping) and isinstance(item.get("id"), str) and item["id"]
    ]


def _graph(steps: list[tuple[str, Mapping[str, Any]]]) -> list[Problem]:
    if not steps:
        return []
    ids = [step_id for step_id, _ in steps]
    known = set(ids)
    following = [*ids[1:], None]
    edges: dict[str, list[str]] = {}
    found: list[Problem] = []
    for (step_id, step), after in zip(steps, following, strict=True):
        targets = step_targets(step, after)
        edges[step_id] = []
        for target in targets.values():
            if target is None or target == EXIT:
                continue
            if target not in known:
                found.append(Problem(step_id, f"names step {target!r}, which does not exist"))
                continue
            edges[step_id].append(target)
    reached = {ids[0]}
    todo = [ids[0]]
    while todo:
        for target in edges.get(todo.pop(), []):
            if target not in reached:
                reached.add(target)
                todo.append(target)
    found += [Problem(s, "unreachable (no step leads to it)") for s in ids if s not in reached]
    found += _loops(steps, edges)
    return found


def _loops(
    steps: list[tuple[str, Mapping[str, Any]]], edges: Mapping[str, list[str]]
) -> list[Problem]:
    """Each cycle through steps that never pause (it would run forever in one decision)."""
    instant = {s for s, step in steps if step.get("type") not in _WAITS}
    found: list[Problem] = []
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in edges.get(node, []):
            if nxt not in instant:
                continue
            if state.get(nxt) == 1:
                loop = " -> ".join([*path[path.index(nxt) :], nxt])
                found.append(Problem(nxt, f"steps loop without a wait: {loop}"))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node, _ in steps:
        if node in instant and node not in state:
            visit(node, [node])
    return found


def _step(
    step_id: str,
    step: Mapping[str, Any],
    params: Mapping[str, Any],
    templates: Collection[str] | None,
    routes: Collection[str] | None,
) -> list[Problem]:
    kind = step.get("type")
    if kind not in STEP_TYPES:
        return [Problem(step_id, f"unknown step type {kind!r} (use {', '.join(STEP_TYPES)})")]
    if kind == "wait_until" and "timeout" not in step:
        return [Problem(step_id, 'wait_until without timeout (add e.g. timeout = "1d")')]
    if kind == "wait" and "duration" not in step and "variants" not in step:
        return [Problem(step_id, "a wait needs a duration")]
    if kind != "send":
        return []
    template = _resolve(step.get("template"), params)
    if not isinstance(template, str) or not template.strip():
        return [Problem(step_id, "missing template name")]
    found = []
    if templates is not None and template not in templates:
        names = ", ".join(sorted(templates)) or "none yet"
        found.append(Problem(step_id, f"template {template!r} does not exist (templates: {names})"))
    route = _resolve(step.get("route"), params)
    if routes is not None and isinstance(route, str) and route and route not in routes:
        names = ", ".join(sorted(routes))
        found.append(Problem(step_id, f"route {route!r} is not configured (routes: {names})"))
    return found


def _resolve(value: object, params: Mapping[str, Any]) -> object:
    """A whole ``$name`` replaced by its declared parameter (as the parser would)."""
    if isinstance(value, str):
        hit = _PARAM.match(value)
        if hit and hit.group(1) in params:
            return params[hit.group(1)]
    return value
