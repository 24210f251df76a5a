"""DKIM signing: every signature is checked with dkimpy's own verifier."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from pathlib import Path

import aiosmtplib
import dkim
import pytest
from dkim.canonicalization import CanonicalizationPolicy

from engine.errors import EngineError
from engine.inbox import CaptureInbox, get_message, list_messages
from engine.mime import build_message, make_message_id
from engine.signing import (
    DkimKey,
    DkimSigner,
    SigningError,
    _relaxed_body,
    dns_name,
    generate_key,
    key_file_loader,
    keyring_loader,
    loader_from_setting,
)


@pytest.fixture(scope="module")
def keypair() -> tuple[bytes, str]:
    return generate_key("shop.example", "s2026")


def _dns(record: str, name: str = "s2026._domainkey.shop.example.") -> Callable[..., bytes | None]:
    def lookup(qname: bytes, timeout: float = 5) -> bytes | None:
        return record.encode() if qname.decode() == name else None

    return lookup


def _message(subject: str = "Votre panier — 20 % de réduction 🎁", **kw: object) -> bytes:
    args: dict[str, object] = {
        "from_address": "Boutique Été <news@shop.example>",
        "to_address": "Ann Ödegaard <ann@example.org>",
        "subject": subject,
        "html": "<p>Bonjour Ann,</p>\n<p>" + "Votre panier vous attend.  " * 500 + "</p>",
        "text": "Bonjour Ann,\n\nVotre panier vous attend.\n.\nFrom here on\n",
        "message_id": make_message_id("0a1b2c3d4e5f60718293a4b5c6d7e8f9", "shop.example"),
        "date": 1_790_000_000.0,
        "list_unsubscribe_url": "https://shop.example/u/tok123",
        "list_unsubscribe_mailto": "unsub@shop.example",
        "list_id": "News <news.shop.example>",
    }
    args.update(kw)
    return build_message(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize("use_dkimpy", [False, True])
def test_signed_message_verifies_with_dkimpy(keypair: tuple[bytes, str], use_dkimpy: bool) -> None:
    pem, txt = keypair
    signer = DkimSigner([DkimKey("shop.example", "s2026", pem)], use_dkimpy=use_dkimpy)
    message = _message()
    signed = signer.sign(message)
    assert signed.endswith(message)  # prepended, nothing else touched
    assert signed.startswith(b"DKIM-Signature: ")
    assert dkim.verify(signed, dnsfunc=_dns(txt))


def test_signature_tags(keypair: tuple[bytes, str]) -> None:
    pem, _ = keypair
    signed = DkimSigner([DkimKey("shop.example", "s2026", pem)]).sign(_message(), now=1.7e9)
    header = signed.split(b"\r\nFrom:", 1)[0].replace(b"\r\n", b"").decode()
    tags = dict(t.strip().split("=", 1) for t in header.split(":", 1)[1].split(";") if t.strip())
    assert tags["a"] == "rsa-sha256"
    assert tags["c"] == "relaxed/relaxed"
    assert tags["d"] == "shop.example" and tags["s"] == "s2026" and tags["t"] == "1700000000"
    assert tags["h"].split(":") == [
        "From",
        "Subject",
        "Date",
        "Message-ID",
        "To",
        "MIME-Version",
        "Content-Type",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
        "List-Id",
        "From",
    ]


def test_only_present_headers_are_listed(keypair: tuple[bytes, str]) -> None:
    pem, txt = keypair
    message = _message(list_unsubscribe_url=None, list_unsubscribe_mailto=None, list_id=None)
    signed = DkimSigner([DkimKey("shop.example", "s2026", pem)]).sign(message)
    head = signed.split(b"\r\n b=", 1)[0].decode()
    assert "h=From:Subject:Date:Message-ID:To:MIME-Version:Content-Type:From;" in head
    assert dkim.verify(signed, dnsfunc=_dns(txt))


def test_tampering_fails_verification(keypair: tuple[bytes, str]) -> None:
    pem, txt = keypair
    signed = DkimSigner([DkimKey("shop.example", "s2026", pem)]).sign(_message("Plain subject"))
    dns = _dns(txt)
    assert dkim.verify(signed, dnsfunc=dns)
    assert not dkim.verify(signed.replace(b"Plain subject", b"Plain subjekt"), dnsfunc=dns)
    assert not dkim.verify(signed.replace(b"Bonjour Ann,", b"Bonjour Bob,", 1), dnsfunc=dns)
    # A second From added on top is caught by the oversigned From.
    assert not dkim.verify(
        signed.replace(b"\r\nFrom:", b"\r\nFrom: evil@attacker.example\r\nFrom:", 1),
        dnsfunc=dns,
    )
    # Unsubscribe header swapped for another target.
    assert not dkim.verify(signed.replace(b"u/tok123", b"u/tok999"), dnsfunc=dns)


def test_relaxed_canonicalization_tolerates_refolding(keypair: tuple[bytes, str]) -> None:
    pem, txt = keypair
    signed = DkimSigner([DkimKey("shop.example", "s2026", pem)]).sign(_message("Plain subject"))
    # A relay rewrapping a header or adding trailing whitespace keeps the signature valid.
    refolded = signed.replace(b"Subject: Plain subject", b"Subject: Plain\r\n\t subject  ")
    assert dkim.verify(refolded, dnsfunc=_dns(txt))


def test_no_folding_is_introduced(keypair: tuple[bytes, str]) -> None:
    pem, _ = keypair
    message = _message()
    signed = DkimSigner([DkimKey("shop.example", "s2026", pem)]).sign(message)
    signature, rest = signed.split(b"\r\n", 2)[:2], signed.split(b"\r\n", 2)[2]
    assert rest == message
    assert signature[1].startswith(b" b=")
    assert all(len(line) <= 998 for line in signed.split(b"\r\n"))
    for line in message.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.startswith((b"From:", b"To:", b"Date:", b"Message-ID:", b"List-")):
            assert b"\r\n " + line not in signed  # each stayed one line


def test_body_canonicalization_edge_cases(keypair: tuple[bytes, str]) -> None:
    pem, txt = keypair
    signer = DkimSigner([DkimKey("shop.example", "s2026", pem)])
    head = b"From: a@shop.example\r\nSubject: x\r\n\r\n"
    for body in (
        b"",
        b"\r\n\r\n\r\n",
        b"one \t two\t\r\n  \r\n\r\n",
        b"no final newline  ",
        b"tabs\t\tand  spaces \r\nend\r\n \r\n",
    ):
        signed = signer.sign(head + body)
        if not signed.endswith(b"\r\n"):
            signed += b"\r\n"  # SMTP DATA ends the last line: that is what the receiver checks
        assert dkim.verify(signed, dnsfunc=_dns(txt)), body
    # Bare LF is sent as CRLF, so it is signed as CRLF.
    signed = signer.sign(b"From: a@shop.example\nSubject: x\n\nhello\n")
    assert b"\n" not in signed.replace(b"\r\n", b"")
    assert dkim.verify(signed, dnsfunc=_dns(txt))


def test_subdomain_uses_parent_key_and_explicit_domain(keypair: tuple[bytes, str]) -> None:
    pem, txt = keypair
    signer = DkimSigner([DkimKey("shop.example", "s2026", pem)])
    assert signer.key_for("news.shop.example") == "shop.example"
    signed = signer.sign(_message(from_address="news@mail.shop.example"))
    assert b"d=shop.example;" in signed
    assert dkim.verify(signed, dnsfunc=_dns(txt))


def test_unknown_domain_and_bad_keys(keypair: tuple[bytes, str], tmp_path: Path) -> None:
    pem, _ = keypair
    signer = DkimSigner([DkimKey("shop.example", "s2026", pem)])
    with pytest.raises(SigningError, match=r"no DKIM key for domain 'other\.example'"):
        signer.sign(_message(from_address="x@other.example"))
    with pytest.raises(SigningError, match="not a readable"):
        DkimSigner([DkimKey("shop.example", "s1", b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n")])
    with pytest.raises(SigningError, match="selector"):
        DkimSigner([DkimKey("shop.example", "bad selector", pem)])
    with pytest.raises(SigningError, match="header/body separator"):
        signer.sign(b"From: a@shop.example")
    with pytest.raises(SigningError, match="no From header"):
        signer.sign(b"Subject: x\r\n\r\nbody\r\n", domain="shop.example")
    with pytest.raises(SigningError, match="2 From headers"):
        signer.sign(b"From: a@shop.example\r\nFrom: b@shop.example\r\n\r\nx")
    assert issubclass(SigningError, EngineError)


def test_key_material_never_shown(
    keypair: tuple[bytes, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pem, txt = keypair
    path = tmp_path / "dkim.pem"
    path.write_bytes(pem)
    caplog.set_level(logging.DEBUG)
    key = DkimKey.load("shop.example", "s2026", key_file_loader(path))
    signer = DkimSigner([key])
    body = pem.split(b"\n")[1].decode()
    assert body not in repr(key) and body not in repr(signer)
    with pytest.raises(SigningError) as info:
        DkimKey.load("shop.example", "s2026", key_file_loader(tmp_path / "missing.pem"))
    assert "FileNotFoundError" in str(info.value) and "shop.example" in str(info.value)
    broken = pem.replace(body.encode(), b"Z" * len(body))
    with pytest.raises(SigningError) as bad:
        DkimSigner([DkimKey("shop.example", "s2026", broken)])
    assert "ZZZZ" not in str(bad.value) and bad.value.__cause__ is None
    assert dkim.verify(signer.sign(_message()), dnsfunc=_dns(txt))
    assert body not in caplog.text


def test_generate_key_record() -> None:
    pem, txt = generate_key("shop.example", "s1")
    assert pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert txt.startswith("v=DKIM1; k=rsa; p=MII")
    assert dns_name("Shop.Example.", "s1") == "s1._domainkey.shop.example"
    with pytest.raises(SigningError, match="2048"):
        generate_key("shop.example", "s1", bits=1024)


async def test_verifies_on_what_the_capture_inbox_received(
    keypair: tuple[bytes, str], tmp_path: Path
) -> None:
    """Signed, sent over SMTP (dot-stuffing and all), stored by the sink, then verified."""
    pem, txt = keypair
    signer = DkimSigner([DkimKey("shop.example", "s2026", pem)])
    signed = signer.sign(_message())
    box = CaptureInbox(tmp_path / "inbox", keep=10)
    host, port = await box.start("127.0.0.1", 0)
    try:
        await aiosmtplib.send(
            signed,
            sender="bounce+0a1b2c3d4e5f60718293a4b5c6d7e8f9@bounces.shop.example",
            recipients=["ann@example.org"],
            hostname=host,
            port=port,
            start_tls=False,
            local_hostname="test.client",
        )
    finally:
        await box.stop()
    (entry,) = list_messages(tmp_path / "inbox")
    _, received = get_message(tmp_path / "inbox", entry.id)
    assert dkim.verify(received, dnsfunc=_dns(txt))


def test_loaders_from_settings(keypair: tuple[bytes, str], tmp_path: Path) -> None:
    pem, _ = keypair
    path = tmp_path / "k.pem"
    path.write_bytes(pem)
    assert loader_from_setting(f"file:{path}")() == pem
    assert loader_from_setting(str(path))() == pem
    with pytest.raises(SigningError, match="holds a key"):
        loader_from_setting(pem.decode())
    with pytest.raises(SigningError, match="keyring:<service>/<username>"):
        loader_from_setting("keyring:campaign")
    loader = loader_from_setting("keyring:campaign-console/dkim-shop.example")
    assert loader.__qualname__ == keyring_loader("a", "b").__qualname__


def test_body_canonicalization_matches_dkimpy() -> None:
    """The hand-written relaxed body canonicalization against dkimpy's, on random bodies."""
    rng = random.Random(7)
    policy = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
    pieces = [
        b"a",
        b"b",
        b"=",
        b".",
        b" ",
        b"  ",
        b"\t",
        b" \t ",
        b"\r\n",
        b"\r\n\r\n",
        b"\xc3\xa9",
    ]
    for _ in range(2000):
        body = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 40))) + b"\r\n"
        assert _relaxed_body(body) == policy.canonicalize_body(body), body
