"""Alert rules, evaluated inside the engine so they fire whether or not a console is watching.

About once a second (``[alerts] check_every``) the node's :class:`AlertService` reads its own
telemetry and, every few seconds, the store, and checks five rules:

- ``latency_p99``: the p99 of ``e2e_seconds`` (event received -> SMTP accepted) over the last
  ``window`` seconds is above the threshold (seconds).
- ``error_rate``: (failed + bounced + uncertain) / attempted over the last ``window`` seconds is
  above the threshold (a fraction). Attempted is every outcome that reached the relay: sent,
  deferred, bounced, failed, uncertain (the console's definition). Windows with fewer than
  ``error_rate_min_attempts`` attempts count as "no data", so one bounce is not a 100 % alert.
- ``queue_age``: the oldest intent that is due and not yet claimed (status queued or deferred,
  ``next_attempt_at <= now``) has been due for longer than the threshold (seconds). Intents
  waiting for their retry time are not late. Two indexed ``ORDER BY ... LIMIT 1`` lookups on
  ``ix_intents_status_next``, every ``queue_age_every`` seconds.
- ``relay_down``: the gauge ``route_down{route}`` is 1 (one alert per route).
- ``route_paused``: the gauge ``route_paused{route}`` is 1 (one alert per route). The deliver
  stage sets it for any pause, its own (auto-pause on relay errors) or an operator's, so the
  alert says "paused" without guessing who paused it.

Hysteresis: an alert fires once its value has stayed above the threshold for the rule's
``for_seconds``; a firing alert resolves once the value has stayed at or below
``threshold * (1 - hysteresis)`` (or had no data) for ``clear_seconds``. A value between the two
keeps the alert as it is. The on/off gauges use 0.5 as their line.

Each firing and resolving writes an audit entry (actor ``engine``, action ``alert.fired`` /
``alert.resolved``) and is published on ``alerts.<node>`` as ``{"event": "fired"|"resolved",
"alert": {...}}``. Active alerts ride along in every metrics snapshot (``"alerts"``) and
``alerts.list`` returns the active ones and the recently resolved ones, so a console that connects
later sees what is going on. ``alerts.set_rule`` changes a rule live (audited with the operator).

In a cluster every node evaluates its own telemetry; ``queue_age`` looks at the shared store, so
each node reports it (alerts carry the node's name).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import orjson
import sqlalchemy as sa
from nats import errors as nats_errors
from nats.aio.client import Client as NatsClient

from engine.clock import Clock
from engine.config import AlertSettings
from engine.errors import EngineError
from engine.operations import audit
from engine.store import Store, schema
from engine.telemetry import BUCKET_BOUNDS, Telemetry

log = logging.getLogger(__name__)

ACTOR = "engine"
RULE_NAMES = ("latency_p99", "error_rate", "queue_age", "relay_down", "route_paused")
ATTEMPTED = ("sent", "deferred", "bounced", "failed", "uncertain")
ERRORS = ("failed", "bounced", "uncertain")
SWITCH_LINE = 0.5
"""On/off gauges (``route_down``, ``route_paused``) count as "above" at 1 and "clear" at 0."""

_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

Severity = Literal["failing", "degraded", "paused"]


class AlertRuleInvalid(EngineError, ValueError):
    """A rule change was refused (unknown rule, a value out of range); the words say why."""


@dataclass(frozen=True)
class RuleInfo:
    """What a rule is, for people: its title, unit and severity (fixed per rule)."""

    title: str
    unit: str  # "s", "ratio", "" (on/off)
    severity: Severity
    switch: bool  # an on/off gauge: the threshold is fixed


RULE_INFO: dict[str, RuleInfo] = {
    "latency_p99": RuleInfo("p99 latency (event to SMTP accepted)", "s", "degraded", False),
    "error_rate": RuleInfo("Error rate (failed, bounced, uncertain)", "ratio", "failing", False),
    "queue_age": RuleInfo("Oldest due email waiting", "s", "degraded", False),
    "relay_down": RuleInfo("Relay unreachable", "", "failing", True),
    "route_paused": RuleInfo("Route paused", "", "paused", True),
}


@dataclass(frozen=True)
class AlertRule:
    """One rule's settings: fire above ``threshold`` held ``for_seconds``; clear (below the
    hysteresis line) held ``clear_seconds``."""

    name: str
    threshold: float
    for_seconds: float
    clear_seconds: float
    enabled: bool = True

    def to_dict(self, hysteresis: float) -> dict[str, Any]:
        info = RULE_INFO[self.name]
        return {
            "rule": self.name,
            "title": info.title,
            "unit": info.unit,
            "severity": info.severity,
            "threshold": self.threshold,
            "threshold_fixed": info.switch,
            "resolve_at": self.resolve_line(hysteresis),
            "for_seconds": self.for_seconds,
            "clear_seconds": self.clear_seconds,
            "enabled": self.enabled,
        }

    def resolve_line(self, hysteresis: float) -> float:
        if RULE_INFO[self.name].switch:
            return SWITCH_LINE
        return self.threshold * (1.0 - hysteresis)

    def is_above(self, value: float) -> bool:
        if RULE_INFO[self.name].switch:
            return value >= SWITCH_LINE
        return value > self.threshold


def rules_from_settings(settings: AlertSettings) -> dict[str, AlertRule]:
    """The five rules as configured in ``[alerts]``."""
    clear = settings.clear_for
    return {
        "latency_p99": AlertRule(
            "latency_p99", settings.latency_p99, settings.latency_p99_for, clear
        ),
        "error_rate": AlertRule("error_rate", settings.error_rate, settings.error_rate_for, clear),
        "queue_age": AlertRule("queue_age", settings.queue_age, settings.queue_age_for, clear),
        "relay_down": AlertRule("relay_down", 1.0, settings.relay_down_for, clear),
        "route_paused": AlertRule("route_paused", 1.0, settings.route_paused_for, clear),
    }


def changed_rule(rule: AlertRule, args: Mapping[str, Any]) -> AlertRule:
    """``rule`` with the fields in ``args`` (threshold, for_seconds, clear_seconds, enabled)
    changed, checked; raises :class:`AlertRuleInvalid` with the reason."""
    known = {"rule", "threshold", "for_seconds", "clear_seconds", "enabled"}
    unknown = sorted(set(args) - known)
    if unknown:
        raise AlertRuleInvalid(f"unknown rule field(s): {', '.join(unknown)}")
    changes: dict[str, Any] = {}
    info = RULE_INFO[rule.name]
    if "threshold" in args:
        value = _number(args["threshold"], "threshold")
        if info.switch and value != rule.threshold:
            raise AlertRuleInvalid(
                f"{rule.name} fires when its gauge is 1; its threshold cannot be changed"
            )
        if value <= 0:
            raise AlertRuleInvalid("threshold must be above 0")
        if info.unit == "ratio" and value > 1:
            raise AlertRuleInvalid("error_rate's threshold is a fraction between 0 and 1")
        changes["threshold"] = value
    for key in ("for_seconds", "clear_seconds"):
        if key in args:
            value = _number(args[key], key)
            if not 0 <= value <= 86_400:
                raise AlertRuleInvalid(f"{key} must be between 0 and 86,400 seconds")
            changes[key] = value
    if "enabled" in args:
        if not isinstance(args["enabled"], bool):
            raise AlertRuleInvalid("enabled must be true or false")
        changes["enabled"] = args["enabled"]
    return replace(rule, **changes)


def _number(raw: Any, name: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise AlertRuleInvalid(f"{name} must be a number")
    value = float(raw)
    if value != value or value in (float("inf"), float("-inf")):
        raise AlertRuleInvalid(f"{name} must be a finite number")
    return value


def format_value(rule: str, value: float | None) -> str:
    """A rule's value in words with its unit ("3.2 s", "7.5%", "down")."""
    if value is None:
        return "no data"
    unit = RULE_INFO[rule].unit
    if unit == "ratio":
        return f"{value * 100:.1f}%"
    if unit == "s":
        if value >= 120:
            return f"{value / 60:.1f} min"
        if value >= 1:
            return f"{value:.1f} s"
        if value >= 0.001:
            return f"{value * 1000:.1f} ms"
        return f"{value * 1e6:.1f} \u00b5s"
    return "yes" if value >= SWITCH_LINE else "no"


@dataclass
class Reading:
    """One instance of a rule's value this tick (``labels`` tells routes apart)."""

    value: float | None
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class _Instance:
    """Where one (rule, labels) stands: pending, firing, clearing."""

    rule: str
    labels: dict[str, str]
    value: float | None = None
    above_since: float | None = None
    clear_since: float | None = None
    alert: dict[str, Any] | None = None  # set while firing


def instance_key(rule: str, labels: Mapping[str, str]) -> str:
    """``relay_down route=relay-a`` (rule name alone without labels)."""
    if not labels:
        return rule
    return rule + " " + " ".join(f"{k}={v}" for k, v in sorted(labels.items()))


def parse_labels(key: str) -> tuple[str, dict[str, str]]:
    """``name{a="x",b="y"}`` -> ("name", {"a": "x", "b": "y"})."""
    name, _, rest = key.partition("{")
    return name, dict(_LABEL.findall(rest))


_Sample = tuple[float, list[int], dict[str, float]]
"""(when, cumulative e2e bucket counts, cumulative outcome totals)."""


class Window:
    """Telemetry samples over the last ``seconds``: p99 of a histogram, outcome deltas.

    The service samples the cumulative counts itself (never ``Histogram.delta()``, which belongs
    to the metrics snapshots).
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._samples: deque[_Sample] = deque()

    def add(self, now: float, buckets: list[int], outcomes: dict[str, float]) -> None:
        self._samples.append((now, buckets, outcomes))
        # Keep the newest sample at or before the window's start, so the window is full.
        while len(self._samples) >= 2 and self._samples[1][0] <= now - self.seconds:
            self._samples.popleft()

    def _ends(self) -> tuple[_Sample, _Sample] | None:
        if len(self._samples) < 2:
            return None
        return self._samples[0], self._samples[-1]

    def p99(self) -> float | None:
        ends = self._ends()
        if ends is None:
            return None
        (_t0, old, _o0), (_t1, new, _o1) = ends
        delta = [b - a for a, b in zip(old, new, strict=True)]
        total = sum(delta)
        if total <= 0:
            return None
        rank = 0.99 * total
        seen = 0
        for index, count in enumerate(delta):
            seen += count
            if seen >= rank:
                return BUCKET_BOUNDS[min(index, len(BUCKET_BOUNDS) - 1)]
        return BUCKET_BOUNDS[-1]

    def error_rate(self, min_attempts: int) -> float | None:
        ends = self._ends()
        if ends is None:
            return None
        (_t0, _b0, old), (_t1, _b1, new) = ends
        delta = {o: new.get(o, 0.0) - old.get(o, 0.0) for o in ATTEMPTED}
        attempted = sum(max(0.0, v) for v in delta.values())
        if attempted < max(1, min_attempts):
            return None
        return sum(max(0.0, delta[o]) for o in ERRORS) / attempted


# Telemetry may be written from worker threads: each read below copies the dict in one step
# (``list(d.items())`` holds the GIL) instead of iterating it live.


def _histogram_counts(telemetry: Telemetry, name: str) -> list[int]:
    """Summed cumulative bucket counts of every histogram called ``name`` (any labels)."""
    total = [0] * (len(BUCKET_BOUNDS) + 1)
    for key, hist in list(telemetry.histograms.items()):
        if key == name or key.startswith(name + "{"):
            total = [a + b for a, b in zip(total, hist.counts, strict=True)]
    return total


def _outcome_totals(telemetry: Telemetry) -> dict[str, float]:
    totals: dict[str, float] = {}
    for key, value in list(telemetry.counters.items()):
        if not key.startswith("intents_total{"):
            continue
        _name, labels = parse_labels(key)
        outcome = labels.get("outcome", "")
        totals[outcome] = totals.get(outcome, 0.0) + value
    return totals


def oldest_due_age(store: Store, now: float) -> float | None:
    """Seconds the oldest due, unclaimed intent has been due (None: nothing is due)."""
    t = schema.intents
    oldest: float | None = None
    with store.begin() as conn:
        for status in ("queued", "deferred"):
            found = conn.execute(
                sa.select(t.c.next_attempt_at)
                .where(t.c.status == status, t.c.next_attempt_at <= now)
                .order_by(t.c.next_attempt_at)
                .limit(1)
            ).scalar()
            if found is not None and (oldest is None or found < oldest):
                oldest = float(found)
    return None if oldest is None else max(0.0, now - oldest)


AuditWriter = Callable[[str, str, dict[str, Any], float], None]
"""``(action, target, detail, now)``: writes one audit entry (runs in a worker thread)."""


class AlertService:
    """Evaluates the rules for one node, keeps active and recent alerts, reports changes.

    ``check()`` runs one evaluation (tests call it with a ``ManualClock``); ``start()`` runs it
    every ``check_every`` seconds until ``stop()``.
    """

    def __init__(
        self,
        *,
        settings: AlertSettings,
        telemetry: Telemetry,
        clock: Clock,
        node: str,
        store: Store | None = None,
        nc: NatsClient | None = None,
    ) -> None:
        self.settings = settings
        self.rules = rules_from_settings(settings)
        self._telemetry = telemetry
        self._clock = clock
        self.node = node
        self._store = store
        self._nc = nc
        self._window = Window(settings.window)
        self._instances: dict[str, _Instance] = {}
        self._recent: deque[dict[str, Any]] = deque(maxlen=max(1, settings.recent))
        self._queue_age: float | None = None
        self._queue_age_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._sequence = 0
        self._lock = asyncio.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self.settings.enabled and self._task is None:
            self._task = asyncio.create_task(self._run(), name="alerts")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        # A plain sleep for the cadence: the clock's shared wake-up belongs to the timer
        # service, and alert times come from ``clock.now()`` anyway (tests call ``check()``).
        interval = max(0.05, self.settings.check_every)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bad tick must not end alerting
                log.exception("alert check failed")

    # -- the API -----------------------------------------------------------------------------

    def active(self) -> list[dict[str, Any]]:
        """Firing alerts, oldest first (plain JSON)."""
        alerts = [dict(i.alert) for i in self._instances.values() if i.alert is not None]
        return sorted(alerts, key=lambda a: a["since"])

    def recent(self) -> list[dict[str, Any]]:
        """Resolved alerts, newest first (up to ``[alerts] recent``)."""
        return [dict(a) for a in reversed(self._recent)]

    def rules_list(self) -> list[dict[str, Any]]:
        return [self.rules[name].to_dict(self.settings.hysteresis) for name in RULE_NAMES]

    async def set_rule(self, args: Mapping[str, Any], actor: str) -> dict[str, Any]:
        """Change one rule (``args["rule"]`` names it); audited as ``alert.set_rule``."""
        name = args.get("rule")
        if name not in self.rules:
            raise AlertRuleInvalid(
                f"unknown alert rule {name!r}; the rules are {', '.join(RULE_NAMES)}"
            )
        async with self._lock:
            before = self.rules[name]
            after = changed_rule(before, args)
            self.rules[name] = after
            if not after.enabled:
                await self._resolve_all(name, reason="rule disabled")
        hysteresis = self.settings.hysteresis
        detail = {"before": before.to_dict(hysteresis), "after": after.to_dict(hysteresis)}
        await self._audit(actor, "alert.set_rule", name, detail)
        return after.to_dict(hysteresis)

    # -- evaluation --------------------------------------------------------------------------

    async def check(self) -> None:
        """One evaluation of every enabled rule."""
        async with self._lock:
            now = self._clock.now()
            telemetry = self._telemetry
            self._window.add(
                now, _histogram_counts(telemetry, "e2e_seconds"), _outcome_totals(telemetry)
            )
            await self._refresh_queue_age(now)
            readings = self._readings()
            for name in RULE_NAMES:
                rule = self.rules[name]
                if not rule.enabled:
                    continue
                seen: set[str] = set()
                for reading in readings.get(name, []):
                    key = instance_key(name, reading.labels)
                    seen.add(key)
                    await self._step(rule, key, reading, now)
                # Instances without a reading this tick (a route's gauge gone): no data.
                for key, inst in list(self._instances.items()):
                    if inst.rule == name and key not in seen:
                        await self._step(rule, key, Reading(None, inst.labels), now)

    def _readings(self) -> dict[str, list[Reading]]:
        gauges = self._telemetry.gauges
        out: dict[str, list[Reading]] = {
            "latency_p99": [Reading(self._window.p99())],
            "error_rate": [Reading(self._window.error_rate(self.settings.error_rate_min_attempts))],
            "queue_age": [Reading(self._queue_age)],
            "relay_down": [],
            "route_paused": [],
        }
        for key, value in list(gauges.items()):
            name, labels = parse_labels(key)
            if name == "route_down":
                out["relay_down"].append(Reading(float(value), labels))
            elif name == "route_paused":
                out["route_paused"].append(Reading(float(value), labels))
        return out

    async def _refresh_queue_age(self, now: float) -> None:
        store = self._store
        if store is None or not self.rules["queue_age"].enabled:
            return
        last = self._queue_age_at
        if last is not None and now - last < self.settings.queue_age_every:
            return
        self._queue_age_at = now
        try:
            self._queue_age = await asyncio.to_thread(oldest_due_age, store, now)
        except Exception:  # the store is away: no data this time, say so in the log
            log.warning("alerts: the oldest due intent could not be read", exc_info=True)
            self._queue_age = None

    async def _step(self, rule: AlertRule, key: str, reading: Reading, now: float) -> None:
        inst = self._instances.get(key)
        if inst is None:
            if reading.value is None or not rule.is_above(reading.value):
                return
            inst = self._instances[key] = _Instance(rule.name, dict(reading.labels))
        inst.value = reading.value
        value = reading.value
        if inst.alert is None:
            if value is not None and rule.is_above(value):
                if inst.above_since is None:
                    inst.above_since = now
                if now - inst.above_since >= rule.for_seconds:
                    await self._fire(inst, rule, key, value, now)
            else:
                del self._instances[key]  # back below before it fired
            return
        alert = inst.alert
        if value is not None:
            alert["value"] = value
            alert["peak"] = max(float(alert["peak"]), value)
            alert["message"] = _message(rule, value, inst.labels)
        clear = value is None or value <= rule.resolve_line(self.settings.hysteresis)
        if not clear:
            inst.clear_since = None
            return
        if inst.clear_since is None:
            inst.clear_since = now
        if now - inst.clear_since >= rule.clear_seconds:
            await self._resolve(key, now, reason="back to normal")

    async def _fire(
        self, inst: _Instance, rule: AlertRule, key: str, value: float, now: float
    ) -> None:
        self._sequence += 1
        info = RULE_INFO[rule.name]
        inst.alert = {
            "id": f"{self.node}:{key}:{now:.3f}",
            "key": key,
            "rule": rule.name,
            "title": info.title,
            "severity": info.severity,
            "unit": info.unit,
            "labels": dict(inst.labels),
            "node": self.node,
            "value": value,
            "peak": value,
            "threshold": rule.threshold,
            "for_seconds": rule.for_seconds,
            "since": now,
            "above_since": inst.above_since,
            "status": "firing",
            "message": _message(rule, value, inst.labels),
        }
        inst.clear_since = None
        log.warning("alert fired on %s: %s", self.node, inst.alert["message"])
        await self._report("fired", inst.alert, now)

    async def _resolve(self, key: str, now: float, *, reason: str) -> None:
        inst = self._instances.pop(key)
        if inst.alert is None:
            return
        alert = dict(inst.alert)
        alert.update(status="resolved", resolved_at=now, reason=reason)
        self._recent.append(alert)
        log.info("alert resolved on %s: %s (%s)", self.node, key, reason)
        await self._report("resolved", alert, now)

    async def _resolve_all(self, rule: str, *, reason: str) -> None:
        now = self._clock.now()
        for key, inst in list(self._instances.items()):
            if inst.rule != rule:
                continue
            if inst.alert is None:
                del self._instances[key]
            else:
                await self._resolve(key, now, reason=reason)

    async def _report(self, event: str, alert: dict[str, Any], now: float) -> None:
        await self._audit(ACTOR, f"alert.{event}", str(alert["key"]), alert)
        nc = self._nc
        if nc is None or not nc.is_connected:
            return
        body = orjson.dumps({"event": event, "alert": alert, "ts": now})
        try:
            await nc.publish(f"alerts.{self.node}", body)
        except (OSError, ConnectionError, TimeoutError, nats_errors.Error):
            # The audit entry and alerts.list still have it; a console asks again on reconnect.
            log.warning("alerts: could not publish %s of %s", event, alert["key"], exc_info=True)

    async def _audit(self, actor: str, action: str, target: str, detail: dict[str, Any]) -> None:
        store = self._store
        if store is None:
            return
        now = self._clock.now()
        try:
            await asyncio.to_thread(
                audit,
                store,
                actor=actor,
                action=action,
                target=target,
                count=1,
                detail=detail,
                now=now,
            )
        except Exception:  # the store is away; the alert still shows, the log says what
            log.exception("alerts: could not audit %s %s", action, target)


def _message(rule: AlertRule, value: float, labels: Mapping[str, str]) -> str:
    info = RULE_INFO[rule.name]
    route = labels.get("route")
    if rule.name == "relay_down":
        return f"Relay for route {route or '?'} is unreachable"
    if rule.name == "route_paused":
        return f"Route {route or '?'} is paused: its emails wait until it resumes"
    return (
        f"{info.title} is {format_value(rule.name, value)}, "
        f"above {format_value(rule.name, rule.threshold)}"
    )


__all__ = [
    "RULE_INFO",
    "RULE_NAMES",
    "AlertRule",
    "AlertRuleInvalid",
    "AlertService",
    "Window",
    "changed_rule",
    "format_value",
    "instance_key",
    "oldest_due_age",
    "parse_labels",
    "rules_from_settings",
]
