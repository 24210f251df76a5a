"""The Nodes page's rows: each engine node's state and figures, and the totals, in words.

Pure Python (no Qt): :func:`node_rows` reads the :class:`~console.metrics_model.MetricsModel`
(figures, health and who each node is) and how long ago each node last reported, and returns
plain dicts for the table.

- A node that has not reported for ``stale_after_s`` stays listed as "not reporting 12 s"; its
  last figures stay visible (greyed by the page) but are left out of the totals.
- A reporting node's state is the worst of its health checks (``nats``, ``store``, ``routes``,
  engine/health.py): healthy, degraded or failing.
- Totals add up the reporting nodes' rates, in-flight, CPU and memory. Consumer lag is one
  shared durable consumer, so the totals show the largest figure, not the sum (as the Live
  page's all-nodes series do).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from console.metrics_model import ALL, Metric, MetricsModel
from widgets.theme import Status

NOT_REPORTING = "not reporting"
"""The state word of a node whose snapshots stopped."""

TOTALS = ALL
"""The key of the totals row (the Live page's "All nodes")."""

CHECKS: tuple[tuple[str, str], ...] = (("nats", "NATS"), ("store", "store"), ("routes", "routes"))
"""Health checks a snapshot may carry, in the order shown, with their names in words."""

FIGURES: tuple[tuple[str, str], ...] = (
    ("events_in", Metric.EVENTS_IN),
    ("emails_out", Metric.EMAILS_OUT),
    ("consumer_lag", Metric.CONSUMER_LAG),
    ("inflight", Metric.INFLIGHT),
    ("cpu", Metric.CPU),
    ("rss", Metric.RSS),
)
"""Row field -> the model's metric for it."""

_SHARED = frozenset({"consumer_lag"})
"""Figures of one shared thing: the totals take the largest, not the sum."""

_RANK = {Status.HEALTHY: 0, Status.UNKNOWN: 1, Status.DEGRADED: 2, Status.FAILING: 3}


def partition_words(partitions: Sequence[int | str] | None) -> str:
    """Runs of numbers joined (``0-3, 7``, with an en dash); ``none`` for an empty list, a dash
    when the engine does not say."""
    if partitions is None:
        return "\u2014"
    if not partitions:
        return "none"
    numbers = sorted({p for p in partitions if isinstance(p, int)})
    words: list[str] = []
    start = prev = None
    for n in numbers:
        if prev is not None and n == prev + 1:
            prev = n
            continue
        if start is not None:
            words.append(str(start) if start == prev else f"{start}\u2013{prev}")
        start = prev = n
    if start is not None:
        words.append(str(start) if start == prev else f"{start}\u2013{prev}")
    words += sorted(str(p) for p in partitions if not isinstance(p, int))
    return ", ".join(words)


def uptime_words(seconds: float | None) -> str:
    """``45 s``, ``12 min``, ``3 h 5 min``, ``2 d 4 h``; a dash when unknown."""
    if seconds is None or math.isnan(seconds):
        return "\u2014"
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min"
    if whole < 86400:
        hours, rest = divmod(whole, 3600)
        return f"{hours} h {rest // 60} min" if rest >= 60 else f"{hours} h"
    days, rest = divmod(whole, 86400)
    return f"{days} d {rest // 3600} h" if rest >= 3600 else f"{days} d"


def health_status(health: Mapping[str, Any]) -> tuple[Status, str]:
    """The worst of a node's health checks, and the checks in words (``store failing: …``)."""
    worst = Status.HEALTHY
    troubled: list[str] = []
    fine: list[str] = []
    details = health.get("details")
    details = details if isinstance(details, dict) else {}
    for key, name in CHECKS:
        if key not in health:
            continue
        status = Status.parse(str(health.get(key)))
        if status == Status.HEALTHY:
            fine.append(name)
            continue
        if _RANK.get(status, 1) > _RANK.get(worst, 1):
            worst = status
        word = status.value if status != Status.UNKNOWN else str(health.get(key))
        why = str(details.get(key) or "")
        troubled.append(f"{name} {word}" + (f": {why}" if why else ""))
    if troubled:
        return worst, "; ".join(troubled)
    return Status.HEALTHY, f"{', '.join(fine)} healthy" if fine else "no checks reported"


def check_lines(health: Mapping[str, Any]) -> list[tuple[str, Status, str]]:
    """Each health check a node reported: its name, status, and the words for it
    (``("routes", FAILING, "routes failing: default down: connection refused")``)."""
    details = health.get("details")
    details = details if isinstance(details, dict) else {}
    lines = []
    for key, name in CHECKS:
        if key not in health:
            continue
        status = Status.parse(str(health.get(key)))
        word = status.value if status != Status.UNKNOWN else str(health.get(key))
        why = str(details.get(key) or "")
        lines.append((name, status, f"{name} {word}" + (f": {why}" if why else "")))
    return lines


def _value(model: MetricsModel, metric: str, node: str) -> float | None:
    value = model.latest(metric, node)
    return None if math.isnan(value) else value


def node_rows(
    model: MetricsModel,
    nodes: Iterable[str],
    age_of: Callable[[str], float],
    stale_after_s: float,
    now: float,
) -> list[dict[str, Any]]:
    """One row per node (sorted by name), then the totals row (key ``TOTALS``).

    ``age_of(node)``: seconds since its last snapshot; ``now``: epoch seconds, for uptimes.
    """
    rows: list[dict[str, Any]] = []
    names = sorted(nodes)
    for name in names:
        age = age_of(name)
        reporting = age <= stale_after_s
        info = model.node_info(name)
        health = model.health(name)
        status, checks = health_status(health)
        role = (info.role if info else "") or str(health.get("role") or "")
        # Partitions are decide's: a deliver or http node has none to hold ("—", not "none").
        decides = role not in ("deliver", "http")
        row: dict[str, Any] = {
            "name": name,
            "label": name,
            "role": role or "\u2014",
            "identity": _identity(info.version if info else "", info.pid if info else None),
            "uptime": info.uptime(now) if info and reporting else None,
            "partitions": partition_words(info.partitions if info and decides else None),
            "partition_count": len(info.partitions) if info and info.partitions else 0,
            "reporting": reporting,
            "checks": checks,
        }
        if reporting:
            row["status"] = status
            row["state"] = status.value
            row["state_tip"] = f"{status.value}: {checks}"
        else:
            seconds = "a while" if math.isinf(age) else f"{int(age)} s"
            row["status"] = Status.UNKNOWN
            row["state"] = f"{NOT_REPORTING} {seconds}"
            row["state_tip"] = (
                f"No metrics from {name} for {seconds}: it stopped, crashed, or lost NATS."
                " Its last figures are shown greyed and left out of the totals."
            )
            row["checks"] = f"last known: {checks}" if health else "\u2014"
        for field, metric in FIGURES:
            row[field] = _value(model, metric, name)
        rows.append(row)
    rows.append(_totals(rows))
    return rows


def _identity(version: str, pid: int | None) -> str:
    parts = [f"v{version}" if version else "", f"pid {pid}" if pid is not None else ""]
    return " \u00b7 ".join(p for p in parts if p) or "\u2014"


def _totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    reporting = [r for r in rows if r["reporting"]]
    worst = max((r["status"] for r in reporting), key=lambda s: _RANK.get(s, 1), default=None)
    silent = len(rows) - len(reporting)
    if not rows:
        state, status = "no nodes", Status.UNKNOWN
    elif not reporting:
        state, status = "none reporting", Status.FAILING
    elif silent:
        state, status = f"{silent} not reporting", Status.DEGRADED
    else:
        state, status = (worst or Status.HEALTHY).value, worst or Status.HEALTHY
    totals: dict[str, Any] = {
        "name": TOTALS,
        "label": "Totals",
        "role": f"{len(reporting)} of {len(rows)} reporting",
        "identity": "",
        "uptime": None,
        "status": status,
        "state": state,
        "state_tip": "Totals over the nodes that report; consumer lag is the largest"
        " (one shared consumer), the rest are sums.",
        "reporting": True,
        "checks": "",
        "partition_count": sum(r["partition_count"] for r in reporting),
    }
    owned = totals["partition_count"]
    totals["partitions"] = f"{owned} owned" if owned else "\u2014"
    for field, _metric in FIGURES:
        values = [r[field] for r in reporting if r[field] is not None]
        if not values:
            totals[field] = None
        elif field in _SHARED:
            totals[field] = max(values)
        else:
            totals[field] = float(sum(values))
    return totals
