"""The workflow editor's verbs through the real control API of engine nodes (embedded
nats-server, SQLite, the capture inbox): versions, validation with every problem named by step,
save without going live, enable and disable by version (live at once, on every node), running
enrollments keeping their version, per-step counts, and the roles that may do each."""

from __future__ import annotations

import copy
import tomllib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from engine.control import ControlError
from engine.decide.workflow import load_workflow_file
from engine.decide.workflow_check import check_workflow
from engine.decide.workflow_toml import to_toml
from engine.library import default_templates_dir
from engine.node import Node
from engine.store import schema
from tests.engine.access_support import grant
from tests.engine.test_template_verbs import node_settings, publish, sign_up, wait_for


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    node = Node(node_settings(tmp_path / "data", "w1"))
    await node.start()
    assert node.store is not None
    grant(node.store, "ada", "marketer")
    grant(node.store, "vic", "viewer")
    try:
        yield node
    finally:
        await node.stop()


async def call(node: Node, verb: str, args: dict[str, Any] | None = None, user: str = "ada") -> Any:
    from engine.control import request

    assert node.nc is not None
    return await request(node.nc, node.settings.engine.node, verb, args, user=user)


async def order(node: Node, user: str, address: str) -> str:
    return await publish(
        node,
        {
            "type": "track",
            "event": "Order Completed",
            "userId": user,
            "properties": {"order_id": f"o-{uuid.uuid4().hex[:6]}", "total": 20, "products": []},
            "context": {"traits": {"email": address}},
        },
    )


def enrollments(node: Node, workflow: str) -> list[Any]:
    assert node.store is not None
    e = schema.enrollments
    with node.store.begin() as conn:
        return list(
            conn.execute(
                sa.select(e).where(e.c.workflow_id == workflow).order_by(e.c.entered_at)
            ).all()
        )


def audit_actions(node: Node) -> list[tuple[str, str, str]]:
    assert node.store is not None
    a = schema.audit_log
    with node.store.begin() as conn:
        rows = conn.execute(
            sa.select(a.c.actor, a.c.action, a.c.target)
            .where(a.c.action.like("workflows.%"))
            .order_by(a.c.id)
        ).all()
    return [tuple(r) for r in rows]


# -- text form ---------------------------------------------------------------------------------


def test_every_starter_round_trips_through_toml_and_has_no_problems() -> None:
    for file in sorted((default_templates_dir() / "workflows").glob("*.toml")):
        definition = load_workflow_file(file).to_definition()
        assert tomllib.loads(to_toml(definition)) == definition, file.name
        assert check_workflow(definition) == [], file.name


# -- validation: every problem at once, by step --------------------------------------------------


def broken() -> dict[str, Any]:
    return {
        "id": "broken",
        "name": "Broken",
        "category": "marketing",
        "trigger": {"event": "Signed Up"},
        "steps": [
            {"id": "start", "type": "send", "template": "welcome-1", "next": "check"},
            {
                "id": "check",
                "type": "branch",
                "condition": {"trait": "plan", "op": "eq", "value": "pro"},
                "then": "vip-mail",
                "else": "hold",
            },
            {
                "id": "hold",
                "type": "wait_until",
                "event": "Order Completed",
                "on_event": "exit",
                "on_timeout": "exit",
            },
            {"id": "ghost-mail", "type": "send", "template": "no-such-template"},
            {
                "id": "spin-a",
                "type": "branch",
                "condition": {"trait": "x", "op": "exists"},
                "then": "spin-b",
                "else": "spin-b",
            },
            {"id": "spin-b", "type": "exit", "reason": "never"},
        ],
    }


async def test_validate_names_every_problem_with_its_step(node: Node) -> None:
    result = await call(node, "workflows.validate", {"definition": broken()}, user="vic")
    assert result["valid"] is False
    said = {(p["step"], p["problem"]) for p in result["problems"]}
    assert ("check", "names step 'vip-mail', which does not exist") in said
    assert ("hold", 'wait_until without timeout (add e.g. timeout = "1d")') in said
    assert ("ghost-mail", "unreachable (no step leads to it)") in said
    assert any(s == "ghost-mail" and "template 'no-such-template' does not exist" in p
               for s, p in said)  # fmt: skip
    assert ("spin-a", "unreachable (no step leads to it)") in said

    # A loop of steps that never waits, given as TOML text.
    loop = copy.deepcopy(broken())
    loop["steps"] = [
        {"id": "a", "type": "send", "template": "welcome-1", "next": "b"},
        {
            "id": "b",
            "type": "branch",
            "condition": {"trait": "x", "op": "exists"},
            "then": "a",
            "else": "exit",
        },
    ]
    result = await call(node, "workflows.validate", {"text": to_toml(loop)})
    assert [p["problem"] for p in result["problems"]] == ["steps loop without a wait: a -> b -> a"]

    # The same loop with a wait in it is fine, and the reply carries the definition and TOML.
    loop["steps"].insert(1, {"id": "pause", "type": "wait", "duration": "1d"})
    loop["steps"][0]["next"] = "pause"
    result = await call(node, "workflows.validate", {"definition": loop})
    assert result == {
        "valid": True,
        "problems": [],
        "definition": loop,
        "toml": to_toml(loop),
    }
    with pytest.raises(ControlError, match="not valid TOML"):
        await call(node, "workflows.validate", {"text": "id = "})
    with pytest.raises(ControlError, match="not both"):
        await call(node, "workflows.validate", {"text": "x", "definition": {}})


# -- versions: save is not live until enabled; running enrollments keep theirs --------------------


async def test_save_enable_disable_by_version_and_running_enrollments_keep_theirs(
    node: Node,
) -> None:
    listed = {w["id"]: w for w in (await call(node, "workflows.list"))["workflows"]}
    assert listed["order-confirmation"]["live_version"] == 1
    assert listed["welcome-series"]["trigger"] == "Signed Up"
    got = await call(node, "workflows.get", {"workflow": "welcome-series"})
    assert got["version"] == 1 and got["enabled"] is True and got["problems"] == []
    assert tomllib.loads(got["toml"]) == got["definition"]

    # A welcome enrollment on v1 waits at wait-1.
    await sign_up(node, "early", f"early-{uuid.uuid4().hex[:6]}@example.com")

    async def waiting() -> list[Any]:
        return [r for r in enrollments(node, "welcome-series") if r.state == "waiting"]

    [first] = await wait_for(waiting, "the first welcome enrollment to wait")
    assert (first.workflow_version, first.step_id) == (1, "wait-1")

    # v2 sends welcome-3 first and has no waits; saved, it is not live.
    draft = copy.deepcopy(got["definition"])
    draft["name"] = "Welcome series (short)"
    draft["steps"] = [{"id": "only", "type": "send", "template": "welcome-3"}]
    saved = await call(node, "workflows.save", {"definition": draft, "base_version": 1})
    assert saved["version"] == 2 and saved["enabled"] is False and saved["changed"] is True
    versions = await call(node, "workflows.versions", {"workflow": "welcome-series"})
    assert versions["live_version"] == 1
    assert [(v["version"], v["enabled"]) for v in versions["versions"]] == [(2, False), (1, True)]
    await sign_up(node, "second", f"second-{uuid.uuid4().hex[:6]}@example.com")

    async def enrolled(n: int) -> list[Any]:
        rows = enrollments(node, "welcome-series")
        return rows if len(rows) >= n else []

    rows = await wait_for(lambda: enrolled(2), "the second welcome enrollment")
    assert rows[1].workflow_version == 1

    # Enabled, v2 starts the next enrollment; the waiting one stays on v1 at wait-1.
    enabled = await call(node, "workflows.enable", {"workflow": "welcome-series", "version": 2})
    assert enabled["changed"] is True and enabled["previous_live"] == 1
    await sign_up(node, "third", f"third-{uuid.uuid4().hex[:6]}@example.com")
    rows = await wait_for(lambda: enrolled(3), "the third welcome enrollment")
    assert rows[2].workflow_version == 2
    by_id = {r.id: r for r in rows}
    assert (by_id[first.id].workflow_version, by_id[first.id].step_id) == (1, "wait-1")
    assert node.components["library"].workflows.get("welcome-series", 1) is not None

    # Disabling names the live version; another one is refused and changes nothing.
    with pytest.raises(ControlError, match="v1 is not the live version"):
        await call(node, "workflows.disable", {"workflow": "welcome-series", "version": 1})
    await call(node, "workflows.disable", {"workflow": "welcome-series", "version": 2})
    assert (await call(node, "workflows.versions", {"workflow": "welcome-series"}))[
        "live_version"
    ] is None
    fourth = await sign_up(node, "fourth", f"fourth-{uuid.uuid4().hex[:6]}@example.com")
    await processed(node, fourth)
    assert len(enrollments(node, "welcome-series")) == 3

    assert audit_actions(node) == [
        ("ada", "workflows.save", "workflow welcome-series v2"),
        ("ada", "workflows.enable", "workflow welcome-series v2"),
        ("ada", "workflows.disable", "workflow welcome-series v2"),
    ]


async def processed(node: Node, message_id: str) -> None:
    assert node.store is not None
    p = schema.processed_events

    async def done() -> bool:
        with node.store.begin() as conn:  # type: ignore[union-attr]
            row = conn.execute(sa.select(p.c.message_id).where(p.c.message_id == message_id))
            return row.first() is not None

    await wait_for(done, f"event {message_id} to be decided")


async def test_a_save_with_problems_or_a_stale_base_changes_nothing(node: Node) -> None:
    with pytest.raises(ControlError, match="not saved: step 'check': names step 'vip-mail'"):
        await call(node, "workflows.save", {"definition": broken()})
    got = await call(node, "workflows.get", {"workflow": "abandoned-cart"})
    draft = {**got["definition"], "priority": "low"}
    with pytest.raises(ControlError, match="is at version 1, not 3"):
        await call(node, "workflows.save", {"definition": draft, "base_version": 3})
    same = await call(node, "workflows.save", {"text": got["toml"]})
    assert same == {"workflow": "abandoned-cart", "version": 1, "changed": False}
    assert audit_actions(node) == []
    assert (await call(node, "workflows.versions", {"workflow": "abandoned-cart"}))["versions"][0][
        "version"
    ] == 1


# -- step counts ---------------------------------------------------------------------------------


async def test_step_counts_follow_enrollments_and_sends(node: Node) -> None:
    address = f"buyer-{uuid.uuid4().hex[:6]}@example.com"
    await order(node, "buyer", address)

    async def sent() -> dict[str, Any] | None:
        counts = await call(
            node, "workflows.step_counts", {"workflow": "order-confirmation"}, user="vic"
        )
        return counts if counts["steps"]["confirm"]["sent"] == 1 else None

    counts = await wait_for(sent, "the order confirmation to be sent", timeout=30)
    assert counts["version"] == 1
    assert counts["steps"]["confirm"] == {
        "entered": 1,
        "waiting": 0,
        "sent": 1,
        "exited": 0,
        "converted": 0,
    }
    assert counts["enrollments"]["entered"] == 1 and counts["enrollments"]["completed"] == 1

    await sign_up(node, "newbie", f"newbie-{uuid.uuid4().hex[:6]}@example.com")

    async def waiting() -> dict[str, Any] | None:
        counts = await call(node, "workflows.step_counts", {"workflow": "welcome-series"})
        return counts if counts["steps"]["wait-1"]["waiting"] == 1 else None

    counts = await wait_for(waiting, "the welcome enrollment to wait")
    steps = counts["steps"]
    assert steps["welcome-1"]["entered"] == 1 and steps["wait-1"]["entered"] == 1
    assert steps["welcome-2"] == dict.fromkeys(steps["welcome-2"], 0)


# -- roles and bad arguments ---------------------------------------------------------------------


async def test_a_viewer_reads_but_may_not_change(node: Node) -> None:
    assert (await call(node, "workflows.list", user="vic"))["workflows"]
    got = await call(node, "workflows.get", {"workflow": "welcome-series"}, user="vic")
    for verb, args in (
        ("workflows.save", {"definition": {**got["definition"], "name": "Changed"}}),
        ("workflows.enable", {"workflow": "welcome-series", "version": 1}),
        ("workflows.disable", {"workflow": "welcome-series", "version": 1}),
    ):
        with pytest.raises(ControlError, match="marketer role needed"):
            await call(node, verb, args, user="vic")
    versions = await call(node, "workflows.versions", {"workflow": "welcome-series"})
    assert [(v["version"], v["enabled"]) for v in versions["versions"]] == [(1, True)]
    assert audit_actions(node) == []


async def test_bad_arguments_are_refused_by_name(node: Node) -> None:
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("workflows.get", {"workflow": "nope"}, r"there is no workflow 'nope' \(workflows: "),
        ("workflows.get", {"workflow": "welcome-series", "version": 9}, "no version 9"),
        ("workflows.get", {"workflow": "Bad Id"}, "bad workflow id"),
        ("workflows.get", {"workflow": "welcome-series", "colour": 1}, "unknown argument"),
        ("workflows.enable", {"workflow": "welcome-series"}, "version is required"),
        ("workflows.enable", {"workflow": "welcome-series", "version": 0}, "version must be"),
        ("workflows.save", {}, "give the draft as definition"),
        ("workflows.save", {"definition": [1]}, "definition must be an object"),
        ("workflows.save", {"text": "id = 'x'", "enable": "yes"}, "enable must be true or false"),
        ("workflows.step_counts", {"workflow": "ghost"}, "there is no workflow 'ghost'"),
    ]
    for verb, args, message in cases:
        with pytest.raises(ControlError, match=message):
            await call(node, verb, args)


# -- every node -----------------------------------------------------------------------------------


async def test_enabling_on_one_node_is_live_on_the_others(tmp_path: Path) -> None:
    a = Node(node_settings(tmp_path / "a", "a1"))
    await a.start()
    try:
        assert a.store is not None
        grant(a.store, "ada", "marketer")
        b = Node(
            node_settings(
                tmp_path / "b",
                "b1",
                engine={"role": "decide"},
                nats={"url": a.nats_url, **a.nats_auth()},
                database={"url": a.settings.database_url()},
            )
        )
        await b.start()
        try:
            registry = b.components["library"].workflows
            assert registry.get("abandoned-cart").version == 1
            got = await call(a, "workflows.get", {"workflow": "abandoned-cart"})
            draft = {**got["definition"], "priority": "low"}
            await call(a, "workflows.save", {"definition": draft, "enable": True})

            async def live_on_b() -> bool:
                return bool(registry.get("abandoned-cart").version == 2)

            await wait_for(live_on_b, "node b1 to take v2 live")
            assert registry.get("abandoned-cart").priority == 20
            assert [wf.version for wf in registry.active() if wf.id == "abandoned-cart"] == [2]
        finally:
            await b.stop()
    finally:
        await a.stop()
