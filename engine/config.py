"""Engine settings: defaults, then a TOML file, then ``CAMPAIGN_<SECTION>_<KEY>`` variables,
then command-line flags. ``campaign-engine config show`` prints the result with secrets redacted.

Durability (see docs/durability.md):
- ``durability = "process"`` (default): an acknowledged event survives the engine or nats-server
  being killed (SIGKILL). SQLite runs WAL with ``synchronous=NORMAL``; JetStream keeps its
  default flush (writes reach the OS before the publish is acknowledged).
- ``durability = "power"``: also survives power loss. SQLite ``synchronous=FULL``; JetStream
  ``sync_interval: always`` (fsync before every acknowledgement).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from engine.errors import ConfigError

ENV_PREFIX = "CAMPAIGN_"
SECRET_KEYS = frozenset({"write_key", "token", "password", "secret", "signing_key"})


@dataclass
class EngineSettings:
    node: str = "local"
    role: str = "all"  # all | decide | deliver | http
    data_dir: str = ""  # empty: the platform's user data directory
    durability: str = "process"  # process | power
    activity_days: float = 90.0  # recent activity kept for triggers, waits and windows


@dataclass
class HttpSettings:
    listen: str = "127.0.0.1:8640"
    public_url: str = ""  # base of unsubscribe links; empty: http://<listen>


@dataclass
class NatsSettings:
    url: str = ""  # empty: start an embedded nats-server
    token: str = ""  # for an external server; the embedded one generates its own
    stream_replicas: int = 1
    max_age_days: float = 7.0
    ack_wait: float = 30.0  # seconds before events held by a crashed decide node come back


@dataclass
class DatabaseSettings:
    url: str = ""  # empty: SQLite under the data directory


@dataclass
class IngestSettings:
    write_key: str = ""  # empty: generated once and kept in the data directory


@dataclass
class InboxSettings:
    listen: str = "127.0.0.1:0"  # the local capture SMTP inbox
    keep: int = 10_000  # messages kept; older ones are pruned


@dataclass
class SmtpSettings:
    url: str = ""  # the default route's relay, smtp://HOST:PORT; empty: the capture inbox
    connections: int = 16
    timeout: float = 30.0


@dataclass
class DeliverySettings:
    """Retries and claims of the deliver stage (defaults like Postfix's queue manager)."""

    retry_first: float = 300.0  # first retry after a 4xx reply, seconds
    retry_max: float = 3600.0  # retries back off up to this
    retry_jitter: float = 0.2  # +- this fraction on every retry delay
    max_attempts: int = 12  # then the intent is 'failed'
    lease_seconds: float = 60.0  # how long a claim holds without renewal
    claim_batch: int = 100
    max_inflight: int = 256


@dataclass
class ShopSettings:
    """What the starter templates say about the sender (CAN-SPAM wants a postal address)."""

    name: str = "Demo Shop"
    url: str = "https://shop.example"
    address: str = "Demo Shop, 1 Example Street, Springfield, 12345, USA"


@dataclass
class SendingSettings:
    from_address: str = "Demo Shop <shop@shop.example>"
    bounce_domain: str = "bounces.shop.example"
    list_id: str = "Demo Shop <news.shop.example>"
    unsubscribe_mailto: str = "unsubscribe@shop.example"


@dataclass
class AlertSettings:
    """Alert rules (engine/alerts.py): fire above a threshold held for a while, resolve below
    ``threshold * (1 - hysteresis)`` held for ``clear_for``. Changed live with alerts.set_rule."""

    enabled: bool = True
    check_every: float = 1.0  # seconds between evaluations
    window: float = 30.0  # seconds of telemetry behind the latency p99 and the error rate
    hysteresis: float = 0.2  # resolve once 20% below the threshold ...
    clear_for: float = 30.0  # ... for this many seconds
    latency_p99: float = 5.0  # seconds, event received to SMTP accepted
    latency_p99_for: float = 60.0
    error_rate: float = 0.05  # (failed + bounced + uncertain) / attempted
    error_rate_for: float = 60.0
    error_rate_min_attempts: int = 20  # fewer attempts in the window: no verdict
    queue_age: float = 600.0  # seconds the oldest due, unclaimed email has waited
    queue_age_for: float = 0.0
    queue_age_every: float = 5.0  # seconds between the (indexed) store look-ups
    relay_down_for: float = 10.0  # route_down{route} = 1 for this long
    route_paused_for: float = 0.0  # route_paused{route} = 1 for this long
    recent: int = 50  # resolved alerts kept for alerts.list


@dataclass
class Settings:
    engine: EngineSettings = field(default_factory=EngineSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    nats: NatsSettings = field(default_factory=NatsSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    inbox: InboxSettings = field(default_factory=InboxSettings)
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    sending: SendingSettings = field(default_factory=SendingSettings)
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    shop: ShopSettings = field(default_factory=ShopSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    # Per-workflow parameter overrides: {"abandoned-cart": {"delay": "10m"}}
    workflows: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def data_path(self) -> Path:
        if self.engine.data_dir:
            return Path(self.engine.data_dir).expanduser()
        return Path(platformdirs.user_data_dir("campaign-console", appauthor=False))

    def database_url(self) -> str:
        if self.database.url:
            return self.database.url
        return f"sqlite:///{self.data_path / 'engine.sqlite3'}"

    def to_dict(self, *, redact: bool = True) -> dict[str, Any]:
        raw = dataclasses.asdict(self)
        return _redact(raw) if redact else raw


def _redact(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _redact(v, k) for k, v in value.items()}
    if key in SECRET_KEYS and value:
        return "********"
    if key == "url" and isinstance(value, str) and "@" in value and "://" in value:
        scheme, rest = value.split("://", 1)
        return f"{scheme}://********@{rest.rsplit('@', 1)[1]}"
    return value


def _coerce(section: str, key: str, current: Any, raw: Any) -> Any:
    where = f"{section}.{key}"
    try:
        if isinstance(current, bool):
            if isinstance(raw, str):
                if raw.lower() in {"1", "true", "yes", "on"}:
                    return True
                if raw.lower() in {"0", "false", "no", "off"}:
                    return False
                raise ValueError(raw)
            return bool(raw)
        if isinstance(current, int):
            return int(raw)
        if isinstance(current, float):
            return float(raw)
        if isinstance(current, str):
            if not isinstance(raw, str | int | float):
                raise TypeError(type(raw).__name__)
            return str(raw)
    except (TypeError, ValueError) as exc:
        kind = type(current).__name__
        raise ConfigError(f"{where}: expected {kind}, got {raw!r}") from exc
    return raw


def _apply(settings: Settings, data: dict[str, Any], source: str) -> None:
    for section, values in data.items():
        if section == "workflows":
            if not isinstance(values, dict):
                raise ConfigError(f"{source}: [workflows] must be a table")
            for wf, params in values.items():
                if not isinstance(params, dict):
                    raise ConfigError(f"{source}: [workflows.{wf}] must be a table")
                # Accept both [workflows.X] delay="1m" and [workflows.X.params] delay="1m".
                flat = params.get("params", params)
                settings.workflows.setdefault(wf, {}).update(flat)
            continue
        target = getattr(settings, section, None)
        if target is None or not dataclasses.is_dataclass(target):
            raise ConfigError(f"{source}: unknown section [{section}]")
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: [{section}] must be a table")
        names = {f.name for f in dataclasses.fields(target)}
        for key, raw in values.items():
            if key not in names:
                raise ConfigError(f"{source}: unknown setting {section}.{key}")
            setattr(target, key, _coerce(section, key, getattr(target, key), raw))


def load_settings(
    path: str | Path | None = None,
    *,
    environ: dict[str, str] | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> Settings:
    """Build settings from defaults, a TOML file, the environment and explicit overrides."""
    settings = Settings()
    if path is not None:
        file = Path(path)
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {file}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from exc
        _apply(settings, data, str(file))
    env = os.environ if environ is None else environ
    env_data: dict[str, dict[str, Any]] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        section, _, key = rest.partition("_")
        if not key or section == "workflows":
            continue
        env_data.setdefault(section, {})[key] = value
    if env_data:
        _apply(settings, env_data, "environment")
    if overrides:
        _apply(settings, {k: v for k, v in overrides.items() if v}, "command line")
    validate(settings)
    return settings


def validate(settings: Settings) -> None:
    if settings.engine.role not in {"all", "decide", "deliver", "http"}:
        raise ConfigError(
            f"engine.role: expected all, decide, deliver or http, got {settings.engine.role!r}"
        )
    if settings.engine.durability not in {"process", "power"}:
        raise ConfigError(
            f"engine.durability: expected 'process' or 'power', got {settings.engine.durability!r}"
        )
    for name, value in (
        ("http.listen", settings.http.listen),
        ("inbox.listen", settings.inbox.listen),
    ):
        parse_hostport(value, name)
    validate_alerts(settings.alerts)
    if settings.smtp.url and not settings.smtp.url.startswith(("smtp://", "smtps://")):
        raise ConfigError(
            f"smtp.url: expected smtp://HOST:PORT or smtps://HOST:PORT, got {settings.smtp.url!r}"
        )


def validate_alerts(alerts: AlertSettings) -> None:
    """Alert settings in range, with the setting's name in the error."""
    if not 0 <= alerts.hysteresis < 1:
        raise ConfigError(f"alerts.hysteresis: expected 0 <= h < 1, got {alerts.hysteresis!r}")
    if not 0 < alerts.error_rate <= 1:
        raise ConfigError(
            f"alerts.error_rate: expected a fraction in (0, 1], got {alerts.error_rate!r}"
        )
    for name in ("check_every", "window", "latency_p99", "queue_age", "queue_age_every"):
        value = getattr(alerts, name)
        if value <= 0:
            raise ConfigError(f"alerts.{name}: expected a number above 0, got {value!r}")
    for name in (
        "clear_for",
        "latency_p99_for",
        "error_rate_for",
        "queue_age_for",
        "relay_down_for",
        "route_paused_for",
    ):
        value = getattr(alerts, name)
        if value < 0:
            raise ConfigError(f"alerts.{name}: expected 0 or more seconds, got {value!r}")
    if alerts.recent < 1:
        raise ConfigError(f"alerts.recent: expected 1 or more, got {alerts.recent!r}")


def parse_hostport(value: str, name: str = "address") -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[v6]:PORT`` allowed) with a clear error."""
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"{name}: expected HOST:PORT, got {value!r}")
    host = host.strip("[]")
    try:
        number = int(port)
    except ValueError as exc:
        raise ConfigError(f"{name}: port must be a number, got {port!r}") from exc
    if not 0 <= number <= 65535:
        raise ConfigError(f"{name}: port out of range: {number}")
    return host, number
