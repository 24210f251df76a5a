"""Who may do what: the roles, the one table of control verbs, and the NATS permissions that
make the user named in a control subject impossible to forge.

A control request travels on ``control.<user>.<node>.<verb>``. NATS lets each user publish only
under ``control.<own name>.>`` (see :func:`nats_permissions`), so the subject's user is the
signed-in user; the engine takes the actor from there (never from the body), looks up the
user's role and checks it against :data:`VERBS` before any handler runs. A verb missing from
the table is refused: a new verb is closed until someone decides who may call it.

Roles are not a ladder: marketers and support staff each change their own things, both read
contact data, and viewers only watch. Admin may do everything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.errors import EngineError

VIEWER = "viewer"
MARKETER = "marketer"
SUPPORT = "support"
ADMIN = "admin"
ROLES = (VIEWER, MARKETER, SUPPORT, ADMIN)

LOCAL_ADMIN = "admin"
"""The user the local stack generates (loopback only; its password in the data directory)."""

SERVICE_USER = "engine"
"""The engines' own NATS user: every subject, but only the viewer's verbs on the control API
(a parent node pings its deliver processes)."""

USER_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
"""A user name is one NATS subject token: lower-case letters, digits, '-' and '_'."""


class AccessDenied(EngineError, PermissionError):
    """A control request outside the user's role; the message says which role it needs."""


@dataclass(frozen=True)
class VerbAccess:
    """Who may call one verb (admin always may) and whether it changes anything."""

    what: str  # for refusals: "<role> role needed to <what>"
    roles: frozenset[str]
    mutates: bool


def _watch(what: str) -> VerbAccess:
    return VerbAccess(what, frozenset(ROLES), mutates=False)


def _read(what: str, *roles: str) -> VerbAccess:
    return VerbAccess(what, frozenset((*roles, ADMIN)), mutates=False)


def _change(what: str, *roles: str) -> VerbAccess:
    return VerbAccess(what, frozenset((*roles, ADMIN)), mutates=True)


VERBS: dict[str, VerbAccess] = {
    # Watching: every role.
    "ping": _watch("check an engine"),
    "whoami": _watch("see who you are"),
    "metrics": _watch("read metrics"),
    "ledger.summary": _watch("read the ledger summary"),
    "deliverability.summary": _watch("read deliverability"),
    "audit.list": _watch("read the audit log"),
    "alerts.list": _watch("read alerts"),
    "alerts.rules": _watch("read alert rules"),
    "demo.status": _watch("see the demo traffic"),
    "routes.list": _watch("list routes"),
    "queues.list": _watch("list queues"),
    "segments.list": _watch("list segments"),
    "segments.get": _watch("read a segment"),
    "segments.count": _watch("count a segment"),
    "segments.history": _watch("read a segment's history"),
    "segments.build_status": _watch("see segment builds"),
    "templates.list": _watch("list templates"),
    "templates.get": _watch("read a template"),
    "templates.versions": _watch("read a template's versions"),
    "templates.diff": _watch("compare template versions"),
    "workflows.list": _watch("list workflows"),
    "workflows.get": _watch("read a workflow"),
    "workflows.versions": _watch("read a workflow's versions"),
    "workflows.validate": _watch("check a draft workflow"),
    "workflows.step_counts": _watch("read a workflow's step counts"),
    "broadcasts.list": _watch("list broadcasts"),
    "conversions.summary": _watch("read conversions"),
    "experiments.results": _watch("read experiment results"),
    "offers.list": _watch("list offers"),
    # Contact data and message contents: the roles that work with contacts.
    "inbox.list": _read("list captured mail", MARKETER, SUPPORT),
    "inbox.show": _read("read captured mail", MARKETER, SUPPORT),
    "segments.sample": _read("see a segment's members", MARKETER, SUPPORT),
    "segments.why": _read("see why a contact is in a segment", MARKETER, SUPPORT),
    "segments.preview": _read("see a draft segment's members", MARKETER, SUPPORT),
    # Dry runs name the contacts a draft would mail (their own jobs only: dry_runs.*).
    "workflows.dry_run": _read("dry-run a draft workflow", MARKETER, SUPPORT),
    "segments.dry_run": _read("dry-run a draft segment", MARKETER, SUPPORT),
    "dry_runs.status": _read("follow a dry run", MARKETER, SUPPORT),
    "dry_runs.cancel": _read("cancel a dry run", MARKETER, SUPPORT),
    "contacts.search": _read("search contacts", MARKETER, SUPPORT),
    "contacts.show": _read("read a contact", MARKETER, SUPPORT),
    "contacts.events": _read("read a contact's events", MARKETER, SUPPORT),
    "contacts.timeline": _read("read a contact's timeline", MARKETER, SUPPORT),
    "contacts.segments": _read("see a contact's segments", MARKETER, SUPPORT),
    "contacts.enrollments": _read("see a contact's enrollments", MARKETER, SUPPORT),
    "contacts.why_not": _read("see why a contact got no mail", MARKETER, SUPPORT),
    "consent.history": _read("read a contact's consent history", MARKETER, SUPPORT),
    "offers.verify": _read("verify an offer code (it names the contact)", MARKETER, SUPPORT),
    # Rendering and linting as a real contact, and the fields seen in contacts' data.
    "templates.fields": _read("see the fields in contacts' data", MARKETER, SUPPORT),
    "templates.lint": _read("lint a template against a contact", MARKETER, SUPPORT),
    "templates.preview": _read("preview a template as a contact", MARKETER, SUPPORT),
    "dead_letters.list": _read("read dead letters", SUPPORT),
    # Marketers: segments, templates, broadcasts, experiments.
    "segments.save": _change("save a segment", MARKETER),
    "templates.save": _change("save a template", MARKETER),
    "templates.test_send": _change("send a test mail", MARKETER),
    "workflows.save": _change("save a workflow", MARKETER),
    "workflows.enable": _change("enable a workflow version", MARKETER),
    "workflows.disable": _change("disable a workflow", MARKETER),
    "broadcasts.create": _change("create a broadcast", MARKETER),
    "broadcasts.cancel": _change("cancel a broadcast", MARKETER),
    "experiments.promote": _change("promote an experiment's winner", MARKETER),
    # Support: the queues.
    "queues.pause": _change("pause queues", SUPPORT),
    "queues.resume": _change("resume queues", SUPPORT),
    "sending.pause": _change("pause all sending", SUPPORT),
    "sending.resume": _change("resume all sending", SUPPORT),
    "routes.drain": _change("drain a route", SUPPORT),
    "queues.reroute": _change("reroute queues", SUPPORT),
    "queues.retry_now": _change("retry queues now", SUPPORT),
    "queues.cancel": _change("cancel queued mail", SUPPORT),
    "dead_letters.retry": _change("retry dead letters", SUPPORT),
    "dead_letters.discard": _change("discard dead letters", SUPPORT),
    # Admin: routes, users, alerting, demo traffic.
    "routes.set_rate": _change("change a route's limits"),
    "alerts.set_rule": _change("change alert rules"),
    "demo.start": _change("start demo traffic"),
    "demo.stop": _change("stop demo traffic"),
    "users.list": _read("list users"),
    "users.sync": _change("reload the NATS users"),
}


def allowed(role: str, verb: str) -> bool:
    """Whether ``role`` may call ``verb`` (unclassified verbs: nobody)."""
    access = VERBS.get(verb)
    return access is not None and (role == ADMIN or role in access.roles)


def check(verb: str, user: str, role: str | None) -> None:
    """Raise :class:`AccessDenied` unless ``user`` (with ``role``; None: unknown) may call
    ``verb``."""
    access = VERBS.get(verb)
    if access is None:
        raise AccessDenied(
            f"{verb!r} is not in the engine's access table, so nobody may call it "
            "(engine/access.py)"
        )
    if role is None:
        raise AccessDenied(f"user {user!r} is not known to this engine (campaign-engine users)")
    if allowed(role, verb):
        return
    needed = [r for r in ROLES if r in access.roles and r != ADMIN] or [ADMIN]
    raise AccessDenied(f"{' or '.join(needed)} role needed to {access.what}; you are {role}")


def verbs_for(role: str) -> list[str]:
    """Every verb ``role`` may call, sorted."""
    return sorted(v for v in VERBS if allowed(role, v))


def check_user_name(name: str) -> str:
    if not isinstance(name, str) or not USER_NAME.fullmatch(name):
        raise AccessDenied(
            f"user name {name!r} is not valid: 1 to 64 lower-case letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise AccessDenied(f"role {role!r} does not exist (one of: {', '.join(ROLES)})")
    return role


def control_subject(user: str, node: str, verb: str) -> str:
    """The subject a control request from ``user`` to ``node`` ("all": every node) travels on."""
    return f"control.{user}.{node}.{verb}"


def inbox_prefix(user: str) -> str:
    """The reply-subject prefix of ``user``'s connection: nobody else may read its replies."""
    return f"_INBOX.{user}"


def nats_permissions(user: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What a console user may (publish, subscribe) on NATS: requests under its own name,
    replies on its own inbox, and the metrics and alerts every engine broadcasts."""
    return (
        (f"control.{user}.>",),
        (f"{inbox_prefix(user)}.>", "metrics.>", "alerts.>"),
    )
