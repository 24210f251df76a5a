"""The template editor's control verbs, and the notice that puts a saved template live.

Verbs (envelope in engine/control.py; docs/CONTRACTS.md "Templates"):
- ``templates.list`` -> ``{"templates": [...]}``: the newest version of each, with the
  workflows that send it;
- ``templates.get {template, version?}`` -> the source, its versions and users;
- ``templates.versions {template}``, ``templates.diff {template, from, to?}``;
- ``templates.lint {template, draft?, contact?, event?, sample?}`` -> findings with lines;
- ``templates.preview {template, draft?, contact?, event?, sample?, category?}`` -> the exact
  HTML and text parts and headers the engine would send that contact for that event;
- ``templates.save {template, draft, base_version?}`` -> a new version, live on every node
  without a restart (``templates.changed`` on NATS makes each node reload it);
- ``templates.test_send {..., to?}`` -> sends the preview to the local capture inbox, or to
  ``to`` through the default route;
- ``templates.fields`` -> contact traits and event properties seen in the stream;
- ``contacts.search {query, limit?}``, ``contacts.events {contact, limit?}``.

``draft``: ``{subject, body, format?, text?, from_address?, preheader?, name?, route?}``, the
unsaved editor content (``route``: the route its sends take when the send step names none; a
route not configured on this node is refused); without it the saved (newest) version is used.
Bad arguments are refused with a message naming the problem, and nothing changes.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa

from engine import notices
from engine.authoring import library
from engine.authoring.fields import fields_seen, top_level
from engine.authoring.lint import FieldsSeen, lint_template
from engine.authoring.preview import (
    PreviewRefused,
    Target,
    build_preview,
    describe_preview,
    draft_composer,
    intent_for,
    latest_event,
    load_contact,
    load_event,
    recent_events,
)
from engine.authoring.sample import sample_for
from engine.control import ControlError, ControlServer, check_keys, limit_arg, required_text
from engine.decide.workflow import SendStep
from engine.deliver.compose import MARKETING, Composer, Identity, bounce_address, render_context
from engine.deliver.model import ContactRow
from engine.deliver.relay import RelayConfig
from engine.deliver.routes import known_routes, unknown_template_routes
from engine.deliver.smtp import Envelope, SmtpConnection, stuff
from engine.errors import EngineError, HeaderInvalid, RenderError, TemplateInvalid
from engine.mime import envelope_address, parse_address
from engine.render import TemplateSource
from engine.render.templates import FORMATS, ROUTE_NAME, TEMPLATE_ID
from engine.store import Store, schema
from engine.unsubscribe import UnsubscribeTokens

if TYPE_CHECKING:
    from engine.library import Library
    from engine.node import Node

log = logging.getLogger(__name__)

CHANGED_SUBJECT = "templates.changed"
"""Core NATS subject: ``{"template", "version", "node"}`` after a save; every node reloads."""
MAX_BODY = 1_000_000
MAX_PART = 20_000
CATEGORIES = ("marketing", "transactional")
_DRAFT_KEYS = ("name", "subject", "body", "format", "text", "from_address", "preheader", "route")
_TARGET_KEYS = ("template", "draft", "contact", "event", "sample", "category")


def _optional_text(args: dict[str, Any], key: str, most: int) -> str | None:
    value = args.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ControlError(f"{key} must be text")
    if len(value) > most:
        raise ControlError(f"{key} is too long (at most {most:,} characters)")
    return value


def _version(args: dict[str, Any], key: str) -> int | None:
    value = args.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ControlError(f"{key} must be a version number (1 or more)")
    return value


def _template_id(args: dict[str, Any]) -> str:
    tid = required_text(args, "template", 100)
    if not TEMPLATE_ID.fullmatch(tid):
        raise ControlError(
            f"bad template id {tid!r}: lower-case letters, digits, - and _ (at most 100)"
        )
    return tid


def draft_source(
    template_id: str, draft: Any, current: TemplateSource | None, version: int
) -> TemplateSource:
    """The editor's unsaved content as a source (missing fields from ``current``)."""
    if not isinstance(draft, dict):
        raise ControlError("draft must be an object with subject and body")
    check_keys(draft, _DRAFT_KEYS)
    body = _optional_text(draft, "body", MAX_BODY)
    subject = _optional_text(draft, "subject", MAX_PART)
    name = _optional_text(draft, "name", 200)
    fmt = _optional_text(draft, "format", 10)
    if current is None:
        if not body or not body.strip():
            raise ControlError("draft.body is required for a new template")
        if subject is None or not subject.strip():
            raise ControlError("draft.subject is required for a new template")
    if fmt is not None and fmt not in FORMATS:
        raise ControlError(f"draft.format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    route = _optional_text(draft, "route", 100)
    if route and not ROUTE_NAME.fullmatch(route):
        raise ControlError(f"draft.route must be a route name, not {route!r}")

    def pick(key: str, given: str | None) -> str | None:
        if key in draft:
            return given or None
        return getattr(current, key) if current is not None else None

    return TemplateSource(
        id=template_id,
        version=version,
        name=name or (current.name if current else template_id),
        subject=subject if subject is not None else (current.subject if current else ""),
        body=body if body is not None else (current.body if current else ""),
        format=fmt or (current.format if current else "html"),
        text=pick("text", _optional_text(draft, "text", MAX_BODY)),
        from_address=pick("from_address", _optional_text(draft, "from_address", 400)),
        preheader=pick("preheader", _optional_text(draft, "preheader", MAX_PART)),
        route=pick("route", route),
    )


def register_template_operations(control: ControlServer, node: Node) -> None:
    """Register the template editor's verbs on the node's control server."""

    store = node.require_store

    def lib() -> Library:
        found = node.components.get("library")
        if found is None:
            raise ControlError("the template library is not loaded on this node")
        return found  # type: ignore[no-any-return]

    def composer() -> Composer:
        delivery = node.components.get("delivery")
        if delivery is not None:
            return delivery.composer  # type: ignore[no-any-return]
        # No deliver stage here (it runs in child processes or on other nodes): the same
        # identity and tokens they use, built from the same settings.
        from engine.node import shop_context

        identity = Identity.from_settings(
            node.settings.sending,
            public_url=str(node.components.get("public_url") or ""),
            shop=shop_context(node.settings),
        )
        return Composer(lib().renderer, node.components["tokens"], identity)

    def users(template_id: str) -> list[dict[str, Any]]:
        """The active workflows with a send step of this template."""
        out = []
        for wf in lib().workflows.active():
            steps = [
                s.id for s in wf.steps if isinstance(s, SendStep) and s.template == template_id
            ]
            if steps:
                out.append(
                    {
                        "workflow": wf.id,
                        "version": wf.version,
                        "name": wf.name,
                        "category": wf.category,
                        "enabled": wf.enabled,
                        "steps": steps,
                        "trigger": list(wf.trigger.events),
                    }
                )
        return out

    def category_of(args: dict[str, Any], used_by: list[dict[str, Any]]) -> str:
        given = args.get("category")
        if given is not None:
            if given not in CATEGORIES:
                raise ControlError(f"category must be one of {', '.join(CATEGORIES)}")
            return str(given)
        return str(used_by[0]["category"]) if used_by else MARKETING

    def current(conn: sa.Connection, tid: str, version: int | None = None) -> TemplateSource:
        try:
            return library.source_from_row(library.load_version(conn, tid, version))
        except LookupError as exc:
            names = ", ".join(sorted(library.latest_versions(conn))) or "none yet"
            what = f"{tid!r}" if version is None else f"{tid!r} version {version}"
            raise ControlError(f"there is no template {what} (templates: {names})") from exc

    def source_for(args: dict[str, Any]) -> tuple[TemplateSource, bool]:
        """The template to work on: the draft (True) or the newest saved version (False)."""
        tid = _template_id(args)
        with store().begin() as conn:
            latest = library.latest_versions(conn).get(tid)
            saved = current(conn, tid) if latest is not None else None
        if "draft" not in args:
            if saved is None:
                current_names = ", ".join(sorted(lib_ids())) or "none yet"
                raise ControlError(f"there is no template {tid!r} (templates: {current_names})")
            return saved, False
        return draft_source(tid, args["draft"], saved, (latest or 0) + 1), True

    def lib_ids() -> list[str]:
        with store().begin() as conn:
            return list(library.latest_versions(conn))

    def target_for(args: dict[str, Any], used_by: list[dict[str, Any]], now: float) -> Target:
        """The contact and trigger event: chosen, the contact's latest, or sample data."""
        sample = args.get("sample", False)
        if not isinstance(sample, bool):
            raise ControlError("sample must be true or false")
        triggers = [name for u in used_by for name in u["trigger"]]
        contact_id = _optional_text(args, "contact", 255)
        event_id = _optional_text(args, "event", 255)
        if event_id and not contact_id:
            raise ControlError("event needs contact: events are chosen from a contact's history")
        if event_id and sample:
            raise ControlError("give either event or sample, not both")
        if not contact_id:
            s = sample_for(triggers[0] if triggers else "")
            contact = ContactRow(s.contact_id, s.email, s.traits, {}, None)
            return Target(contact, s.event, "sample", sample=True)
        with store().begin() as conn:
            try:
                contact = load_contact(conn, contact_id)
                if sample:
                    s = sample_for(triggers[0] if triggers else "")
                    return Target(contact, s.event, "sample", sample=True)
                if event_id:
                    event, message_id = load_event(conn, contact_id, event_id)
                    return Target(contact, event, message_id)
                found = latest_event(conn, contact_id, triggers) or latest_event(
                    conn, contact_id, []
                )
            except PreviewRefused as exc:
                raise ControlError(str(exc)) from exc
        if found is None:
            empty: dict[str, Any] = {
                "name": triggers[0] if triggers else "",
                "properties": {},
                "ts": now,
            }
            return Target(contact, empty, "none")
        return Target(contact, found[0], found[1])

    def fields() -> FieldsSeen:
        with store().begin() as conn:
            seen = fields_seen(conn)
        return FieldsSeen(
            traits=top_level(seen["traits"]), properties=top_level(seen["properties"])
        )

    def lint_for(
        source: TemplateSource, target: Target, category: str, comp: Composer, now: float
    ) -> list[dict[str, Any]]:
        context: dict[str, Any] | None = None
        try:
            intent = intent_for(target, source.id, category=category, now=now)
        except PreviewRefused:
            intent = None
        if intent is not None:
            ident = comp.identity
            url = f"{ident.public_url}/u/{comp.tokens.make(intent.contact_id, intent.to_addr)}"
            context = render_context(intent, target.contact, unsubscribe_url=url, shop=ident.shop)
        findings = lint_template(
            source,
            context=context,
            fields=fields(),
            marketing=category == MARKETING,
            shop=comp.identity.shop,
        )
        return [f.as_dict() for f in findings]

    def composer_for(source: TemplateSource, is_draft: bool) -> Composer:
        comp = composer()
        if not is_draft:
            return comp
        try:
            return draft_composer(comp, source)
        except TemplateInvalid as exc:
            raise ControlError(str(exc)) from exc

    # -- verbs --------------------------------------------------------------------------------

    async def templates_list(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, ())

        def run() -> list[dict[str, Any]]:
            with store().begin() as conn:
                rows = library.summaries(conn)
            return [{**row, "used_by": users(row["id"])} for row in rows]

        return {"templates": await asyncio.to_thread(run)}

    async def templates_get(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, ("template", "version"))
        tid = _template_id(args)
        version = _version(args, "version")

        def run() -> dict[str, Any]:
            with store().begin() as conn:
                source = current(conn, tid, version)  # refuses naming the known ids
                row = library.load_version(conn, tid, source.version)
                versions = library.list_versions(conn, tid)
            return {
                **library.source_to_dict(source),
                "created_at": row["created_at"],
                "source": row["source"],
                "latest": versions[0]["version"],
                "versions": versions,
                "used_by": users(tid),
            }

        return await asyncio.to_thread(run)

    async def templates_versions(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, ("template",))
        tid = _template_id(args)

        def run() -> dict[str, Any]:
            with store().begin() as conn:
                current(conn, tid)
                return {"template": tid, "versions": library.list_versions(conn, tid)}

        return await asyncio.to_thread(run)

    async def templates_diff(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, ("template", "from", "to"))
        tid = _template_id(args)
        old_version = _version(args, "from")
        if old_version is None:
            raise ControlError("from is required (a version number)")
        new_version = _version(args, "to")

        def run() -> dict[str, Any]:
            with store().begin() as conn:
                old = current(conn, tid, old_version)
                new = current(conn, tid, new_version)
            return {
                "template": tid,
                "from": old.version,
                "to": new.version,
                "parts": library.diff_versions(old, new),
            }

        return await asyncio.to_thread(run)

    async def templates_lint(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, _TARGET_KEYS)
        now = node.clock.now()

        def run() -> dict[str, Any]:
            source, is_draft = source_for(args)
            used_by = users(source.id)
            category = category_of(args, used_by)
            target = target_for(args, used_by, now)
            findings = lint_for(source, target, category, composer(), now)
            return {
                "template": source.id,
                "draft": is_draft,
                "category": category,
                "findings": findings,
                "errors": sum(1 for f in findings if f["severity"] == "error"),
                "warnings": sum(1 for f in findings if f["severity"] == "warning"),
            }

        return await asyncio.to_thread(run)

    def preview_parts(args: dict[str, Any], now: float) -> tuple[Any, Target, str, Composer]:
        source, is_draft = source_for(args)
        used_by = users(source.id)
        category = category_of(args, used_by)
        target = target_for(args, used_by, now)
        comp = composer_for(source, is_draft)
        try:
            built = build_preview(comp, source.id, target, category=category, now=now)
        except (RenderError, HeaderInvalid, PreviewRefused) as exc:
            raise ControlError(str(exc)) from exc
        return built, target, category, comp

    async def templates_preview(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, _TARGET_KEYS)
        now = node.clock.now()

        def run() -> dict[str, Any]:
            built, target, category, _ = preview_parts(args, now)
            reply = describe_preview(built, target, category)
            reply["draft"] = "draft" in args
            reply["notes"] = notes_for(target, category)
            return reply

        return await asyncio.to_thread(run)

    def notes_for(target: Target, category: str) -> list[str]:
        """Why this contact would not get the mail now (send-time checks), in words."""
        notes = []
        if target.sample:
            notes.append("Sample data: a made-up shopper and event, not a real contact.")
        if target.event_id == "none":
            notes.append("This contact has no recorded events: the event is empty.")
        contact = target.contact
        if contact.email and not target.sample:
            with store().begin() as conn:
                s = schema.suppressions
                scope = conn.execute(
                    sa.select(s.c.scope).where(s.c.address == contact.email.lower())
                ).scalar()
            if scope == "all" or (scope == MARKETING and category == MARKETING):
                notes.append(f"{contact.email} is suppressed ({scope}): this mail would not go.")
            elif category == MARKETING and contact.unsubscribed_at is not None:
                notes.append("This contact unsubscribed: marketing mail to them is suppressed.")
        return notes

    async def templates_save(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, ("template", "draft", "base_version"))
        if "draft" not in args:
            raise ControlError("draft is required: the template's new content")
        base = _version(args, "base_version")
        now = node.clock.now()

        def run() -> dict[str, Any]:
            source, _ = source_for(args)
            try:
                draft_composer(composer(), source)  # compiles: a broken template is not stored
            except TemplateInvalid as exc:
                raise ControlError(f"not saved: {exc}") from exc
            problems = unknown_template_routes([source], known_routes(node.settings))
            if problems:
                raise ControlError(f"not saved: {problems[0]}")
            with store().begin() as conn:
                latest = library.latest_versions(conn).get(source.id)
                if base is not None and latest != base:
                    raise ControlError(
                        f"not saved: template {source.id!r} is at version {latest}, not"
                        f" {base} (someone saved meanwhile); load it, merge and save again"
                    )
                if latest is not None:
                    saved = library.source_from_row(library.load_version(conn, source.id))
                    if library.same_content(saved, source):
                        return {"template": source.id, "version": latest, "changed": False}
                library.insert_version(conn, source, actor, now)
                inserted = conn.execute(
                    schema.audit_log.insert(),
                    {
                        "ts": now,
                        "actor": actor[:200],
                        "action": "templates.save",
                        "target": f"template {source.id} v{source.version}",
                        "count": 1,
                        "detail": {"template": source.id, "version": source.version},
                    },
                )
                audit_id = (
                    inserted.inserted_primary_key[0] if inserted.inserted_primary_key else None
                )
            return {
                "template": source.id,
                "version": source.version,
                "changed": True,
                "audit_id": audit_id,
            }

        try:
            result = await asyncio.to_thread(run)
        except sa.exc.IntegrityError as exc:  # the same version saved on another node
            raise ControlError(
                "not saved: someone else saved this template at the same moment; load it"
                " and save again"
            ) from exc
        if result["changed"]:
            await reload_template(node, result["template"])
            if node.nc is not None:
                notice = {"template": result["template"], "version": result["version"]}
                await node.nc.publish(
                    CHANGED_SUBJECT, orjson.dumps({**notice, "node": node.settings.engine.node})
                )
        return result

    async def templates_test_send(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, (*_TARGET_KEYS, "to"))
        to = _optional_text(args, "to", 320)
        if to is not None:
            try:
                _, address = parse_address(to)
                envelope_address(address)
            except HeaderInvalid as exc:
                raise ControlError(f"to: {exc}") from exc
        else:
            address = None
        now = node.clock.now()

        def build() -> tuple[bytes, str, str, Target, str]:
            source, is_draft = source_for(args)
            used_by = users(source.id)
            category = category_of(args, used_by)
            target = target_for(args, used_by, now)
            comp = composer_for(source, is_draft)
            # A void unsubscribe link: clicking it in a test mail must not unsubscribe the
            # contact the mail was rendered for.
            test = Composer(
                comp.renderer,
                UnsubscribeTokens(secrets.token_bytes(32)),
                comp.identity,
                comp.signer,
            )
            try:
                intent = intent_for(target, source.id, category=category, now=now, to_addr=address)
                built = test.build(intent, target.contact, now)
                message = built.message
                if test.signer is not None:
                    message = test.signer.sign(message, now=now)
                sender = bounce_address(intent.id, comp.identity.bounce_domain)
            except (RenderError, HeaderInvalid, PreviewRefused, EngineError) as exc:
                raise ControlError(str(exc)) from exc
            return message, sender, envelope_address(intent.to_addr), target, built.message_id

        message, sender, recipient, target, message_id = await asyncio.to_thread(build)
        relay = test_relay(address is None)
        connection = SmtpConnection(relay)
        try:
            await connection.connect()
            result = await connection.transact(
                Envelope(sender, recipient, len(message), not message.isascii()),
                stuff(message),
                _go_ahead,
            )
        except EngineError as exc:
            raise ControlError(f"test send failed: {exc}") from exc
        finally:
            if connection.is_connected:
                await connection.quit()
            connection.close()
        reply = f"{result.reply.code} {result.reply.text}" if result.reply else result.error
        if not result.delivered:
            raise ControlError(f"test send refused by {relay.address}: {reply}")
        via = "inbox" if address is None else "relay"
        await asyncio.to_thread(
            _audit,
            store(),
            actor,
            "templates.test_send",
            f"template {_template_id(args)} to {recipient}",
            {"to": recipient, "via": via, "contact": target.contact.id},
            now,
        )
        return {
            "to": recipient,
            "via": via,
            "relay": relay.address,
            "reply": reply,
            "message_id": message_id,
        }

    def test_relay(to_inbox: bool) -> RelayConfig:
        if to_inbox:
            if "inbox" not in node.components or not node.inbox_address:
                raise ControlError(
                    "this engine has no local capture inbox (it sends through a relay):"
                    " give an address to send the test to"
                )
            host, _, port = node.inbox_address.rpartition(":")
            return RelayConfig(host=host, port=int(port), tls="none", connections=1)
        delivery = node.components.get("delivery")
        if delivery is not None and "default" in delivery.routes:
            return delivery.routes["default"].relay  # type: ignore[no-any-return]
        relay = node.components.get("relay")
        if not isinstance(relay, RelayConfig):
            raise ControlError("this engine has no relay to send through")
        return relay

    async def templates_fields(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, ())

        def run() -> dict[str, Any]:
            with store().begin() as conn:
                return fields_seen(conn)

        return await asyncio.to_thread(run)

    async def contacts_search(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, ("query", "limit"))
        query = _optional_text(args, "query", 200) or ""
        limit = limit_arg(args, 20, 100)

        def run() -> list[dict[str, Any]]:
            c = schema.contacts
            stmt = sa.select(c.c.id, c.c.email, c.c.traits, c.c.last_seen_at).order_by(
                c.c.last_seen_at.desc()
            )
            words = query.split()
            for word in words:
                like = f"%{_escape_like(word)}%"
                stmt = stmt.where(
                    sa.or_(
                        c.c.id.ilike(like, escape="\\"),
                        c.c.email.ilike(like, escape="\\"),
                        sa.cast(c.c.traits, sa.Text).ilike(like, escape="\\"),
                    )
                )
            with store().begin() as conn:
                rows = conn.execute(stmt.limit(limit)).all()
            return [
                {
                    "id": r.id,
                    "email": r.email,
                    "name": _name(r.traits or {}),
                    "last_seen_at": r.last_seen_at,
                }
                for r in rows
            ]

        return {"query": query, "contacts": await asyncio.to_thread(run)}

    async def contacts_events(args: dict[str, Any], actor: str) -> Any:
        check_keys(args, ("contact", "limit"))
        contact = required_text(args, "contact")
        limit = limit_arg(args, 20, 200)

        def run() -> list[dict[str, Any]]:
            with store().begin() as conn:
                try:
                    load_contact(conn, contact)
                except PreviewRefused as exc:
                    raise ControlError(str(exc)) from exc
                return recent_events(conn, contact, limit)

        return {"contact": contact, "events": await asyncio.to_thread(run)}

    for verb, handler in (
        ("templates.list", templates_list),
        ("templates.get", templates_get),
        ("templates.versions", templates_versions),
        ("templates.diff", templates_diff),
        ("templates.lint", templates_lint),
        ("templates.preview", templates_preview),
        ("templates.save", templates_save),
        ("templates.test_send", templates_test_send),
        ("templates.fields", templates_fields),
        ("contacts.search", contacts_search),
        ("contacts.events", contacts_events),
    ):
        control.register(verb, handler)


async def _go_ahead() -> bool:
    return True


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _name(traits: dict[str, Any]) -> str:
    first, last = traits.get("first_name") or "", traits.get("last_name") or ""
    full = f"{first} {last}".strip()
    return full or str(traits.get("name") or "")


def _audit(
    store: Store, actor: str, action: str, target: str, detail: dict[str, Any], now: float
) -> None:
    from engine.operations import audit

    audit(store, actor=actor, action=action, target=target, count=1, detail=detail, now=now)


async def reload_template(node: Node, template_id: str) -> None:
    """Load the newest stored version of ``template_id`` into this node's renderer."""
    found = node.components.get("library")
    if found is None or node.store is None:
        return
    store = node.store

    def read() -> TemplateSource:
        with store.begin() as conn:
            return library.source_from_row(library.load_version(conn, template_id))

    source = await asyncio.to_thread(read)
    renderer = found.renderer
    if renderer.has(template_id) and renderer.source(template_id).version > source.version:
        return  # a newer notice already arrived
    # Compiling MJML and inlining CSS takes milliseconds: off the event loop.
    await asyncio.to_thread(renderer.load, source)
    # Send steps that name no route take the template's: decide sees the new one from now on.
    found.set_template_route(template_id, source.route)
    log.info("template %s v%d is live", template_id, source.version)


async def follow_template_changes(node: Node) -> Callable[[], Awaitable[None]]:
    """Subscribe to ``templates.changed``: each notice reloads that template from the store.

    Returns the coroutine function that unsubscribes (for the node's shutdown stack).
    """
    nc = node.nc
    if nc is None:
        raise ControlError("not connected to NATS")

    async def on_notice(notice: dict[str, Any]) -> None:
        await reload_template(node, str(notice["template"]))

    return await notices.follow(
        nc,
        CHANGED_SUBJECT,
        on_notice,
        required=("template",),
        errors=(LookupError, TemplateInvalid, sa.exc.SQLAlchemyError),
        what="reload a template",
    )
