"""Templates pick a route: a send step's own route wins, else its template's, else "default".

Real aiosmtpd relays (one per route), a real embedded nats-server, SQLite; no mocks.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
from deliver_support import ScriptedSmtp, wait_for

from engine.config import load_settings
from engine.control import ControlError, request
from engine.decide.workflow import SendStep, parse_workflow
from engine.errors import TemplateInvalid
from engine.library import export_templates, import_templates, load_library
from engine.node import Node
from engine.render.templates import read_template
from engine.store import Store, schema
from tests.engine.access_support import grant

TEMPLATE_TOML = """\
name = "Promo"
version = 1
subject = "Hello {{ contact.first_name }}"
route = "relay-b"
"""


def write_template(root: Path, template_id: str, toml: str) -> Path:
    folder = root / "emails" / template_id
    folder.mkdir(parents=True)
    (folder / "template.toml").write_text(toml, encoding="utf-8")
    (folder / "body.html").write_text(
        "<p>Hi {{ contact.first_name }}</p><p>{{ shop.address }}</p>"
        '<a href="{{ unsubscribe_url }}">unsubscribe</a>',
        encoding="utf-8",
    )
    return folder


def workflow_toml(wf_id: str, event: str, route: str | None) -> str:
    route_line = f'route = "{route}"\n' if route else ""
    return (
        f'id = "{wf_id}"\nname = "{wf_id}"\ncategory = "transactional"\nreentry = "always"\n'
        f'[trigger]\nevent = "{event}"\n'
        f'[[steps]]\nid = "send"\ntype = "send"\ntemplate = "promo"\n{route_line}'
    )


def test_a_template_names_its_route_and_a_bad_name_is_refused(tmp_path: Path) -> None:
    folder = write_template(tmp_path, "promo", TEMPLATE_TOML)
    assert read_template(folder).route == "relay-b"
    (folder / "template.toml").write_text(TEMPLATE_TOML.replace("relay-b", "Relay B!"))
    with pytest.raises(TemplateInvalid, match=r"'route' must be a route name .*'Relay B!'"):
        read_template(folder)
    (folder / "template.toml").write_text(TEMPLATE_TOML.replace('"relay-b"', "3"))
    with pytest.raises(TemplateInvalid, match=r"'route' must be a str"):
        read_template(folder)


def test_the_step_route_wins_then_the_template_route_then_default() -> None:
    data = {
        "id": "wf",
        "name": "wf",
        "category": "marketing",
        "trigger": {"event": "Go"},
        "steps": [
            {"id": "plain", "type": "send", "template": "promo"},
            {"id": "own", "type": "send", "template": "promo", "route": "relay-c"},
            {"id": "other", "type": "send", "template": "other"},
        ],
    }
    wf = parse_workflow(data, source="test")
    plain, own, other = wf.steps
    assert isinstance(plain, SendStep) and isinstance(own, SendStep)
    assert isinstance(other, SendStep)
    routes = {"promo": "relay-b"}
    assert plain.route is None and plain.route_for(routes) == "relay-b"
    assert own.route_for(routes) == "relay-c"
    assert other.route_for(routes) == "default"
    assert "route" not in wf.to_definition()["steps"][0]  # stored as written


def test_importing_a_template_with_an_unknown_route_changes_nothing(
    store: Store, tmp_path: Path
) -> None:
    folder = write_template(tmp_path, "promo", TEMPLATE_TOML)
    good = write_template(tmp_path, "plain", TEMPLATE_TOML.replace('route = "relay-b"\n', ""))
    with pytest.raises(TemplateInvalid) as caught:
        import_templates(store, [good, folder], 1.0, routes={"default", "relay-c"})
    assert str(caught.value) == (
        "template 'promo': route 'relay-b' is not configured (routes: default, relay-c; "
        "add [routes.relay-b] to the settings)"
    )
    with store.begin() as conn:
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(schema.email_templates)).one()[0]
            == 0
        )

    assert import_templates(store, [good, folder], 1.0, routes={"default", "relay-b"}) == 2
    # A new route is a new version; an unchanged one is left alone.
    (folder / "template.toml").write_text(TEMPLATE_TOML.replace("relay-b", "relay-c"))
    assert import_templates(store, [good, folder], 2.0, routes={"default", "relay-c"}) == 1
    with store.begin() as conn:
        rows = conn.execute(
            sa.select(schema.email_templates.c.version, schema.email_templates.c.route)
            .where(schema.email_templates.c.id == "promo")
            .order_by(schema.email_templates.c.version)
        ).all()
    assert [tuple(r) for r in rows] == [(1, "relay-b"), (2, "relay-c")]
    settings = load_settings(None, environ={})
    library = load_library(store, settings)
    assert library.template_routes == {"promo": "relay-c"}
    assert library.workflows.index.template_routes == {"promo": "relay-c"}
    out = tmp_path / "out"
    assert export_templates(store, out) == 2
    assert read_template(out / "promo").route == "relay-c"
    assert read_template(out / "plain").route is None


@pytest.fixture
async def relays() -> Any:
    default, relay_b = ScriptedSmtp(), ScriptedSmtp()
    await default.start()
    await relay_b.start()
    try:
        yield default, relay_b
    finally:
        await default.stop()
        await relay_b.stop()


async def test_a_template_route_sends_through_that_relay_unless_the_step_names_one(
    tmp_path: Path, relays: tuple[ScriptedSmtp, ScriptedSmtp]
) -> None:
    default, relay_b = relays
    library = tmp_path / "library"
    write_template(library, "promo", TEMPLATE_TOML)
    (library / "workflows").mkdir()
    (library / "workflows" / "by-template.toml").write_text(
        workflow_toml("by-template", "Promo Template", None)
    )
    (library / "workflows" / "by-step.toml").write_text(
        workflow_toml("by-step", "Promo Step", "default")
    )
    settings = load_settings(
        None,
        environ={},
        overrides={
            "engine": {"data_dir": str(tmp_path / "data"), "node": "tr1"},
            "http": {"listen": "127.0.0.1:0"},
            "ingest": {"write_key": "wk-test"},
            "smtp": {"url": f"smtp://127.0.0.1:{default.port}"},
            "routes": {"relay-b": {"host": "127.0.0.1", "port": relay_b.port, "tls": "none"}},
        },
    )
    node = Node(settings, templates_dir=library)
    await node.start()
    try:
        events = [
            {
                "type": "track",
                "userId": f"u-{name}",
                "event": f"Promo {name.title()}",
                "context": {"traits": {"email": f"ok-{name}@example.com", "first_name": "Ada"}},
            }
            for name in ("template", "step")
        ]
        auth = {"Authorization": "Basic " + base64.b64encode(b"wk-test:").decode()}
        async with (
            aiohttp.ClientSession(headers=auth) as http,
            http.post(f"{node.http_url}/v1/batch", json={"batch": events}) as resp,
        ):
            assert resp.status == 200
        await wait_for(
            lambda: len(default.received) + len(relay_b.received) >= 2,
            timeout=20,
            what="both mails",
        )
        assert node.store is not None
        with node.store.begin() as conn:
            rows = conn.execute(
                sa.select(schema.intents.c.workflow_id, schema.intents.c.route)
            ).all()
    finally:
        await node.stop()
    assert sorted(tuple(r) for r in rows) == [("by-step", "default"), ("by-template", "relay-b")]
    assert [r.rcpt_tos for r in relay_b.received] == [["ok-template@example.com"]]
    assert [r.rcpt_tos for r in default.received] == [["ok-step@example.com"]]


async def test_the_editor_saves_a_route_and_the_next_send_takes_it(
    tmp_path: Path, relays: tuple[ScriptedSmtp, ScriptedSmtp]
) -> None:
    default, relay_b = relays
    settings = load_settings(
        None,
        environ={},
        overrides={
            "engine": {"data_dir": str(tmp_path / "data"), "node": "tr2"},
            "http": {"listen": "127.0.0.1:0"},
            "ingest": {"write_key": "wk-test"},
            "smtp": {"url": f"smtp://127.0.0.1:{default.port}"},
            "routes": {"relay-b": {"host": "127.0.0.1", "port": relay_b.port, "tls": "none"}},
        },
    )
    node = Node(settings)  # the starter templates and workflows
    await node.start()
    try:
        assert node.nc is not None

        assert node.store is not None
        grant(node.store, "ada", "marketer")

        async def save(route: str) -> Any:
            draft = {"template": "order-confirmation", "draft": {"route": route}}
            return await request(node.nc, "tr2", "templates.save", draft, user="ada")

        with pytest.raises(ControlError, match=r"not saved: template 'order-confirmation': "):
            await save("relay-z")
        with pytest.raises(ControlError, match=r"draft.route must be a route name"):
            await save("Relay Z")
        saved = await save("relay-b")
        assert saved["changed"] is True and saved["version"] == 2
        got = await request(node.nc, "tr2", "templates.get", {"template": "order-confirmation"})
        assert got["route"] == "relay-b"
        event = {
            "type": "track",
            "userId": "u1",
            "event": "Order Completed",
            "context": {"traits": {"email": "ok-order@example.com"}},
            "properties": {"order_id": "o1", "total": 5, "currency": "USD"},
        }
        auth = {"Authorization": "Basic " + base64.b64encode(b"wk-test:").decode()}
        async with (
            aiohttp.ClientSession(headers=auth) as http,
            http.post(f"{node.http_url}/v1/track", json=event) as resp,
        ):
            assert resp.status == 200
        await wait_for(lambda: bool(relay_b.received), timeout=20, what="the order mail")
    finally:
        await node.stop()
    assert [r.rcpt_tos for r in relay_b.received] == [["ok-order@example.com"]]
    assert default.received == []
