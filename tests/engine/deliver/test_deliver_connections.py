"""Connections to the relay: STARTTLS, implicit TLS, AUTH, idle NOOP/QUIT, reconnects."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

from deliver_support import (
    FAST,
    ScriptedSmtp,
    add_intent,
    intent_row,
    make_service,
    self_signed_certificate,
    server_tls_context,
    wait_for,
    wait_status,
)

from engine.clock import SystemClock
from engine.store import Store


async def test_starttls_and_auth(store: Store, tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    server = ScriptedSmtp(tls_context=server_tls_context(cert, key), credentials=("shop", "s3cret"))
    await server.start()
    clock = SystemClock()
    intent_id = add_intent(store, "ok@example.com", now=clock.now())
    relay = server.relay(tls="starttls", ca_file=str(cert), username="shop", password="s3cret")
    service = make_service(store, relay, clock=clock)
    await service.start()
    try:
        service.notify([intent_id])
        await wait_status(store, intent_id, {"sent"})
    finally:
        await service.stop()
        await server.stop()
    (session,) = server.sessions
    assert session.ssl is not None and session.authenticated
    assert server.copies("ok@example.com") == 1


async def test_implicit_tls(store: Store, tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    server = ScriptedSmtp(tls_context=server_tls_context(cert, key), implicit_tls=True)
    await server.start()
    clock = SystemClock()
    intent_id = add_intent(store, "ok@example.com", now=clock.now())
    service = make_service(store, server.relay(tls="implicit", ca_file=str(cert)), clock=clock)
    await service.start()
    try:
        service.notify([intent_id])
        await wait_status(store, intent_id, {"sent"})
    finally:
        await service.stop()
        await server.stop()


async def test_untrusted_certificate_or_wrong_password_keeps_intents_queued(
    store: Store, tmp_path: Path
) -> None:
    cert, key = self_signed_certificate(tmp_path)
    server = ScriptedSmtp(tls_context=server_tls_context(cert, key), credentials=("shop", "s3cret"))
    await server.start()
    clock = SystemClock()
    cases = [
        (server.relay(tls="starttls"), "certificate verify failed"),
        (
            server.relay(tls="starttls", ca_file=str(cert), username="shop", password="wrong"),
            "login refused",
        ),
    ]
    try:
        for n, (relay, expect) in enumerate(cases):
            intent_id = add_intent(store, f"ok-{n}@example.com", now=clock.now())
            service = make_service(store, relay, clock=clock)
            await service.start()
            try:
                service.notify([intent_id])
                await asyncio.sleep(0.3)
            finally:
                await service.stop()
            row = intent_row(store, intent_id)
            assert row["status"] == "queued" and row["attempts"] == 0, row
            assert expect in (row["reply"] or ""), row
            assert row["next_attempt_at"] > clock.now() - 0.3  # backing off, not spinning
    finally:
        await server.stop()
    assert server.received == []


async def test_idle_connections_are_checked_closed_and_reopened(
    store: Store, smtp_server: ScriptedSmtp
) -> None:
    clock = SystemClock()
    tuning = dataclasses.replace(FAST, idle_ping_after=0.0, idle_close_after=0.3)
    service = make_service(store, smtp_server.relay(connections=1), clock=clock, tuning=tuning)
    await service.start()
    try:
        for n in range(3):
            intent_id = add_intent(store, f"ok-{n}@example.com", now=clock.now())
            service.notify([intent_id])
            await wait_status(store, intent_id, {"sent"})
        assert smtp_server.commands["NOOP"] >= 2  # a reused connection is checked first
        await asyncio.sleep(0.6)  # idle: the pool says goodbye
        assert smtp_server.commands["QUIT"] == 1
        late = add_intent(store, "ok-late@example.com", now=clock.now())
        service.notify([late])
        await wait_status(store, late, {"sent"})  # and connects again on demand
    finally:
        await service.stop()
    assert len(smtp_server.received) == 4


async def test_stop_does_not_wait_for_a_relay_that_never_greets(store: Store) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # accept, then say nothing at all

    black_hole = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = black_hole.sockets[0].getsockname()[1]
    clock = SystemClock()
    intent_id = add_intent(store, "ok@example.com", now=clock.now())
    relay = ScriptedSmtp(port=port).relay(timeout=30.0)
    service = make_service(store, relay, clock=clock)
    await service.start()
    try:
        service.notify([intent_id])
        await wait_for(lambda: bool(accepted), what="a connection attempt")
    finally:
        started = time.monotonic()
        await service.stop()
        stopped_in = time.monotonic() - started
        for writer in accepted:
            writer.close()
        black_hole.close()
        await black_hole.wait_closed()
    assert stopped_in < 2.0
    row = intent_row(store, intent_id)
    assert row["status"] == "queued" and row["attempts"] == 0 and row["claimed_by"] is None
