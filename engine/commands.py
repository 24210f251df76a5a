"""The CLI's commands other than ``run``: each returns an exit code and prints for people."""

from __future__ import annotations

import csv
import json
import re
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from engine.config import Settings
from engine.errors import ConfigError, StoreError
from engine.store import Store, open_store, schema

BATCH = 2000


def _store(settings: Settings) -> Store:
    """The store, migrated, with the starter library in a fresh database (as ``run`` does)."""
    from engine.library import seed_library

    store = open_store(settings.database_url(), durability=settings.engine.durability)
    seed_library(store, None, time.time())
    return store


def open_migrated(settings: Settings) -> Store:
    """The store, migrated, with the starter library in a fresh database."""
    return _store(settings)


def migrate(settings: Settings) -> int:
    store = _store(settings)
    store.dispose()
    print(f"Database is up to date, with the starter library: {store.url}")
    return 0


# ---------------------------------------------------------------- config show


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(type(value).__name__)


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def to_toml(data: dict[str, Any], prefix: str = "") -> str:
    """A small TOML writer for the settings (tables of scalars and nested tables)."""
    scalars = [(k, v) for k, v in data.items() if not isinstance(v, dict)]
    tables = [(k, v) for k, v in data.items() if isinstance(v, dict)]
    out: list[str] = []
    if prefix and (scalars or not tables):
        out.append(f"[{prefix}]")
    out += [f"{k} = {_toml_value(v)}" for k, v in scalars]
    for key, table in tables:
        # A key that is not a bare key (a DKIM domain has dots) is quoted, or it would nest.
        bare = key if _BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)
        name = f"{prefix}.{bare}" if prefix else bare
        if out:
            out.append("")
        out.append(to_toml(table, name).rstrip("\n"))
    return "\n".join(out) + "\n"


def config_show(settings: Settings) -> int:
    data = settings.to_dict(redact=True)
    data["engine"]["data_dir"] = str(settings.data_path)
    data["database"]["effective_url"] = _safe_url(settings.database_url())
    sys.stdout.write(to_toml(data))
    return 0


def _safe_url(url: str) -> str:
    return sa.engine.make_url(url).render_as_string(hide_password=True)


# ---------------------------------------------------------------- routes


def routes_list(settings: Settings) -> int:
    """Every route: where it sends, TLS, login and limits; never a password."""
    from engine.deliver.credentials import has_password
    from engine.deliver.routes import (
        DEFAULT_ROUTE,
        keyring_service,
        known_routes,
        limits_for,
        relay_for,
    )

    print(f"{'ROUTE':16}  {'RELAY':32}  {'TLS':8}  {'LOGIN':24}  LIMITS")
    for name, route in known_routes(settings).items():
        if name == DEFAULT_ROUTE:
            relay = settings.smtp.url.split("@")[-1] or "the local capture inbox"
            tls, login = "-", ""
        else:
            config = relay_for(name, route)
            relay = config.address
            tls = config.tls + ("" if config.validate_certs else " (no verify)")
            login = ""
            if route.username:
                stored = has_password(keyring_service(name, route), route.username)
                login = f"{route.username} ({'password set' if stored else 'NO PASSWORD'})"
        print(
            f"{name:16}  {relay:32}  {tls:8}  {login:24}  {_limits_text(limits_for(name, route))}"
        )
    return 0


def _limits_text(limits: Any) -> str:
    parts = []
    rate = limits.rate
    for label, value in (("/s", rate.per_second), ("/min", rate.per_minute), ("/h", rate.per_hour)):
        if value:
            parts.append(f"{value:g}{label}")
    if limits.domain_concurrency:
        parts.append(f"{limits.domain_concurrency} per domain")
    for domain, rule in sorted(limits.domains.items()):
        bits = []
        if rule.concurrency is not None:
            bits.append(f"{rule.concurrency} at once")
        if rule.rate is not None and rule.rate.per_second:
            bits.append(f"{rule.rate.per_second:g}/s")
        parts.append(f"{domain}: {', '.join(bits) or 'route defaults'}")
    return "; ".join(parts) or "no limits"


def routes_set_password(settings: Settings, name: str, *, stdin: Any = None) -> int:
    """Store a route's password in the OS keyring: asked for on a terminal, else one line of
    standard input (so scripts can pipe it; it is never an argument, which ps would show)."""
    import getpass

    from engine.deliver.credentials import require_backend, store_password
    from engine.deliver.routes import DEFAULT_ROUTE, keyring_service

    route = settings.routes.get(name)
    if name == DEFAULT_ROUTE or route is None:
        known = ", ".join(n for n in settings.routes if n != DEFAULT_ROUTE) or "none"
        raise ConfigError(f"no route named {name!r} in the settings (named routes: {known})")
    if not route.username:
        raise ConfigError(f"routes.{name}.username is not set: set it before storing a password")
    require_backend()  # before asking, not after
    source = stdin if stdin is not None else sys.stdin
    if source.isatty():
        password = getpass.getpass(f"Password for {route.username} on route {name}: ")
    else:
        password = source.readline().rstrip("\r\n")
    if not password:
        raise ConfigError("no password given; nothing stored")
    service = keyring_service(name, route)
    store_password(name, service, route.username, password)
    print(
        f"Stored the password for {route.username} on route {name} in the OS keyring ({service})."
    )
    return 0


# ---------------------------------------------------------------- inbox


def inbox_list(settings: Settings, *, limit: int, search: str | None) -> int:
    from engine.inbox import list_messages

    entries = list_messages(settings.data_path / "inbox", limit=limit, query=search)
    if not entries:
        print("The inbox is empty." if not search else f"No messages match {search!r}.")
        return 0
    print(f"{'ID':>8}  {'RECEIVED (UTC)':19}  {'TO':32}  SUBJECT")
    for e in entries:
        when = datetime.fromtimestamp(e.received_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        to = ", ".join(e.rcpt_tos)[:32]
        print(f"{e.id:>8}  {when:19}  {to:32}  {e.subject}")
    return 0


def inbox_show(settings: Settings, ident: str, *, raw: bool) -> int:
    import email
    import email.policy

    from engine.inbox import get_message

    _entry, data = get_message(settings.data_path / "inbox", ident)
    if raw:
        sys.stdout.write(data.decode("utf-8", "replace"))
        return 0
    msg = email.message_from_bytes(data, policy=email.policy.default)
    for name in ("From", "To", "Subject", "Date", "Message-ID", "List-Unsubscribe"):
        if msg[name]:
            print(f"{name}: {msg[name]}")
    body = msg.get_body(preferencelist=("plain",))
    print()
    print(body.get_content() if body is not None else "(no text part)")
    return 0


# ---------------------------------------------------------------- demo


async def demo(
    settings: Settings, *, rate: float, duration: float | None, nats: str | None, seed: int
) -> int:
    from engine import bus
    from engine.access import SERVICE_USER
    from engine.demo import SAFE_DOMAINS, DemoShop, run_demo
    from engine.node import SERVICE_SECRET, Connection, read_secret_file

    if rate <= 0:
        raise ConfigError("--rate must be above 0 events per second")
    url, token = nats, settings.nats.token
    user, password = settings.nats.user, settings.nats.password
    if not url:
        conn = Connection.load(settings.data_path)
        if conn is None:
            raise ConfigError(
                f"no running local engine found in {settings.data_path}; "
                "start one with 'campaign-engine run' or pass --nats URL"
            )
        # Events are the engines' subjects: publish as the local stack's engine user.
        url, token = conn.nats_url, ""
        user = SERVICE_USER
        password = read_secret_file(settings.data_path / SERVICE_SECRET, create=False)
    nc = await bus.connect(
        url, token=token or None, user=user or None, password=password, name="campaign-demo"
    )
    try:
        print(f"Publishing simulated shop traffic at {rate:g} events/s to {url} ...", flush=True)
        # Reserved domains only: this command cannot know whether the engine's route is the
        # local inbox or a real relay, and invented addresses at real domains could reach people.
        shop = DemoShop(seed=seed, domains=SAFE_DOMAINS)
        stats = await run_demo(nc.jetstream(), rate=rate, duration=duration, shop=shop)
        print(f"Published {stats.published:,} events ({stats.achieved_rate:,.0f}/s).")
    finally:
        await nc.drain()
    return 0


# ---------------------------------------------------------------- import / export


def _progress(label: str, done: int, started: float, *, final: bool = False) -> None:
    elapsed = max(time.monotonic() - started, 1e-9)
    end = "\n" if final else "\r"
    print(f"{label}: {done:,} ({done / elapsed:,.0f}/s)", end=end, file=sys.stderr, flush=True)


def _chunks(rows: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _read_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            for line, row in enumerate(csv.DictReader(handle), start=2):
                yield line, {k: v for k, v in row.items() if v not in (None, "")}
        return
    with path.open("rb") as handle:
        for line, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{line}: not valid JSON: {exc}") from exc
            if not isinstance(record, dict):
                raise ConfigError(f"{path}:{line}: expected a JSON object per line")
            yield line, record


def contact_row(record: dict[str, Any], where: str, now: float) -> dict[str, Any]:
    ident = record.get("id") or record.get("userId") or record.get("user_id")
    if not isinstance(ident, str | int) or not str(ident).strip():
        raise ConfigError(f"{where}: a contact needs an id (or userId)")
    traits = record.get("traits") or {}
    if not isinstance(traits, dict):
        raise ConfigError(f"{where}: traits must be an object")
    extra = {
        k: v
        for k, v in record.items()
        if k not in {"id", "userId", "user_id", "traits", "email", "timezone", "consent"}
    }
    traits = {**extra, **traits}
    email = record.get("email") or traits.get("email")
    if email is not None and (not isinstance(email, str) or "@" not in email):
        raise ConfigError(f"{where}: email {email!r} is not an email address")
    if email:
        traits["email"] = email
    return {
        "id": str(ident).strip(),
        "email": email.strip().lower() if isinstance(email, str) else None,
        "traits": traits,
        "timezone": record.get("timezone"),
        "consent": record.get("consent") or {},
        "unsubscribed_at": None,
        "first_seen_at": now,
        "last_seen_at": now,
        "updated_at": now,
    }


def import_contacts(store: Store, path: Path) -> int:
    """Upsert contacts from JSON lines or CSV; validates everything before writing anything.

    A record's ``consent`` is applied per purpose (a newer statement already in effect wins)
    and kept in the consent history with method ``import`` and source ``import FILE``; the
    segments that read consent are re-evaluated for those contacts."""
    from engine.consent import ConsentChange, imported_changes, record_changes

    now = time.time()
    rows: list[dict[str, Any]] = []
    consent: dict[str, list[ConsentChange]] = {}
    for line, rec in _read_records(path):
        where = f"{path}:{line}"
        row = contact_row(rec, where, now)
        try:
            stated = imported_changes(rec.get("consent"), where, now, f"import {path.name}")
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        row["consent"] = {c.purpose: c.entry() for c in stated}
        consent.setdefault(row["id"], []).extend(stated)
        rows.append(row)
    started = time.monotonic()
    done = 0
    stmt = store.upsert(
        schema.contacts, index=["id"], update=["email", "traits", "timezone", "updated_at"]
    )
    with store.begin() as conn:  # all or nothing
        for chunk in _chunks(rows, BATCH):
            conn.execute(stmt, chunk)
            done += len(chunk)
            _progress("contacts", done, started)
        changed = record_changes(conn, consent, now)
        if changed:
            _refresh_consent_segments(store, conn, changed, now)
    _progress("contacts", done, started, final=True)
    if changed:
        print(f"consent: changed for {len(changed):,} contact(s)", file=sys.stderr)
    return done


def _refresh_consent_segments(store: Store, conn: Any, contact_ids: set[str], now: float) -> None:
    from engine.segments.definitions import load_segments
    from engine.segments.membership import SegmentIndex, refresh

    index = SegmentIndex.build(load_segments(store))
    if index.by_consent:
        refresh(conn, index, {cid: index.by_consent for cid in contact_ids}, now)


def import_suppressions(store: Store, path: Path) -> int:
    now = time.time()
    rows = []
    for line, rec in _read_records(path):
        address = rec.get("address") or rec.get("email")
        if not isinstance(address, str) or "@" not in address:
            raise ConfigError(f"{path}:{line}: a suppression needs an address")
        scope = rec.get("scope", "all")
        if scope not in {"all", "marketing"}:
            raise ConfigError(f"{path}:{line}: scope must be 'all' or 'marketing', got {scope!r}")
        rows.append(
            {
                "address": address.strip().lower(),
                "scope": scope,
                "reason": str(rec.get("reason", "manual"))[:40],
                "source": f"import {path.name}",
                "created_at": now,
            }
        )
    with store.begin() as conn:
        for chunk in _chunks(rows, BATCH):
            conn.execute(store.insert_ignore(schema.suppressions, index=["address"]), chunk)
    print(f"suppressions: {len(rows):,}", file=sys.stderr)
    return len(rows)


def import_path(settings: Settings, path: Path) -> int:
    from engine.library import import_templates, import_workflows

    if not path.exists():
        raise ConfigError(f"nothing to import: {path} does not exist")
    store = _store(settings)
    try:
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        template_dirs = sorted({f.parent for f in files if f.name == "template.toml"})
        workflow_files = [
            f
            for f in files
            if (f.suffix == ".toml" and f.name != "template.toml" and f.parent.name != "emails")
            or (f.suffix == ".json" and f.parent.name == "workflows")
        ]
        known = {"contacts", "suppressions"}
        data_files = [f for f in files if f.stem in known and f.suffix in {".jsonl", ".csv"}]
        if not (template_dirs or workflow_files or data_files):
            raise ConfigError(
                f"{path}: found nothing to import (expected workflow .toml files, template folders "
                "with template.toml, contacts.jsonl/.csv or suppressions.jsonl/.csv)"
            )
        from engine.deliver.routes import known_routes

        if template_dirs:
            n = import_templates(store, template_dirs, time.time(), routes=known_routes(settings))
            print(f"templates: {n} imported")
        if workflow_files:
            n = import_workflows(store, workflow_files, time.time(), routes=known_routes(settings))
            print(f"workflows: {n} imported")
        for f in data_files:
            if f.stem == "contacts":
                import_contacts(store, f)
            else:
                import_suppressions(store, f)
    finally:
        store.dispose()
    return 0


def export_dir(settings: Settings, directory: Path) -> int:
    from engine.library import export_templates, export_workflows

    store = _store(settings)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        n_wf = export_workflows(store, directory / "workflows")
        n_tpl = export_templates(store, directory / "emails")
        counts = {"workflows": n_wf, "templates": n_tpl}
        for name, table, order in (
            ("contacts", schema.contacts, schema.contacts.c.id),
            ("suppressions", schema.suppressions, schema.suppressions.c.address),
            ("ledger", schema.intents, schema.intents.c.id),
            ("audit", schema.audit_log, schema.audit_log.c.id),
        ):
            counts[name] = _export_table(store, table, order, directory / f"{name}.jsonl", name)
    except OSError as exc:
        raise StoreError(f"cannot write the export to {directory}: {exc}") from exc
    finally:
        store.dispose()
    print("Exported " + ", ".join(f"{v:,} {k}" for k, v in counts.items()) + f" to {directory}")
    return 0


def _export_table(store: Store, table: sa.Table, order: Any, path: Path, label: str) -> int:
    started = time.monotonic()
    done = 0
    with store.engine.connect() as conn, path.open("wb") as out:
        result = conn.execution_options(stream_results=True, yield_per=BATCH).execute(
            sa.select(table).order_by(order)
        )
        for row in result:
            record = {str(k): v for k, v in row._mapping.items()}  # keys are quoted_name
            out.write(orjson.dumps(record, default=str) + b"\n")
            done += 1
            if done % BATCH == 0:
                _progress(label, done, started)
    _progress(label, done, started, final=True)
    return done


# ---------------------------------------------------------------- dkim keygen


def dkim_keygen(
    settings: Settings, domain: str, selector: str, *, out: Path | None = None, bits: int = 2048
) -> int:
    """Write a new private key (mode 0600, never over an existing file) and print the DNS
    record to publish and the settings that use the key. The key itself is not printed."""
    import os

    from engine.signing import dns_name, generate_key

    domain = domain.strip().lower().rstrip(".")
    pem, record = generate_key(domain, selector, bits)
    path = out or settings.data_path / "dkim" / f"{domain}.{selector}.pem"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path} exists already; choose another --out or selector") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    # Zone files hold at most 255 characters per quoted string; DNS joins them.
    chunks = " ".join(f'"{record[i : i + 255]}"' for i in range(0, len(record), 255))
    print(f"Private key written to {path} (mode 0600). Keep it secret.")
    print()
    print("Publish this DNS TXT record:")
    print(f"{dns_name(domain, selector)}. IN TXT ( {chunks} )")
    print()
    print("And add to the engine's settings:")
    print(f'[dkim."{domain}"]')
    print(f'selector = "{selector}"')
    print(f'key = "file:{path}"')
    return 0
