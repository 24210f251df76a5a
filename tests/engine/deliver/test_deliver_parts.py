"""The deliver stage's small parts: relay URLs, dot-stuffing, replies, backoff, render context."""

from __future__ import annotations

import dataclasses
import random

import pytest

from engine.clv import value_fields
from engine.deliver import DeliveryTuning, RelayConfig
from engine.deliver.compose import render_context
from engine.deliver.model import ClaimedIntent, ContactRow, Reply
from engine.deliver.policy import is_hard_bounce, requeue_delay, retry_delay
from engine.deliver.smtp import stuff
from engine.errors import ConfigError


def test_relay_urls() -> None:
    plain = RelayConfig.from_url("smtp://relay.example:2525", connections=4, timeout=5)
    assert (plain.host, plain.port, plain.tls, plain.connections, plain.timeout) == (
        "relay.example",
        2525,
        "none",
        4,
        5,
    )
    implicit = RelayConfig.from_url("smtps://user%40x:p%3Ass@relay.example")
    assert (implicit.port, implicit.tls, implicit.username, implicit.password) == (
        465,
        "implicit",
        "user@x",
        "p:ss",
    )
    assert "p:ss" not in repr(implicit)
    starttls = RelayConfig.from_url("smtp://relay.example?tls=starttls&verify=false")
    assert (starttls.port, starttls.tls, starttls.validate_certs) == (25, "starttls", False)
    for bad in ("http://x", "smtp://", "smtp://x?tls=maybe", "smtp://x:99999"):
        with pytest.raises(ConfigError):
            RelayConfig.from_url(bad)
    with pytest.raises(ConfigError):
        RelayConfig(host="x", connections=0)


def test_dot_stuffing() -> None:
    assert (
        stuff(b".leading\r\nmid\r\n.dot\r\n..two\r\n") == b"..leading\r\nmid\r\n..dot\r\n...two\r\n"
    )
    assert stuff(b"no final newline") == b"no final newline\r\n"
    assert stuff(b"a\r\n.\r\n") == b"a\r\n..\r\n"  # a lone dot never ends DATA early


def test_replies() -> None:
    reply = Reply(550, "5.1.1 <x@example.com>: User unknown")
    assert reply.enhanced == "5.1.1" and reply.permanent and is_hard_bounce(reply)
    assert str(reply) == "550 5.1.1 <x@example.com>: User unknown"
    assert not is_hard_bounce(Reply(554, "5.7.1 Message rejected"))
    assert not is_hard_bounce(Reply(451, "4.1.1 try later"))
    assert not is_hard_bounce(Reply(550, "User unknown"))  # no enhanced code: not sure enough
    assert Reply(250, "2.0.0 Ok").enhanced == "2.0.0"
    assert Reply(250, "Ok 5.1.1").enhanced == ""


def test_backoff_grows_to_the_cap_with_jitter() -> None:
    tuning = DeliveryTuning()
    rng = random.Random(1)
    first = [retry_delay(1, tuning, rng) for _ in range(200)]
    assert 240 <= min(first) < max(first) <= 360
    assert 480 <= retry_delay(2, tuning, rng) <= 720
    assert all(2880 <= retry_delay(n, tuning, rng) <= 4320 for n in (5, 9, 30))
    assert [requeue_delay(n, tuning) for n in (1, 2, 3, 10)] == [1.0, 2.0, 4.0, 60.0]


def test_render_context_follows_the_convention() -> None:
    intent = ClaimedIntent(
        id="i1",
        workflow_id="w",
        step_id="s",
        contact_id="c1",
        event_id="e1",
        template_id="t",
        route="default",
        category="marketing",
        to_addr="ada@example.com",
        context={"event": {"name": "Order Completed", "properties": {"total": 12}}, "step": 2},
        attempts=0,
        expires_at=None,
        received_at=0.0,
    )
    value = value_fields(150.0, 4, 10.0, 20.0)
    traits = {"first_name": "Ada", "email": "x", "orders": "a trait"}
    contact = ContactRow("c1", "old@example.com", traits, {}, None, value)
    context = render_context(
        intent, contact, unsubscribe_url="https://u/x", shop={"name": "Demo Shop"}
    )
    assert context["contact"] == {
        "first_name": "Ada", "email": "ada@example.com", "id": "c1", "lifetime_value": 150.0,
        "orders": 4, "average_order_value": 37.5, "first_order_at": 10.0, "last_order_at": 20.0,
    }  # fmt: skip
    assert context["traits"] == traits
    assert context["event"]["name"] == "Order Completed"
    assert context["properties"] == {"total": 12}
    assert context["unsubscribe_url"] == "https://u/x"
    assert context["shop"] == {"name": "Demo Shop"}
    assert context["step"] == 2
    bare = render_context(
        dataclasses.replace(intent, context={}), None, unsubscribe_url="u", shop={"name": "S"}
    )
    assert bare["contact"] == {
        "id": "c1",
        "email": "ada@example.com",
        **value_fields(0, 0, None, None),
    }
    assert bare["event"] == {"name": "", "properties": {}} and bare["properties"] == {}
    assert bare["shop"] == {"name": "S"}
