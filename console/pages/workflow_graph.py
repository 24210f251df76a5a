"""A workflow definition (as stored: JSON) turned into boxes and arrows for the graph widget.

The trigger is the box at the top, each step one box, and the ends ("exit", and "end" when
the last step runs out) boxes at the bottom. Arrows carry the outcome that takes them: a
branch's "then"/"else", a wait-until's "event"/"timeout". Step targets follow
docs/workflows.md: a missing ``next`` (and friends) is the following step, "exit" ends the
enrollment, and running past the last step completes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from widgets.flow_graph import FlowEdge, FlowNode
from widgets.format import format_count

TRIGGER = "@trigger"
EXIT_NODE = "@exit"
END_NODE = "@end"
STEP_KINDS = {
    "send": "Send",
    "wait": "Wait",
    "wait_until": "Wait for event",
    "branch": "Branch",
    "exit": "Exit",
}
# Per type: the keys naming where to go, and the label their arrows carry.
TARGET_KEYS: dict[str, tuple[tuple[str, str], ...]] = {
    "send": (("next", ""),),
    "wait": (("next", ""),),
    "wait_until": (("on_event", "event"), ("on_timeout", "timeout")),
    "branch": (("then", "then"), ("else", "else")),
    "exit": (),
}


def steps_of(definition: Mapping[str, Any]) -> list[dict[str, Any]]:
    raw = definition.get("steps")
    if not isinstance(raw, list):
        return []
    return [s for s in raw if isinstance(s, dict) and isinstance(s.get("id"), str)]


def targets_of(step: Mapping[str, Any], following: str | None) -> list[tuple[str, str, str | None]]:
    """(key, label, target) for each way out of ``step`` (target None: past the last step)."""
    out = []
    for key, label in TARGET_KEYS.get(str(step.get("type")), ()):
        value = step.get(key, following)
        out.append((key, label, value if isinstance(value, str) else None))
    return out


OPS = {"eq": "=", "ne": "\u2260", "lt": "<", "lte": "\u2264", "gt": ">", "gte": "\u2265"}


def describe_condition(raw: Any, depth: int = 0) -> str:
    """A condition table in a few words: ``trait plan eq "pro"``, ``any of (...)``."""
    if not isinstance(raw, Mapping):
        return str(raw)
    if depth > 2:
        return "\u2026"
    for group in ("all", "any"):
        if group in raw and isinstance(raw[group], list):
            joiner = " and " if group == "all" else " or "
            return "(" + joiner.join(describe_condition(c, depth + 1) for c in raw[group]) + ")"
    if "not" in raw:
        return "not " + describe_condition(raw["not"], depth + 1)
    if "inactive_for" in raw:
        return f"inactive for {raw['inactive_for']}"
    op = str(raw.get("op", ""))
    op = OPS.get(op, op)
    value = raw.get("value")
    shown = "" if value is None else f" {value!r}" if isinstance(value, str) else f" {value}"
    if "activity" in raw:
        within = f" in {raw['within']}" if "within" in raw else ""
        return f"count of {raw['activity']}{within} {op}{shown}".strip()
    for kind in ("trait", "property"):
        if kind in raw:
            return f"{kind} {raw[kind]} {op}{shown}".strip()
    return ", ".join(f"{k}={v}" for k, v in raw.items())


def describe_trigger(trigger: Any) -> str:
    if not isinstance(trigger, Mapping):
        return "no trigger"
    if "segment_entered" in trigger:
        return f"enters segment {trigger['segment_entered']}"
    if "catalog" in trigger:
        return f"catalog {str(trigger['catalog']).replace('_', ' ')}"
    event = trigger.get("event")
    if isinstance(event, list):
        return " or ".join(str(e) for e in event)
    return str(event or "no event")


def _shown(value: Any, params: Mapping[str, Any]) -> str:
    """A value as written; a ``$name`` parameter with the value it stands for."""
    text = str(value)
    if text.startswith("$") and text[1:] in params:
        return f"{text} ({params[text[1:]]})"
    return text


def summary(step: Mapping[str, Any], params: Mapping[str, Any] | None = None) -> list[str]:
    """One or two short lines saying what the step does (``params``: the ``[params]``)."""
    params = params or {}
    step = {k: _shown(v, params) if isinstance(v, str) else v for k, v in step.items()}
    kind = step.get("type")
    if kind == "send":
        lines = [f"template {step.get('template', '?')}"]
        if step.get("route"):
            lines.append(f"route {step['route']}")
        if step.get("variants"):
            lines.append(f"A/B: {len(step['variants'])} variants")
        return lines
    if kind == "wait":
        return [f"wait {step.get('duration', 'variants')}"]
    if kind == "wait_until":
        return [f"until {step.get('event', '?')}", f"at most {step.get('timeout', '?')}"]
    if kind == "branch":
        return [describe_condition(step.get("condition"))]
    if kind == "exit":
        return [str(step.get("reason", "exit step"))]
    return [f"unknown type {kind!r}"]


def short_problem(text: str) -> str:
    """A problem short enough for a box: without the list in brackets (the list shows it)."""
    cut = text.find(" (")
    return text[:cut] if cut > 0 else text


def counts_line(kind: str, counts: Mapping[str, int] | None) -> str:
    """The live counts a box shows; which ones depends on what the step does."""
    if counts is None:
        return ""
    shown = [("entered", "in")]
    if kind in ("wait", "wait_until"):
        shown.append(("waiting", "waiting"))
    if kind == "send":
        shown += [("sent", "sent"), ("converted", "converted")]
    if kind == "exit" or counts.get("exited"):
        shown.append(("exited", "exited"))
    return " \u00b7 ".join(f"{format_count(counts.get(k, 0))} {word}" for k, word in shown)


def build_graph(
    definition: Mapping[str, Any],
    problems: Sequence[Mapping[str, Any]] = (),
    counts: Mapping[str, Any] | None = None,
) -> tuple[list[FlowNode], list[FlowEdge]]:
    """The boxes and arrows for ``definition``; ``problems`` from ``workflows.validate``,
    ``counts`` from ``workflows.step_counts``."""
    steps = steps_of(definition)
    raw_params = definition.get("params")
    params = raw_params if isinstance(raw_params, Mapping) else {}
    said: dict[str | None, list[str]] = {}
    for p in problems:
        said.setdefault(p.get("step"), []).append(short_problem(str(p.get("problem", ""))))
    per_step = (counts or {}).get("steps", {}) if counts else {}
    totals = (counts or {}).get("enrollments") if counts else None
    trigger_counts = ""
    if totals:
        trigger_counts = (
            f"{format_count(totals.get('entered', 0))} enrolled \u00b7 "
            f"{format_count(totals.get('waiting', 0) + totals.get('active', 0))} running"
        )
    nodes = [
        FlowNode(
            TRIGGER,
            describe_trigger(definition.get("trigger")),
            "Trigger",
            [f"reentry {definition.get('reentry', 'always')}"],
            trigger_counts,
            "; ".join(said.get(None, [])),
            "start",
        )
    ]
    edges: list[FlowEdge] = []
    ids = [s["id"] for s in steps]
    if steps:
        edges.append(FlowEdge(TRIGGER, ids[0]))
    used_ends: set[str] = set()
    known = set(ids)
    for i, step in enumerate(steps):
        kind = str(step.get("type"))
        nodes.append(
            FlowNode(
                step["id"],
                step["id"],
                STEP_KINDS.get(kind, kind),
                summary(step, params),
                counts_line(kind, per_step.get(step["id"])) if counts else "",
                "; ".join(said.get(step["id"], [])),
            )
        )
        following = ids[i + 1] if i + 1 < len(ids) else None
        for _key, label, target in targets_of(step, following):
            if target == "exit":
                dest = EXIT_NODE
            elif target is None:
                dest = END_NODE
            elif target in known:
                dest = target
            else:
                continue  # a target that does not exist: the problem says so on the box
            if dest in (EXIT_NODE, END_NODE):
                used_ends.add(dest)
            edges.append(FlowEdge(step["id"], dest, label))
    if END_NODE in used_ends:
        ended = ["ran past the last step"]
        nodes.append(FlowNode(END_NODE, "Completed", "End", ended, shape="end"))
    if EXIT_NODE in used_ends:
        nodes.append(FlowNode(EXIT_NODE, "Exited", "End", ["an exit target"], shape="end"))
    return nodes, edges
