"""Live segments: per-event segment update cost, and building a new segment over all contacts.

A SQLite store (WAL, synchronous=NORMAL) in a temporary directory is filled with N contacts
(traits plan, country, score, signed_up_at) and recent activity (views, carts, orders), and 50
segments of mixed kinds are defined: trait comparisons, date traits relative to now, event
counts in windows with property filters, negated windows, consent, and segments of segments.

1. Per event: single-event decide batches (what a paced stream mostly gives) of random track
   and identify events for existing contacts; the time spent in the segment stage (``refresh``:
   reading profiles, windows and memberships, evaluating the affected segments, writing enters,
   exits and re-checks) per event, p50/p99, and the whole batch with and without segments.
2. Build: a new event-window segment evaluated over every contact, a page per transaction.
3. Peak RSS of the process.

Not a test (pytest does not collect it). Usage:
    .venv/bin/python -m bench.segments [contacts=100000] [events=3000]
"""

from __future__ import annotations

import random
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from engine.clock import SystemClock
from engine.decide.batch import DecideBatch, Delivery
from engine.decide.registry import WorkflowRegistry
from engine.ingest.validate import format_time, parse_event
from engine.segments import membership
from engine.segments.build import SegmentBuilder
from engine.segments.membership import SegmentRegistry
from engine.segments.model import Segment
from engine.segments.text import parse_condition
from engine.store import open_store, schema

PRODUCTS = [f"p{i}" for i in range(200)]
EVENTS = ["Product Viewed", "Product Added", "Order Completed", "Page Viewed", "Signed Up"]


def segment_texts() -> list[str]:
    texts: list[str] = []
    for i in range(10):
        texts.append(
            f'`Product Viewed` where product_id = "p{i}" at least once in the last 10 minutes'
            " and no `Order Completed` in the last 10 minutes"
        )
    for i in range(10):
        texts.append(
            f"`Product Added` at least {1 + i % 3} times in the last {1 + i} hours"
            f" and trait score >= {i * 10}"
        )
    for country in ["DE", "FR", "US", "GB", "NL"]:
        texts.append(f'trait country = "{country}" and subscribed to marketing')
        texts.append(f'trait country = "{country}" and trait plan in ["pro", "team"]')
    for days in [1, 7, 30, 90, 365]:
        texts.append(f'trait signed_up_at before {days} days ago and not trait plan = "free"')
    for i in range(5):
        texts.append(
            f"`Page Viewed` at least {5 + i} times in the last 1 day or consented to location"
        )
    texts += [
        "in segment s000 or in segment s001 or in segment s002",
        "in segment s010 and not in segment s020",
        "in segment s030 and no `Order Completed` in the last 7 days",
        "in segment s040 or in segment s041",
        'not in segment s020 and trait plan = "pro"',
    ]
    for i in range(5):
        texts.append(
            f"`Order Completed` at least once in the last 30 days and trait score < {50 + i}"
        )
    return texts


def fill(store: Any, contacts: int, now: float, rng: random.Random) -> None:
    rows: list[dict[str, Any]] = []
    acts: list[dict[str, Any]] = []
    with store.begin() as conn:
        for k in range(contacts):
            rows.append({
                "id": f"c{k:07d}", "email": f"c{k}@example.com",
                "traits": {"plan": rng.choice(["free", "pro", "team"]),
                           "country": rng.choice(["DE", "FR", "US", "GB", "NL", "IT"]),
                           "score": rng.randrange(100),
                           "signed_up_at": now - rng.uniform(0, 400 * 86_400)},
                "consent": {}, "first_seen_at": now - 1e6, "last_seen_at": now, "updated_at": now,
            })  # fmt: skip
            for _ in range(2):
                acts.append({
                    "contact_id": f"c{k:07d}", "name": rng.choice(EVENTS),
                    "properties": {"product_id": rng.choice(PRODUCTS)},
                    "message_id": f"seed-{k}-{len(acts)}", "ts": now - rng.uniform(0, 86_400),
                })  # fmt: skip
            if len(rows) >= 20_000:
                conn.execute(schema.contacts.insert(), rows)
                conn.execute(schema.activity.insert(), acts)
                rows, acts = [], []
        if rows:
            conn.execute(schema.contacts.insert(), rows)
            conn.execute(schema.activity.insert(), acts)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(contacts: int, n_events: int) -> None:
    rng = random.Random(7)
    clock = SystemClock()
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{Path(tmp) / 'bench.sqlite3'}")
        started = time.perf_counter()
        fill(store, contacts, clock.now(), rng)
        print(f"{contacts:,} contacts, {2 * contacts:,} activity rows in "
              f"{time.perf_counter() - started:.1f} s")  # fmt: skip
        defined = [
            Segment(f"s{i:03d}", f"Segment {i}", 1, parse_condition(text))
            for i, text in enumerate(segment_texts())
        ]
        registry = SegmentRegistry(defined)
        print(f"{len(defined)} segments")

        spent: list[float] = []
        real_refresh = membership.refresh

        def timed(*args: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return real_refresh(*args)
            finally:
                spent.append(time.perf_counter() - t0)

        membership.refresh = timed  # the decide batch imports it at call time

        def events(count: int) -> list[bytes]:
            out = []
            for i in range(count):
                user = f"c{rng.randrange(contacts):07d}"
                if rng.random() < 0.1:
                    body: dict[str, Any] = {
                        "type": "identify",
                        "userId": user,
                        "traits": {"score": rng.randrange(100)},
                    }
                else:
                    body = {
                        "type": "track",
                        "userId": user,
                        "event": rng.choice(EVENTS),
                        "properties": {"product_id": rng.choice(PRODUCTS)},
                    }
                body["messageId"] = f"ev-{rng.random()}-{i}"
                body["timestamp"] = format_time(clock.now())
                out.append(orjson.dumps(body))
            return out

        def run(batch: DecideBatch, payloads: list[bytes]) -> list[float]:
            took = []
            for seq, data in enumerate(payloads):
                t0 = time.perf_counter()
                batch.run([Delivery(data, "events.track", seq, None, clock.now())])
                took.append(time.perf_counter() - t0)
            return took

        workflows = WorkflowRegistry()
        plain = DecideBatch(store=store, registry=workflows, clock=clock, parse=parse_event)
        with_segments = DecideBatch(
            store=store, registry=workflows, clock=clock, parse=parse_event, segments=registry
        )
        base = run(plain, events(n_events))
        seg = run(with_segments, events(n_events))
        print(f"per event, segment stage: p50 {pct(spent, 0.5) * 1e3:.3f} ms, "
              f"p99 {pct(spent, 0.99) * 1e3:.3f} ms, max {max(spent) * 1e3:.3f} ms")  # fmt: skip
        print(f"whole single-event batch: without segments p50 {pct(base, 0.5) * 1e3:.3f} ms "
              f"p99 {pct(base, 0.99) * 1e3:.3f} ms; with 50 segments p50 "
              f"{pct(seg, 0.5) * 1e3:.3f} ms p99 {pct(seg, 0.99) * 1e3:.3f} ms")  # fmt: skip
        membership.refresh = real_refresh

        window = '`Product Viewed` where product_id = "p7" at least once in the last 1 day'
        new = Segment("new-window", "New", 1, parse_condition(window))
        registry.add(new)
        builder = SegmentBuilder(store, registry, clock, page=2000)
        t0, cpu0 = time.perf_counter(), time.process_time()
        after: str | None = None
        done = members = 0
        while True:
            after, n, changes = builder.evaluate_page("new-window", after)
            done += n
            members += sum(1 for c in changes if c.kind == "entered")
            if after is None:
                break
        print(f"build of a new event-window segment over {done:,} contacts: "
              f"{time.perf_counter() - t0:.1f} s ({members:,} members; "
              f"{time.process_time() - cpu0:.1f} s of CPU)")  # fmt: skip
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS {rss:.0f} MiB")
        store.dispose()


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    main(*(args + [100_000, 3000][len(args) :]))
