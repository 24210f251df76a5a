"""Results read from the store: conversion summaries and per-experiment arms with decisions.

``conversions_summary``: per workflow, step and trigger: mails sent, mails converted, rate,
revenue and revenue per mail; the time from trigger to send and from send to conversion
(quantiles). ``experiment_results``: per experiment and arm: exposures, sends, conversions,
rate with its Wilson interval, the lift over the holdout with its always-valid sequence, and
the decision (engine/experiments/stats.py), and each arm's revenue per exposed contact over a
window after exposure against the holdout (engine/experiments/value.py). ``promote`` records a
winner and audits it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from engine.experiments.model import HOLDOUT, Experiment
from engine.experiments.stats import ALPHA, decide, difference_cs, wilson
from engine.experiments.value import DEFAULT_WINDOW_S, ArmValue, arm_values, describe_arm
from engine.store import Store, schema

QUANTILES = (0.5, 0.9, 0.99)


def _quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    out = {}
    for q in QUANTILES:
        out[f"p{round(q * 100)}"] = ordered[min(len(ordered) - 1, int(q * len(ordered)))]
    return out


def _histogram(values: list[float]) -> list[dict[str, Any]]:
    """Counts in readable buckets (minutes to weeks) for the send-to-conversion chart."""
    edges = [
        ("< 5 min", 300), ("< 1 h", 3600), ("< 6 h", 21600), ("< 1 d", 86400),
        ("< 3 d", 259200), ("< 7 d", 604800), ("7 d +", float("inf")),
    ]  # fmt: skip
    counts = dict.fromkeys((label for label, _ in edges), 0)
    for value in values:
        for label, edge in edges:
            if value < edge:
                counts[label] += 1
                break
    return [{"bucket": label, "count": counts[label]} for label, _ in edges]


def conversions_summary(store: Store, *, since: float = 0.0) -> dict[str, Any]:
    """Conversion rate by workflow, step and trigger since ``since`` (mails sent since then)."""
    i, c = schema.intents, schema.conversions
    trigger_name = i.c.context["event"]["name"].as_string()
    with store.begin() as conn:
        sent = conn.execute(
            sa.select(
                i.c.workflow_id, i.c.step_id, trigger_name.label("trigger"),
                sa.func.count(), sa.func.avg(i.c.finished_at - i.c.received_at),
            )
            .where(i.c.status == "sent", i.c.finished_at >= since)
            .group_by(i.c.workflow_id, i.c.step_id, trigger_name)
        ).all()  # fmt: skip
        converted = conn.execute(
            sa.select(
                c.c.workflow_id, c.c.step_id, c.c.trigger_name, c.c.intent_id, c.c.revenue,
                c.c.sent_at, c.c.converted_at, c.c.triggered_at,
            ).where(c.c.sent_at >= since)
        ).all()  # fmt: skip
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for wf, step, trigger, n, to_send in sent:
        rows[(wf, step, trigger or "")] = {
            "workflow_id": wf, "step_id": step, "trigger": trigger or "", "sends": int(n),
            "trigger_to_send_s": float(to_send or 0.0),
            "converted_mails": 0, "conversions": 0, "revenue": 0.0,
        }  # fmt: skip
    mails: dict[tuple[str, str, str], set[str]] = {}
    delays: list[float] = []
    per_workflow_delays: dict[str, list[float]] = {}
    for wf, step, trigger, intent_id, revenue, sent_at, converted_at, _ in converted:
        key = (wf, step, trigger)
        row = rows.setdefault(
            key,
            {
                "workflow_id": wf, "step_id": step, "trigger": trigger, "sends": 0,
                "trigger_to_send_s": 0.0, "converted_mails": 0, "conversions": 0,
                "revenue": 0.0,
            },
        )  # fmt: skip
        row["conversions"] += 1
        row["revenue"] += float(revenue or 0.0)
        mails.setdefault(key, set()).add(intent_id)
        delay = max(0.0, converted_at - sent_at)
        delays.append(delay)
        per_workflow_delays.setdefault(wf, []).append(delay)
    for key, row in rows.items():
        row["converted_mails"] = len(mails.get(key, ()))
        rate = wilson(row["converted_mails"], row["sends"])
        row["rate"], row["rate_low"], row["rate_high"] = rate.estimate, rate.low, rate.high
        row["revenue_per_mail"] = row["revenue"] / row["sends"] if row["sends"] else 0.0
    workflows: dict[str, dict[str, Any]] = {}
    for row in rows.values():
        w = workflows.setdefault(
            row["workflow_id"],
            {"workflow_id": row["workflow_id"], "sends": 0, "converted_mails": 0,
             "conversions": 0, "revenue": 0.0},
        )  # fmt: skip
        for total in ("sends", "converted_mails", "conversions", "revenue"):
            w[total] += row[total]
    for wf_id, w in workflows.items():
        rate = wilson(w["converted_mails"], w["sends"])
        w["rate"], w["rate_low"], w["rate_high"] = rate.estimate, rate.low, rate.high
        w["revenue_per_mail"] = w["revenue"] / w["sends"] if w["sends"] else 0.0
        w["send_to_conversion"] = _quantiles(per_workflow_delays.get(wf_id, []))
    return {
        "workflows": sorted(workflows.values(), key=lambda w: w["workflow_id"]),
        "rows": sorted(rows.values(), key=lambda r: (r["workflow_id"], r["step_id"], r["trigger"])),
        "send_to_conversion": {**_quantiles(delays), "histogram": _histogram(delays)},
    }


def experiment_results(
    store: Store,
    experiments: Iterable[Experiment],
    *,
    alpha: float = ALPHA,
    value_window_s: float = DEFAULT_WINDOW_S,
    now: float | None = None,
    value: bool = True,
) -> list[dict[str, Any]]:
    """Per experiment: its arms' counts, rates, lift over the holdout and the decision, and
    each arm's order value over ``value_window_s`` after exposure (engine/experiments/value.py;
    ``now`` decides which contacts have had the whole window; ``value`` False leaves it out)."""
    wanted = {e.id: e for e in experiments}
    if not wanted:
        return []
    t, i, x = schema.experiment_exposures, schema.intents, schema.experiments
    sent = sa.case((i.c.status == "sent", 1), else_=0)
    with store.begin() as conn:
        counts = conn.execute(
            sa.select(
                t.c.experiment_id, t.c.variant, sa.func.count(),
                sa.func.count(t.c.converted_at), sa.func.coalesce(sa.func.sum(t.c.revenue), 0.0),
                sa.func.coalesce(sa.func.sum(sent), 0),
            )
            .select_from(t.outerjoin(i, i.c.id == t.c.intent_id))
            .where(t.c.experiment_id.in_(sorted(wanted)))
            .group_by(t.c.experiment_id, t.c.variant)
        ).all()  # fmt: skip
        decided = {
            row.id: row for row in conn.execute(sa.select(x).where(x.c.id.in_(sorted(wanted))))
        }
        moment = time.time() if now is None else now
        values = arm_values(conn, wanted, value_window_s, moment) if value else None
    by_exp: dict[str, dict[str, tuple[int, int, float, int]]] = {}
    for exp_id, variant, n, conv, revenue, sends in counts:
        by_exp.setdefault(exp_id, {})[variant] = (int(n), int(conv), float(revenue), int(sends))
    out = []
    for exp_id, exp in sorted(wanted.items()):
        arms = by_exp.get(exp_id, {})
        result = _one(exp, arms, decided.get(exp_id), alpha)
        if values is not None:
            found = values.get(exp_id, {})
            result["value_window_s"] = value_window_s
            for row in result["variants"]:
                name = row["variant"]
                row["value"] = describe_arm(
                    found.get(name, ArmValue()), found.get(HOLDOUT), name == HOLDOUT
                )
        out.append(result)
    return out


def _one(
    exp: Experiment,
    arms: Mapping[str, tuple[int, int, float, int]],
    promoted: Any,
    alpha: float,
) -> dict[str, Any]:
    holdout = arms.get(HOLDOUT)
    rows = []
    for name in exp.arms():
        n, conv, revenue, sends = arms.get(name, (0, 0, 0.0, 0))
        rate = wilson(conv, n)
        row: dict[str, Any] = {
            "variant": name, "exposed": n, "sends": sends, "conversions": conv,
            "rate": rate.estimate, "rate_low": rate.low, "rate_high": rate.high,
            "revenue": revenue, "revenue_per_mail": revenue / sends if sends else 0.0,
        }  # fmt: skip
        if holdout is not None and name != HOLDOUT:
            lift = difference_cs(holdout[1], holdout[0], conv, n, alpha=alpha)
            base = holdout[1] / holdout[0] if holdout[0] else 0.0
            row.update(
                lift=lift.estimate,
                lift_low=lift.low,
                lift_high=lift.high,
                lift_relative=lift.estimate / base if base else None,
            )
        rows.append(row)
    decision = decide(
        {name: (arms.get(name, (0, 0))[1], arms.get(name, (0, 0))[0]) for name in
         (v.id for v in exp.variants)},
        alpha=alpha,
    )  # fmt: skip
    state, winner, detail = decision.state, decision.winner, decision.detail
    if promoted is not None and promoted.state == "promoted":
        state, winner = "promoted", promoted.winner
        detail = f"{winner} promoted by {promoted.actor}"
    return {
        "id": exp.id,
        "workflow_id": exp.workflow_id,
        "step_id": exp.step_id,
        "holdout_percent": exp.holdout * 100,
        "auto_promote": exp.promote,
        "alpha": alpha,
        "state": state,
        "winner": winner,
        "detail": detail,
        "variants": rows,
    }


def promote(
    store: Store, exp: Experiment, winner: str, *, actor: str, now: float, detail: dict[str, Any]
) -> bool:
    """Record ``winner`` as promoted (False if it already was) and audit it."""
    x, audit = schema.experiments, schema.audit_log
    with store.begin() as conn:
        current = conn.execute(sa.select(x.c.winner).where(x.c.id == exp.id)).first()
        if current is not None and current.winner == winner:
            return False
        values = {
            "workflow_id": exp.workflow_id, "state": "promoted", "winner": winner,
            "decided_at": now, "actor": actor[:200], "detail": detail,
        }  # fmt: skip
        if current is None:
            conn.execute(x.insert(), {"id": exp.id, **values})
        else:
            conn.execute(sa.update(x).where(x.c.id == exp.id).values(**values))
        conn.execute(
            audit.insert(),
            {
                "ts": now, "actor": actor[:200], "action": "experiments.promote",
                "target": exp.id, "count": 1, "detail": {"winner": winner, **detail},
            },
        )  # fmt: skip
    return True
