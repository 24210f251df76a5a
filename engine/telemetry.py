"""Counters, gauges and latency histograms; snapshots for NATS and Prometheus text.

Histograms use fixed log-spaced buckets (about 10% apart, 50 µs to 10 min), so recording is an
index computation and percentiles are cheap. Every snapshot carries cumulative counters and, per
histogram, the bucket counts added since the previous snapshot, so a viewer can build windows of
any length by summing deltas.
"""

from __future__ import annotations

import bisect
import math
import os
import resource
import time
from collections.abc import Mapping
from typing import Any

_MIN_S = 50e-6
_FACTOR = 1.1
_N_BUCKETS = int(math.log(600.0 / _MIN_S, _FACTOR)) + 2
BUCKET_BOUNDS: tuple[float, ...] = tuple(_MIN_S * _FACTOR**i for i in range(_N_BUCKETS))


class Histogram:
    """A latency histogram in seconds with fixed log buckets."""

    __slots__ = ("_last", "count", "counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKET_BOUNDS) + 1)
        self._last = [0] * (len(BUCKET_BOUNDS) + 1)
        self.count = 0
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKET_BOUNDS, seconds)] += 1
        self.count += 1
        self.total += seconds

    def quantile(self, q: float, counts: list[int] | None = None) -> float:
        data = self.counts if counts is None else counts
        n = sum(data)
        if n == 0:
            return 0.0
        rank = q * n
        seen = 0
        for index, c in enumerate(data):
            seen += c
            if seen >= rank:
                return BUCKET_BOUNDS[min(index, len(BUCKET_BOUNDS) - 1)]
        return BUCKET_BOUNDS[-1]

    def delta(self) -> dict[int, int]:
        """Bucket counts added since the previous call, sparse: {bucket index: count}."""
        out = {
            i: c - p for i, (c, p) in enumerate(zip(self.counts, self._last, strict=True)) if c != p
        }
        self._last = list(self.counts)
        return out


def quantile_from_sparse(buckets: Mapping[int, int] | Mapping[str, int], q: float) -> float:
    """A quantile from sparse bucket counts (as published in snapshots; keys may be strings)."""
    counts = {int(k): v for k, v in buckets.items()}
    n = sum(counts.values())
    if n == 0:
        return 0.0
    rank = q * n
    seen = 0
    for index in sorted(counts):
        seen += counts[index]
        if seen >= rank:
            return BUCKET_BOUNDS[min(index, len(BUCKET_BOUNDS) - 1)]
    return BUCKET_BOUNDS[-1]


def _key(name: str, labels: Mapping[str, str]) -> str:
    if not labels:
        return name
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


class Telemetry:
    """The engine's metrics registry (one per node)."""

    def __init__(self, node: str, role: str = "all") -> None:
        self.node = node
        self.role = role
        # The decide partitions this node processes now (engine/decide/partitions.py).
        self.partitions: list[int] = []
        self.counters: dict[str, float] = {}
        self.gauges: dict[str, float] = {}
        self.histograms: dict[str, Histogram] = {}
        self.started = time.time()
        self._cpu_last = (time.monotonic(), time.process_time())

    def count(self, name: str, n: float = 1, **labels: str) -> None:
        key = _key(name, labels)
        self.counters[key] = self.counters.get(key, 0) + n

    def gauge(self, name: str, value: float, **labels: str) -> None:
        self.gauges[_key(name, labels)] = value

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        key = _key(name, labels)
        hist = self.histograms.get(key)
        if hist is None:
            hist = self.histograms[key] = Histogram()
        hist.observe(seconds)

    def _process_gauges(self) -> None:
        now, cpu = time.monotonic(), time.process_time()
        last_now, last_cpu = self._cpu_last
        if now > last_now:
            self.gauges["process_cpu_ratio"] = (cpu - last_cpu) / (now - last_now)
        self._cpu_last = (now, cpu)
        self.gauges["process_rss_bytes"] = _rss_bytes()

    def snapshot(self) -> dict[str, Any]:
        """Cumulative counters, gauges and per-histogram deltas since the last snapshot."""
        self._process_gauges()
        hists: dict[str, Any] = {}
        for key, hist in self.histograms.items():
            delta = hist.delta()
            hists[key] = {
                "count": hist.count,
                "sum": hist.total,
                "delta": delta,
                "p50": hist.quantile(0.50),
                "p95": hist.quantile(0.95),
                "p99": hist.quantile(0.99),
            }
        return {
            "node": self.node,
            "role": self.role,
            "partitions": list(self.partitions),
            "ts": time.time(),
            "pid": os.getpid(),
            "uptime": time.time() - self.started,
            "counters": dict(self.counters),
            "gauges": dict(self.gauges),
            "histograms": hists,
        }

    def prometheus(self) -> str:
        """The Prometheus text exposition format (version 0.0.4)."""
        self._process_gauges()
        lines: list[str] = []
        seen_types: set[str] = set()

        def typed(name: str, kind: str) -> None:
            base = name.split("{", 1)[0]
            if base not in seen_types:
                seen_types.add(base)
                lines.append(f"# TYPE campaign_{base} {kind}")

        node = f'node="{self.node}"'
        for key, value in sorted(self.counters.items()):
            typed(key, "counter")
            lines.append(f"campaign_{_with_label(key, node)} {value:g}")
        for key, value in sorted(self.gauges.items()):
            typed(key, "gauge")
            lines.append(f"campaign_{_with_label(key, node)} {value:g}")
        for key, hist in sorted(self.histograms.items()):
            typed(key, "histogram")
            base, _, rest = key.partition("{")
            extra = rest.rstrip("}")
            labels = f"{node},{extra}" if extra else node
            cumulative = 0
            # Publish a readable subset of bucket bounds (every 8th: ~2x apart).
            for index, bound in enumerate(BUCKET_BOUNDS):
                cumulative += hist.counts[index]
                if index % 8 == 0:
                    lines.append(
                        f'campaign_{base}_bucket{{{labels},le="{bound:.6g}"}} {cumulative}'
                    )
            lines.append(f'campaign_{base}_bucket{{{labels},le="+Inf"}} {hist.count}')
            lines.append(f"campaign_{base}_sum{{{labels}}} {hist.total:.6f}")
            lines.append(f"campaign_{base}_count{{{labels}}} {hist.count}")
        return "\n".join(lines) + "\n"


def _with_label(key: str, label: str) -> str:
    if "{" in key:
        base, rest = key.split("{", 1)
        return f"{base}{{{label},{rest}"
    return f"{key}{{{label}}}"


def _rss_bytes() -> float:
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            pages = int(handle.read().split()[1])
        return float(pages * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, IndexError):
        return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
