"""Named routes against real (scripted) SMTP servers: dispatch by route, fail closed on TLS,
421 at the greeting, too-many-recipients replies, the retry lifetime, per-domain concurrency
and rate, the route rate, auto-pause and resume, and passwords kept out of logs and replies."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
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
from engine.deliver import queues
from engine.deliver.limits import Adaptive, DomainRule, PauseRule, Rate, RouteLimits
from engine.deliver.routes import RouteSpec
from engine.store import Store, schema
from engine.telemetry import Telemetry

SECRET = "Zq7-unique-route-password-91"


def _overlap(spans: list[tuple[str, float, float]]) -> int:
    """The most transactions that were open at once among ``spans``."""
    events = sorted([(start, 1) for _, start, _ in spans] + [(end, -1) for _, _, end in spans])
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


async def test_each_intent_goes_to_its_route_and_an_unknown_route_fails(
    store: Store, smtp_server: ScriptedSmtp
) -> None:
    esp = ScriptedSmtp()
    await esp.start()
    clock = SystemClock()
    to_default = add_intent(store, "ok-a@example.com", now=clock.now())
    to_esp = add_intent(store, "ok-b@example.com", now=clock.now(), route="esp")
    to_nowhere = add_intent(store, "ok-c@example.com", now=clock.now(), route="nowhere")
    routes = {"esp": RouteSpec(esp.relay())}
    service = make_service(store, smtp_server.relay(), clock=clock, routes=routes)
    await service.start()
    try:
        service.notify([to_default, to_esp, to_nowhere])
        await wait_status(store, to_default, {"sent"})
        await wait_status(store, to_esp, {"sent"})
        failed = await wait_status(store, to_nowhere, {"failed"})
    finally:
        await service.stop()
        await esp.stop()
    assert [r.rcpt_tos for r in smtp_server.received] == [["ok-a@example.com"]]
    assert [r.rcpt_tos for r in esp.received] == [["ok-b@example.com"]]
    assert "unknown route 'nowhere'" in failed["reply"] and failed["attempts"] == 0
    assert smtp_server.rcpt_seen["ok-c@example.com"] == esp.rcpt_seen["ok-c@example.com"] == 0


async def test_starttls_required_but_not_offered_sends_nothing_in_clear(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    plain = ScriptedSmtp(credentials=None)  # offers no STARTTLS
    await plain.start()
    clock = SystemClock()
    intent_id = add_intent(store, "ok@example.com", now=clock.now(), route="esp")
    relay = plain.relay(tls="starttls", username="shop", password=SECRET)
    service = make_service(store, plain.relay(), clock=clock, routes={"esp": RouteSpec(relay)})
    await service.start()
    try:
        service.notify([intent_id])
        await wait_for(lambda: plain.commands["EHLO"] >= 1, what="a connection attempt")
        await asyncio.sleep(0.2)
    finally:
        await service.stop()
        await plain.stop()
    row = intent_row(store, intent_id)
    assert row["status"] == "queued" and row["attempts"] == 0
    assert "STARTTLS" in row["reply"]
    assert plain.commands["AUTH"] == plain.commands["MAIL"] == 0
    assert "AUTH" not in plain.clear_commands and "MAIL" not in plain.clear_commands
    assert plain.received == []
    assert SECRET not in caplog.text and SECRET not in row["reply"]


async def test_bad_certificate_or_refused_login_never_shows_the_password(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    cert, key = self_signed_certificate(tmp_path)
    server = ScriptedSmtp(tls_context=server_tls_context(cert, key), credentials=("shop", "right"))
    await server.start()
    clock = SystemClock()
    routes = {
        "untrusted": RouteSpec(server.relay(tls="starttls", username="shop", password=SECRET)),
        "wrong": RouteSpec(
            server.relay(tls="starttls", ca_file=str(cert), username="shop", password=SECRET)
        ),
        "closed": RouteSpec(
            dataclasses.replace(server.relay(), port=1, username="shop", password=SECRET)
        ),
    }
    ids = {
        name: add_intent(store, f"ok-{name}@example.com", now=clock.now(), route=name)
        for name in routes
    }
    service = make_service(store, server.relay(), clock=clock, routes=routes)
    await service.start()
    try:
        service.notify(list(ids.values()))
        await wait_for(
            lambda: all(intent_row(store, i)["reply"] for i in ids.values()), what="replies"
        )
    finally:
        await service.stop()
        await server.stop()
    rows = {name: intent_row(store, i) for name, i in ids.items()}
    assert "certificate verify failed" in rows["untrusted"]["reply"]
    assert "login refused" in rows["wrong"]["reply"]
    for row in rows.values():
        assert row["status"] == "queued" and row["attempts"] == 0
        assert SECRET not in row["reply"]
    assert server.commands["MAIL"] == 0 and server.received == []
    assert caplog.text and SECRET not in caplog.text
    assert all(SECRET not in repr(spec) for spec in routes.values())
    for route in service.routes.values():
        assert SECRET not in repr(route.state())


async def test_421_at_the_greeting_backs_off_the_route_without_an_attempt(
    store: Store,
) -> None:
    server = ScriptedSmtp(banner_421=1)
    await server.start()
    clock = SystemClock()
    telemetry = Telemetry("t")
    intent_id = add_intent(store, "ok@example.com", now=clock.now())
    service = make_service(store, server.relay(), clock=clock, telemetry=telemetry)
    await service.start()
    try:
        service.notify([intent_id])
        await wait_for(lambda: server.banners_refused == 1, what="the refused greeting")
        await wait_for(
            lambda: (
                telemetry.gauges.get('route_down{route="default"}') == 1
                or intent_row(store, intent_id)["status"] == "sent"
            ),
            what="the route to go down",
        )
        row = await wait_status(store, intent_id, {"sent"})  # after the route's backoff
    finally:
        await service.stop()
        await server.stop()
    assert row["attempts"] == 1  # the refused connection was no attempt, and no deferral
    assert server.copies("ok@example.com") == 1
    assert telemetry.gauges['route_down{route="default"}'] == 0
    assert 'intents_total{outcome="deferred",workflow="browse"}' not in telemetry.counters


async def test_too_many_recipients_is_temporary_and_spikes_throttle_the_domain(
    store: Store, smtp_server: ScriptedSmtp
) -> None:
    clock = SystemClock()
    telemetry = Telemetry("t")
    tuning = dataclasses.replace(
        FAST, throttle=Adaptive(min_deferrals=2, ratio=0.5), pause=PauseRule(error_rate=0)
    )
    full = add_intent(store, "full452@busy.test", now=clock.now())
    many = add_intent(store, "many552@busy.test", now=clock.now())
    service = make_service(
        store, smtp_server.relay(), clock=clock, telemetry=telemetry, tuning=tuning
    )
    await service.start()
    try:
        service.notify([full, many])
        rows = [await wait_status(store, i, {"deferred", "bounced"}) for i in (full, many)]
        state = service.route_states()[0]
    finally:
        await service.stop()
    assert [r["status"] for r in rows] == ["deferred", "deferred"]
    assert rows[0]["reply"].startswith("452 4.5.3") and rows[1]["reply"].startswith("552 5.5.3")
    assert all(r["next_attempt_at"] > clock.now() + 100 for r in rows)  # backoff, minutes
    assert state["domains"]["busy.test"]["throttle"] == 0.5
    assert telemetry.counters['domain_throttled_total{route="default"}'] == 1


async def test_deferred_past_the_retry_lifetime_expires(
    store: Store, smtp_server: ScriptedSmtp
) -> None:
    clock = SystemClock()
    tuning = dataclasses.replace(FAST, retry_lifetime=3600)
    intent_id = add_intent(store, "defer@example.com", now=clock.now() - 3500)
    service = make_service(store, smtp_server.relay(), clock=clock, tuning=tuning)
    await service.start()
    try:
        service.notify([intent_id])
        row = await wait_status(store, intent_id, {"expired", "deferred"})
    finally:
        await service.stop()
    assert row["status"] == "expired"
    assert "451 4.3.0" in row["reply"] and row["finished_at"] is not None


async def test_domain_concurrency_and_a_slow_domain_does_not_hold_up_the_others(
    store: Store,
) -> None:
    server = ScriptedSmtp(slow_seconds=0.25)
    await server.start()
    clock = SystemClock()
    limits = RouteLimits(domains={"slow.test": DomainRule(concurrency=1)})
    spec = RouteSpec(server.relay(connections=4), limits)
    slow = [add_intent(store, f"slow-{n}@slow.test", now=clock.now()) for n in range(3)]
    fast = [add_intent(store, f"ok-{n}@fast.test", now=clock.now()) for n in range(6)]
    service = make_service(store, spec.relay, clock=clock, routes={"default": spec})
    await service.start()
    try:
        service.notify(slow + fast)
        for intent_id in slow + fast:
            await wait_status(store, intent_id, {"sent"})
    finally:
        await service.stop()
        await server.stop()
    slow_spans = [s for s in server.spans if s[0].endswith("@slow.test")]
    fast_spans = [s for s in server.spans if s[0].endswith("@fast.test")]
    assert len(slow_spans) == 3 and len(fast_spans) == 6
    assert _overlap(slow_spans) == 1  # one transaction at a time to slow.test
    assert _overlap(server.spans) >= 2  # while other connections kept working
    second_slow = sorted(start for _, start, _ in slow_spans)[1]
    assert max(end for _, _, end in fast_spans) < second_slow  # nobody waited for slow.test


async def test_route_and_domain_rates_space_transactions(store: Store) -> None:
    server = ScriptedSmtp()
    await server.start()
    clock = SystemClock()
    limits = RouteLimits(
        rate=Rate(per_second=20, burst=1),
        domains={"paced.test": DomainRule(rate=Rate(per_second=5, burst=1))},
    )
    spec = RouteSpec(server.relay(connections=4), limits)
    paced = [add_intent(store, f"ok-{n}@paced.test", now=clock.now()) for n in range(4)]
    other = [add_intent(store, f"ok-{n}@other.test", now=clock.now()) for n in range(8)]
    service = make_service(store, spec.relay, clock=clock, routes={"default": spec})
    await service.start()
    try:
        service.notify(paced + other)
        for intent_id in paced + other:
            await wait_status(store, intent_id, {"sent"})
    finally:
        await service.stop()
        await server.stop()
    starts = sorted(start for _, start, _ in server.spans)
    paced_starts = sorted(s for r, s, _ in server.spans if r.endswith("@paced.test"))
    gaps = [b - a for a, b in itertools.pairwise(paced_starts)]
    # 5/s: 0.2 s apart at the limiter; measured at RCPT, so allow for connection set-up jitter.
    assert paced_starts[-1] - paced_starts[0] >= 0.5, gaps  # 3 gaps of 0.2 s at the limiter
    assert starts[-1] - starts[0] >= 11 / 20 - 0.1  # 12 transactions at 20/s
    other_last = max(s for r, s, _ in server.spans if r.endswith("@other.test"))
    assert other_last < paced_starts[-1]  # the paced domain did not hold the others back


async def test_route_pauses_itself_on_errors_keeps_intents_queued_and_resumes(
    store: Store,
) -> None:
    server = ScriptedSmtp()
    await server.start()
    clock = SystemClock()
    telemetry = Telemetry("t")
    tuning = dataclasses.replace(
        FAST,
        pause=PauseRule(error_rate=0.5, window=60, min_sample=3),
        throttle=Adaptive(enabled=False),
        pause_recheck=0.3,
    )
    spec = RouteSpec(server.relay(connections=1))
    failing = [
        add_intent(store, f"defer-{n}@example.com", now=clock.now(), route="esp") for n in range(3)
    ]
    service = make_service(
        store,
        server.relay(),
        clock=clock,
        telemetry=telemetry,
        tuning=tuning,
        routes={"esp": spec},
    )
    await service.start()
    try:
        service.notify(failing)
        await wait_for(lambda: service.routes["esp"].paused, what="the route to pause")
        waiting = add_intent(store, "ok-later@example.com", now=clock.now(), route="esp")
        service.notify([waiting])
        await asyncio.sleep(0.5)  # claimed and handed back, more than once
        held = intent_row(store, waiting)
        await wait_for(lambda: bool(audit_rows(store)), what="the audit entry")
        # The pause is persisted: every node's claim holds the route until an operator
        # lifts it; then the route resumes in memory too.
        assert queues.paused_routes(store) == {"esp"}
        await asyncio.sleep(0.3)
        assert service.routes["esp"].paused and intent_row(store, waiting)["status"] == "queued"
        queues.resume(
            store, queues.Scope(kind="route", value="esp"), actor="ops", reason="", now=clock.now()
        )
        sent = await wait_status(store, waiting, {"sent"}, timeout=5)
        assert not service.routes["esp"].paused
    finally:
        await service.stop()
        await server.stop()
    assert held["status"] == "queued" and held["attempts"] == 0
    # Held by the persisted pause: never claimed, so never handed back and forth.
    assert held["claimed_by"] is None
    assert sent["attempts"] == 1 and server.copies("ok-later@example.com") == 1
    assert telemetry.counters['route_auto_pauses_total{route="esp"}'] == 1
    assert telemetry.gauges['route_paused{route="esp"}'] == 0  # resumed
    assert telemetry.gauges['route_paused{route="default"}'] == 0
    (audit,) = audit_rows(store)
    assert (audit.actor, audit.target) == ("engine", "route=esp")
    assert "error rate" in audit.detail["reason"]


def audit_rows(store: Store) -> list[sa.Row[tuple[object, ...]]]:
    with store.begin() as conn:
        return list(
            conn.execute(
                sa.select(schema.audit_log).where(schema.audit_log.c.action == "route.auto_pause")
            )
        )


async def test_limits_change_live(store: Store) -> None:
    server = ScriptedSmtp()
    await server.start()
    clock = SystemClock()
    spec = RouteSpec(server.relay(connections=2), RouteLimits(rate=Rate(per_second=1, burst=1)))
    service = make_service(store, spec.relay, clock=clock, routes={"default": spec})
    await service.start()
    try:
        ids = [add_intent(store, f"ok-{n}@example.com", now=clock.now()) for n in range(6)]
        service.notify(ids)
        await wait_status(store, ids[0], {"sent"})
        started = time.monotonic()
        service.set_route_limits("default", RouteLimits())
        for intent_id in ids:
            await wait_status(store, intent_id, {"sent"})
        took = time.monotonic() - started
        (state,) = service.route_states()
    finally:
        await service.stop()
        await server.stop()
    assert took < 2.0  # at 1/s the other five would take ~5 s
    assert state["limits"]["rate"]["per_second"] == 0
