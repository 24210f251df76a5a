"""Each intent ends in exactly one recorded outcome, against a real (scripted) SMTP server."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import sqlalchemy as sa
from deliver_support import (
    FAST,
    PUBLIC_URL,
    TOKENS,
    ScriptedSmtp,
    add_contact,
    add_intent,
    intent_row,
    make_service,
    wait_for,
    wait_status,
)

from engine.clock import ManualClock, SystemClock
from engine.store import Store, schema
from engine.telemetry import Telemetry


async def test_sent_with_stage_timestamps_headers_and_telemetry(
    store: Store, smtp_server: ScriptedSmtp
) -> None:
    clock = SystemClock()
    telemetry = Telemetry("t")
    add_contact(store, "c1", "ada@example.com")
    intent_id = add_intent(store, "ok-ada@example.com", now=clock.now())
    service = make_service(store, smtp_server.relay(), clock=clock, telemetry=telemetry)
    await service.start()
    try:
        service.notify([intent_id])
        row = await wait_status(store, intent_id, {"sent"})
    finally:
        await service.stop()

    assert row["reply"].startswith("250 2.0.0 Ok")
    assert row["attempts"] == 1
    assert row["message_id"] == f"<{intent_id}@shop.example>"
    stamps = [row[k] for k in ("received_at", "decided_at", "rendered_at", "dot_at", "accepted_at")]
    assert all(s is not None for s in stamps)
    assert stamps == sorted(stamps)
    assert row["finished_at"] == row["accepted_at"]
    assert row["claimed_by"].startswith("test-node/") and row["lease_until"] is None

    (message,) = smtp_server.received
    assert message.mail_from == f"bounce+{intent_id}@bounces.shop.example"
    assert message.rcpt_tos == ["ok-ada@example.com"]
    assert message.message_id == row["message_id"]
    assert message.header("Subject") == "Welcome, Ada"
    unsubscribe = message.header("List-Unsubscribe")
    url = unsubscribe.split("<", 1)[1].split(">", 1)[0]
    assert url.startswith(f"{PUBLIC_URL}/u/")
    assert TOKENS.verify(url.rsplit("/", 1)[1]) == ("c1", "ok-ada@example.com")

    counters = telemetry.counters
    assert counters['intents_total{outcome="sent",workflow="browse"}'] == 1
    assert counters['smtp_replies_total{code="250",route="default"}'] == 1
    for stage in ("claim", "render", "smtp"):
        assert telemetry.histograms[f'stage_seconds{{stage="{stage}"}}'].count == 1
    assert telemetry.histograms["e2e_seconds"].count == 1
    assert smtp_server.commands["QUIT"] >= 1  # stop() says goodbye


async def test_dot_marker_is_committed_before_the_final_dot(
    store: Store, smtp_server: ScriptedSmtp
) -> None:
    seen: list[tuple[str, float | None]] = []

    def on_data(envelope: object) -> None:  # the server has just read the final dot
        row = intent_row(store, intent_id)
        seen.append((row["status"], row["dot_at"]))

    smtp_server.on_data = on_data
    clock = SystemClock()
    intent_id = add_intent(store, "ok@example.com", now=clock.now())
    service = make_service(store, smtp_server.relay(), clock=clock)
    await service.start()
    try:
        service.notify([intent_id])
        await wait_status(store, intent_id, {"sent"})
    finally:
        await service.stop()
    ((status, dot_at),) = seen
    assert status == "sending" and dot_at is not None


async def test_deferred_keeps_message_id_on_retry(store: Store, smtp_server: ScriptedSmtp) -> None:
    clock = ManualClock(start=time.time())
    telemetry = Telemetry("t")
    intent_id = add_intent(store, "defer-once@example.com", now=clock.now())
    service = make_service(store, smtp_server.relay(), clock=clock, telemetry=telemetry)
    await service.start()
    try:
        service.notify([intent_id])
        row = await wait_status(store, intent_id, {"deferred"})
        assert row["attempts"] == 1
        assert row["reply"].startswith("451 4.3.0")
        # First retry after ~5 minutes, with jitter.
        assert clock.now() + 0.75 * 300 <= row["next_attempt_at"] <= clock.now() + 1.25 * 300
        first_id = row["message_id"]
        await asyncio.sleep(0.2)
        assert intent_row(store, intent_id)["status"] == "deferred"  # not before its time
        clock.advance(400)
        row = await wait_status(store, intent_id, {"sent"})
    finally:
        await service.stop()
    assert row["attempts"] == 2
    assert row["message_id"] == first_id == f"<{intent_id}@shop.example>"
    (message,) = smtp_server.received
    assert message.message_id == first_id
    assert smtp_server.rcpt_seen["defer-once@example.com"] == 2
    assert smtp_server.commands["RSET"] >= 1  # the failed transaction was reset
    assert telemetry.counters['intents_total{outcome="deferred",workflow="browse"}'] == 1
    assert telemetry.counters['intents_total{outcome="sent",workflow="browse"}'] == 1


async def test_hard_bounce_suppresses_the_address(store: Store, smtp_server: ScriptedSmtp) -> None:
    clock = SystemClock()
    first = add_intent(store, "bounce@example.com", now=clock.now())
    soft = add_intent(store, "reject@example.com", now=clock.now())
    service = make_service(store, smtp_server.relay(), clock=clock)
    await service.start()
    try:
        service.notify([first, soft])
        row = await wait_status(store, first, {"bounced"})
        soft_row = await wait_status(store, soft, {"bounced"})
        # Later mail to the same address, even transactional, is suppressed without a try.
        second = add_intent(store, "Bounce@example.com", now=clock.now(), category="transactional")
        service.notify([second])
        second_row = await wait_status(store, second, {"suppressed"})
    finally:
        await service.stop()
    assert row["reply"].startswith("550 5.1.1")
    assert soft_row["reply"].startswith("554 5.7.1")
    with store.begin() as conn:
        rows = conn.execute(sa.select(schema.suppressions)).all()
    assert [(r.address, r.scope, r.reason) for r in rows] == [
        ("bounce@example.com", "all", "hard_bounce")
    ]
    assert smtp_server.rcpt_seen["bounce@example.com"] == 1
    assert second_row["attempts"] == 0
    assert "suppression list" in second_row["reply"]


async def test_drop_before_the_dot_is_resent_exactly_once(
    store: Store, smtp_server: ScriptedSmtp
) -> None:
    clock = SystemClock()
    telemetry = Telemetry("t")
    intent_id = add_intent(store, "drop-before-dot-once@example.com", now=clock.now())
    service = make_service(store, smtp_server.relay(), clock=clock, telemetry=telemetry)
    await service.start()
    try:
        service.notify([intent_id])
        row = await wait_status(store, intent_id, {"sent"})
        await asyncio.sleep(0.3)  # give a wrong second resend the chance to happen
    finally:
        await service.stop()
    assert smtp_server.data_seen["drop-before-dot-once@example.com"] == 2
    assert smtp_server.copies("drop-before-dot-once@example.com") == 1
    assert row["attempts"] == 2
    outcomes = {k: v for k, v in telemetry.counters.items() if k.startswith("intents_total")}
    assert outcomes == {'intents_total{outcome="sent",workflow="browse"}': 1}


async def test_drop_after_the_dot_is_uncertain_and_never_resent(
    store: Store, smtp_server: ScriptedSmtp
) -> None:
    clock = SystemClock()
    telemetry = Telemetry("t")
    intent_id = add_intent(store, "drop-after-dot@example.com", now=clock.now())
    service = make_service(store, smtp_server.relay(), clock=clock, telemetry=telemetry)
    await service.start()
    try:
        service.notify([intent_id])
        row = await wait_status(store, intent_id, {"uncertain"})
        await asyncio.sleep(0.5)  # several poll cycles: nothing picks it up again
        assert intent_row(store, intent_id)["status"] == "uncertain"
    finally:
        await service.stop()
    assert smtp_server.copies("drop-after-dot@example.com") == 1
    assert smtp_server.data_seen["drop-after-dot@example.com"] == 1
    assert row["dot_at"] is not None and row["accepted_at"] is None
    assert row["reply"].startswith("uncertain: connection lost")
    assert telemetry.counters['intents_total{outcome="uncertain",workflow="browse"}'] == 1


async def test_suppression_and_expiry_are_checked_at_send_time(
    store: Store, smtp_server: ScriptedSmtp
) -> None:
    clock = SystemClock()
    now = clock.now()
    add_contact(store, "gone", "gone@example.com", unsubscribed_at=now - 10)
    add_contact(
        store, "noconsent", "nc@example.com", consent={"email_marketing": {"granted": False}}
    )
    with store.begin() as conn:
        conn.execute(
            schema.suppressions.insert(),
            [
                {
                    "address": "blocked@example.com",
                    "scope": "all",
                    "reason": "manual",
                    "created_at": now,
                },
                {
                    "address": "unsub@example.com",
                    "scope": "marketing",
                    "reason": "unsubscribe",
                    "created_at": now,
                },
            ],
        )
    cases = {
        "expired": (
            add_intent(store, "ok-exp@example.com", now=now, expires_at=now - 1),
            "expired",
        ),
        "blocked": (
            add_intent(store, "blocked@example.com", now=now, category="transactional"),
            "suppressed",
        ),
        "unsub-marketing": (add_intent(store, "unsub@example.com", now=now), "suppressed"),
        "unsub-transactional": (
            add_intent(store, "unsub@example.com", now=now, category="transactional"),
            "sent",
        ),
        "contact-unsubscribed": (
            add_intent(store, "gone@example.com", now=now, contact_id="gone"),
            "suppressed",
        ),
        "contact-unsubscribed-transactional": (
            add_intent(
                store, "gone@example.com", now=now, contact_id="gone", category="transactional"
            ),
            "sent",
        ),
        "no-consent": (
            add_intent(store, "nc@example.com", now=now, contact_id="noconsent"),
            "suppressed",
        ),
        "not-yet-expired": (
            add_intent(store, "ok-fresh@example.com", now=now, expires_at=now + 60),
            "sent",
        ),
    }
    service = make_service(store, smtp_server.relay(), clock=clock)
    await service.start()
    try:
        service.notify([intent_id for intent_id, _ in cases.values()])
        for name, (intent_id, wanted) in cases.items():
            row = await wait_status(store, intent_id, {wanted})
            assert row["status"] == wanted, name
            if wanted != "sent":
                assert row["attempts"] == 0 and row["finished_at"] is not None, name
    finally:
        await service.stop()
    delivered = sorted(r.rcpt_tos[0] for r in smtp_server.received)
    assert delivered == ["gone@example.com", "ok-fresh@example.com", "unsub@example.com"]


async def test_one_bad_recipient_does_not_block_the_others(
    store: Store, smtp_server: ScriptedSmtp
) -> None:
    smtp_server.slow_seconds = 3.0
    clock = SystemClock()
    slow = add_intent(store, "slow@example.com", now=clock.now())
    bad = {
        slow: "sent",
        add_intent(store, "bounce-1@example.com", now=clock.now()): "bounced",
        add_intent(store, "defer-2@example.com", now=clock.now()): "deferred",
        add_intent(store, "drop-after-dot-3@example.com", now=clock.now()): "uncertain",
        add_intent(
            store,
            "x@example.com",
            now=clock.now(),
            template_id="broken",
            context={"properties": {"count": 1}},
        ): "failed",
    }
    good = [add_intent(store, f"ok-{i}@example.com", now=clock.now()) for i in range(30)]
    service = make_service(store, smtp_server.relay(connections=3), clock=clock)
    await service.start()
    try:
        service.notify([*bad, *good])
        for intent_id in good:
            await wait_status(store, intent_id, {"sent"})
        # All done while the slow one, past its dot marker, still waits for its 250.
        assert intent_row(store, slow)["status"] == "sending"
        for intent_id, wanted in bad.items():
            await wait_status(store, intent_id, {wanted})
    finally:
        await service.stop()
    assert smtp_server.copies("slow@example.com") == 1


async def test_render_error_fails_the_intent_and_the_worker_goes_on(
    store: Store, smtp_server: ScriptedSmtp
) -> None:
    clock = SystemClock()
    telemetry = Telemetry("t")
    broken = add_intent(
        store,
        "a@example.com",
        now=clock.now(),
        template_id="broken",
        context={"properties": {"count": 3}},
    )
    unknown = add_intent(store, "b@example.com", now=clock.now(), template_id="nope")
    bad_address = add_intent(store, "no-at-sign", now=clock.now())
    fine = add_intent(store, "ok@example.com", now=clock.now())
    service = make_service(store, smtp_server.relay(), clock=clock, telemetry=telemetry)
    await service.start()
    try:
        service.notify([broken, unknown, bad_address, fine])
        broken_row = await wait_status(store, broken, {"failed"})
        unknown_row = await wait_status(store, unknown, {"failed"})
        address_row = await wait_status(store, bad_address, {"failed"})
        await wait_status(store, fine, {"sent"})
    finally:
        await service.stop()
    assert "ZeroDivisionError" in broken_row["reply"]
    assert "unknown template 'nope'" in unknown_row["reply"]
    assert "no-at-sign" in address_row["reply"]
    assert telemetry.counters['intents_total{outcome="failed",workflow="browse"}'] == 3
    assert [r.rcpt_tos for r in smtp_server.received] == [["ok@example.com"]]


async def test_give_up_after_max_attempts(store: Store, smtp_server: ScriptedSmtp) -> None:
    clock = ManualClock(start=time.time())
    tuning = dataclasses.replace(FAST, max_attempts=3)
    intent_id = add_intent(store, "defer@example.com", now=clock.now())
    service = make_service(store, smtp_server.relay(), clock=clock, tuning=tuning)
    await service.start()
    try:
        service.notify([intent_id])
        for attempt in (1, 2):
            row = await wait_status(store, intent_id, {"deferred"})
            await wait_for(lambda n=attempt: intent_row(store, intent_id)["attempts"] == n)
            clock.advance(4000)
        row = await wait_status(store, intent_id, {"failed"})
    finally:
        await service.stop()
    assert row["attempts"] == 3
    assert row["reply"].startswith("gave up after 3 attempts; last: 451")


async def test_unreachable_relay_hands_intents_back(store: Store) -> None:
    clock = SystemClock()
    telemetry = Telemetry("t")
    ids = [add_intent(store, f"ok-{i}@example.com", now=clock.now()) for i in range(5)]
    service = make_service(
        store,
        ScriptedSmtp(port=1).relay(),  # nothing listens on port 1
        clock=clock,
        telemetry=telemetry,
    )
    await service.start()
    try:
        service.notify(ids)
        await asyncio.sleep(0.3)
    finally:
        await service.stop()
    for intent_id in ids:
        row = intent_row(store, intent_id)
        assert row["status"] == "queued" and row["attempts"] == 0 and row["claimed_by"] is None
        assert "relay 127.0.0.1:1" in row["reply"]
    assert not [k for k in telemetry.counters if k.startswith("intents_total")]


async def test_421_backs_off_without_counting_an_attempt(
    store: Store, smtp_server: ScriptedSmtp
) -> None:
    clock = SystemClock()
    telemetry = Telemetry("t")
    intent_id = add_intent(store, "busy-once@example.com", now=clock.now())
    service = make_service(store, smtp_server.relay(), clock=clock, telemetry=telemetry)
    await service.start()
    try:
        service.notify([intent_id])
        row = await wait_status(store, intent_id, {"sent"})
    finally:
        await service.stop()
    assert smtp_server.rcpt_seen["busy-once@example.com"] == 2
    assert row["attempts"] == 1  # the 421 was about the relay, not this message
    outcomes = {k: v for k, v in telemetry.counters.items() if k.startswith("intents_total")}
    assert outcomes == {'intents_total{outcome="sent",workflow="browse"}': 1}
