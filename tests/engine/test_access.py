"""Access for a team, against an engine node with its embedded nats-server: every user signs in
with its own credentials, NATS lets it publish only under its own name, and the engine checks
the role of the subject's user on every request (docs/access.md)."""

from __future__ import annotations

import asyncio
import logging
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import nats.errors
import orjson
import pytest
import sqlalchemy as sa
from nats.aio.client import Client as NatsClient

from engine.access import ADMIN, MARKETER, ROLES, SUPPORT, VERBS, VIEWER, allowed, inbox_prefix
from engine.bus import settle
from engine.config import load_settings
from engine.control import ControlError, ControlServer, request
from engine.node import ADMIN_SECRET, SERVICE_SECRET, Connection, Node
from engine.store import schema
from engine.users import add_user, new_nkey, remove_user, set_role

NODE = "g1"
VIC_PASSWORD = "correct horse battery staple"


@dataclass
class Signed:
    """One user's own NATS connection, and the errors the server sent it."""

    name: str
    nc: NatsClient
    errors: list[str] = field(default_factory=list)

    async def call(self, verb: str, args: dict[str, Any] | None = None, node: str = NODE) -> Any:
        return await request(self.nc, node, verb, args, user=self.name)

    async def raw(self, subject: str, body: dict[str, Any], timeout: float = 2.0) -> Any:
        msg = await self.nc.request(subject, orjson.dumps(body), timeout=timeout)
        return orjson.loads(msg.data)


async def sign_in(name: str, url: str, **auth: str) -> Signed:
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    nc = await nats.connect(
        url,
        name=f"test-{name}",
        inbox_prefix=inbox_prefix(name),
        error_cb=on_error,
        allow_reconnect=False,
        **auth,
    )
    return Signed(name, nc, errors)


@dataclass
class Team:
    node: Node
    users: dict[str, Signed]
    seeds: dict[str, str]


@pytest.fixture
async def team(tmp_path: Path) -> AsyncIterator[Team]:
    settings = load_settings(
        None,
        environ={},
        overrides={
            "engine": {"data_dir": str(tmp_path / "data"), "node": NODE},
            "http": {"listen": "127.0.0.1:0"},
            "ingest": {"write_key": "wk-test"},
        },
    )
    node = Node(settings)
    await node.start()
    signed: list[Signed] = []
    try:
        assert node.store is not None
        now = node.clock.now()
        # One person with a password (hashed at nats-server's own cost), two with nkeys.
        add_user(node.store, "vic", VIEWER, password=VIC_PASSWORD, actor="test", now=now)
        seeds = {}
        for name, role in (("mia", MARKETER), ("sam", SUPPORT)):
            seeds[name], public = new_nkey()
            add_user(node.store, name, role, nkey=public, actor="test", now=now)
        assert await node.sync_nats_users()
        conn = Connection.load(node.data_dir)
        assert conn is not None and conn.nats_user == "admin"
        url = node.nats_url
        signed = [
            await sign_in("vic", url, user="vic", password=VIC_PASSWORD),
            await sign_in("mia", url, nkeys_seed_str=seeds["mia"]),
            await sign_in("sam", url, nkeys_seed_str=seeds["sam"]),
            await sign_in("admin", url, user=conn.nats_user, password=conn.nats_password),
        ]
        users = dict(zip((VIEWER, MARKETER, SUPPORT, ADMIN), signed, strict=True))
        yield Team(node, users, seeds)
    finally:
        for s in signed:
            if not s.nc.is_closed:
                await s.nc.close()
        await node.stop()


def control_of(node: Node) -> ControlServer:
    control = node.components["control"]
    assert isinstance(control, ControlServer)
    return control


def test_the_table_gives_admin_everything_and_viewers_nothing_to_change() -> None:
    assert set(ROLES) == {VIEWER, MARKETER, SUPPORT, ADMIN}
    for verb, access in VERBS.items():
        assert ADMIN in access.roles, verb
        assert access.what, verb
        if access.mutates:
            assert VIEWER not in access.roles, f"a viewer may change something: {verb}"


async def test_every_role_against_every_verb(team: Team) -> None:
    """Table-driven: each role's own connection sends every verb; the engine runs the handler
    exactly when the role allows it, and says which role is needed when it does not. The
    handlers are swapped for recorders so that allowed verbs change nothing here."""
    control = control_of(team.node)
    served = set(control.verbs)
    assert served == set(VERBS), (
        f"served but not classified: {sorted(served - set(VERBS))}; "
        f"classified but not served: {sorted(set(VERBS) - served)}"
    )
    calls: list[tuple[str, str]] = []

    def recorder(verb: str) -> Any:
        async def handler(args: dict[str, Any], actor: str) -> Any:
            calls.append((verb, actor))
            return {"ran": verb}

        return handler

    for verb in VERBS:
        control.register(verb, recorder(verb))
    refused: dict[str, set[str]] = {role: set() for role in ROLES}
    for role, user in team.users.items():
        for verb in sorted(VERBS):
            reply = await user.raw(f"control.{user.name}.{NODE}.{verb}", {"args": {}})
            if allowed(role, verb):
                assert reply == {"ok": True, "result": {"ran": verb}, "node": NODE}, (role, verb)
                assert calls[-1] == (verb, user.name)
            else:
                assert reply["ok"] is False and reply["refused"] == "access", (role, verb)
                assert reply["error"].endswith(f"; you are {role}"), reply
                refused[role].add(verb)
    assert len(calls) == sum(len(VERBS) - len(r) for r in refused.values())
    # What the roles mean, said plainly (issue 8): not derived from the table above.
    assert refused[ADMIN] == set()
    assert {"queues.pause", "sending.pause", "segments.save", "routes.set_rate"} <= refused[VIEWER]
    assert {"ping", "metrics", "queues.list", "audit.list"}.isdisjoint(refused[VIEWER])
    assert "segments.save" not in refused[MARKETER]
    assert {"queues.pause", "queues.cancel", "routes.set_rate"} <= refused[MARKETER]
    assert {"queues.pause", "routes.drain", "queues.reroute", "queues.cancel"}.isdisjoint(
        refused[SUPPORT]
    )
    assert {"segments.save", "routes.set_rate", "users.list", "demo.start"} <= refused[SUPPORT]


async def test_refusals_are_plain_and_change_nothing(team: Team) -> None:
    vic, mia, sam = team.users[VIEWER], team.users[MARKETER], team.users[SUPPORT]
    store = team.node.store
    assert store is not None
    with pytest.raises(
        ControlError, match=r"^support role needed to pause queues; you are viewer$"
    ):
        await vic.call("queues.pause", {"domain": "gmail.com", "reason": "x"})
    with pytest.raises(ControlError, match=r"^admin role needed to change a route's limits; you "):
        await sam.call("routes.set_rate", {"route": "default", "per_second": 1})
    with pytest.raises(ControlError, match=r"^marketer role needed to save a segment; you are sup"):
        await sam.call("segments.save", {"segment": "s", "name": "S", "text": "subscribed to x"})
    with pytest.raises(ControlError, match=r"^marketer or support role needed to read captured"):
        await vic.call("inbox.show", {"id": "1"})
    with store.begin() as conn:
        assert conn.execute(sa.select(schema.queue_controls)).all() == []
        assert conn.execute(sa.select(schema.segments)).all() == []
    # Allowed, with real handlers: the marketer saves a segment, support pauses a queue.
    saved = await mia.call(
        "segments.save", {"segment": "pros", "name": "Pros", "text": 'trait plan = "pro"'}
    )
    assert saved["version"] == 1
    paused = await sam.call("queues.pause", {"domain": "gmail.com", "reason": "bounces"})
    assert paused["changed"]
    who = await vic.call("whoami")
    assert (who["user"], who["role"]) == ("vic", VIEWER) and "queues.pause" not in who["verbs"]


async def test_a_forged_subject_is_refused_by_nats(team: Team) -> None:
    """The viewer publishes on the admin's subject: NATS refuses it (permissions violation), no
    reply comes and the handler never runs; the route keeps its limits."""
    vic = team.users[VIEWER]
    control = control_of(team.node)
    ran: list[str] = []
    real = control._handlers["routes.set_rate"]

    async def watched(args: dict[str, Any], actor: str) -> Any:
        ran.append(actor)
        return await real(args, actor)

    control.register("routes.set_rate", watched)
    delivery = team.node.components["delivery"]
    before = delivery.route("default").limits.as_dict()
    forged = {"actor": "admin", "args": {"route": "default", "per_second": 1}}
    for target in (NODE, "all"):
        with pytest.raises(nats.errors.TimeoutError):
            await vic.raw(f"control.admin.{target}.routes.set_rate", forged, timeout=1.0)
    assert ran == []
    assert delivery.route("default").limits.as_dict() == before
    assert any("permissions violation for publish" in e.lower() for e in vic.errors), vic.errors
    assert any("control.admin" in e for e in vic.errors), vic.errors
    # Nor may a user read other users' requests or replies.
    vic.errors.clear()
    await vic.nc.subscribe("control.>")
    await vic.nc.subscribe("_INBOX.admin.>")
    await settle(vic.nc)
    await asyncio.sleep(0.2)
    assert sum("permissions violation for subscription" in e.lower() for e in vic.errors) == 2
    # The real admin, on its own subject, is served (so the refusal above was the forgery).
    admin = team.users[ADMIN]
    result = await admin.call("routes.set_rate", {"route": "default", "per_second": 7})
    assert result["after"]["rate"]["per_second"] == 7 and ran == ["admin"]


async def test_the_body_actor_is_ignored_and_audit_names_the_subject_user(team: Team) -> None:
    sam = team.users[SUPPORT]
    reply = await sam.raw(
        f"control.sam.{NODE}.queues.pause",
        {"actor": "admin", "args": {"route": "default", "reason": "relay trouble"}},
    )
    assert reply["ok"], reply
    audit = await team.users[ADMIN].call("audit.list", {"search": "queues.pause"})
    assert [(a["actor"], a["action"]) for a in audit] == [("sam", "queues.pause")]
    assert reply["result"]["control"]["actor"] == "sam"


async def test_role_changes_hold_at_once_and_removed_users_are_out(team: Team) -> None:
    vic = team.users[VIEWER]
    store = team.node.store
    assert store is not None
    with pytest.raises(ControlError, match="support role needed"):
        await vic.call("queues.retry_now", {"all": True, "preview": True})
    set_role(store, "vic", SUPPORT, actor="test", now=team.node.clock.now())
    preview = await vic.call("queues.retry_now", {"all": True, "preview": True})
    assert preview["preview"] is True
    remove_user(store, "vic", actor="test", now=team.node.clock.now())
    with pytest.raises(ControlError, match="user 'vic' is not known"):
        await vic.call("ping")
    assert await team.node.sync_nats_users()
    refused = NatsClient()
    with pytest.raises(nats.errors.Error, match=r"(?i)authorization"):
        await refused.connect(
            team.node.nats_url, user="vic", password=VIC_PASSWORD, allow_reconnect=False
        )
    await refused.close()  # a refused connect leaves its socket open otherwise


async def test_secrets_stay_out_of_logs_the_database_and_replies(
    team: Team, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    node = team.node
    store = node.store
    assert store is not None
    data = node.data_dir
    secrets = {
        "vic's password": VIC_PASSWORD,
        "the admin's password": (data / ADMIN_SECRET).read_text().strip(),
        "the engines' password": (data / SERVICE_SECRET).read_text().strip(),
        **{f"{name}'s seed": seed for name, seed in team.seeds.items()},
    }
    admin = team.users[ADMIN]
    listing = await admin.call("users.list")
    assert {u["name"]: (u["role"], u["auth"]) for u in listing} == {
        "admin": (ADMIN, "password"),
        "mia": (MARKETER, "nkey"),
        "sam": (SUPPORT, "nkey"),
        "vic": (VIEWER, "password"),
    }
    await admin.call("users.sync")
    with pytest.raises(ControlError):
        await team.users[VIEWER].call("users.list")
    everything = [orjson.dumps(listing).decode()]
    with store.begin() as conn:
        for table in schema.metadata.sorted_tables:
            everything += [repr(tuple(r)) for r in conn.execute(sa.select(table))]
    everything.append(caplog.text)
    everything.append((data / "nats" / "nats-server.log").read_text(errors="replace"))
    config = data / "nats" / "nats-server.conf"
    everything.append(config.read_text())
    for what, secret in secrets.items():
        assert secret and all(secret not in text for text in everything), what
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE((data / "engine.json").stat().st_mode) == 0o600
    hashes = [u.password_hash for u in await asyncio.to_thread(_nats_users, node)]
    assert all(h.startswith("$2b$") for h in hashes if h)


def _nats_users(node: Node) -> list[Any]:
    from engine.users import nats_users

    assert node.store is not None
    return nats_users(node.store)
