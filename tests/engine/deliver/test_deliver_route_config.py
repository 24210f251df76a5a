"""[routes.NAME] settings: parsing, environment overrides, and the errors that name the setting;
keyring credentials (an in-memory backend class defined here); the routes CLI commands."""

from __future__ import annotations

import dataclasses
import io
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keyring
import pytest
from keyring.backend import KeyringBackend
from keyring.backends import fail

from engine import commands
from engine.config import DeliverySettings, RouteSettings, load_settings
from engine.deliver.credentials import load_password
from engine.deliver.policy import DeliveryTuning
from engine.deliver.relay import RelayConfig
from engine.deliver.routes import DEFAULT_ROUTE, route_specs
from engine.errors import ConfigError, WorkflowInvalid
from engine.library import import_workflows
from engine.store import Store

ROOT = Path(__file__).resolve().parents[3]
INBOX = RelayConfig(host="127.0.0.1", port=2525)

ESP = """
[routes.esp]
url = "smtp://smtp.esp.example:2587"
username = "shop"
connections = 4
per_second = 50
per_minute = 2000
per_hour = 60000
domain_concurrency = 3

[routes.esp.domains."gmail.com"]
concurrency = 4
per_second = 20

[routes.backup]
host = "relay.backup.example"
tls = "implicit"

[routes.default]
per_second = 100
"""


class MemoryKeyring(KeyringBackend):
    """A real keyring backend that keeps secrets in memory (tests only)."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.secrets: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.secrets.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.secrets[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.secrets.pop((service, username), None)


@pytest.fixture
def memory_keyring() -> Iterator[MemoryKeyring]:
    before = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    try:
        yield backend
    finally:
        keyring.set_keyring(before)


def _load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Any:
    file = tmp_path / "settings.toml"
    file.write_text(text)
    return load_settings(file, environ=environ or {})


def test_routes_parse_into_relays_and_limits(tmp_path: Path) -> None:
    settings = _load(tmp_path, ESP)
    specs = route_specs(settings, INBOX, lambda route, service, user: f"pw-{route}-{service}")
    assert set(specs) == {"default", "esp", "backup"}
    esp = specs["esp"].relay
    assert (esp.host, esp.port, esp.tls, esp.validate_certs) == (
        "smtp.esp.example",
        2587,
        "starttls",  # named routes require TLS by default
        True,
    )
    assert (esp.username, esp.password) == ("shop", "pw-esp-campaign-console/route/esp")
    assert esp.connections == 4
    assert "pw-" not in repr(esp)
    limits = specs["esp"].limits
    assert (limits.rate.per_second, limits.rate.per_minute, limits.rate.per_hour) == (
        50,
        2000,
        60000,
    )
    assert limits.for_domain("gmail.com")[0] == 4
    assert limits.for_domain("gmail.com")[1].per_second == 20
    assert limits.for_domain("yahoo.com")[0] == 3
    backup = specs["backup"].relay
    assert (backup.port, backup.tls, backup.username) == (465, "implicit", None)
    assert specs[DEFAULT_ROUTE].relay is INBOX
    assert specs[DEFAULT_ROUTE].limits.rate.per_second == 100


def test_environment_overrides_route_settings(tmp_path: Path) -> None:
    env = {
        "CAMPAIGN_ROUTES_ESP_PER_SECOND": "7.5",
        "CAMPAIGN_ROUTES_ESP_DOMAIN_CONCURRENCY": "9",
        "CAMPAIGN_ROUTES_NEW_ONE_HOST": "127.0.0.1",
        "CAMPAIGN_ROUTES_NEW_ONE_TLS": "none",
    }
    settings = _load(tmp_path, ESP, env)
    assert settings.routes["esp"].per_second == 7.5
    assert settings.routes["esp"].domain_concurrency == 9
    assert settings.routes["new_one"].host == "127.0.0.1"
    with pytest.raises(ConfigError, match="CAMPAIGN_ROUTES_ESP_COLOUR"):
        _load(tmp_path, ESP, {"CAMPAIGN_ROUTES_ESP_COLOUR": "blue"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[routes.esp]\nhost = "h"\npassword = "x"\n', "routes.esp.password: passwords are not"),
        ('[routes.esp]\nurl = "smtp://u:secret@h:25"\n', "routes.esp.url holds a password"),
        ('[routes.esp]\nurl = "http://h"\n', "routes.esp.url: expected smtp://"),
        ('[routes.esp]\nurl = "smtp://h"\nhost = "h"\n', "routes.esp: give url or host"),
        ("[routes.esp]\nper_second = 5\n", "routes.esp: needs url"),
        ('[routes.esp]\nhost = "h"\ntls = "maybe"\n', "routes.esp.tls: expected starttls"),
        (
            '[routes.esp]\nhost = "relay.example"\ntls = "none"\nusername = "u"\n',
            "routes.esp.tls: a route with a username needs TLS",
        ),
        ('[routes.esp]\nhost = "h"\nper_second = -1\n', "routes.esp: per_second"),
        ('[routes.esp]\nhost = "h"\nconnections = 0\n', "routes.esp: relay connections"),
        ('[routes.esp]\nhost = "h"\nspeed = 1\n', "unknown setting routes.esp.speed"),
        ('[routes.esp]\nhost = "h"\nper_hour = "lots"\n', "routes.esp.per_hour: expected int"),
        ('[routes.esp.domains."gmail.com"]\nspeed = 1\n', 'routes.esp.domains."gmail.com".speed'),
        ('[routes.esp.domains."Gmail.com"]\nconcurrency = 1\n', "lower-case domain"),
        ('[routes.esp.domains."gmail.com"]\nconcurrency = -1\n', "must be 0 \\(no limit\\)"),
        ('[routes."Bad Name"]\nhost = "h"\n', "a route name is lower-case"),
        ('[routes.default]\nurl = "smtp://h"\n', "routes.default.url: the default route's relay"),
        ("[delivery]\nretry_lifetime = 0\n", "delivery.retry_lifetime must be positive"),
        ("[delivery]\nthrottle_decrease = 2\n", "delivery: throttle decrease"),
        ("[delivery]\npause_error_rate = 3\n", "delivery: pause_error_rate"),
    ],
)
def test_bad_route_settings_name_the_setting(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, text)


def test_a_login_without_tls_is_allowed_only_to_loopback(tmp_path: Path) -> None:
    text = '[routes.local]\nhost = "127.0.0.1"\nport = 2525\ntls = "none"\nusername = "u"\n'
    settings = _load(tmp_path, text)
    relay = route_specs(settings, INBOX, lambda *a: "pw")["local"].relay
    assert (relay.tls, relay.username) == ("none", "u")
    with pytest.raises(ConfigError, match="needs TLS"):
        RelayConfig(host="relay.example", tls="none", username="u", password="p")


def test_delivery_settings_reach_the_tuning() -> None:
    delivery = DeliverySettings(retry_first=60, retry_lifetime=3600, pause_min_sample=7)
    tuning = DeliveryTuning.from_settings(delivery)
    assert (tuning.retry_first, tuning.retry_lifetime, tuning.pause.min_sample) == (60, 3600, 7)
    assert tuning.throttle.window == delivery.throttle_window


def test_every_setting_is_documented_in_the_example_config() -> None:
    text = (ROOT / "docs" / "config.example.toml").read_text()
    data = tomllib.loads(text)
    for name in (f.name for f in dataclasses.fields(DeliverySettings)):
        assert name in data["delivery"], f"delivery.{name} is not in docs/config.example.toml"
    route_keys = set(data["routes"]["esp"])
    for name in (f.name for f in dataclasses.fields(RouteSettings)):
        assert name in route_keys or name in ("url", "host"), f"routes.NAME.{name} undocumented"
    assert "url =" in text and "host =" in text
    load_settings(ROOT / "docs" / "config.example.toml", environ={})  # and it is valid


def test_keyring_passwords_and_a_missing_backend(memory_keyring: MemoryKeyring) -> None:
    with pytest.raises(ConfigError, match="routes set-password esp"):
        load_password("esp", "campaign-console/route/esp", "shop")
    memory_keyring.set_password("campaign-console/route/esp", "shop", "hunter2-secret")
    assert load_password("esp", "campaign-console/route/esp", "shop") == "hunter2-secret"
    keyring.set_keyring(fail.Keyring())
    with pytest.raises(ConfigError, match="no usable OS keyring backend") as caught:
        load_password("esp", "campaign-console/route/esp", "shop")
    assert "PYTHON_KEYRING_BACKEND" in str(caught.value)


def test_routes_cli_set_password_and_list(
    tmp_path: Path, memory_keyring: MemoryKeyring, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = _load(tmp_path, ESP)
    commands.routes_set_password(settings, "esp", stdin=io.StringIO("p@ss w0rd!\n"))
    assert memory_keyring.secrets == {("campaign-console/route/esp", "shop"): "p@ss w0rd!"}
    commands.routes_list(settings)
    out = capsys.readouterr().out
    assert "p@ss w0rd!" not in out
    assert "esp" in out and "smtp.esp.example:2587" in out and "shop (password set)" in out
    assert "gmail.com: 4 at once, 20/s" in out
    assert "local capture inbox" in out
    with pytest.raises(ConfigError, match="no route named 'nope'"):
        commands.routes_set_password(settings, "nope", stdin=io.StringIO("x\n"))
    with pytest.raises(ConfigError, match=r"routes\.backup\.username is not set"):
        commands.routes_set_password(settings, "backup", stdin=io.StringIO("x\n"))


def test_cli_main_routes_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from engine.cli import main

    file = tmp_path / "settings.toml"
    file.write_text('[routes.bulk]\nhost = "bulk.example"\nper_second = 5\n')
    assert main(["routes", "list", "--config", str(file)]) == 0
    assert "bulk.example:587" in capsys.readouterr().out


def test_importing_a_workflow_with_an_unknown_route_is_refused(
    tmp_path: Path, store: Store
) -> None:
    workflow = tmp_path / "wf.toml"
    source = (ROOT / "templates" / "workflows").glob("*.toml")
    text = next(iter(sorted(source))).read_text()
    assert 'route = "' not in text
    text = text.replace('template = "', 'route = "nowhere"\ntemplate = "', 1)
    workflow.write_text(text)
    with pytest.raises(WorkflowInvalid, match="route 'nowhere' is not configured"):
        import_workflows(store, [workflow], 0.0, routes={"default"})
    assert import_workflows(store, [workflow], 0.0, routes={"default", "nowhere"}) == 1
