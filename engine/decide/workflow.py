"""Workflows as data: the model, the parser with its validation, and the file loader.

A workflow is a TOML file in ``templates/workflows/`` (or the same structure as JSON in the
``workflows`` table); docs/workflows.md describes the format for the people who write them::

    id = "abandoned-cart"
    name = "Abandoned cart"
    category = "marketing"             # or "transactional"
    version = 1                        # optional; the store numbers the versions it keeps
    enabled = true
    expires_after = "1d"               # a send not delivered by then is dropped as expired
    reentry = "after 1d"               # "always" | "once" | "after <duration>"

    [params]
    delay = "30m"                      # settings.workflows["abandoned-cart"]["delay"] overrides

    [trigger]
    event = "Product Added"            # or a list of names
    where = [{ property = "price", op = "gt", value = 0 }]

    [goal]
    event = "Order Completed"          # reaching it exits the enrollment as converted

    [[steps]]
    id = "wait-for-order"
    type = "wait_until"
    event = "Order Completed"
    match = ["product_id"]             # the awaited event's property equals the trigger's
    timeout = "$delay"
    on_event = "exit"
    on_timeout = "send-reminder"

    [[steps]]
    id = "send-reminder"
    type = "send"
    template = "abandoned-cart"
    # route = "esp"                    # optional: else the template's route, else "default"

Steps run in order unless ``next`` (send, wait), ``then``/``else`` (branch) or
``on_event``/``on_timeout`` (wait_until) name another step, or ``"exit"``. Running past the last
step completes the enrollment. ``$name`` anywhere outside ``[params]`` is replaced by that
parameter. Every problem is a ``WorkflowInvalid`` naming the file, the step and the problem.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from engine.consent import check_purpose
from engine.decide.conditions import Condition, merge_windows, parse_condition, parse_conditions
from engine.decide.durations import parse_duration
from engine.errors import WorkflowInvalid
from engine.experiments.model import EXPERIMENT_KEYS, Experiment, parse_experiment
from engine.offers.model import OFFER_ID, Offer, parse_offers

EXIT = "exit"  # a step target that ends the enrollment as exited
DEFAULT_ROUTE = "default"  # where a send goes when neither its step nor its template names a route
CATEGORIES = ("marketing", "transactional")
STEP_TYPES = ("send", "wait", "wait_until", "branch", "exit")
_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,99}")
_PARAM = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_TOP_KEYS = {
    "id", "name", "description", "category", "version", "enabled", "expires_after",
    "reentry", "params", "trigger", "goal", "steps", "priority", "quiet_hours",
    "requires_consent", "offers",
}  # fmt: skip
# Priorities (docs/caps.md): a number from 0 to 100, or one of these names.
PRIORITIES = {"high": 80, "normal": 50, "low": 20}
DEFAULT_PRIORITY = PRIORITIES["normal"]
_STEP_KEYS = {
    "send": {"template", "route", "next", "offer", *EXPERIMENT_KEYS},
    "wait": {"duration", "next", *EXPERIMENT_KEYS},
    "wait_until": {"event", "where", "match", "timeout", "on_event", "on_timeout"},
    "branch": {"condition", "then", "else"},
    "exit": {"reason"},
}

DEFAULT_ATTRIBUTION_S = 7 * 86400.0  # [goal] attribution_window when not given
_GOAL_KEYS = ("attribution_window", "revenue")

# A target: a step id, EXIT, or None for "past the last step" (the enrollment completes).
Target = str | None


@dataclass(frozen=True, slots=True)
class Step:
    """One step; subclasses per type."""

    id: str

    @property
    def type(self) -> str:
        raise NotImplementedError

    def targets(self) -> tuple[Target, ...]:
        """Where this step may go next."""
        return ()


@dataclass(frozen=True, slots=True)
class SendStep(Step):
    template: str
    route: str | None  # None: the template's route, else DEFAULT_ROUTE (see route_for)
    next: Target
    experiment: Experiment | None = None
    offer: str | None = None  # an [offers.NAME] whose code and value the template shows

    def route_for(self, template_routes: Mapping[str, str]) -> str:
        """The route this step sends through: its own, else its template's, else the default."""
        return self.route or template_routes.get(self.template) or DEFAULT_ROUTE

    @property
    def type(self) -> str:
        return "send"

    def targets(self) -> tuple[Target, ...]:
        return (self.next,)


@dataclass(frozen=True, slots=True)
class WaitStep(Step):
    duration: float
    next: Target
    experiment: Experiment | None = None

    @property
    def type(self) -> str:
        return "wait"

    def targets(self) -> tuple[Target, ...]:
        return (self.next,)


@dataclass(frozen=True, slots=True)
class WaitUntilStep(Step):
    event: str
    where: tuple[Condition, ...]
    match: tuple[str, ...]
    timeout: float
    on_event: Target
    on_timeout: Target

    @property
    def type(self) -> str:
        return "wait_until"

    def targets(self) -> tuple[Target, ...]:
        return (self.on_event, self.on_timeout)


@dataclass(frozen=True, slots=True)
class BranchStep(Step):
    condition: Condition
    then: Target
    otherwise: Target

    @property
    def type(self) -> str:
        return "branch"

    def targets(self) -> tuple[Target, ...]:
        return (self.then, self.otherwise)


@dataclass(frozen=True, slots=True)
class ExitStep(Step):
    reason: str

    @property
    def type(self) -> str:
        return "exit"


@dataclass(frozen=True, slots=True)
class EventMatch:
    """A trigger or goal: one of ``events`` for which every ``where`` condition holds.

    A ``segment_entered`` trigger has no events: it fires when a contact enters ``segment``
    (its ``where`` conditions see the contact's traits and ``segment_id`` as a property)."""

    events: tuple[str, ...]
    where: tuple[Condition, ...] = ()
    segment: str | None = None
    catalog: CatalogTrigger | None = None


CATALOG_KINDS = ("price_drop", "back_in_stock")
# The synthetic trigger event of each kind's enrollments (its properties: the product).
ALERT_EVENTS = {"price_drop": "Price Dropped", "back_in_stock": "Back In Stock"}


@dataclass(frozen=True, slots=True)
class CatalogTrigger:
    """A fan-out trigger on a catalog change (``[trigger] catalog = "price_drop"``).

    ``price_drop``: the catalog price fell by at least ``min_drop_percent``; it mails the
    contacts who viewed or carted the product within ``lookback`` and did not buy it since.
    ``back_in_stock``: the stock went from 0 (or less) to more; it mails the contacts who
    viewed or carted the product while it was out of stock, within ``lookback``.
    Either way a contact gets at most one alert of the workflow per product per ``window``.
    """

    kind: str
    lookback: float
    window: float
    min_drop_percent: float = 0.0


@dataclass(frozen=True, slots=True)
class Reentry:
    """May a contact enter again: ``always``, ``once``, or ``after`` (not while enrolled, and
    at least ``after_s`` since the previous entry)."""

    mode: str
    after_s: float = 0.0

    def describe(self) -> str:
        return f"after {self.after_s:g}s" if self.mode == "after" else self.mode


@dataclass(frozen=True)
class Workflow:
    """A validated workflow definition (one version of it)."""

    id: str
    version: int
    name: str
    category: str
    enabled: bool
    reentry: Reentry
    expires_after: float | None
    trigger: EventMatch
    goal: EventMatch | None
    steps: tuple[Step, ...]
    params: Mapping[str, Any]
    source: str
    definition: Mapping[str, Any]  # as written (before parameters), for the store
    by_id: Mapping[str, Step] = field(repr=False, compare=False, default_factory=dict)
    # When the frequency cap binds, a higher priority pre-empts a lower one still queued.
    priority: int = DEFAULT_PRIORITY
    # "default" (the setting, marketing only), "none", or a window such as "22:00-07:00".
    quiet_hours: str = "default"
    # [goal] attribution_window: a conversion counts for the last mail sent within it.
    attribution_window: float = DEFAULT_ATTRIBUTION_S
    revenue_property: str | None = None  # [goal] revenue: the property holding the amount
    # Enroll only contacts whose consent for this purpose is granted; re-checked at send time.
    requires_consent: str | None = None
    # The offers its send steps may name: its own [offers.NAME] tables, plus (once bound by
    # the registry) the ones configured in the settings.
    offers: Mapping[str, Offer] = field(repr=False, compare=False, default_factory=dict)

    def experiments(self) -> tuple[Experiment, ...]:
        """The experiments of this version's steps, in step order."""
        return tuple(
            s.experiment
            for s in self.steps
            if isinstance(s, SendStep | WaitStep) and s.experiment is not None
        )

    @property
    def first_step(self) -> str:
        return self.steps[0].id

    def step(self, step_id: str) -> Step:
        return self.by_id[step_id]

    def to_definition(self) -> dict[str, Any]:
        """The definition as written, for the ``workflows`` table; ``version`` and ``enabled``
        are left out because the table keeps them in their own columns."""
        return {k: v for k, v in self.definition.items() if k not in ("version", "enabled")}

    def awaited_events(self) -> set[str]:
        return {s.event for s in self.steps if isinstance(s, WaitUntilStep)}

    def activity_windows(self) -> dict[str, float]:
        """Event names any condition of this workflow counts, with the longest window."""
        conditions: list[Condition] = [*self.trigger.where]
        conditions += self.goal.where if self.goal else ()
        for step in self.steps:
            if isinstance(step, BranchStep):
                conditions.append(step.condition)
            elif isinstance(step, WaitUntilStep):
                conditions.extend(step.where)
        return merge_windows(c.activity_windows() for c in conditions)


def parse_workflow(
    data: Mapping[str, Any], *, source: str, overrides: Mapping[str, Any] | None = None
) -> Workflow:
    """Validate a workflow definition; ``overrides`` replace declared ``[params]``."""
    try:
        return _parse(data, source, overrides or {})
    except ValueError as exc:
        if isinstance(exc, WorkflowInvalid):
            raise
        raise WorkflowInvalid(f"{source}: {exc}") from exc


def workflow_from_definition(
    definition: Mapping[str, Any],
    *,
    version: int,
    enabled: bool,
    params: Mapping[str, Any] | None = None,
    source: str = "store",
) -> Workflow:
    """A stored workflow: its definition plus the row's ``version`` and ``enabled`` columns;
    ``params`` (``settings.workflows[id]``) override declared parameters."""
    data = {**definition, "version": version, "enabled": enabled}
    return parse_workflow(data, source=source, overrides=params)


def load_workflow_file(path: str | Path, *, overrides: Mapping[str, Any] | None = None) -> Workflow:
    """Read and validate one workflow file: ``.toml``, or ``.json`` as exported."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
        data = orjson.loads(text) if file.suffix == ".json" else tomllib.loads(text)
    except OSError as exc:
        raise WorkflowInvalid(f"{file}: cannot read: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise WorkflowInvalid(f"{file}: not valid TOML: {exc}") from exc
    except orjson.JSONDecodeError as exc:
        raise WorkflowInvalid(f"{file}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise WorkflowInvalid(f"{file}: a workflow must be a table")
    return parse_workflow(data, source=str(file), overrides=overrides)


def load_workflow_dir(
    directory: str | Path, *, overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> list[Workflow]:
    """Every ``*.toml`` workflow in ``directory`` (sorted by file name); ids must be unique.

    ``overrides`` is ``settings.workflows``: ``{workflow id: {param: value}}``.
    """
    overrides = overrides or {}
    loaded: dict[str, Workflow] = {}
    for file in sorted(Path(directory).glob("*.toml")):
        wf_id = _peek_id(file)
        workflow = load_workflow_file(file, overrides=overrides.get(wf_id))
        if workflow.id in loaded:
            other = loaded[workflow.id].source
            raise WorkflowInvalid(f"{file}: workflow id {workflow.id!r} is already used by {other}")
        loaded[workflow.id] = workflow
    unknown = sorted(set(overrides) - set(loaded))
    if unknown:
        raise WorkflowInvalid(f"settings [workflows]: no workflow named {', '.join(unknown)}")
    return list(loaded.values())


def _peek_id(file: Path) -> str:
    try:
        wf_id = tomllib.loads(file.read_text(encoding="utf-8")).get("id")
    except (OSError, tomllib.TOMLDecodeError):
        return ""  # load_workflow_file reports it properly
    return wf_id if isinstance(wf_id, str) else ""


def _parse(data: Mapping[str, Any], source: str, overrides: Mapping[str, Any]) -> Workflow:
    if not isinstance(data, Mapping):
        raise ValueError("a workflow must be a table")
    _only(data, _TOP_KEYS, "workflow")
    wf_id = _ident(data.get("id"), "id")
    params = _params(data.get("params", {}), overrides, wf_id)
    raw = {k: _substitute(v, params, k) for k, v in data.items() if k != "params"}
    version = raw.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"version must be a whole number of at least 1, got {version!r}")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError("name is missing")
    category = raw.get("category")
    if category not in CATEGORIES:
        raise ValueError(f"category must be marketing or transactional, got {category!r}")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ValueError(f"enabled must be true or false, got {enabled!r}")
    expires = raw.get("expires_after")
    steps = _steps(raw.get("steps"), wf_id)
    by_id = {step.id: step for step in steps}
    _check_graph(steps, by_id)
    seen_experiments: set[str] = set()
    for step in steps:
        exp = getattr(step, "experiment", None)
        if exp is not None:
            if exp.id in seen_experiments:
                raise ValueError(f"step {step.id!r}: experiment {exp.id!r} is used twice")
            seen_experiments.add(exp.id)
    goal_raw = raw.get("goal")
    window, revenue = _goal_extras(goal_raw)
    requires = raw.get("requires_consent")
    if requires is not None:
        check_purpose(requires, "requires_consent")
    return Workflow(
        id=wf_id,
        version=version,
        name=name.strip(),
        category=category,
        enabled=enabled,
        reentry=_reentry(raw.get("reentry", "always")),
        expires_after=None if expires is None else _duration(expires, "expires_after"),
        trigger=_trigger(raw.get("trigger")),
        goal=_event_match(_without(goal_raw, _GOAL_KEYS), "goal") if "goal" in raw else None,
        steps=steps,
        params=params,
        source=source,
        definition=dict(data),
        by_id=by_id,
        priority=parse_priority(raw.get("priority", DEFAULT_PRIORITY), "priority"),
        quiet_hours=_quiet_hours(raw.get("quiet_hours", "default")),
        attribution_window=window,
        revenue_property=revenue,
        requires_consent=requires,
        offers=parse_offers(raw.get("offers")),
    )


def parse_priority(raw: object, where: str) -> int:
    """``high``/``normal``/``low`` or a whole number from 0 to 100."""
    if isinstance(raw, str) and raw in PRIORITIES:
        return PRIORITIES[raw]
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw <= 100:
        return raw
    raise ValueError(
        f"{where} must be high, normal, low or a whole number from 0 to 100, got {raw!r}"
    )


def _quiet_hours(raw: object) -> str:
    from engine.pacing.quiet import QuietHours

    if raw in ("default", "none"):
        return str(raw)
    try:
        return str(QuietHours.parse(raw))  # type: ignore[arg-type]
    except ValueError as exc:
        raise ValueError(f'quiet_hours: {exc} (or "default", "none")') from None


def _without(raw: object, keys: Iterable[str]) -> object:
    if not isinstance(raw, Mapping):
        return raw
    return {k: v for k, v in raw.items() if k not in keys}


def _goal_extras(raw: object) -> tuple[float, str | None]:
    """``[goal]``'s ``attribution_window`` and ``revenue`` (docs/experiments.md)."""
    if not isinstance(raw, Mapping):
        return DEFAULT_ATTRIBUTION_S, None
    window = DEFAULT_ATTRIBUTION_S
    if "attribution_window" in raw:
        window = _duration(raw["attribution_window"], "[goal].attribution_window")
    revenue = raw.get("revenue")
    if revenue is not None and (not isinstance(revenue, str) or not revenue):
        raise ValueError(f"[goal] revenue must name an event property, got {revenue!r}")
    return window, revenue


def _params(raw: object, overrides: Mapping[str, Any], wf_id: str) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise ValueError("[params] must be a table")
    params = dict(raw)
    unknown = sorted(set(overrides) - set(params))
    if unknown:
        known = ", ".join(sorted(params)) or "none"
        raise ValueError(
            f"settings workflows.{wf_id}.{unknown[0]}: no such parameter (declared: {known})"
        )
    params.update(overrides)
    return params


def _substitute(value: Any, params: Mapping[str, Any], where: str) -> Any:
    """Replace ``$name`` with the parameter; a whole-string reference keeps the value's type."""
    if isinstance(value, str):
        whole = _PARAM.fullmatch(value)
        if whole:
            return _param(params, whole.group(1), where)
        return _PARAM.sub(lambda m: str(_param(params, m.group(1), where)), value)
    if isinstance(value, list):
        return [_substitute(item, params, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, Mapping):
        return {k: _substitute(v, params, f"{where}.{k}") for k, v in value.items()}
    return value


def _param(params: Mapping[str, Any], name: str, where: str) -> Any:
    if name not in params:
        raise ValueError(f"{where}: unknown parameter ${name}")
    return params[name]


def _steps(raw: object, wf_id: str = "") -> tuple[Step, ...]:
    if not isinstance(raw, list) or not raw:
        raise ValueError("a workflow needs at least one [[steps]]")
    ids: list[str] = []
    for index, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise ValueError(f"steps[{index}] must be a table")
        step_id = _ident(item.get("id"), f"steps[{index}].id")
        if step_id == EXIT:
            raise ValueError(f"steps[{index}]: the id 'exit' is reserved")
        if step_id in ids:
            raise ValueError(f"step {step_id!r}: the id is used twice")
        ids.append(step_id)
    following = [*ids[1:], None]
    return tuple(_step(item, ids[i], following[i], wf_id) for i, item in enumerate(raw))


def _step(raw: Mapping[str, Any], step_id: str, following: Target, wf_id: str = "") -> Step:
    where = f"step {step_id!r}"
    kind = raw.get("type")
    if kind not in STEP_TYPES:
        raise ValueError(f"{where}: unknown step type {kind!r} (use {', '.join(STEP_TYPES)})")
    _only(raw, _STEP_KEYS[kind] | {"id", "type"}, where)

    def target(key: str) -> Target:
        value = raw.get(key, following)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{where}: {key} must name a step or 'exit'")
        return value

    if kind == "send":
        template = raw.get("template")
        if not isinstance(template, str) or not template.strip():
            raise ValueError(f"{where}: missing template name")
        route = raw.get("route")
        if route is not None and (not isinstance(route, str) or not route):
            raise ValueError(f"{where}: route must be a route name")
        experiment = parse_experiment(
            raw, workflow_id=wf_id, step_id=step_id, kind=kind, duration=_duration
        )
        offer = raw.get("offer")
        if offer is not None and (not isinstance(offer, str) or not OFFER_ID.fullmatch(offer)):
            raise ValueError(f"{where}: offer must name an [offers.NAME] table, got {offer!r}")
        return SendStep(step_id, template.strip(), route, target("next"), experiment, offer)
    if kind == "wait":
        experiment = parse_experiment(
            raw, workflow_id=wf_id, step_id=step_id, kind=kind, duration=_duration
        )
        if "duration" not in raw:
            if experiment is None:
                raise ValueError(f"{where}: a wait needs a duration")
            longest = max(v.duration or 0.0 for v in experiment.variants)
            return WaitStep(step_id, longest, target("next"), experiment)
        duration = _duration(raw["duration"], f"{where}.duration")
        return WaitStep(step_id, duration, target("next"), experiment)
    if kind == "wait_until":
        event = raw.get("event")
        if not isinstance(event, str) or not event:
            raise ValueError(f"{where}: wait_until needs the event to wait for")
        if "timeout" not in raw:
            raise ValueError(f'{where}: wait_until without timeout (add e.g. timeout = "1d")')
        match = raw.get("match", [])
        if not isinstance(match, list) or not all(isinstance(m, str) and m for m in match):
            raise ValueError(f"{where}: match must be a list of property names")
        return WaitUntilStep(
            step_id,
            event,
            parse_conditions(raw.get("where"), f"{where}.where"),
            tuple(match),
            _duration(raw["timeout"], f"{where}.timeout"),
            target("on_event"),
            target("on_timeout"),
        )
    if kind == "branch":
        if "condition" not in raw:
            raise ValueError(f"{where}: a branch needs a condition")
        if "then" not in raw and "else" not in raw:
            raise ValueError(f"{where}: a branch needs then and/or else")
        condition = parse_condition(raw["condition"], f"{where}.condition")
        return BranchStep(step_id, condition, target("then"), target("else"))
    reason = raw.get("reason", "exit step")
    if not isinstance(reason, str):
        raise ValueError(f"{where}: reason must be text")
    return ExitStep(step_id, reason)


def _check_graph(steps: tuple[Step, ...], by_id: Mapping[str, Step]) -> None:
    """Every named step exists, every step is reachable, and no loop runs without waiting."""
    for step in steps:
        for t in step.targets():
            if t is not None and t != EXIT and t not in by_id:
                raise ValueError(f"step {step.id!r}: names step {t!r}, which does not exist")
    reached = {steps[0].id}
    todo = [steps[0]]
    while todo:
        for t in todo.pop().targets():
            if t is not None and t != EXIT and t not in reached:
                reached.add(t)
                todo.append(by_id[t])
    for step in steps:
        if step.id not in reached:
            raise ValueError(f"step {step.id!r}: unreachable (no step leads to it)")
    # A cycle through steps that never pause would run forever within one decision.
    instant = {
        s.id: [t for t in s.targets() if t is not None and t != EXIT]
        for s in steps
        if not isinstance(s, WaitStep | WaitUntilStep)
    }
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in instant.get(node, []):
            if state.get(nxt) == 1:
                loop = " -> ".join([*path[path.index(nxt) :], nxt])
                raise ValueError(f"steps loop without a wait: {loop}")
            if nxt in instant and nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in instant:
        if node not in state:
            visit(node, [node])


def _event_match(raw: object, where: str) -> EventMatch:
    if not isinstance(raw, Mapping):
        raise ValueError(f"[{where}] is missing" if raw is None else f"[{where}] must be a table")
    _only(raw, {"event", "where"}, f"[{where}]")
    events = raw.get("event")
    names = [events] if isinstance(events, str) else events
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"[{where}] event must be an event name or a list of them")
    return EventMatch(tuple(names), parse_conditions(raw.get("where"), f"[{where}].where"))


def _trigger(raw: object) -> EventMatch:
    if isinstance(raw, Mapping) and "catalog" in raw:
        return _catalog_trigger(raw)
    if isinstance(raw, Mapping) and "segment_entered" in raw:
        _only(raw, {"segment_entered", "where"}, "[trigger]")
        segment = raw["segment_entered"]
        if not isinstance(segment, str) or not _ID.fullmatch(segment):
            raise ValueError(f"[trigger] segment_entered must be a segment id, got {segment!r}")
        return EventMatch((), parse_conditions(raw.get("where"), "[trigger].where"), segment)
    return _event_match(raw, "trigger")


def _catalog_trigger(raw: Mapping[str, Any]) -> EventMatch:
    kind = raw["catalog"]
    if kind not in CATALOG_KINDS:
        raise ValueError(
            f"[trigger] catalog must be one of {', '.join(CATALOG_KINDS)}, got {kind!r}"
        )
    allowed = {"catalog", "lookback", "window", "where"}
    if kind == "price_drop":
        allowed.add("min_drop_percent")
    _only(raw, allowed, "[trigger]")
    for key in ("lookback", "window"):
        if key not in raw:
            raise ValueError(f'[trigger] a catalog trigger needs {key} (e.g. {key} = "7d")')
    drop = 0.0
    if kind == "price_drop":
        value = raw.get("min_drop_percent")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(
                f"[trigger] min_drop_percent must be a number from 0 to 100, got {value!r}"
            )
        if not 0 < value < 100:
            raise ValueError(
                f"[trigger] min_drop_percent must be more than 0 and less than 100, got {value!r}"
            )
        drop = float(value)
    trigger = CatalogTrigger(
        kind,
        _duration(raw["lookback"], "[trigger].lookback"),
        _duration(raw["window"], "[trigger].window"),
        drop,
    )
    where = parse_conditions(raw.get("where"), "[trigger].where")
    return EventMatch((), where, None, trigger)


def _reentry(raw: object) -> Reentry:
    if raw in ("always", "once"):
        return Reentry(str(raw))
    if isinstance(raw, str) and raw.startswith("after "):
        return Reentry("after", _duration(raw[len("after ") :], "reentry"))
    raise ValueError(f'reentry must be "always", "once" or "after <duration>", got {raw!r}')


def _duration(raw: object, where: str) -> float:
    try:
        return parse_duration(raw)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc


def _ident(raw: object, where: str) -> str:
    if not isinstance(raw, str) or not _ID.fullmatch(raw):
        raise ValueError(
            f"{where} must be lower-case letters, digits, '-' or '_' (at most 100), got {raw!r}"
        )
    return raw


def _only(raw: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    extra = sorted(set(raw) - set(allowed))
    if extra:
        raise ValueError(f"{where}: unknown key(s) {', '.join(extra)}")
