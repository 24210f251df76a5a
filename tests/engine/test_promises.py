"""DESIGN.md's promises, end to end: a real engine process, nats-server and SMTP server.

- Nothing lost: every event acknowledged at ingest ends in a recorded outcome, through SIGKILL
  of the engine and a restart of nats-server.
- Nothing duplicated: the SMTP server receives each intent (workflow, step, contact, event)
  at most once; only messages in flight at the kill may be `uncertain`.
- Replaying the whole EVENTS stream sends no new mail.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine import bus
from engine.natsserver import NatsServer
from tests.engine.promises_support import EngineProcess, Sink, order, produce

pytestmark = pytest.mark.slow

N_EVENTS = 400


def check(rows: list[tuple[str, str, str]], sink: Sink, events: int) -> dict[str, int]:
    """The ledger has one intent per event, each with one outcome; the sink got none twice."""
    assert len(rows) == events, f"{events} events but {len(rows)} intents"
    assert len({r[2] for r in rows}) == events  # one per trigger event
    statuses = {status for _id, status, _event in rows}
    assert statuses <= {"sent", "uncertain"}, statuses
    received = sink.handler.message_ids
    twice = {mid: n for mid, n in received.items() if n > 1}
    assert not twice, f"received more than once: {twice}"
    for intent_id, status, _event in rows:
        got = sum(n for mid, n in received.items() if mid.startswith(f"<{intent_id}@"))
        if status == "sent":
            assert got == 1, f"sent intent {intent_id} received {got} times"
        else:  # uncertain: the dot went out, the reply was never recorded
            assert got <= 1
    return {s: sum(1 for r in rows if r[1] == s) for s in statuses}


async def test_sigkill_mid_stream_loses_and_duplicates_nothing_and_replay_sends_nothing(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    # A relay that takes 30 ms to answer the final dot: at the kill, messages are in flight
    # on both sides of it.
    sink = await Sink.start(reply_delay=0.03)
    engine = EngineProcess(tmp_path / "data", nats_server.url, nats_server.token, sink.port)
    nc = await bus.connect(nats_server.url, token=nats_server.token)
    try:
        await engine.start()
        js = nc.jetstream()
        events = [order(i) for i in range(N_EVENTS)]
        producer = asyncio.create_task(produce(js, events, rate=200))
        # Kill in the middle of the stream, while mail is flowing.
        while len(sink.handler.message_ids) < 60:
            await asyncio.sleep(0.02)
        await engine.kill()
        assert sum(1 for r in engine.ledger() if r[1] == "sent") < N_EVENTS
        await asyncio.sleep(0.5)
        await engine.start()
        await producer
        rows = await engine.wait_settled(N_EVENTS)
        counts = check(rows, sink, N_EVENTS)
        print("outcomes after SIGKILL:", counts)
        assert counts.get("uncertain", 0) <= 4  # at most the 4 connections' messages in flight
        delivered = sum(sink.handler.message_ids.values())

        # Replay the whole stream from the start: no new mail.
        await engine.stop()
        await js.delete_consumer(bus.EVENTS_STREAM, bus.DECIDE_CONSUMER)
        await engine.start()
        for _ in range(100):
            info = await js.consumer_info(bus.EVENTS_STREAM, bus.DECIDE_CONSUMER)
            if info.num_pending == 0 and info.num_ack_pending == 0:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the replay did not finish")
        await asyncio.sleep(1.0)  # anything decided would be sent within this
        assert sum(sink.handler.message_ids.values()) == delivered
        assert len(engine.ledger()) == N_EVENTS
    finally:
        await engine.stop()
        await nc.drain()
        await sink.stop()


async def test_nats_restart_mid_run_loses_nothing(tmp_path: Path) -> None:
    server = NatsServer(store_dir=tmp_path / "nats")
    server.start()
    sink = await Sink.start()
    engine = EngineProcess(tmp_path / "data", server.url, server.token, sink.port)
    nc = await bus.connect(server.url, token=server.token)
    try:
        await engine.start()
        js = nc.jetstream()
        events = [order(i) for i in range(N_EVENTS)]
        producer = asyncio.create_task(produce(js, events, rate=200))
        while len(sink.handler.message_ids) < 60:
            await asyncio.sleep(0.02)
        server.stop()  # the engine and the producer lose NATS mid-stream
        await asyncio.sleep(1.0)
        server.start()  # same port, token and store directory
        await producer
        rows = await engine.wait_settled(N_EVENTS)
        counts = check(rows, sink, N_EVENTS)
        assert counts == {"sent": N_EVENTS}  # the engine never died: nothing uncertain
    finally:
        await engine.stop()
        await nc.drain()
        await sink.stop()
        server.stop()
