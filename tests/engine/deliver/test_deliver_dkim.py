"""DKIM through the real delivery path: every message the SMTP server received is verified with
dkimpy, whose DNS lookup returns the test key's published TXT record."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import dkim
import pytest
from deliver_support import (
    FAST,
    PUBLIC_URL,
    TEMPLATES,
    TOKENS,
    ScriptedSmtp,
    add_contact,
    add_intent,
    wait_status,
)

from engine.clock import SystemClock
from engine.config import Settings, load_settings
from engine.deliver import DeliveryService
from engine.render import Renderer, TemplateSource
from engine.signing import SigningError, generate_key
from engine.store import Store
from engine.telemetry import Telemetry

SELECTOR = "s2026"


@pytest.fixture(scope="module")
def keypair() -> tuple[bytes, str]:
    return generate_key("shop.example", SELECTOR)


def key_file(tmp_path: Path, pem: bytes, mode: int = 0o600) -> Path:
    path = tmp_path / "shop.example.pem"
    path.write_bytes(pem)
    path.chmod(mode)
    return path


def dkim_settings(path: Path | str, domain: str = "shop.example") -> Settings:
    return load_settings(
        None,
        environ={},
        overrides={"dkim": {domain: {"selector": SELECTOR, "key": f"file:{path}"}}},
    )


def published(record: str) -> Callable[..., bytes | None]:
    """The DNS as a receiver would query it: the one TXT record this test published."""

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        return record.encode() if name == f"{SELECTOR}._domainkey.shop.example.".encode() else None

    return lookup


def service(store: Store, smtp: ScriptedSmtp, settings: Settings) -> DeliveryService:
    renderer = Renderer(
        [
            *TEMPLATES,
            TemplateSource(
                id="elsewhere",
                version=1,
                name="From a domain without a key",
                subject="Hi",
                body="<p>Hi</p>",
                from_address="Other <news@other.example>",
            ),
        ]
    )
    return DeliveryService(
        store=store,
        renderer=renderer,
        settings=settings,
        telemetry=Telemetry("t"),
        clock=SystemClock(),
        node="dkim-node",
        tokens=TOKENS,
        public_url=PUBLIC_URL,
        relay=smtp.relay(),
        tuning=FAST,
    )


async def test_every_received_message_verifies(
    store: Store, smtp_server: ScriptedSmtp, keypair: tuple[bytes, str], tmp_path: Path
) -> None:
    pem, record = keypair
    settings = dkim_settings(key_file(tmp_path, pem))
    now = SystemClock().now()
    add_contact(store, "c1", "ada@example.com", traits={"first_name": "Ådå  \t Lovelace"})
    ids = [add_intent(store, f"ok-{n}@example.com", now=now) for n in range(6)]
    ids.append(add_intent(store, "ok-order@example.com", now=now, category="transactional"))
    ids.append(add_intent(store, "ok-x@example.com", now=now, template_id="elsewhere"))
    delivery = service(store, smtp_server, settings)
    await delivery.start()
    try:
        delivery.notify(ids)
        rows = [await wait_status(store, i, {"sent", "failed"}) for i in ids]
    finally:
        await delivery.stop()

    signed_ids = ids[:-1]
    assert [r["status"] for r in rows[:-1]] == ["sent"] * len(signed_ids)
    # A From domain without a key is not sent unsigned: the intent fails and says why.
    assert rows[-1]["status"] == "failed"
    assert "no DKIM key for domain 'other.example'" in rows[-1]["reply"]
    assert smtp_server.copies("ok-x@example.com") == 0

    assert len(smtp_server.received) == len(signed_ids)
    dns = published(record)
    for message in smtp_server.received:
        assert dkim.verify(message.data, dnsfunc=dns), message.rcpt_tos
        head = message.data.split(b"\r\n\r\n", 1)[0].decode("ascii")
        signature = head.split("\r\nFrom:", 1)[0].replace("\r\n", "")
        tags = dict(
            t.strip().split("=", 1) for t in signature.split(":", 1)[1].split(";") if t.strip()
        )
        assert tags["d"] == "shop.example" and tags["s"] == SELECTOR
        signed = tags["h"].split(":")
        assert {"From", "Subject", "Date", "Message-ID", "To"} <= set(signed)
        assert signed.count("From") == 2  # oversigned
        # Covered headers stay on one line (no continuation line follows them).
        for name in ("From", "To", "Date", "Message-ID", "List-Unsubscribe"):
            match = re.search(rf"^{name}:.*\r\n[ \t]", head, re.MULTILINE)
            assert match is None, name
        if "ok-order@example.com" in message.rcpt_tos:
            assert "List-Unsubscribe" not in signed  # transactional: no list headers
        else:
            assert {"List-Unsubscribe", "List-Unsubscribe-Post", "List-Id"} <= set(signed)
        # Tampering in transit is detected on the same bytes.
        assert b"Lamp" in message.data
        assert not dkim.verify(message.data.replace(b"Lamp", b"Lump", 1), dnsfunc=dns)


async def test_a_key_other_users_can_read_is_refused(
    store: Store, smtp_server: ScriptedSmtp, keypair: tuple[bytes, str], tmp_path: Path
) -> None:
    pem, _ = keypair
    path = key_file(tmp_path, pem, mode=0o644)
    with pytest.raises(SigningError, match=r"accessible to other users \(mode 0644\)") as info:
        service(store, smtp_server, dkim_settings(path))
    assert pem.split(b"\n")[1].decode() not in str(info.value)
    os.chmod(path, 0o640)  # group-readable: allowed (a dedicated group), with a warning
    service(store, smtp_server, dkim_settings(path))


async def test_start_up_errors_name_the_problem(
    store: Store, smtp_server: ScriptedSmtp, keypair: tuple[bytes, str], tmp_path: Path
) -> None:
    pem, _ = keypair
    path = key_file(tmp_path, pem)
    with pytest.raises(SigningError, match=r"no DKIM key for the sending domain 'shop\.example'"):
        service(store, smtp_server, dkim_settings(path, domain="other.example"))
    with pytest.raises(SigningError, match="cannot read the DKIM key file"):
        service(store, smtp_server, dkim_settings(tmp_path / "missing.pem"))
    broken = tmp_path / "broken.pem"
    broken.write_bytes(b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n")
    broken.chmod(0o600)
    with pytest.raises(SigningError, match="not a readable, unencrypted PEM private key"):
        service(store, smtp_server, dkim_settings(broken))
