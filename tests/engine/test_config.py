"""Settings: file, environment and flags, in that order, with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import load_settings, parse_hostport
from engine.errors import ConfigError


def test_layers_apply_in_order(tmp_path: Path) -> None:
    file = tmp_path / "c.toml"
    file.write_text('[smtp]\nurl = "smtp://file:25"\nconnections = 4\n[engine]\nnode = "a"\n')
    s = load_settings(
        file,
        environ={"CAMPAIGN_SMTP_URL": "smtp://env:25", "CAMPAIGN_SMTP_CONNECTIONS": "6"},
        overrides={"engine": {"node": "flag"}},
    )
    assert s.smtp.url == "smtp://env:25"
    assert s.smtp.connections == 6
    assert s.engine.node == "flag"


def test_example_config_loads() -> None:
    example = Path(__file__).parents[2] / "docs" / "config.example.toml"
    s = load_settings(example, environ={})
    assert s.workflows["abandoned-cart"]["delay"] == "30m"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[nope]\nx = 1\n", "unknown section [nope]"),
        ("[smtp]\ncolour = 1\n", "unknown setting smtp.colour"),
        ("[smtp]\nconnections = 'many'\n", "smtp.connections: expected int"),
        ("[engine]\nrole = 'boss'\n", "engine.role"),
        ("[http]\nlisten = 'localhost'\n", "http.listen: expected HOST:PORT"),
        ("[smtp]\nurl = 'http://x'\n", "smtp.url"),
        ("not toml = = =", "not valid TOML"),
    ],
)
def test_bad_config_is_named(tmp_path: Path, text: str, message: str) -> None:
    file = tmp_path / "c.toml"
    file.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_settings(file, environ={})


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "absent.toml", environ={})


def test_secrets_are_redacted() -> None:
    s = load_settings(
        None,
        environ={
            "CAMPAIGN_INGEST_WRITE_KEY": "sekrit-key",
            "CAMPAIGN_DATABASE_URL": "postgresql://u:pw-123@db/x",
        },
    )
    shown = str(s.to_dict())
    assert "sekrit-key" not in shown
    assert "pw-123" not in shown
    assert s.ingest.write_key == "sekrit-key"


def test_parse_hostport() -> None:
    assert parse_hostport("127.0.0.1:8640") == ("127.0.0.1", 8640)
    assert parse_hostport("[::1]:25") == ("::1", 25)
    with pytest.raises(ConfigError, match="port must be a number"):
        parse_hostport("h:x")
    with pytest.raises(ConfigError, match="out of range"):
        parse_hostport("h:70000")
