"""DKIM keys in the settings and ``campaign-engine dkim keygen``: what an operator sees."""

from __future__ import annotations

import re
import stat
import tomllib
from pathlib import Path

import dkim
import pytest

from engine.cli import main
from engine.config import load_settings
from engine.errors import ConfigError
from engine.mime import build_message, make_message_id
from engine.signing import signer_from_settings


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_keygen_writes_a_private_key_and_prints_the_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys, "dkim", "keygen", "Shop.Example", "s1", "--data-dir", str(tmp_path)
    )
    assert code == 0, err
    path = tmp_path / "dkim" / "shop.example.s1.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    pem = path.read_bytes()
    assert pem.split(b"\n")[1].decode() not in out  # the key is never printed
    match = re.search(r"^s1\._domainkey\.shop\.example\. IN TXT \( (.*) \)$", out, re.MULTILINE)
    assert match is not None, out
    strings = re.findall(r'"([^"]*)"', match.group(1))
    assert all(len(s) <= 255 for s in strings) and len(strings) > 1
    record = "".join(strings)
    assert record.startswith("v=DKIM1; k=rsa; p=")

    # The printed settings snippet loads, and signs mail that verifies against the record.
    snippet = out.split("And add to the engine's settings:\n", 1)[1]
    config = tmp_path / "engine.toml"
    config.write_text(snippet)
    settings = load_settings(config, environ={})
    assert settings.dkim == {"shop.example": {"selector": "s1", "key": f"file:{path}"}}
    signer = signer_from_settings(settings.dkim)
    assert signer is not None
    message = build_message(
        from_address="Shop <news@shop.example>",
        to_address="ann@example.org",
        subject="Hello",
        html="<p>Hello</p>",
        text="Hello",
        message_id=make_message_id("0a1b2c3d4e5f60718293a4b5c6d7e8f9", "shop.example"),
        date=1_790_000_000.0,
    )
    dns = {b"s1._domainkey.shop.example.": record.encode()}
    assert dkim.verify(signer.sign(message), dnsfunc=lambda name, timeout=5: dns.get(name))

    # config show prints the domain as one quoted key, and the location, not a key.
    code, out, _ = run(
        capsys, "config", "show", "--config", str(config), "--data-dir", str(tmp_path)
    )
    assert code == 0
    assert tomllib.loads(out)["dkim"] == settings.dkim

    # Never over an existing key.
    code, _, err = run(capsys, "dkim", "keygen", "shop.example", "s1", "--data-dir", str(tmp_path))
    assert code == 2 and "exists already" in err
    assert path.read_bytes() == pem


def test_keygen_refuses_bad_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "dkim", "keygen", "shop example", "s1", "--data-dir", str(tmp_path))
    assert code == 2 and "invalid DKIM domain 'shop example'" in err
    assert not (tmp_path / "dkim").exists() or not any((tmp_path / "dkim").iterdir())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[dkim."a.example"]\nselector = "s1"\n', r'\[dkim."a.example"\]: key is required'),
        ('[dkim."a.example"]\nselector = "s1"\nkey = "f"\npem = "x"\n', "unknown setting pem"),
        ('[dkim."a.example"]\nselector = ""\nkey = "f"\n', "non-empty strings"),
        ("[dkim]\n'a.example' = 1\n", "must be a table with selector and key"),
        ("[feedback]\nimap_tls = 'maybe'\n", "feedback.imap_tls: expected implicit"),
        ("[feedback]\nimap_after = 'burn'\n", "feedback.imap_after"),
        ("[feedback]\nimap_host = 'imap.example'\n", "feedback.imap_user: required"),
    ],
)
def test_bad_settings_are_named(tmp_path: Path, text: str, message: str) -> None:
    file = tmp_path / "c.toml"
    file.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(file, environ={})


def test_a_key_in_the_setting_is_refused(tmp_path: Path) -> None:
    settings = load_settings(
        None,
        environ={},
        overrides={"dkim": {"a.example": {"selector": "s1", "key": "-----BEGIN RSA PRIVATE"}}},
    )
    from engine.signing import SigningError

    with pytest.raises(SigningError, match="holds a key; give a file: or keyring: location"):
        signer_from_settings(settings.dkim)
