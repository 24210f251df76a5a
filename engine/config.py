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
import re
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
    # Separate deliver processes this node starts (role "all" only); 0: deliver in-process.
    deliver_processes: int = 0
    # Set by a node for its own deliver processes on a SQLite store (never by hand): the node
    # whose ledger claims and commits for them (engine.deliver.ledger_proxy).
    ledger_node: str = ""
    # The engine's event loop: "uvloop" (the default; where installed, not on Windows) or
    # "asyncio" (the standard loop: to compare, or to rule the loop out when hunting a bug).
    event_loop: str = "uvloop"


@dataclass
class HttpSettings:
    listen: str = "127.0.0.1:8640"
    public_url: str = ""  # base of unsubscribe links; empty: http://<listen>


@dataclass
class NatsSettings:
    url: str = ""  # empty: start an embedded nats-server
    token: str = ""  # for an external server; the embedded one generates its own
    # The engines' own NATS user on an external server (docs/access.md): a password, or an
    # nkey seed file (mode 0600). The embedded server generates its own.
    user: str = ""
    password: str = ""
    nkey_file: str = ""
    stream_replicas: int = 1
    max_age_days: float = 7.0
    ack_wait: float = 30.0  # seconds before events held by a crashed decide node come back
    # Decide partitions of the EVENTS stream (docs/cluster.md): 0 joins the layout the stream
    # has, else picks 1 with the embedded server and 16 with an external NATS. A number set
    # explicitly must be the same on every node of a cluster.
    partitions: int = 0
    # Seconds a decide node's partition leases outlive its last renewal (renewed every second):
    # how long a dead node's partitions wait before the others take them over.
    lease_ttl: float = 5.0

    def partition_count(self) -> int:
        """The number of decide partitions in force (``partitions``, or its automatic value)."""
        if self.partitions:
            return self.partitions
        return 16 if self.url else 1


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
    retry_lifetime: float = 432_000.0  # give up on 4xx retries this long after the event: expired
    requeue_first: float = 1.0  # connection lost before the final dot: resend after this ...
    requeue_max: float = 60.0  # ... doubling up to this
    route_backoff_first: float = 1.0  # relay unreachable or 421: the route waits this ...
    route_backoff_max: float = 60.0  # ... doubling up to this
    lease_seconds: float = 60.0  # how long a claim holds without renewal
    claim_batch: int = 100
    max_inflight: int = 256
    # Adaptive throttling per recipient domain (docs/routes.md): in throttle_window seconds, at
    # least throttle_min_deferrals 4xx replies making at least throttle_ratio of the replies
    # multiply the domain's rate by throttle_decrease (not below throttle_floor); it grows back
    # by throttle_increase every throttle_recover_every seconds.
    throttle: bool = True
    throttle_window: float = 60.0
    throttle_min_deferrals: int = 5
    throttle_ratio: float = 0.3
    throttle_decrease: float = 0.5
    throttle_floor: float = 0.05
    throttle_increase: float = 0.1
    throttle_recover_every: float = 30.0
    # Route auto-pause: pause_error_rate (0: never) of at least pause_min_sample attempts in
    # pause_window seconds pauses the route until resumed; its intents wait pause_recheck s.
    pause_error_rate: float = 0.5
    pause_window: float = 60.0
    pause_min_sample: int = 20
    pause_recheck: float = 10.0
    # Cluster-wide limits (docs/routes.md): deliver nodes announce themselves on NATS every
    # presence_interval seconds; one not heard from for presence_ttl seconds is dropped and
    # the others take over its share of each route's limits.
    presence_interval: float = 1.0
    presence_ttl: float = 3.0


@dataclass
class RouteSettings:
    """A named route, ``[routes.NAME]``: an SMTP relay profile and its limits (docs/routes.md).

    The password is never here: it lives in the OS keyring under ``keyring_service`` (default
    ``campaign-console/route/NAME``) and ``username``; set it with
    ``campaign-engine routes set-password NAME``. ``[routes.default]`` may only set limits:
    the default route's relay is ``[smtp] url`` (empty: the local capture inbox).
    """

    url: str = ""  # smtp://HOST[:PORT] or smtps://HOST[:PORT]; or host and port below
    host: str = ""
    port: int = 0  # 0: 465 with implicit TLS, 587 with STARTTLS, 25 without TLS
    tls: str = "starttls"  # starttls | implicit | none (none: loopback hosts only with a login)
    verify: bool = True  # validate the relay's certificate (and host name)
    ca_file: str = ""  # trust these CAs (PEM) instead of the system's
    ehlo: str = ""  # the EHLO name; empty: this host's name
    username: str = ""
    keyring_service: str = ""  # empty: campaign-console/route/NAME
    connections: int = 8  # pool size
    timeout: float = 30.0  # every connect and reply, seconds
    per_second: float = 0.0  # route rate (token bucket); 0: no limit
    burst: float = 0.0  # token bucket size; 0: max(1, per_second)
    per_minute: int = 0  # at most this many in any sliding minute; 0: no limit
    per_hour: int = 0  # at most this many in any sliding hour; 0: no limit
    domain_concurrency: int = 0  # transactions at once per recipient domain; 0: no limit
    domain_per_second: float = 0.0  # per recipient domain, by default; 0: no limit
    domain_per_minute: int = 0
    domain_per_hour: int = 0
    # Per recipient domain: {"gmail.com": {"concurrency": 4, "per_second": 20}}; keys
    # concurrency, per_second, per_minute, per_hour, burst.
    domains: dict[str, dict[str, Any]] = field(default_factory=dict)


ROUTE_RELAY_KEYS = frozenset(
    {"url", "host", "port", "tls", "verify", "ca_file", "ehlo", "username", "keyring_service"}
    | {"connections", "timeout"}
)
DOMAIN_RULE_KEYS = {"concurrency": int, "per_second": float, "per_minute": int, "per_hour": int}
DOMAIN_RULE_KEYS["burst"] = float
_ROUTE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,99}")


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


IMAP_TLS_MODES = ("implicit", "starttls", "none")
IMAP_AFTER = ("seen", "move", "delete")


@dataclass
class FeedbackSettings:
    """Bounces and complaints fetched from an IMAP mailbox (``imap_host`` empty: not polled).

    The password is never in the settings: it is read from the OS keyring, service
    ``imap_keyring_service``, user name ``imap_user``.
    """

    imap_host: str = ""
    imap_port: int = 0  # 0: 993 for implicit TLS, 143 otherwise
    imap_tls: str = "implicit"  # implicit | starttls | none (none: loopback test servers only)
    imap_verify: bool = True  # validate the server certificate and host name
    imap_ca_file: str = ""  # extra CA certificates (PEM) to trust, e.g. a private CA
    imap_user: str = ""
    imap_keyring_service: str = "campaign-console-imap"
    imap_folder: str = "INBOX"
    imap_after: str = "seen"  # seen | move | delete: what happens to a processed message
    imap_move_to: str = "Processed"  # the folder for imap_after = "move"
    imap_interval: float = 60.0  # seconds between polls
    imap_batch: int = 100  # messages fetched per poll at most
    imap_timeout: float = 30.0  # seconds for connecting and for each command


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
class CapSettings:
    """Frequency caps on marketing mail per contact (docs/caps.md); 0: no cap.

    Counted per calendar day and per ISO week (Monday to Sunday) in the contact's own timezone,
    on the day a mail is planned to go out. Transactional mail is never capped nor counted.
    """

    per_day: int = 0
    per_week: int = 0


@dataclass
class QuietSettings:
    """Quiet hours, ``[quiet]`` (docs/caps.md): marketing sends planned inside ``hours`` of
    the contact's local time wait until the window ends; never dropped. Empty: no quiet hours.
    A workflow may set its own (``quiet_hours = "22:00-07:00"`` or ``"none"``)."""

    hours: str = ""  # e.g. "21:00-08:00"
    timezone: str = "UTC"  # for contacts whose timezone is not known


@dataclass
class TrackingSettings:
    """Open and click tracking (docs/experiments.md); off by default for privacy."""

    opens: bool = False  # a 1x1 image in each mail: opens become Email Opened
    clicks: bool = False  # links go through a signed redirect: clicks become Email Link Clicked


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
    # Named routes: {"esp": RouteSettings(...)}; workflows pick one on each send step.
    routes: dict[str, RouteSettings] = field(default_factory=dict)
    feedback: FeedbackSettings = field(default_factory=FeedbackSettings)
    # DKIM keys per sending domain: {"shop.example": {"selector": "s2026",
    # "key": "file:/etc/campaign/dkim/shop.example.pem"}}; "key" says where the private key
    # is (file: or keyring:), never the key itself. Empty: mail is not signed.
    dkim: dict[str, dict[str, str]] = field(default_factory=dict)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    caps: CapSettings = field(default_factory=CapSettings)
    quiet: QuietSettings = field(default_factory=QuietSettings)
    tracking: TrackingSettings = field(default_factory=TrackingSettings)
    # Per-workflow parameter overrides: {"abandoned-cart": {"delay": "10m"}}
    workflows: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Personalized offers any workflow's send step may name (docs/offers.md):
    # {"welcome10": {"kind": "generated", "prefix": "SAVE", "value": "10%", "rules": [...]}}
    offers: dict[str, dict[str, Any]] = field(default_factory=dict)

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


def _apply_route(settings: Settings, name: str, values: Any, source: str) -> None:
    where = f"routes.{name}"
    if not isinstance(name, str) or not _ROUTE_NAME.fullmatch(name):
        raise ConfigError(
            f"{source}: [routes.{name}]: a route name is lower-case letters, digits, '.', '_' "
            "and '-' (at most 100)"
        )
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: [{where}] must be a table")
    route = settings.routes.setdefault(name, RouteSettings())
    names = {f.name for f in dataclasses.fields(route)}
    for key, raw in values.items():
        if key == "password":
            raise ConfigError(
                f"{source}: {where}.password: passwords are not kept in settings; "
                f"store it in the OS keyring with 'campaign-engine routes set-password {name}'"
            )
        if key not in names:
            raise ConfigError(f"{source}: unknown setting {where}.{key}")
        if key == "domains":
            route.domains.update(_domain_rules(where, raw, source))
            continue
        setattr(route, key, _coerce("routes", f"{name}.{key}", getattr(route, key), raw))


def _domain_rules(where: str, raw: Any, source: str) -> dict[str, dict[str, Any]]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: [{where}.domains] must be a table of domains")
    rules: dict[str, dict[str, Any]] = {}
    for domain, rule in raw.items():
        at = f'{where}.domains."{domain}"'
        if not isinstance(rule, dict):
            raise ConfigError(f"{source}: [{at}] must be a table (concurrency, per_second, ...)")
        if not domain or "@" in domain or domain != domain.strip().lower():
            raise ConfigError(f"{source}: [{at}]: expected a lower-case domain like gmail.com")
        parsed: dict[str, Any] = {}
        for key, value in rule.items():
            kind = DOMAIN_RULE_KEYS.get(key)
            if kind is None:
                known = ", ".join(DOMAIN_RULE_KEYS)
                raise ConfigError(f"{source}: unknown setting {at}.{key} (known: {known})")
            parsed[key] = _coerce(where, f'domains."{domain}".{key}', kind(), value)
            if parsed[key] < 0:
                raise ConfigError(f"{source}: {at}.{key} must be 0 (no limit) or positive")
        rules[domain] = parsed
    return rules


def _route_env(env_routes: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``CAMPAIGN_ROUTES_<NAME>_<KEY>`` -> {name: {key: value}} (the key is the longest
    known setting name the variable ends with; names with '-' cannot be set this way)."""
    keys = sorted((f.name for f in dataclasses.fields(RouteSettings)), key=len, reverse=True)
    found: dict[str, dict[str, Any]] = {}
    for rest, value in env_routes.items():
        for key in keys:
            if rest.endswith("_" + key) and len(rest) > len(key) + 1 and key != "domains":
                found.setdefault(rest[: -len(key) - 1], {})[key] = value
                break
        else:
            raise ConfigError(f"environment: CAMPAIGN_ROUTES_{rest.upper()}: unknown route setting")
    return found


def _apply(settings: Settings, data: dict[str, Any], source: str) -> None:
    for section, values in data.items():
        if section == "routes":
            if not isinstance(values, dict):
                raise ConfigError(f"{source}: [routes] must be a table of routes")
            for name, route in values.items():
                _apply_route(settings, name, route, source)
            continue
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
        if section == "dkim":
            _apply_dkim(settings, values, source)
            continue
        if section == "offers":
            _apply_offers(settings, values, source)
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


def _apply_offers(settings: Settings, values: Any, source: str) -> None:
    from engine.offers.model import parse_offers

    try:
        parse_offers(values)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    settings.offers.update(values)


DKIM_KEYS = frozenset({"selector", "key"})


def _apply_dkim(settings: Settings, values: Any, source: str) -> None:
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: [dkim] must be a table of sending domains")
    for domain, entry in values.items():
        where = f'{source}: [dkim."{domain}"]'
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a table with selector and key")
        unknown = sorted(set(entry) - DKIM_KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown setting {unknown[0]} (expected selector, key)")
        missing = sorted(DKIM_KEYS - set(entry))
        if missing:
            raise ConfigError(f"{where}: {missing[0]} is required")
        if not all(isinstance(v, str) and v.strip() for v in entry.values()):
            raise ConfigError(f"{where}: selector and key must be non-empty strings")
        settings.dkim[str(domain).strip().lower().rstrip(".")] = {
            "selector": entry["selector"].strip(),
            "key": entry["key"].strip(),
        }


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
        if not key or section in ("workflows", "dkim", "offers"):
            continue
        env_data.setdefault(section, {})[key] = value
    if "routes" in env_data:
        env_data["routes"] = _route_env(env_data["routes"])
    if env_data:
        _apply(settings, env_data, "environment")
    if overrides:
        _apply(settings, {k: v for k, v in overrides.items() if v}, "command line")
    validate(settings)
    return settings


def settings_from_data(data: dict[str, Any], source: str) -> Settings:
    """Settings from a plain mapping shaped like ``Settings.to_dict(redact=False)``."""
    settings = Settings()
    _apply(settings, data, source)
    validate(settings)
    return settings


def validate(settings: Settings) -> None:
    if not 0 <= settings.engine.deliver_processes <= 16:
        raise ConfigError(
            f"engine.deliver_processes: expected 0 to 16, got {settings.engine.deliver_processes}"
        )
    if settings.engine.event_loop not in {"uvloop", "asyncio"}:
        raise ConfigError(
            f"engine.event_loop: expected uvloop or asyncio, got {settings.engine.event_loop!r}"
        )
    if settings.engine.role not in {"all", "decide", "deliver", "http"}:
        raise ConfigError(
            f"engine.role: expected all, decide, deliver or http, got {settings.engine.role!r}"
        )
    if not 0 <= settings.nats.partitions <= 64:
        raise ConfigError(f"nats.partitions: expected 0 to 64, got {settings.nats.partitions}")
    if not 3 <= settings.nats.lease_ttl <= 600:
        raise ConfigError(
            f"nats.lease_ttl: expected 3 to 600 seconds, got {settings.nats.lease_ttl:g}"
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
    feedback = settings.feedback
    if feedback.imap_tls not in IMAP_TLS_MODES:
        raise ConfigError(
            f"feedback.imap_tls: expected implicit, starttls or none, got {feedback.imap_tls!r}"
        )
    if feedback.imap_after not in IMAP_AFTER:
        raise ConfigError(
            f"feedback.imap_after: expected seen, move or delete, got {feedback.imap_after!r}"
        )
    if feedback.imap_host and not feedback.imap_user:
        raise ConfigError("feedback.imap_user: required when feedback.imap_host is set")
    if not 0 <= feedback.imap_port <= 65535:
        raise ConfigError(f"feedback.imap_port: out of range: {feedback.imap_port}")
    if feedback.imap_interval <= 0 or feedback.imap_timeout <= 0 or feedback.imap_batch < 1:
        raise ConfigError(
            "feedback: imap_interval and imap_timeout must be positive, imap_batch at least 1"
        )
    validate_alerts(settings.alerts)
    validate_pacing(settings)
    if settings.smtp.url and not settings.smtp.url.startswith(("smtp://", "smtps://")):
        raise ConfigError(
            f"smtp.url: expected smtp://HOST:PORT or smtps://HOST:PORT, got {settings.smtp.url!r}"
        )
    # Routes and delivery timings are checked where they are built (no passwords needed).
    from engine.deliver.routes import check_settings

    check_settings(settings)


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


def validate_pacing(settings: Settings) -> None:
    """Caps and quiet hours in range, with the setting's name in the error."""
    from engine.pacing.quiet import QuietHours, zone_named

    for name in ("per_day", "per_week"):
        value = getattr(settings.caps, name)
        if value < 0:
            raise ConfigError(f"caps.{name}: expected 0 (no cap) or more mails, got {value!r}")
    if settings.quiet.hours:
        try:
            QuietHours.parse(settings.quiet.hours)
        except ValueError as exc:
            raise ConfigError(f"quiet.hours: {exc}") from None
    if zone_named(settings.quiet.timezone) is None:
        raise ConfigError(
            f"quiet.timezone: not an IANA timezone name: {settings.quiet.timezone!r}"
            " (e.g. Europe/Berlin, America/New_York, UTC)"
        )


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
