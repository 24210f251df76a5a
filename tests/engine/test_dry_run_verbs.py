"""The dry-run verbs through the real control API of an engine node (embedded nats-server,
SQLite, decide running): a job per dry run with progress, results that match the recording,
nothing written, bad input refused with the reason."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from engine.bus import events_subject
from engine.config import load_settings
from engine.control import ControlError, request
from engine.ingest.validate import format_time
from engine.node import Node
from engine.store import Store, schema
from tests.engine.access_support import grant

QUIZ = {
    "id": "quiz-draft",
    "name": "Quiz follow-up",
    "category": "marketing",
    "enabled": False,
    "trigger": {
        "event": "Quiz Finished",
        "where": [{"property": "score", "op": "gte", "value": 5}],
    },
    "steps": [{"id": "mail", "type": "send", "template": "re-engagement"}],
}


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    settings = load_settings(
        None,
        environ={},
        overrides={
            "engine": {"data_dir": str(tmp_path / "data"), "node": "d1"},
            "http": {"listen": "127.0.0.1:0"},
            "ingest": {"write_key": "wk-test"},
        },
    )
    node = Node(settings)
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


async def publish(node: Node, body: dict[str, Any]) -> None:
    assert node.js is not None
    now = format_time(time.time())
    body = {"timestamp": now, "receivedAt": now, **body}
    await node.js.publish(
        events_subject(body["type"]), orjson.dumps(body), headers={"Nats-Msg-Id": body["messageId"]}
    )


def count(store: Store, table: sa.Table, *where: Any) -> int:
    with store.begin() as conn:
        query = sa.select(sa.func.count()).select_from(table).where(*where)
        return int(conn.execute(query).scalar() or 0)


async def test_workflow_and_segment_dry_runs_over_the_control_api(node: Node) -> None:
    assert node.store is not None and node.nc is not None
    store, nc = node.store, node.nc
    grant(store, "mia", "marketer")

    async def call(verb: str, args: dict[str, Any], timeout: float = 30) -> Any:
        return await request(nc, "d1", verb, args, user="mia", timeout=timeout)

    for k, score in enumerate((9, 7, 2)):
        user = f"q{k}"
        await publish(
            node,
            {"type": "identify", "userId": user, "traits": {"email": f"{user}@quiz.test"},
             "messageId": f"id-{user}"},
        )  # fmt: skip
        await publish(
            node,
            {"type": "track", "userId": user, "event": "Quiz Finished",
             "properties": {"score": score}, "messageId": f"quiz-{user}"},
        )  # fmt: skip

    async def decided() -> None:
        while count(store, schema.processed_events) < 6:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(decided(), 20)
    intents_before = count(store, schema.intents)

    started = await call("workflows.dry_run", {"definition": QUIZ, "since": "1h", "wait": 20})
    assert started["kind"] == "workflow" and started["label"] == "quiz-draft"
    assert started["state"] == "done", started
    assert started["scanned"] == started["total"] >= 6
    result = started["result"]
    assert result["emails"]["would_send"] == 2  # scores 9 and 7; 2 is below the threshold
    assert sorted(s["email"] for s in result["sample"]) == ["q0@quiz.test", "q1@quiz.test"]
    assert result["per_domain"] == [{"domain": "quiz.test", "count": 2}]
    assert result["warnings"] == []
    typo = {**QUIZ, "steps": [{"id": "mail", "type": "send", "template": "welcom"}]}
    warned = await call("workflows.dry_run", {"definition": typo, "since": "1h", "wait": 20})
    assert warned["result"]["warnings"] == [
        "step 'mail': there is no template 'welcom' (its mail would fail to render)"
    ]
    status = await call("dry_runs.status", {"job": started["job"]})
    assert status["state"] == "done" and status["result"] == result
    # Nothing of the draft exists in the store, and no intent was added by the dry run.
    assert count(store, schema.intents) == intents_before
    assert count(store, schema.intents, schema.intents.c.workflow_id == "quiz-draft") == 0
    assert count(store, schema.enrollments, schema.enrollments.c.workflow_id == "quiz-draft") == 0
    assert count(store, schema.timers) == 0
    # Nor did any mail reach the capture inbox (the live starters ignore "Quiz Finished").
    await asyncio.sleep(0.5)
    assert await call("inbox.list", {"search": "quiz.test"}) == []

    seg = await call(
        "segments.dry_run",
        {"text": "`Quiz Finished` where score >= 5 at least once in the last 1 day", "since": 3600,
         "wait": 20},
    )  # fmt: skip
    assert seg["state"] == "done", seg
    assert seg["result"]["contacts"]["entered"] == 2
    assert seg["result"]["emails"]["would_send"] == 2

    # Bad input: refused at once, with the reason.
    refusals = {
        "since is required": ("workflows.dry_run", {"definition": QUIZ}),
        "since: bad duration 'yesterday'": (
            "workflows.dry_run",
            {"definition": QUIZ, "since": "yesterday"},
        ),
        "definition is required": ("workflows.dry_run", {"definition": "quiz", "since": "1h"}),
        "step 'mail': missing template name": (
            "workflows.dry_run",
            {"definition": {**QUIZ, "steps": [{"id": "mail", "type": "send"}]}, "since": "1h"},
        ),
        "max_events must be a whole number": (
            "workflows.dry_run",
            {"definition": QUIZ, "since": "1h", "max_events": 0},
        ),
        "line 1, col 1": ("segments.dry_run", {"text": "??", "since": "1h"}),
        "unknown argument 'sample'": (
            "segments.dry_run",
            {"text": "subscribed to marketing", "since": "1h", "sample": 3},
        ),
        "no dry run 'nope' of yours": ("dry_runs.status", {"job": "nope"}),
    }
    for message, (verb, args) in refusals.items():
        with pytest.raises(ControlError, match=message):
            await call(verb, args)
    # The limit on events scanned: more recorded than allowed is a clear failure of the job.
    limited = await call(
        "workflows.dry_run", {"definition": QUIZ, "since": "1h", "max_events": 2, "wait": 10}
    )
    assert limited["state"] == "failed"
    assert "more than the 2 a dry run may scan" in limited["error"]
    # Another user does not see mia's jobs.
    grant(store, "sam", "support")
    with pytest.raises(ControlError, match="of yours"):
        await request(nc, "d1", "dry_runs.status", {"job": started["job"]}, user="sam")
