"""CPU cost per email: the engine's own CPU seconds spent turning a backlog into sent mail.

    python -m bench.cost                      # 20,000 order events, one email each
    python -m bench.cost --events 50000 --event-loop asyncio

Wall-clock figures (emails/s, latency) need a quiet machine; CPU time per email hardly
depends on what else runs, so this is the figure to compare two builds on a shared machine,
and the one that says how far a 2-core machine can go: emails/s <= cores / (CPU s per email),
less what nats-server and the producer take.

How: a real ``campaign-engine run`` (its embedded nats-server, SQLite) sending to Postfix's
smtp-sink. After a warm-up, the backlog is published as fast as JetStream takes it (the
producer's CPU is not counted, nor is nats-server's) and the engine's CPU time (user and
system, all threads, and its deliver processes with ``--deliver-processes``) is read from
/proc from the start of publishing until every intent has its outcome.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import orjson

from bench.harness import ProcessSample, SmtpSink
from bench.pipeline import EngineUnderTest, order_event, running_engine
from engine.ids import new_id


async def publish(engine: EngineUnderTest, first: int, count: int) -> None:
    """Publish ``count`` order events as fast as JetStream acks them (1,000 acks in flight)."""
    window = asyncio.Semaphore(1000)

    async def one(i: int) -> None:
        async with window:
            event = order_event(i, time.time())
            event["messageId"] = new_id()
            await engine.js.publish(
                "events.track", orjson.dumps(event), headers={"Nats-Msg-Id": event["messageId"]}
            )

    await asyncio.gather(*(one(first + i) for i in range(count)))


async def measure(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="cc-cost-"))
    with SmtpSink() as sink:
        async with running_engine(args, sink, workdir) as engine:
            await publish(engine, 0, 500)  # warm-up: templates compiled, connections open
            await engine.drained()
            sampler = ProcessSample(engine.proc.pid, children=args.deliver_processes > 0)
            sampler.start()
            started = time.monotonic()
            await publish(engine, 1000, args.events)
            published_in = time.monotonic() - started
            if not await engine.drained(timeout=600):
                raise SystemExit("the engine did not drain the backlog within 10 minutes")
            wall = time.monotonic() - started
            cpu = sampler.cpu_seconds() - sampler.cpu_start
    per_email = cpu / args.events
    print(
        f"events {args.events:,}  loop {args.event_loop}  deliver processes"
        f" {args.deliver_processes}  ({workdir})"
    )
    print(
        f"engine CPU {cpu:.2f} s = {per_email * 1000:.3f} ms per email"
        f"  (ceiling on 2 cores: {2 / per_email:,.0f} emails/s)"
    )
    print(
        f"wall {wall:.2f} s = {args.events / wall:,.0f} emails/s end to end"
        f" (publishing took {published_in:.2f} s; wall figures need a quiet machine)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--durability", choices=["process", "power"], default="process")
    parser.add_argument("--deliver-processes", type=int, default=0)
    parser.add_argument("--event-loop", choices=["uvloop", "asyncio"], default="uvloop")
    asyncio.run(measure(parser.parse_args()))


if __name__ == "__main__":
    main()
