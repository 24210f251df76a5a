"""Named routes from the settings: each ``[routes.NAME]`` becomes a relay and its limits.

Nothing here touches the network or the keyring: ``check_settings`` validates every route at
load time, ``route_specs`` builds them with a password lookup the caller provides (the node
reads the OS keyring, see ``credentials``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlsplit

from engine.config import ROUTE_RELAY_KEYS, RouteSettings, Settings
from engine.decide.workflow import DEFAULT_ROUTE as DEFAULT_ROUTE  # the name routes use
from engine.decide.workflow import SendStep, Workflow
from engine.deliver.limits import DomainRule, Rate, RouteLimits
from engine.deliver.policy import DeliveryTuning
from engine.deliver.relay import RelayConfig, TlsMode, is_loopback
from engine.errors import ConfigError
from engine.render.templates import TemplateSource

KEYRING_PREFIX = "campaign-console/route/"
_DEFAULT_PORTS = {"implicit": 465, "starttls": 587, "none": 25}

PasswordLookup = Callable[[str, str, str], str]  # (route, keyring service, username) -> password


@dataclass(frozen=True)
class RouteSpec:
    """What a route is built from: where it sends and how fast."""

    relay: RelayConfig
    limits: RouteLimits = field(default_factory=RouteLimits)


def keyring_service(name: str, route: RouteSettings) -> str:
    """The keyring "service" the route's password is stored under."""
    return route.keyring_service or f"{KEYRING_PREFIX}{name}"


def limits_for(name: str, route: RouteSettings) -> RouteLimits:
    """The route's limits; a ConfigError names the offending setting."""
    where = f"routes.{name}"
    try:
        rate = Rate(route.per_second, route.per_minute, route.per_hour, route.burst)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    try:
        domain_rate = Rate(route.domain_per_second, route.domain_per_minute, route.domain_per_hour)
    except ConfigError as exc:
        raise ConfigError(f"{where}: domain_{exc}") from None
    if route.domain_concurrency < 0:
        raise ConfigError(f"{where}.domain_concurrency must be 0 (no limit) or positive")
    rules: dict[str, DomainRule] = {}
    for domain, raw in route.domains.items():
        rule_rate = None
        if any(k in raw for k in ("per_second", "per_minute", "per_hour", "burst")):
            try:
                rule_rate = Rate(
                    float(raw.get("per_second", 0.0)),
                    int(raw.get("per_minute", 0)),
                    int(raw.get("per_hour", 0)),
                    float(raw.get("burst", 0.0)),
                )
            except ConfigError as exc:
                raise ConfigError(f'{where}.domains."{domain}": {exc}') from None
        concurrency = raw.get("concurrency")
        if concurrency is not None and int(concurrency) < 0:
            raise ConfigError(f'{where}.domains."{domain}".concurrency must be 0 or positive')
        rules[domain] = DomainRule(
            concurrency=None if concurrency is None else int(concurrency), rate=rule_rate
        )
    return RouteLimits(
        rate=rate,
        domain_concurrency=route.domain_concurrency,
        domain_rate=domain_rate,
        domains=rules,
    )


def relay_for(name: str, route: RouteSettings, password: str | None = None) -> RelayConfig:
    """The relay of a named route (``password`` from the keyring, None to only validate)."""
    where = f"routes.{name}"
    tls = route.tls
    host, port = route.host, route.port
    if route.url:
        if route.host:
            raise ConfigError(f"{where}: give url or host, not both")
        parts = urlsplit(route.url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ConfigError(
                f"{where}.url: expected smtp://HOST[:PORT] or smtps://HOST[:PORT], "
                f"got {route.url.split('@')[-1]!r}"
            )
        if parts.password is not None:
            raise ConfigError(
                f"{where}.url holds a password: remove it and store it in the OS keyring with "
                f"'campaign-engine routes set-password {name}'"
            )
        if parts.username or parts.query or parts.path not in ("", "/"):
            raise ConfigError(
                f"{where}.url: only smtp[s]://HOST[:PORT]; set username, tls, verify, ca_file "
                "and ehlo as settings of the route"
            )
        host = parts.hostname
        try:
            port = parts.port or port
        except ValueError as exc:
            raise ConfigError(f"{where}.url: bad port in {parts.netloc!r}") from exc
        if parts.scheme == "smtps":
            tls = "implicit"
    if not host:
        raise ConfigError(f'{where}: needs url = "smtp://HOST:PORT" or host = "HOST"')
    if tls not in _DEFAULT_PORTS:
        raise ConfigError(f"{where}.tls: expected starttls, implicit or none, got {tls!r}")
    if route.username and tls == "none" and not is_loopback(host):
        raise ConfigError(
            f"{where}.tls: a route with a username needs TLS (starttls or implicit); "
            f'tls = "none" sends the login in clear and is only allowed to a loopback host'
        )
    if password is not None and not route.username:
        raise ConfigError(f"{where}.username: a password is stored but no username is set")
    try:
        return RelayConfig(
            host=host,
            port=port or _DEFAULT_PORTS[tls],
            tls=cast(TlsMode, tls),
            timeout=route.timeout,
            connections=route.connections,
            username=route.username or None,
            password=password,
            validate_certs=route.verify,
            ca_file=route.ca_file or None,
            local_hostname=route.ehlo,
        )
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def check_settings(settings: Settings) -> None:
    """Validate every route and the delivery timings (no keyring needed)."""
    DeliveryTuning.from_settings(settings.delivery)
    for name, route in settings.routes.items():
        if name == DEFAULT_ROUTE:
            changed = sorted(
                key
                for key in ROUTE_RELAY_KEYS
                if getattr(route, key) != getattr(RouteSettings(), key)
            )
            if changed:
                raise ConfigError(
                    f"routes.default.{changed[0]}: the default route's relay is [smtp] url "
                    "(empty: the local capture inbox); [routes.default] may only set limits"
                )
        else:
            relay_for(name, route)
        limits_for(name, route)


def route_specs(
    settings: Settings, default_relay: RelayConfig, passwords: PasswordLookup | None = None
) -> dict[str, RouteSpec]:
    """Every route: the default one (``default_relay``) and each ``[routes.NAME]``.

    ``passwords`` is asked for each route with a username; without it such a route is a
    ConfigError (a login without a password would only fail later, at the relay).
    """
    default = settings.routes.get(DEFAULT_ROUTE, RouteSettings())
    specs = {DEFAULT_ROUTE: RouteSpec(default_relay, limits_for(DEFAULT_ROUTE, default))}
    for name, route in settings.routes.items():
        if name == DEFAULT_ROUTE:
            continue
        password = None
        if route.username:
            if passwords is None:
                raise ConfigError(f"routes.{name}: has a username but no password lookup")
            password = passwords(name, keyring_service(name, route), route.username)
        specs[name] = RouteSpec(relay_for(name, route, password), limits_for(name, route))
    return specs


def describe(name: str, spec: RouteSpec) -> dict[str, object]:
    """A route for listing: where it sends and its limits, never a secret."""
    relay = spec.relay
    return {
        "name": name,
        "address": relay.address,
        "tls": relay.tls,
        "verify": relay.validate_certs,
        "username": relay.username or "",
        "connections": relay.connections,
        "timeout": relay.timeout,
        "limits": spec.limits.as_dict(),
    }


def known_routes(settings: Settings) -> Mapping[str, RouteSettings]:
    """Every route name a workflow may use (the default one included)."""
    return {DEFAULT_ROUTE: settings.routes.get(DEFAULT_ROUTE, RouteSettings()), **settings.routes}


def unknown_routes(workflows: Iterable[Workflow], known: Collection[str]) -> list[str]:
    """A sentence for every send step that names a route not in ``known``."""
    names = ", ".join(sorted(known))
    return [
        f"{wf.source}: workflow {wf.id!r} step {step.id!r}: route {step.route!r} is not "
        f"configured (routes: {names}; add [routes.{step.route}] to the settings)"
        for wf in workflows
        for step in wf.steps
        if isinstance(step, SendStep) and step.route is not None and step.route not in known
    ]


def unknown_template_routes(
    templates: Iterable[TemplateSource] | Mapping[str, str], known: Collection[str]
) -> list[str]:
    """A sentence for every template that names a route not in ``known`` (``templates``: the
    sources, or template id -> route)."""
    if isinstance(templates, Mapping):
        named = sorted(templates.items())
    else:
        named = [(t.id, t.route) for t in templates if t.route is not None]
    names = ", ".join(sorted(known))
    return [
        f"template {template!r}: route {route!r} is not configured (routes: {names}; "
        f"add [routes.{route}] to the settings)"
        for template, route in named
        if route not in known
    ]
