"""Engine telemetry snapshots turned into time series, per node and for all nodes together.

Pure Python and numpy (no Qt): the client feeds :meth:`MetricsModel.ingest` with every snapshot
from ``metrics.<node>``; pages read series on their redraw timer. Data arrival only appends to
preallocated ring buffers.

What the series mean (names in :class:`Metric`):

- Rates come from cumulative counter deltas over ``rate_window_s`` (2 s: at 4 snapshots a second,
  a 0.25 s delta is mostly noise). Counters are corrected for node restarts (pid or uptime going
  back, or a counter decreasing), so a restart never reads as a negative rate.
- ``events_in`` is ``events_processed_total``: what the decide stage took off the EVENTS stream.
  It is the truer "events in" figure because events published straight to NATS (the demo, SDKs
  using NATS) never pass the ingest counters; ``events_received`` (HTTP/NATS ingest,
  ``events_received_total``) is kept beside it. When decide falls behind, the two differ and the
  consumer lag grows.
- ``emails_out`` is ``intents_total{outcome="sent"}`` per second.
- Ratios are over ``ratio_window_s`` (10 s) of outcome deltas. "Attempted" is every outcome that
  involved the relay: sent + deferred + bounced + failed + uncertain (suppressed and expired never
  reach SMTP; cancelled ones were ended by an operator before they did). ``error_ratio`` =
  (failed + bounced + uncertain) / attempted; ``delivery_ratio`` =
  sent / attempted; ``deferred_ratio`` and ``bounced_ratio`` are shown beside it. With nothing
  attempted in the window the ratio is NaN (drawn as a gap, shown as a dash), not 0 % or 100 %.
- Latency percentiles (``e2e_p50/p95/p99``, ``http_p99``, ``db_commit_p99``) are computed from the
  summed histogram bucket deltas of the last ``latency_window_s`` (10 s) — a sliding window, not
  the engine's since-start percentiles. Longer windows (the chart's 1 min/15 min/1 h) come from
  :meth:`MetricsModel.histogram`, which keeps per-second bins of ``e2e_seconds`` and
  ``stage_seconds`` for ``history_s``.
- Gauges: ``queue_depth`` and ``consumer_lag`` describe shared things (one store, one durable
  consumer), so all-nodes takes the maximum, not the sum; ``inflight``, ``cpu`` (fraction of one
  core) and ``rss_bytes`` are summed.
- All-nodes series only count nodes that are not stale (no snapshot for ``stale_after_s``).
"""

from __future__ import annotations

import math
import re
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.telemetry import BUCKET_BOUNDS

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

ALL = "all"
"""The pseudo-node name for totals over every node."""

N_BUCKETS = len(BUCKET_BOUNDS) + 1
"""Histogram buckets: one per bound plus the overflow bucket."""

OUTCOMES = (
    "sent",
    "deferred",
    "bounced",
    "suppressed",
    "expired",
    "failed",
    "uncertain",
    "cancelled",
)
ATTEMPTED = ("sent", "deferred", "bounced", "failed", "uncertain")
ERRORS = ("failed", "bounced", "uncertain")
STAGES = ("ingest", "decide", "claim", "render", "smtp")
"""Pipeline stages in order (``stage_seconds{stage}``); unknown stages are appended after."""

_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


class Metric:
    """Names of the derived series (``MetricsModel.series(Metric.EMAILS_OUT)``)."""

    EVENTS_IN = "events_in"  # /s, events_processed_total
    EVENTS_RECEIVED = "events_received"  # /s, events_received_total
    EMAILS_OUT = "emails_out"  # /s, intents_total{outcome=sent}
    DEFERRED_OUT = "deferred_out"  # /s
    BOUNCED_OUT = "bounced_out"  # /s
    DEAD_LETTERS = "dead_letters"  # /s
    ERROR_RATIO = "error_ratio"  # 0..1
    DELIVERY_RATIO = "delivery_ratio"  # 0..1
    DEFERRED_RATIO = "deferred_ratio"  # 0..1
    BOUNCED_RATIO = "bounced_ratio"  # 0..1
    E2E_P50 = "e2e_p50"  # seconds
    E2E_P95 = "e2e_p95"
    E2E_P99 = "e2e_p99"
    HTTP_P99 = "http_p99"  # seconds, http_request_seconds (all paths)
    DB_COMMIT_P99 = "db_commit_p99"  # seconds, db_commit_seconds (all stages)
    QUEUE_DEPTH = "queue_depth"  # intents
    CONSUMER_LAG = "consumer_lag"  # events
    INFLIGHT = "inflight"  # intents
    CPU = "cpu"  # fraction of one core
    RSS = "rss_bytes"  # bytes
    COMPLAINT_RATIO = "complaint_ratio"  # 0..1, complaints / delivered over the last 24 h


_RATE_COUNTERS = {
    Metric.EVENTS_IN: "processed",
    Metric.EVENTS_RECEIVED: "received",
    Metric.EMAILS_OUT: "outcome:sent",
    Metric.DEFERRED_OUT: "outcome:deferred",
    Metric.BOUNCED_OUT: "outcome:bounced",
    Metric.DEAD_LETTERS: "dead_letters",
}
_GAUGES = {
    Metric.QUEUE_DEPTH: ("queue_depth", "max"),
    Metric.CONSUMER_LAG: ("consumer_lag", "max"),
    Metric.INFLIGHT: ("inflight", "sum"),
    Metric.CPU: ("process_cpu_ratio", "sum"),
    Metric.RSS: ("process_rss_bytes", "sum"),
    # Computed from the shared ledger by each deliver node (every 60 s): the same everywhere.
    Metric.COMPLAINT_RATIO: ('complaint_rate{window="24h"}', "max"),
}
_PERCENTILES = {
    Metric.E2E_P50: ("e2e_seconds", 0.50),
    Metric.E2E_P95: ("e2e_seconds", 0.95),
    Metric.E2E_P99: ("e2e_seconds", 0.99),
    Metric.HTTP_P99: ("http_request_seconds", 0.99),
    Metric.DB_COMMIT_P99: ("db_commit_seconds", 0.99),
}
_WF_COUNTS = ("triggered", "sent", "deferred", "bounced", "failed")


def parse_key(key: str) -> tuple[str, dict[str, str]]:
    """``'intents_total{outcome="sent",workflow="welcome"}'`` -> name and labels."""
    name, brace, rest = key.partition("{")
    if not brace:
        return key, {}
    return name, {k: v.replace('\\"', '"') for k, v in _LABEL.findall(rest)}


def quantile(counts: npt.ArrayLike, q: float) -> float:
    """The ``q`` quantile (seconds) of dense bucket counts; NaN when there are none.

    Returns the upper bound of the bucket holding the rank, as ``engine.telemetry`` does.
    """
    arr = np.asarray(counts, dtype=np.int64)
    total = int(arr.sum())
    if total <= 0:
        return math.nan
    index = int(np.searchsorted(np.cumsum(arr), q * total, side="left"))
    return float(BUCKET_BOUNDS[min(index, len(BUCKET_BOUNDS) - 1)])


def dense(delta: Mapping[Any, Any]) -> IntArray:
    """Sparse ``{bucket index: count}`` (keys may be JSON strings) -> dense counts."""
    out = np.zeros(N_BUCKETS, dtype=np.int64)
    for index, count in delta.items():
        i = int(index)
        if 0 <= i < N_BUCKETS:
            out[i] += int(count)
    return out


class Ring:
    """A preallocated time series ring (epoch seconds, float values); times never go back.

    Each sample is written twice (at ``i`` and ``i + capacity``) so the series in time order is
    always one contiguous slice: reads cost no copy. ``min_interval`` drops samples that come
    sooner than that after the previous one (for slow series fed at the snapshot rate).
    """

    __slots__ = ("_cap", "_next", "_size", "_t", "_v", "min_interval")

    def __init__(self, capacity: int, min_interval: float = 0.0) -> None:
        self._cap = max(1, capacity)
        self._t: FloatArray = np.full(2 * self._cap, np.nan)
        self._v: FloatArray = np.full(2 * self._cap, np.nan)
        self._next = 0
        self._size = 0
        self.min_interval = min_interval

    def __len__(self) -> int:
        return self._size

    def append(self, t: float, value: float) -> bool:
        """Add a sample; False if dropped (too soon after the last one, or earlier than it)."""
        if self._size:
            last = self._t[self._start() + self._size - 1]
            if t < last or (self.min_interval and t - last < self.min_interval):
                return False
        i = self._next
        self._t[i] = self._t[i + self._cap] = t
        self._v[i] = self._v[i + self._cap] = value
        self._next = (i + 1) % self._cap
        self._size = min(self._size + 1, self._cap)
        return True

    def _start(self) -> int:
        return (self._next - self._size) % self._cap

    def view(self) -> tuple[FloatArray, FloatArray]:
        """Every sample in time order, as views into the buffer (copy what you keep)."""
        s = self._start()
        return self._t[s : s + self._size], self._v[s : s + self._size]

    def window(self, t0: float, t1: float | None = None) -> tuple[FloatArray, FloatArray]:
        """Samples with ``t0 <= t <= t1`` plus one before ``t0`` so a line reaches the edge."""
        t, v = self.view()
        lo = max(int(np.searchsorted(t, t0, side="left")) - 1, 0)
        hi = self._size if t1 is None else int(np.searchsorted(t, t1, side="right"))
        return t[lo:hi], v[lo:hi]

    def latest(self) -> tuple[float, float] | None:
        if not self._size:
            return None
        i = self._start() + self._size - 1
        return float(self._t[i]), float(self._v[i])

    def oldest(self) -> tuple[float, float] | None:
        if not self._size:
            return None
        i = self._start()
        return float(self._t[i]), float(self._v[i])

    def interpolate(self, t: float) -> float | None:
        """The value at ``t``, linear between the samples around it (clamped to the ends)."""
        if not self._size:
            return None
        times, values = self.view()
        return float(np.interp(t, times, values))

    def at_or_before(self, t: float) -> tuple[float, float] | None:
        """The newest sample at or before ``t`` (None if all are later)."""
        times, values = self.view()
        i = int(np.searchsorted(times, t, side="right")) - 1
        if i < 0:
            return None
        return float(times[i]), float(values[i])


class _ShortWindow:
    """The running sum of a histogram's bucket deltas over the last ``seconds``."""

    __slots__ = ("_entries", "seconds", "total")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.total: IntArray = np.zeros(N_BUCKETS, dtype=np.int64)
        self._entries: deque[tuple[float, IntArray]] = deque()

    def add(self, ts: float, delta: IntArray) -> None:
        self._entries.append((ts, delta))
        self.total += delta
        while self._entries and self._entries[0][0] <= ts - self.seconds:
            self.total -= self._entries.popleft()[1]


class _Binned:
    """Histogram bucket counts in one-second bins for ``capacity`` seconds (a time-indexed ring)."""

    __slots__ = ("_counts", "_second")

    def __init__(self, capacity: int) -> None:
        self._counts = np.zeros((capacity, N_BUCKETS), dtype=np.int32)
        self._second = np.full(capacity, -1, dtype=np.int64)

    def add(self, ts: float, delta: IntArray) -> None:
        second = int(ts)
        slot = second % len(self._second)
        if self._second[slot] != second:
            self._counts[slot] = 0
            self._second[slot] = second
        self._counts[slot] += delta.astype(np.int32)

    def counts(self, t0: float, t1: float) -> IntArray:
        mask = (self._second >= math.floor(t0)) & (self._second <= t1)
        if not mask.any():
            return np.zeros(N_BUCKETS, dtype=np.int64)
        summed: IntArray = self._counts[mask].sum(axis=0, dtype=np.int64)
        return summed


@dataclass(frozen=True, slots=True)
class StageLatency:
    """One pipeline stage over a window: percentiles (seconds), mean and how many were timed."""

    stage: str
    p50: float
    p95: float
    p99: float
    mean: float
    count: int


@dataclass(frozen=True, slots=True)
class WorkflowStats:
    """One workflow over a window: counts per outcome and its p99 (NaN when not reported)."""

    workflow: str
    triggered: int
    sent: int
    deferred: int
    bounced: int
    failed: int
    p99: float


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """Who a node is, from its latest snapshot: role, version, pid, since when it runs, and the
    decide partitions it owns (None: the engine does not say)."""

    role: str
    version: str
    pid: int | None
    started: float  # epoch seconds: the snapshot's ts minus its uptime; NaN if not said
    partitions: tuple[int | str, ...] | None

    def uptime(self, now: float) -> float:
        """Seconds the node has been running at ``now`` (NaN if it did not say)."""
        return now - self.started if not math.isnan(self.started) else math.nan


def _node_info(snapshot: Mapping[str, Any], health: Mapping[str, Any], ts: float) -> dict[str, Any]:
    pid = snapshot.get("pid")
    uptime = _num(snapshot.get("uptime"))
    parts = snapshot.get("partitions")
    partitions = (
        tuple(p for p in parts if isinstance(p, int | str)) if isinstance(parts, list) else None
    )
    return {
        "role": str(snapshot.get("role") or health.get("role") or ""),
        "version": str(snapshot.get("version") or ""),
        "pid": pid if isinstance(pid, int) else None,
        "started": ts - uptime if not math.isnan(uptime) else math.nan,
        "partitions": partitions,
    }


@dataclass
class _Node:
    """What the model keeps for one node (or for ``ALL``)."""

    capacity: int
    slow_capacity: int
    pid: int | None = None
    uptime: float = -1.0
    last_ts: float = math.nan
    received_at: float = math.nan
    health: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, float] = field(default_factory=dict)
    offsets: dict[str, float] = field(default_factory=dict)
    cumulative: dict[str, float] = field(default_factory=dict)
    cum_rings: dict[str, Ring] = field(default_factory=dict)
    series: dict[str, Ring] = field(default_factory=dict)
    derived: dict[str, float] = field(default_factory=dict)
    short: dict[str, _ShortWindow] = field(default_factory=dict)
    binned: dict[str, _Binned] = field(default_factory=dict)
    workflows: set[str] = field(default_factory=set)

    def ring(self, name: str, *, slow: bool = False) -> Ring:
        ring = self.series.get(name)
        if ring is None:
            ring = self.series[name] = (
                Ring(self.slow_capacity, min_interval=1.0) if slow else Ring(self.capacity)
            )
        return ring

    def cum_ring(self, name: str) -> Ring:
        ring = self.cum_rings.get(name)
        if ring is None:
            slow = name.startswith(("wf:", "hsum:", "hcount:"))
            ring = self.cum_rings[name] = (
                Ring(self.slow_capacity, min_interval=1.0) if slow else Ring(self.capacity)
            )
        return ring


def _aggregate_counters(counters: Mapping[str, float]) -> tuple[dict[str, float], set[str]]:
    """Sum raw counters into the aggregates the model tracks; also the workflows named."""
    out: dict[str, float] = {"processed": 0.0, "received": 0.0, "dead_letters": 0.0}
    for outcome in OUTCOMES:
        out[f"outcome:{outcome}"] = 0.0
    workflows: set[str] = set()
    for key, value in counters.items():
        name, labels = parse_key(key)
        v = _num(value)
        if math.isnan(v):
            continue
        if name == "events_processed_total":
            out["processed"] += v
        elif name == "events_received_total":
            out["received"] += v
        elif name == "dead_letters_total":
            out["dead_letters"] += v
        elif name == "intents_total":
            outcome = labels.get("outcome", "")
            out[f"outcome:{outcome}"] = out.get(f"outcome:{outcome}", 0.0) + v
            wf = labels.get("workflow")
            if wf is not None and outcome in _WF_COUNTS:
                workflows.add(wf)
                k = f"wf:{wf}:{outcome}"
                out[k] = out.get(k, 0.0) + v
        elif name == "intents_created_total":
            wf = labels.get("workflow")
            if wf is not None:
                workflows.add(wf)
                k = f"wf:{wf}:triggered"
                out[k] = out.get(k, 0.0) + v
    return out, workflows


class MetricsModel:
    """Snapshots in, series out. One instance serves every page (``EngineClient.model``).

    ``history_s`` is the longest window kept (1 h); ``sample_hz`` the snapshot rate per node.
    Times are the engines' snapshot timestamps (epoch seconds). Staleness uses the time a
    snapshot was received (``received_at``, epoch seconds, default ``time.time()``).
    """

    def __init__(
        self,
        *,
        history_s: float = 3600.0,
        sample_hz: float = 4.0,
        rate_window_s: float = 2.0,
        ratio_window_s: float = 10.0,
        latency_window_s: float = 10.0,
        stale_after_s: float = 3.0,
        binned_histograms: Iterable[str] = ("e2e_seconds", "stage_seconds"),
    ) -> None:
        self.history_s = history_s
        self.rate_window_s = rate_window_s
        self.ratio_window_s = ratio_window_s
        self.latency_window_s = latency_window_s
        self.stale_after_s = stale_after_s
        self._binned_names = frozenset(binned_histograms)
        self._capacity = int(history_s * sample_hz * 1.25) + 16
        self._slow_capacity = int(history_s * 1.1) + 16
        self._nodes: dict[str, _Node] = {}
        self._all = self._new_node()
        self._key_cache: dict[str, tuple[str, dict[str, str]]] = {}

    def clear(self) -> None:
        """Forget every node and series (the console switched to other engines)."""
        self._nodes = {}
        self._all = self._new_node()

    def _new_node(self) -> _Node:
        return _Node(capacity=self._capacity, slow_capacity=self._slow_capacity)

    def _parse(self, key: str) -> tuple[str, dict[str, str]]:
        parsed = self._key_cache.get(key)
        if parsed is None:
            parsed = self._key_cache[key] = parse_key(key)
        return parsed

    # ---------------------------------------------------------------- intake

    def ingest(self, snapshot: Mapping[str, Any], received_at: float | None = None) -> None:
        """Take one snapshot (as published on ``metrics.<node>``). Malformed parts are skipped."""
        node_name = str(snapshot.get("node") or "")
        if not node_name or node_name == ALL:
            return
        received = time.time() if received_at is None else received_at
        ts = float(snapshot.get("ts") or received)
        node = self._nodes.get(node_name)
        if node is None:
            node = self._nodes[node_name] = self._new_node()
        if not math.isnan(node.last_ts) and ts < node.last_ts:
            return  # a late or reordered snapshot; series never go back in time
        node.last_ts = ts
        node.received_at = received
        health = snapshot.get("health")
        if isinstance(health, dict):
            node.health = health
        node.info = _node_info(snapshot, health if isinstance(health, dict) else {}, ts)

        self._ingest_counters(node, snapshot, ts)
        self._ingest_histograms(node, snapshot, ts)
        gauges = snapshot.get("gauges") or {}
        for metric, (gauge, _how) in _GAUGES.items():
            value = _num(gauges.get(gauge))
            node.derived[metric] = value
            node.ring(metric).append(ts, value)
        self._update_all(ts, received)

    def _ingest_counters(self, node: _Node, snapshot: Mapping[str, Any], ts: float) -> None:
        pid = snapshot.get("pid")
        uptime = _num(snapshot.get("uptime"))
        restarted = (node.pid is not None and pid != node.pid) or (
            not math.isnan(uptime) and uptime < node.uptime
        )
        node.pid = pid if isinstance(pid, int) else node.pid
        node.uptime = uptime if not math.isnan(uptime) else node.uptime
        counters = snapshot.get("counters") or {}
        aggregates, workflows = _aggregate_counters(counters)
        node.workflows |= workflows
        if restarted:
            for name, raw in node.raw.items():
                node.offsets[name] = node.offsets.get(name, 0.0) + raw
            node.raw = {}
        for name, raw in aggregates.items():
            last = node.raw.get(name)
            if last is not None and raw < last:  # a counter went back without a visible restart
                node.offsets[name] = node.offsets.get(name, 0.0) + last
            node.raw[name] = raw
            value = raw + node.offsets.get(name, 0.0)
            node.cumulative[name] = value
            node.cum_ring(name).append(ts, value)

        for metric, counter in _RATE_COUNTERS.items():
            rate = self._rate(node, counter, ts, self.rate_window_s)
            node.derived[metric] = rate
            node.ring(metric).append(ts, rate)

        deltas = {o: self._delta(node, f"outcome:{o}", ts, self.ratio_window_s) for o in OUTCOMES}
        for o, d in deltas.items():
            node.derived[f"d:{o}"] = d
        for metric, value in _ratios(deltas).items():
            node.derived[metric] = value
            node.ring(metric).append(ts, value)

        for wf in node.workflows:
            rate = self._rate(node, f"wf:{wf}:sent", ts, 5.0)
            node.derived[f"wf:{wf}"] = rate
            node.ring(f"wf:{wf}", slow=True).append(ts, rate)

    def _delta(self, node: _Node, counter: str, ts: float, window: float) -> float:
        ring = node.cum_rings.get(counter)
        current = node.cumulative.get(counter)
        if ring is None or current is None:
            return math.nan
        before = ring.at_or_before(ts - window)
        if before is None:
            before = ring.oldest()
        if before is None:
            return math.nan
        return current - before[1]

    def _rate(self, node: _Node, counter: str, ts: float, window: float) -> float:
        ring = node.cum_rings.get(counter)
        current = node.cumulative.get(counter)
        if ring is None or current is None:
            return math.nan
        before = ring.at_or_before(ts - window) or ring.oldest()
        if before is None or ts - before[0] <= 0:
            return math.nan
        return (current - before[1]) / (ts - before[0])

    def _ingest_histograms(self, node: _Node, snapshot: Mapping[str, Any], ts: float) -> None:
        histograms = snapshot.get("histograms") or {}
        for key, hist in histograms.items():
            if not isinstance(hist, dict):
                continue
            delta = dense(hist.get("delta") or {})
            window = node.short.get(key)
            if window is None:
                window = node.short[key] = _ShortWindow(self.latency_window_s)
            window.add(ts, delta)
            name, labels = self._parse(key)
            if name in self._binned_names:
                binned = node.binned.get(key)
                if binned is None:
                    binned = node.binned[key] = _Binned(int(self.history_s) + 2)
                binned.add(ts, delta)
            for part in ("count", "sum"):
                value = _num(hist.get(part))
                if not math.isnan(value):
                    agg = f"h{part}:{key}"
                    last = node.raw.get(agg)
                    if last is not None and value < last:
                        node.offsets[agg] = node.offsets.get(agg, 0.0) + last
                    node.raw[agg] = value
                    node.cumulative[agg] = value + node.offsets.get(agg, 0.0)
                    node.cum_ring(agg).append(ts, node.cumulative[agg])
            wf = labels.get("workflow")
            if wf is not None and name == "e2e_seconds":
                node.workflows.add(wf)
        for metric, (name, q) in _PERCENTILES.items():
            counts = self._short_counts([node], name)
            value = quantile(counts, q)
            node.derived[metric] = value
            node.ring(metric).append(ts, value)

    def _short_counts(self, nodes: Iterable[_Node], name: str, **labels: str) -> IntArray:
        total = np.zeros(N_BUCKETS, dtype=np.int64)
        for node in nodes:
            for key, window in node.short.items():
                if self._matches(key, name, labels):
                    total += window.total
        return total

    def _matches(self, key: str, name: str, labels: Mapping[str, str]) -> bool:
        key_name, key_labels = self._parse(key)
        return key_name == name and all(key_labels.get(k) == v for k, v in labels.items())

    def _update_all(self, ts: float, now: float) -> None:
        fresh = [n for n in self._nodes.values() if now - n.received_at <= self.stale_after_s]
        if not fresh:
            return
        agg = self._all
        if not math.isnan(agg.last_ts) and ts < agg.last_ts:
            ts = agg.last_ts
        # Several nodes each report 4x/s: one all-nodes sample per 0.2 s is plenty.
        if not math.isnan(agg.last_ts) and ts - agg.last_ts < 0.2:
            return
        agg.last_ts = ts
        agg.received_at = now
        for metric in _RATE_COUNTERS:
            self._append_sum(agg, metric, ts, [n.derived.get(metric, math.nan) for n in fresh])
        for metric, (_gauge, how) in _GAUGES.items():
            values = [n.derived.get(metric, math.nan) for n in fresh]
            if how == "max":
                finite = [v for v in values if not math.isnan(v)]
                value = max(finite) if finite else math.nan
                agg.derived[metric] = value
                agg.ring(metric).append(ts, value)
            else:
                self._append_sum(agg, metric, ts, values)
        deltas = {o: _nansum([n.derived.get(f"d:{o}", math.nan) for n in fresh]) for o in OUTCOMES}
        for metric, value in _ratios(deltas).items():
            agg.derived[metric] = value
            agg.ring(metric).append(ts, value)
        for metric, (name, q) in _PERCENTILES.items():
            value = quantile(self._short_counts(fresh, name), q)
            agg.derived[metric] = value
            agg.ring(metric).append(ts, value)
        workflows = set().union(*(n.workflows for n in self._nodes.values()))
        agg.workflows = workflows
        for wf in workflows:
            values = [n.derived.get(f"wf:{wf}", math.nan) for n in fresh]
            self._append_sum(agg, f"wf:{wf}", ts, values, slow=True)

    @staticmethod
    def _append_sum(
        agg: _Node, metric: str, ts: float, values: list[float], *, slow: bool = False
    ) -> None:
        value = _nansum(values)
        agg.derived[metric] = value
        agg.ring(metric, slow=slow).append(ts, value)

    # ---------------------------------------------------------------- queries

    def _node(self, node: str) -> _Node | None:
        return self._all if node == ALL else self._nodes.get(node)

    def nodes(self) -> list[str]:
        """Every node seen so far, sorted."""
        return sorted(self._nodes)

    def is_stale(self, node: str, now: float | None = None) -> bool:
        """No snapshot from ``node`` for ``stale_after_s`` (``ALL``: from any node)."""
        return self.age(node, now) > self.stale_after_s

    def age(self, node: str = ALL, now: float | None = None) -> float:
        """Seconds since the last snapshot from ``node`` (``ALL``: the newest); inf if never."""
        now = time.time() if now is None else now
        if node == ALL:
            times = [n.received_at for n in self._nodes.values()]
            return now - max(times) if times else math.inf
        n = self._nodes.get(node)
        return math.inf if n is None or math.isnan(n.received_at) else now - n.received_at

    def health(self, node: str) -> dict[str, Any]:
        """The ``health`` part of ``node``'s latest snapshot ({} if none)."""
        n = self._nodes.get(node)
        return dict(n.health) if n is not None else {}

    def node_info(self, node: str) -> NodeInfo | None:
        """Who ``node`` is, from its latest snapshot (None: never seen)."""
        n = self._nodes.get(node)
        if n is None or not n.info:
            return None
        return NodeInfo(**n.info)

    def series(self, metric: str, node: str = ALL) -> tuple[FloatArray, FloatArray]:
        """All kept samples of ``metric``: a :class:`Metric` name or ``"wf:<name>"`` (sent/s)."""
        n = self._node(node)
        ring = n.series.get(metric) if n is not None else None
        if ring is None:
            return np.empty(0), np.empty(0)
        return ring.view()

    def window_series(
        self, metric: str, node: str, t0: float, t1: float | None = None
    ) -> tuple[FloatArray, FloatArray]:
        """Samples of ``metric`` from ``t0`` to ``t1`` (plus one before, to reach the edge)."""
        n = self._node(node)
        ring = n.series.get(metric) if n is not None else None
        if ring is None:
            return np.empty(0), np.empty(0)
        return ring.window(t0, t1)

    def latest(self, metric: str, node: str = ALL) -> float:
        """The newest value of ``metric`` (NaN if none)."""
        n = self._node(node)
        ring = n.series.get(metric) if n is not None else None
        last = ring.latest() if ring is not None else None
        return last[1] if last is not None else math.nan

    def latest_sample(self, metric: str, node: str = ALL) -> tuple[float, float] | None:
        """The newest ``(t, value)`` of ``metric``, or None."""
        n = self._node(node)
        ring = n.series.get(metric) if n is not None else None
        return ring.latest() if ring is not None else None

    def value_at(self, metric: str, node: str, t: float) -> tuple[float, float] | None:
        """``(t, value)`` of the newest sample at or before ``t``, else the oldest kept one."""
        n = self._node(node)
        ring = n.series.get(metric) if n is not None else None
        if ring is None:
            return None
        return ring.at_or_before(t) or ring.oldest()

    def total(self, counter: str, node: str = ALL) -> float:
        """A restart-corrected cumulative aggregate (``processed``, ``outcome:sent``, ...)."""
        nodes = self._nodes.values() if node == ALL else [self._nodes[node]]
        return float(sum(n.cumulative.get(counter, 0.0) for n in nodes))

    def has_traffic(self, node: str = ALL) -> bool:
        """Whether any event has been received or processed (the Live page's empty state)."""
        if node != ALL and node not in self._nodes:
            return False
        return self.total("processed", node) > 0 or self.total("received", node) > 0

    def _count_between(self, node: _Node, counter: str, t0: float) -> float:
        """How much the cumulative ``counter`` grew since ``t0`` (interpolated: slow rings keep
        one sample a second, and a window edge falls between samples)."""
        current = node.cumulative.get(counter)
        ring = node.cum_rings.get(counter)
        if current is None or ring is None:
            return 0.0
        start = ring.interpolate(t0)
        return current - (start if start is not None else 0.0)

    def histogram(
        self, name: str, node: str = ALL, *, t0: float, t1: float | None = None, **labels: str
    ) -> IntArray:
        """Dense bucket counts of ``name`` (label-filtered) observed between ``t0`` and ``t1``.

        Only names in ``binned_histograms`` keep this history (e2e and stage latencies).
        """
        t1 = math.inf if t1 is None else t1
        nodes = self._nodes.values() if node == ALL else [self._nodes[node]]
        total = np.zeros(N_BUCKETS, dtype=np.int64)
        for n in nodes:
            for key, binned in n.binned.items():
                if self._matches(key, name, labels):
                    total += binned.counts(t0, t1)
        return total

    def stage_latency(self, node: str = ALL, *, t0: float) -> list[StageLatency]:
        """Per-stage latency since ``t0``, pipeline order (stages never reported are left out)."""
        nodes = list(self._nodes.values()) if node == ALL else [self._nodes[node]]
        stages: set[str] = set()
        for n in nodes:
            for key in n.binned:
                name, labels = self._parse(key)
                if name == "stage_seconds" and "stage" in labels:
                    stages.add(labels["stage"])
        ordered = [s for s in STAGES if s in stages] + sorted(stages - set(STAGES))
        out = []
        for stage in ordered:
            counts = self.histogram("stage_seconds", node, t0=t0, stage=stage)
            hsum = hcount = 0.0
            for n in nodes:
                for key in n.short:
                    if self._matches(key, "stage_seconds", {"stage": stage}):
                        hsum += self._count_between(n, f"hsum:{key}", t0)
                        hcount += self._count_between(n, f"hcount:{key}", t0)
            mean = hsum / hcount if hcount > 0 else math.nan
            out.append(
                StageLatency(
                    stage=stage,
                    p50=quantile(counts, 0.5),
                    p95=quantile(counts, 0.95),
                    p99=quantile(counts, 0.99),
                    mean=mean,
                    count=int(counts.sum()),
                )
            )
        return out

    def workflows(self, node: str = ALL) -> list[str]:
        """Workflows named in the counters' ``workflow`` label, sorted."""
        n = self._node(node)
        return sorted(n.workflows) if n is not None else []

    def workflow_stats(self, node: str = ALL, *, t0: float) -> list[WorkflowStats]:
        """Per-workflow counts since ``t0``; p99 is NaN unless ``e2e_seconds{workflow}`` exists."""
        nodes = list(self._nodes.values()) if node == ALL else [self._nodes[node]]
        rows = []
        for wf in self.workflows(node):
            counts = {
                c: round(sum(self._count_between(n, f"wf:{wf}:{c}", t0) for n in nodes))
                for c in _WF_COUNTS
            }
            p99 = quantile(self.histogram("e2e_seconds", node, t0=t0, workflow=wf), 0.99)
            rows.append(WorkflowStats(workflow=wf, p99=p99, **counts))
        return rows


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _nansum(values: Iterable[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(sum(finite)) if finite else math.nan


def _ratios(deltas: Mapping[str, float]) -> dict[str, float]:
    attempted = _nansum(deltas.get(o, math.nan) for o in ATTEMPTED)
    if math.isnan(attempted) or attempted <= 0:
        nan = math.nan
        return {
            Metric.ERROR_RATIO: nan,
            Metric.DELIVERY_RATIO: nan,
            Metric.DEFERRED_RATIO: nan,
            Metric.BOUNCED_RATIO: nan,
        }

    def part(*names: str) -> float:
        return _nansum(deltas.get(o, math.nan) for o in names) / attempted

    return {
        Metric.ERROR_RATIO: part(*ERRORS),
        Metric.DELIVERY_RATIO: part("sent"),
        Metric.DEFERRED_RATIO: part("deferred"),
        Metric.BOUNCED_RATIO: part("bounced"),
    }


__all__ = [
    "ALL",
    "N_BUCKETS",
    "STAGES",
    "Metric",
    "MetricsModel",
    "NodeInfo",
    "Ring",
    "StageLatency",
    "WorkflowStats",
    "dense",
    "parse_key",
    "quantile",
]
