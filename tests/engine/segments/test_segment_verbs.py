"""The segment verbs through the real control API of an engine node (embedded nats-server,
SQLite): save with validation and audit, the background build with progress while events
flow, count, sample, why, history."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from engine.bus import events_subject
from engine.config import load_settings
from engine.control import ControlError, request
from engine.node import Node
from engine.segments.build import SegmentBuilder
from engine.store import Store, schema
from tests.engine.access_support import grant

CONTACTS = 240


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    settings = load_settings(
        None,
        environ={},
        overrides={
            "engine": {"data_dir": str(tmp_path / "data"), "node": "s1"},
            "http": {"listen": "127.0.0.1:0"},
            "ingest": {"write_key": "wk-test"},
        },
    )
    node = Node(settings)
    await node.start()
    assert node.store is not None
    with node.store.begin() as conn:
        conn.execute(
            schema.contacts.insert(),
            [
                {
                    "id": f"c{k:04d}",
                    "email": f"c{k}@example.com",
                    "traits": {"plan": "pro" if k % 2 == 0 else "free"},
                    "consent": {},
                    "first_seen_at": 0.0,
                    "last_seen_at": 0.0,
                    "updated_at": 0.0,
                }
                for k in range(CONTACTS)
            ],
        )
    builder = node.components["segment_builder"]
    assert isinstance(builder, SegmentBuilder)
    builder.page = 20  # several pages, so progress is visible
    try:
        yield node
    finally:
        await node.stop()


async def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = await predicate()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def count_rows(store: Store, table: sa.Table) -> int:
    with store.begin() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() or 0)


async def identify(node: Node, user: str, **traits: Any) -> None:
    assert node.js is not None
    body = {"type": "identify", "userId": user, "traits": traits, "messageId": f"m-{user}-{traits}"}
    await node.js.publish(
        events_subject("identify"), orjson.dumps(body), headers={"Nats-Msg-Id": body["messageId"]}
    )


async def test_save_build_and_query_a_segment(node: Node) -> None:
    assert node.store is not None and node.nc is not None
    store, nc = node.store, node.nc

    grant(store, "marketer-mo", "marketer")

    async def call(verb: str, args: dict[str, Any] | None = None) -> Any:
        return await request(nc, "s1", verb, args, user="marketer-mo", timeout=10)

    assert "segments.save" in (await call("ping"))["verbs"]
    saved = await call(
        "segments.save", {"segment": "pros", "name": "Pro plan", "text": 'trait  plan = "pro"'}
    )
    assert (saved["version"], saved["text"]) == (1, 'trait plan = "pro"')
    assert saved["build"]["state"] == "running"
    # Events keep flowing while the build walks the contacts.
    await identify(node, "c0001", plan="pro")  # odd: was free
    await identify(node, "c0002", plan="free")  # even: was pro

    async def finished() -> Any:
        [build] = (await call("segments.build_status", {"segment": "pros"}))["builds"]
        return build if build["state"] != "running" else None

    build = await wait_for(finished, "the build")
    assert build["state"] == "done"
    assert build["done"] == build["total"] == CONTACTS

    async def settled() -> Any:
        got = await call("segments.count", {"segment": "pros"})
        return got if got["members"] == CONTACTS // 2 and await is_member("c0001") else None

    async def is_member(contact: str) -> bool:
        why = await call("segments.why", {"segment": "pros", "contact": contact})
        return bool(why["member"])

    await wait_for(settled, "membership after the build and the events")
    assert not await is_member("c0002")
    why = await call("segments.why", {"segment": "pros", "contact": "c0003"})
    assert why["member"] is False and why["holds"] is False
    assert why["explanation"] == {"condition": 'trait plan = "pro"', "held": False, "value": "free"}

    sample = await call("segments.sample", {"segment": "pros", "limit": 5})
    assert len(sample["members"]) == 5
    assert all(m["email"].endswith("@example.com") for m in sample["members"])

    since = time.time() - 600
    history = await call("segments.history", {"segment": "pros", "bucket": 60, "since": since})
    assert history["points"][-1]["members"] == CONTACTS // 2
    assert sum(p["entered"] - p["exited"] for p in history["points"]) == CONTACTS // 2

    edited = await call(
        "segments.save",
        {"segment": "pros", "name": "Pro plan", "text": 'trait plan in ["pro", "team"]'},
    )
    assert edited["version"] == 2
    got = await call("segments.get", {"segment": "pros"})
    assert [v["version"] for v in got["versions"]] == [2, 1]
    assert {v["actor"] for v in got["versions"]} == {"marketer-mo"}
    [listed] = await call("segments.list")
    assert listed["text"] == 'trait plan in ["pro", "team"]'
    with store.begin() as conn:
        audits = conn.execute(
            sa.select(schema.audit_log.c.actor, schema.audit_log.c.target).where(
                schema.audit_log.c.action == "segments.save"
            )
        ).all()
    assert [tuple(a) for a in audits] == [
        ("marketer-mo", "segment pros v1"),
        ("marketer-mo", "segment pros v2"),
    ]
    await wait_for(finished, "the second build")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            {"segment": "x", "name": "X", "text": "`Viewed` at least lots in the last 1h"},
            "segment 'x': line 1, col 19: expected a number after 'least', found 'lots'",
        ),
        ({"segment": "x", "name": "X", "text": "in segment nope"}, "refers to segment 'nope'"),
        ({"segment": "Bad Id", "name": "X", "text": "subscribed to marketing"}, "bad segment id"),
        ({"segment": "x", "text": "subscribed to marketing"}, "name is required"),
        ({"segment": "x", "name": "X", "text": "a", "colour": 1}, "unknown argument 'colour'"),
        ({"segment": "cyc", "name": "C", "text": "in segment base"}, None),
    ],
)
async def test_bad_definitions_are_refused_and_change_nothing(
    node: Node, args: dict[str, Any], message: str | None
) -> None:
    assert node.store is not None and node.nc is not None

    grant(node.store, "mo", "marketer")

    async def call(verb: str, a: dict[str, Any]) -> Any:
        return await request(node.nc, "s1", verb, a, user="mo")  # type: ignore[arg-type]

    base = {"segment": "base", "name": "Base", "text": "subscribed to marketing"}
    await call("segments.save", base)
    if message is None:  # base -> cyc -> base
        await call("segments.save", args)
        args = {**base, "text": "in segment cyc"}
        message = "segments refer to each other in a cycle: base -> cyc -> base"
    before = (count_rows(node.store, schema.segments), count_rows(node.store, schema.audit_log))
    with pytest.raises(ControlError) as refused:
        await call("segments.save", args)
    assert message in str(refused.value)
    after = (count_rows(node.store, schema.segments), count_rows(node.store, schema.audit_log))
    assert after == before
    listed = await call("segments.list", {})
    assert {s["id"]: s["version"] for s in listed}.get("base") == 1
    with pytest.raises(ControlError, match="there is no segment 'nope' \\(segments: base"):
        await call("segments.count", {"segment": "nope"})
    with pytest.raises(ControlError, match="there is no contact 'zed'"):
        await call("segments.why", {"segment": "base", "contact": "zed"})


async def test_a_save_on_one_node_is_live_on_the_others(node: Node, tmp_path: Path) -> None:
    """A second node on the same NATS and database (here a decide node, which evaluates
    segments on its events) loads the saved definition without a restart."""
    other = Node(
        load_settings(
            None,
            environ={},
            overrides={
                "engine": {"data_dir": str(tmp_path / "other"), "node": "s2", "role": "decide"},
                "http": {"listen": "127.0.0.1:0"},
                "nats": {"url": node.nats_url, **node.nats_auth()},
                "database": {"url": node.settings.database_url()},
            },
        )
    )
    await other.start()
    try:
        registry = other.components["segments"]
        assert node.store is not None
        grant(node.store, "ada", "marketer")
        assert "vip" not in registry.index.segments
        assert node.nc is not None
        await request(
            node.nc,
            "s1",
            "segments.save",
            {"segment": "vip", "name": "VIP", "text": 'trait plan = "pro"'},
            user="ada",
        )
        deadline = time.monotonic() + 20
        while "vip" not in registry.index.segments:
            assert time.monotonic() < deadline, "node s2 never loaded the saved segment"
            await asyncio.sleep(0.05)
        assert registry.index.segments["vip"].version == 1
        await request(
            node.nc,
            "s1",
            "segments.save",
            {"segment": "vip", "name": "VIP", "text": 'trait plan in ["pro", "team"]'},
            user="ada",
        )
        while registry.index.segments["vip"].version != 2:
            assert time.monotonic() < deadline, "node s2 never loaded version 2"
            await asyncio.sleep(0.05)
    finally:
        await other.stop()
