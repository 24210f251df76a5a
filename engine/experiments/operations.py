"""Control verbs for conversions and experiments, and the automatic promotion of winners.

- ``conversions.summary`` ``{since?}``: conversion rate by workflow, step and trigger, revenue
  per mail, time trigger -> send and send -> conversion;
- ``experiments.results`` ``{workflow?, value_window?}``: every experiment of the newest
  workflow versions with its arms, rates, intervals, lift over the holdout and decision, and
  each arm's revenue per contact over ``value_window`` (default 30d) after exposure against
  the holdout, with the arm's mean lifetime value;
- ``experiments.promote`` ``{experiment, variant}``: give every new contact outside the
  holdout that arm (audited with the operator's name).

An experiment with ``promote = true`` is promoted by the engine once decided (actor
``engine``, audited), checked every ``PROMOTE_EVERY_S`` on decide nodes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from engine.control import ControlError, ControlServer, check_keys
from engine.decide.durations import parse_duration
from engine.experiments.model import Experiment
from engine.experiments.results import conversions_summary, experiment_results, promote
from engine.experiments.value import DEFAULT_WINDOW_S

if TYPE_CHECKING:
    from engine.node import Node

log = logging.getLogger(__name__)

PROMOTE_EVERY_S = 60.0
MAX_VALUE_WINDOW_S = 366 * 86_400.0


def value_window(raw: object) -> float:
    """``value_window``: a duration such as 7d or 30d (default 30d), at most a year."""
    if raw is None:
        return DEFAULT_WINDOW_S
    try:
        seconds = parse_duration(raw)
    except ValueError as exc:
        raise ControlError(f"value_window: {exc}") from None
    if not 0 < seconds <= MAX_VALUE_WINDOW_S:
        raise ControlError("value_window must be above 0 and at most 366d")
    return seconds


def current_experiments(node: Node, workflow: str | None = None) -> list[Experiment]:
    """Experiments of the newest version of each workflow (one workflow, if named)."""
    library = node.components.get("library")
    if library is None:
        return []
    newest = library.workflows.index.live
    if workflow is not None and workflow not in newest:
        raise ControlError(f"no workflow named {workflow!r}")
    return [
        exp
        for wf_id, wf in sorted(newest.items())
        if workflow is None or wf_id == workflow
        for exp in wf.experiments()
    ]


def register_experiment_operations(control: ControlServer, node: Node) -> None:
    """Register ``conversions.summary``, ``experiments.results`` and ``experiments.promote``."""

    store = node.require_store

    async def summary(args: dict[str, Any], actor: str) -> Any:
        since = args.get("since", 0)
        if not isinstance(since, int | float) or isinstance(since, bool) or since < 0:
            raise ControlError("since must be a time in epoch seconds (0 or more)")
        return await asyncio.to_thread(conversions_summary, store(), since=float(since))

    async def results(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, ("workflow", "value_window"))
        workflow = args.get("workflow")
        if workflow is not None and not isinstance(workflow, str):
            raise ControlError("workflow must be a workflow id")
        window = value_window(args.get("value_window"))
        experiments = current_experiments(node, workflow)
        found = await asyncio.to_thread(
            experiment_results, store(), experiments, value_window_s=window, now=node.clock.now()
        )
        return {"experiments": found}

    async def promote_verb(args: dict[str, Any], actor: str) -> Any:
        exp_id, variant = args.get("experiment"), args.get("variant")
        if not isinstance(exp_id, str) or not exp_id:
            raise ControlError("experiment must be an experiment id")
        if not isinstance(variant, str) or not variant:
            raise ControlError("variant must name one of the experiment's variants")
        exp = next((e for e in current_experiments(node) if e.id == exp_id), None)
        if exp is None:
            raise ControlError(f"no running experiment named {exp_id!r}")
        if exp.variant(variant) is None:
            names = ", ".join(v.id for v in exp.variants)
            raise ControlError(f"experiment {exp_id!r} has no variant {variant!r} ({names})")
        changed = await asyncio.to_thread(
            promote, store(), exp, variant, actor=actor, now=node.clock.now(),
            detail={"how": "by hand"},
        )  # fmt: skip
        return {"experiment": exp_id, "winner": variant, "changed": changed}

    control.register("conversions.summary", summary)
    control.register("experiments.results", results)
    control.register("experiments.promote", promote_verb)


def auto_promote_once(node: Node) -> list[str]:
    """Promote every decided experiment that asks for it; returns the experiment ids promoted."""
    if node.store is None:
        return []
    wanted = [e for e in current_experiments(node) if e.promote]
    done = []
    for result in experiment_results(node.store, wanted, value=False):
        if result["state"] != "decided" or not result["winner"]:
            continue
        exp = next(e for e in wanted if e.id == result["id"])
        detail = {"how": "automatically once decided", "rule": result["detail"]}
        if promote(
            node.store, exp, result["winner"], actor="engine", now=node.clock.now(), detail=detail
        ):
            log.info("experiment %s: promoted %s (%s)", exp.id, result["winner"], result["detail"])
            done.append(exp.id)
    return done


async def run_auto_promotion(node: Node, every: float = PROMOTE_EVERY_S) -> None:
    """Check for decided experiments with ``promote = true`` every ``every`` seconds."""
    while True:
        await asyncio.sleep(every)
        try:
            await asyncio.to_thread(auto_promote_once, node)
        except Exception:  # a bad moment of the store must not end the loop
            log.exception("automatic promotion of experiment winners failed")
