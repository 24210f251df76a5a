"""``campaign-engine``: run the engine, migrate, import/export, users, the inbox, demo traffic.

Every error reaches the user as one plain sentence on stderr and a non-zero exit code; tracebacks
are for ``--debug``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import orjson

from engine.access import ROLES
from engine.config import Settings, load_settings, settings_from_data
from engine.errors import EngineError

log = logging.getLogger("engine")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML settings file")
    parser.add_argument("--data-dir", metavar="DIR", help="where the local stack keeps its data")
    parser.add_argument("--database", metavar="URL", help="e.g. postgresql://host/db")
    parser.add_argument("--debug", action="store_true", help="verbose logs and tracebacks")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="campaign-engine",
        description="Real-time event-triggered email: the headless engine.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run", help="start the engine (embedded NATS, SQLite and inbox by default)"
    )
    _common(run)
    run.add_argument(
        "--http", metavar="HOST:PORT", help="HTTP API address (default 127.0.0.1:8640)"
    )
    run.add_argument(
        "--nats", metavar="URL", help="use this NATS (comma-separated) instead of embedding one"
    )
    run.add_argument("--smtp", metavar="URL", help="default route relay, smtp://HOST:PORT")
    run.add_argument("--write-key", metavar="KEY", help="Segment write key for the HTTP API")
    run.add_argument("--node", metavar="NAME", help="this node's name (default 'local')")
    run.add_argument("--role", choices=["all", "decide", "deliver", "http"])
    run.add_argument("--durability", choices=["process", "power"])
    # Internal: a deliver process started by its node reads the node's settings as JSON here.
    run.add_argument("--settings-stdin", action="store_true", help=argparse.SUPPRESS)
    run.add_argument(
        "--demo-rate",
        type=float,
        default=0.0,
        metavar="N",
        help="also publish simulated shop traffic at N events/s",
    )

    mig = sub.add_parser("migrate", help="create or upgrade the database schema")
    _common(mig)

    imp = sub.add_parser("import", help="import workflows, templates, contacts or events from PATH")
    _common(imp)
    imp.add_argument("path", metavar="PATH")

    exp = sub.add_parser(
        "export", help="export workflows, templates, contacts and the ledger to DIR"
    )
    _common(exp)
    exp.add_argument("directory", metavar="DIR")

    cfg = sub.add_parser("config", help="show the effective configuration (secrets redacted)")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    show = cfg_sub.add_parser("show", help="print the effective settings as TOML")
    _common(show)

    routes = sub.add_parser("routes", help="named SMTP routes: list them, store passwords")
    routes_sub = routes.add_subparsers(dest="routes_command", required=True, metavar="ACTION")
    rlist = routes_sub.add_parser("list", help="show every route (never a password)")
    _common(rlist)
    rpass = routes_sub.add_parser(
        "set-password",
        help="store a route's password in the OS keyring (asked for, or read from stdin)",
    )
    _common(rpass)
    rpass.add_argument("name", metavar="NAME")

    users = sub.add_parser("users", help="who may use the control API, and in which role")
    users_sub = users.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    uadd = users_sub.add_parser("add", help="add a user (viewer, marketer, support or admin)")
    _common(uadd)
    uadd.add_argument("name", metavar="NAME")
    # dest: "role" is the engine's own role (settings_from reads it).
    uadd.add_argument(
        "--role",
        dest="user_role",
        required=True,
        choices=["viewer", "marketer", "support", "admin"],
    )
    how = uadd.add_mutually_exclusive_group()
    how.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    how.add_argument(
        "--nkey",
        nargs="?",
        const="",
        metavar="PUBLIC_KEY",
        help="sign in with an nkey: the user's public key, or none to generate a pair",
    )
    ulist = users_sub.add_parser("list", help="show every user and role (never a secret)")
    _common(ulist)
    urole = users_sub.add_parser("set-role", help="change a user's role")
    _common(urole)
    urole.add_argument("name", metavar="NAME")
    urole.add_argument("user_role", metavar="ROLE", choices=ROLES, help=", ".join(ROLES))
    urm = users_sub.add_parser("remove", help="remove a user")
    _common(urm)
    urm.add_argument("name", metavar="NAME")
    uconf = users_sub.add_parser(
        "nats-config", help="print the authorization block for an external nats-server"
    )
    _common(uconf)

    inbox = sub.add_parser("inbox", help="the local capture inbox")
    inbox_sub = inbox.add_subparsers(dest="inbox_command", required=True, metavar="ACTION")
    lst = inbox_sub.add_parser("list", help="list received messages, newest first")
    _common(lst)
    lst.add_argument("--limit", type=int, default=20)
    lst.add_argument(
        "--search", metavar="TEXT", help="only messages whose subject or address match"
    )
    shw = inbox_sub.add_parser("show", help="print one message")
    _common(shw)
    shw.add_argument("id", metavar="ID")
    shw.add_argument("--raw", action="store_true", help="print the raw RFC 5322 message")

    dkim = sub.add_parser("dkim", help="DKIM signing keys")
    dkim_sub = dkim.add_subparsers(dest="dkim_command", required=True, metavar="ACTION")
    keygen = dkim_sub.add_parser(
        "keygen", help="make a signing key for DOMAIN and print the DNS TXT record to publish"
    )
    _common(keygen)
    keygen.add_argument("domain", metavar="DOMAIN", help="the sending (From) domain")
    keygen.add_argument("selector", metavar="SELECTOR", help="e.g. s2026")
    keygen.add_argument(
        "--out",
        metavar="FILE",
        help="private key file to write (mode 0600; default <data_dir>/dkim/DOMAIN.SELECTOR.pem)",
    )
    keygen.add_argument("--bits", type=int, default=2048, help="RSA key size (default 2048)")

    bc = sub.add_parser("broadcast", help="send a template to a segment, now or at a set time")
    bc_sub = bc.add_subparsers(dest="broadcast_command", required=True, metavar="ACTION")
    bcreate = bc_sub.add_parser("create", help="schedule a broadcast (--preview: count only)")
    _common(bcreate)
    bcreate.add_argument("--template", required=True, metavar="ID", help="email template id")
    bcreate.add_argument("--segment", required=True, metavar="ID", help="segment id")
    bcreate.add_argument(
        "--at", metavar="TIME", help="ISO 8601 with an offset, e.g. 2027-01-15T09:00:00+01:00"
    )
    bcreate.add_argument("--name", default="", help="a name for people")
    bcreate.add_argument("--category", choices=["marketing", "transactional"], default="marketing")
    bcreate.add_argument("--route", default="default", help="the route to send through")
    bcreate.add_argument(
        "--priority", default="low", help="high, normal, low or 0-100 (when a cap binds)"
    )
    bcreate.add_argument(
        "--preview", action="store_true", help="say what it would do; change nothing"
    )
    blist = bc_sub.add_parser("list", help="broadcasts with their progress, newest first")
    _common(blist)
    blist.add_argument("--limit", type=int, default=20)
    bcancel = bc_sub.add_parser("cancel", help="stop a broadcast and cancel its pending emails")
    _common(bcancel)
    bcancel.add_argument("id", metavar="ID")
    bcancel.add_argument("--reason", required=True, help="why (kept in the audit log)")
    bcancel.add_argument("--preview", action="store_true", help="count only; change nothing")
    offers = sub.add_parser("offers", help="personalized offers: code pools and verification")
    offers_sub = offers.add_subparsers(dest="offers_command", required=True, metavar="ACTION")
    olist = offers_sub.add_parser("list", help="every offer: kind, values, codes issued and left")
    _common(olist)
    oimp = offers_sub.add_parser("import", help="add the codes in FILE to the pool of offer NAME")
    _common(oimp)
    oimp.add_argument("name", metavar="NAME")
    oimp.add_argument("file", metavar="FILE", help="one code per line (or the first CSV column)")
    over = offers_sub.add_parser(
        "verify", help="is CODE one we issued: to whom, worth what (exit 1 if not)"
    )
    _common(over)
    over.add_argument("code", metavar="CODE")

    dry = sub.add_parser(
        "dry-run",
        help="run a draft workflow or segment over the recorded events, sending nothing",
    )
    _common(dry)
    draft = dry.add_mutually_exclusive_group(required=True)
    draft.add_argument("--workflow", metavar="FILE", help="a workflow file (.toml or .json)")
    draft.add_argument("--segment", metavar="FILE", help="a file holding a segment's text")
    dry.add_argument(
        "--since", default="24h", metavar="DURATION", help="the window, e.g. 1h, 24h, 7d"
    )
    dry.add_argument(
        "--max-events",
        type=int,
        default=200_000,
        metavar="N",
        help="refuse a window holding more recorded events than this (default 200,000)",
    )
    dry.add_argument("--nats", metavar="URL", help="NATS URL (default: the local stack's)")
    dry.add_argument("--json", action="store_true", help="print the whole result as JSON")
    clv = sub.add_parser("clv", help="customer lifetime value from each contact's orders")
    clv_sub = clv.add_subparsers(dest="clv_command", required=True, metavar="ACTION")
    crebuild = clv_sub.add_parser(
        "rebuild", help="recompute every contact's value from the stored orders (with progress)"
    )
    _common(crebuild)
    crebuild.add_argument("--quiet", action="store_true", help="no progress on stderr")
    cshow = clv_sub.add_parser("show", help="one contact's lifetime value and orders")
    _common(cshow)
    cshow.add_argument("contact", metavar="CONTACT")

    demo = sub.add_parser("demo", help="publish simulated shop traffic to a running engine")
    _common(demo)
    demo.add_argument("--rate", type=float, default=50.0, metavar="N", help="events per second")
    demo.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="S",
        help="seconds to run (default: until Ctrl-C)",
    )
    demo.add_argument("--nats", metavar="URL", help="NATS URL (default: the local stack's)")
    demo.add_argument("--seed", type=int, default=1)
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    overrides: dict[str, dict[str, Any]] = {
        "engine": {
            "data_dir": getattr(args, "data_dir", None),
            "node": getattr(args, "node", None),
            "role": getattr(args, "role", None),
            "durability": getattr(args, "durability", None),
        },
        "database": {"url": getattr(args, "database", None)},
        "http": {"listen": getattr(args, "http", None)},
        "nats": {"url": getattr(args, "nats", None)},
        "smtp": {"url": getattr(args, "smtp", None)},
        "ingest": {"write_key": getattr(args, "write_key", None)},
    }
    cleaned = {s: {k: v for k, v in vals.items() if v} for s, vals in overrides.items()}
    if getattr(args, "settings_stdin", False):
        return settings_from_data(orjson.loads(sys.stdin.buffer.read()), "parent node")
    return load_settings(args.config, overrides=cleaned)


def _run_async(main: Callable[[], Any], event_loop: str = "uvloop") -> Any:
    """Run a coroutine with Ctrl-C/SIGTERM turned into a clean stop (``asyncio.CancelledError``)."""

    async def runner() -> Any:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            return await main()
        except asyncio.CancelledError:
            return 0

    return event_loop_runner(event_loop)(runner())


def event_loop_runner(event_loop: str) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """``uvloop.run`` for "uvloop" where uvloop is installed (not on Windows), else
    ``asyncio.run``. The engine is one event loop carrying ingest, decide and deliver;
    uvloop's cheaper loop turns and socket I/O cut its CPU per email (``engine.event_loop``)."""
    if event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run
    return asyncio.run


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not args.debug:  # a migration check at every start is not news
        logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        settings = settings_from(args)
        return int(dispatch(args, settings) or 0)
    except EngineError as exc:
        if args.debug:
            raise
        print(f"campaign-engine: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def dispatch(args: argparse.Namespace, settings: Settings) -> int:
    from engine import commands

    if args.command == "run":
        from engine.node import run_node

        return int(
            _run_async(
                lambda: run_node(settings, demo_rate=args.demo_rate), settings.engine.event_loop
            )
            or 0
        )
    if args.command == "migrate":
        return commands.migrate(settings)
    if args.command == "import":
        return commands.import_path(settings, Path(args.path))
    if args.command == "export":
        return commands.export_dir(settings, Path(args.directory))
    if args.command == "config":
        return commands.config_show(settings)
    if args.command == "routes":
        if args.routes_command == "list":
            return commands.routes_list(settings)
        return commands.routes_set_password(settings, args.name)
    if args.command == "users":
        from engine import user_commands as users

        if args.users_command == "add":
            return users.users_add(
                settings,
                args.name,
                args.user_role,
                password_stdin=args.password_stdin,
                nkey=args.nkey,
            )
        if args.users_command == "list":
            return users.users_list(settings)
        if args.users_command == "set-role":
            return users.users_set_role(settings, args.name, args.user_role)
        if args.users_command == "remove":
            return users.users_remove(settings, args.name)
        return users.users_nats_config(settings)
    if args.command == "inbox":
        if args.inbox_command == "list":
            return commands.inbox_list(settings, limit=args.limit, search=args.search)
        return commands.inbox_show(settings, args.id, raw=args.raw)
    if args.command == "dkim":
        out = Path(args.out) if args.out else None
        return commands.dkim_keygen(settings, args.domain, args.selector, out=out, bits=args.bits)
    if args.command == "broadcast":
        from engine import broadcast_commands as bc

        if args.broadcast_command == "create":
            return bc.broadcast_create(
                settings,
                template=args.template,
                segment=args.segment,
                at=args.at,
                name=args.name,
                category=args.category,
                route=args.route,
                priority=args.priority,
                preview=args.preview,
            )
        if args.broadcast_command == "list":
            return bc.broadcast_list(settings, limit=args.limit)
        return bc.broadcast_cancel(settings, args.id, reason=args.reason, preview=args.preview)
    if args.command == "offers":
        from engine.offers import commands as offer_commands

        store = commands.open_migrated(settings)
        try:
            if args.offers_command == "import":
                return offer_commands.offers_import(store, settings, args.name, Path(args.file))
            if args.offers_command == "verify":
                return offer_commands.offers_verify(store, settings, args.code)
            return offer_commands.offers_list(store, settings)
        finally:
            store.dispose()
    if args.command == "dry-run":
        from engine.dry_run.commands import dry_run_command, read_draft
        from engine.dry_run.run import check_max_events

        definition, text = read_draft(
            Path(args.workflow) if args.workflow else None,
            Path(args.segment) if args.segment else None,
        )
        return int(
            _run_async(
                lambda: dry_run_command(
                    settings,
                    definition=definition,
                    text=text,
                    since=args.since,
                    max_events=check_max_events(args.max_events),
                    nats=args.nats,
                    as_json=args.json,
                ),
                "asyncio",
            )
            or 0
        )
    if args.command == "clv":
        from engine import clv_commands

        store = commands.open_migrated(settings)
        try:
            if args.clv_command == "rebuild":
                return clv_commands.clv_rebuild(store, quiet=args.quiet)
            return clv_commands.clv_show(store, args.contact)
        finally:
            store.dispose()
    if args.command == "demo":
        return int(
            _run_async(
                lambda: commands.demo(
                    settings, rate=args.rate, duration=args.duration, nats=args.nats, seed=args.seed
                )
            )
            or 0
        )
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
