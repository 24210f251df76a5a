"""Broadcasts: a template to a segment through the same ledger, caps and quiet hours as
triggered mail; idempotent fan-out across reruns and restarts; cancel; the control verbs and
the CLI. End to end on a real node (embedded nats-server, SQLite, capture inbox) with a clock
the test moves."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from engine import broadcasts
from engine.cli import main as cli
from engine.clock import ManualClock
from engine.config import load_settings
from engine.control import ControlError, request
from engine.inbox import list_messages
from engine.library import seed_library
from engine.node import Node
from engine.pacing.policy import Pacing
from engine.store import Store, open_store, schema
from tests.engine.access_support import grant

START = 1_800_000_000.0  # 2027-01-15 08:00 UTC; 03:00 in New York


def contact(k: int, **extra: Any) -> dict[str, Any]:
    row = {
        "id": f"c{k:03d}",
        "email": f"c{k}@example.com",
        "traits": {"plan": "pro"},
        "timezone": None,
        "consent": {},
        "first_seen_at": 0.0,
        "last_seen_at": 0.0,
        "updated_at": 0.0,
    }
    return {**row, **extra}


def fill(store: Store, rows: list[dict[str, Any]], segment: str = "pros") -> None:
    """Contacts, and their membership of ``segment`` (as a segment build records it)."""
    with store.begin() as conn:
        conn.execute(schema.contacts.insert(), rows)
        conn.execute(
            schema.segment_members.insert(),
            [{"segment_id": segment, "contact_id": r["id"], "entered_at": 0.0} for r in rows],
        )


def save_segment(conn: sa.Connection, sid: str, name: str, text: str, **_: Any) -> None:
    """A stored segment definition (its members are filled in by ``fill``)."""
    conn.execute(
        schema.segments.insert(),
        {"id": sid, "version": 1, "name": name, "definition": text, "actor": "t",
         "created_at": START},
    )  # fmt: skip


def ledger(store: Store, workflow: str) -> list[sa.Row[Any]]:
    i = schema.intents
    with store.begin() as conn:
        return list(
            conn.execute(sa.select(i).where(i.c.workflow_id == workflow).order_by(i.c.contact_id))
        )


@pytest.fixture
def lone_store(tmp_path: Path) -> Store:
    store = open_store(f"sqlite:///{tmp_path / 'b.sqlite3'}")
    seed_library(store, None, START)
    with store.begin() as conn:
        save_segment(conn, "pros", "Pro plan", 'trait plan = "pro"', actor="t", now=START)
    return store


def make(store: Store, **kw: Any) -> str:
    request_ = broadcasts.BroadcastRequest(template="re-engagement", segment="pros", **kw)
    reply = broadcasts.create(store, request_, actor="mo", now=START, routes=["default"])
    return str(reply["id"])


def test_the_fan_out_is_idempotent_across_reruns_and_restarts(lone_store: Store) -> None:
    store = lone_store
    fill(store, [contact(k) for k in range(10)] + [contact(99, email=None)])
    ident = make(store)
    pacing = Pacing()
    assert broadcasts.claim_due(store, "n1/a", START) == ident
    first = broadcasts.fan_out_page(store, pacing, ident, "n1/a", START, page=4)
    assert (first.queued, first.done) == (4, False)
    # n1 dies here. Its lease runs out; n2 takes the broadcast over from the cursor.
    assert broadcasts.claim_due(store, "n2/b", START + 30) is None
    assert broadcasts.claim_due(store, "n2/b", START + broadcasts.LEASE_S + 1) == ident
    # The old incarnation's next page is refused: the broadcast is no longer its own.
    assert broadcasts.fan_out_page(store, pacing, ident, "n1/a", START + 61, page=4).done
    later = START + broadcasts.LEASE_S + 2
    while not (page := broadcasts.fan_out_page(store, pacing, ident, "n2/b", later, 4)).done:
        pass
    rows = ledger(store, broadcasts.PREFIX + ident)
    assert [r.contact_id for r in rows] == [f"c{k:03d}" for k in range(10)]
    assert {r.status for r in rows} == {"queued"}
    # Running the whole fan-out again (cursor lost, say) mails nobody twice.
    with store.begin() as conn:
        conn.execute(
            sa.update(schema.broadcasts).values(state="sending", cursor=None, claimed_by="n3/c")
        )
    again = broadcasts.fan_out_page(store, pacing, ident, "n3/c", later, page=100)
    assert (again.queued, again.done) == (0, True)
    assert len(ledger(store, broadcasts.PREFIX + ident)) == 10
    [listed] = broadcasts.list_broadcasts(store)
    assert listed["state"] == "sent" and listed["progress"] == 1.0
    assert listed["skipped"] >= 1  # c099 has no email address
    assert listed["outcomes"] == {"queued": 10}
    assert page.queued + first.queued <= 10


def test_caps_and_priorities_apply_to_broadcasts(lone_store: Store) -> None:
    store = lone_store
    fill(store, [contact(1), contact(2)])
    # c001 already has a high-priority mail planned today; c002 a low one.
    with store.begin() as conn:
        for cid, prio, wf in (("c001", 80, "abandoned-cart"), ("c002", 10, "promo")):
            conn.execute(
                schema.intents.insert(),
                {
                    "id": f"i-{cid}",
                    "dedup_key": f"k-{cid}",
                    "workflow_id": wf,
                    "workflow_version": 1,
                    "step_id": "send",
                    "contact_id": cid,
                    "event_id": "e",
                    "template_id": "abandoned-cart",
                    "route": "default",
                    "category": "marketing",
                    "to_addr": f"{cid}@example.com",
                    "domain": "example.com",
                    "context": {},
                    "status": "queued",
                    "attempts": 0,
                    "next_attempt_at": START,
                    "received_at": START,
                    "decided_at": START,
                    "priority": prio,
                    "cap_day": "2027-01-15",
                    "cap_week": "2027-W02",
                },
            )
    ident = make(store, priority="low")
    assert broadcasts.claim_due(store, "n1/a", START) == ident
    page = broadcasts.fan_out_page(store, Pacing(per_day=1), ident, "n1/a", START)
    assert (page.queued, page.capped, page.done) == (1, 1, True)
    assert page.capped_workflows == {broadcasts.PREFIX + ident: 1, "promo": 1}
    rows = {r.contact_id: r for r in ledger(store, broadcasts.PREFIX + ident)}
    assert rows["c001"].status == "suppressed"
    assert rows["c001"].reply.startswith("frequency cap: 1 marketing mail a day already planned")
    assert rows["c002"].status == "queued"  # it pre-empted the priority-10 promotion
    with store.begin() as conn:
        promo = conn.execute(
            sa.select(schema.intents.c.status, schema.intents.c.reply).where(
                schema.intents.c.id == "i-c002"
            )
        ).one()
    assert promo.status == "suppressed"
    assert promo.reply == f"frequency cap: pre-empted by broadcast:{ident} (priority 20 over 10)"


def test_bad_requests_are_refused_and_change_nothing(lone_store: Store) -> None:
    store = lone_store
    cases: list[tuple[dict[str, Any], str]] = [
        ({"template": "nope"}, "there is no template 'nope' (templates: abandoned-cart"),
        ({"segment": "nope"}, "there is no segment 'nope' (segments: pros)"),
        ({"category": "spam"}, "category must be marketing or transactional"),
        ({"priority": "urgent"}, "priority must be high, normal, low or a whole number"),
        ({"route": "relay-z"}, "there is no route 'relay-z' (routes: default)"),
    ]
    for changes, message in cases:
        args = {"template": "re-engagement", "segment": "pros", **changes}
        with pytest.raises(broadcasts.BroadcastError, match=re.escape(message)):
            broadcasts.create(
                store,
                broadcasts.BroadcastRequest(**args),
                actor="mo",
                now=START,
                routes=["default"],
            )
    with pytest.raises(broadcasts.BroadcastError, match="has no offset"):
        broadcasts.parse_when("2027-01-15T09:00:00")
    assert broadcasts.list_broadcasts(store) == []
    with store.begin() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.audit_log)).scalar() == 0


# -- end to end on a node -----------------------------------------------------------------------


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    settings = load_settings(
        None,
        environ={},
        overrides={
            "engine": {"data_dir": str(tmp_path / "data"), "node": "b1"},
            "http": {"listen": "127.0.0.1:0"},
            "ingest": {"write_key": "wk-test"},
            "caps": {"per_day": 1},
            "quiet": {"hours": "21:00-08:00", "timezone": "UTC"},
        },
    )
    node = Node(settings, clock=ManualClock(START))
    await node.start()
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


async def test_broadcast_end_to_end_with_quiet_hours_and_cancel(node: Node) -> None:
    assert node.store is not None and node.nc is not None
    store, nc = node.store, node.nc
    clock = node.clock
    assert isinstance(clock, ManualClock)
    with store.begin() as conn:
        save_segment(conn, "pros", "Pro plan", 'trait plan = "pro"', actor="t", now=START)
    # Five in UTC (08:00: mail may go), two in New York (03:00: quiet hours until 08:00 there).
    fill(store, [contact(k) for k in range(5)])
    fill(store, [contact(k, timezone="America/New_York") for k in (5, 6)])

    grant(store, "marketer-mo", "marketer")

    async def call(verb: str, args: dict[str, Any] | None = None) -> Any:
        return await request(nc, "b1", verb, args, user="marketer-mo", timeout=10)

    assert {"broadcasts.create", "broadcasts.list", "broadcasts.cancel"} <= set(
        (await call("ping"))["verbs"]
    )
    with pytest.raises(ControlError, match="unknown argument 'segmnt'"):
        await call("broadcasts.create", {"template": "re-engagement", "segmnt": "pros"})
    preview = await call(
        "broadcasts.create", {"template": "re-engagement", "segment": "pros", "preview": True}
    )
    assert preview["recipients"] == 7 and "audit_id" not in preview
    assert preview["summary"].startswith("Send re-engagement to 7 members of segment pros now")
    assert (await call("broadcasts.list"))["broadcasts"] == []

    made = await call(
        "broadcasts.create", {"template": "re-engagement", "segment": "pros", "name": "Winter"}
    )
    ident = made["id"]
    inbox = node.data_dir / "inbox"

    async def delivered(n: int) -> Any:
        found = await asyncio.to_thread(list_messages, inbox, 50)
        return found if len(found) >= n else None

    await wait_for(lambda: delivered(5), "the five UTC contacts' mail")
    [listed] = (await call("broadcasts.list"))["broadcasts"]
    assert listed["state"] == "sent" and listed["queued"] == 7 and listed["progress"] == 1.0
    held = {r.contact_id: r for r in ledger(store, broadcasts.PREFIX + ident) if r.status != "sent"}
    assert sorted(held) == ["c005", "c006"]  # deferred, not dropped
    assert all(r.next_attempt_at == START + 5 * 3600 for r in held.values())
    assert len(await asyncio.to_thread(list_messages, inbox, 50)) == 5

    # A second broadcast the same day: the cap (1 a day) binds, equal priority, so it is
    # dropped for everyone; then cancelled (nothing left pending to cancel).
    second = await call("broadcasts.create", {"template": "re-engagement", "segment": "pros"})

    async def fanned_out() -> Any:
        found = (await call("broadcasts.list"))["broadcasts"]
        mine = [b for b in found if b["id"] == second["id"]]
        return mine[0] if mine and mine[0]["state"] == "sent" else None

    done = await wait_for(fanned_out, "the second fan-out")
    assert done["capped"] == 7 and done["queued"] == 0
    assert done["outcomes"] == {"suppressed": 7}

    # Scheduled for later, then cancelled before it is due: nobody gets it.
    later = await call(
        "broadcasts.create",
        {"template": "re-engagement", "segment": "pros", "at": START + 86_400},
    )
    preview_cancel = await call(
        "broadcasts.cancel", {"broadcast": later["id"], "reason": "typo", "preview": True}
    )
    assert preview_cancel["count"] == 0 and "stop its fan-out" in preview_cancel["summary"]
    cancelled = await call("broadcasts.cancel", {"broadcast": later["id"], "reason": "typo"})
    assert cancelled["audit_id"] > 0
    with pytest.raises(ControlError, match="already cancelled"):
        await call("broadcasts.cancel", {"broadcast": later["id"], "reason": "again"})

    # Morning in New York: the held mail goes out; the cancelled broadcast never starts.
    clock.set(START + 5 * 3600 + 86_400 + 1)
    await wait_for(lambda: delivered(7), "the New York contacts' mail after quiet hours")
    await asyncio.sleep(0.3)
    assert ledger(store, broadcasts.PREFIX + later["id"]) == []
    assert len(await asyncio.to_thread(list_messages, inbox, 50)) == 7
    with store.begin() as conn:
        actions = list(
            conn.execute(
                sa.select(schema.audit_log.c.action).order_by(schema.audit_log.c.id)
            ).scalars()
        )
    assert actions.count("broadcasts.create") == 3 and actions.count("broadcasts.cancel") == 1


def test_the_cli_creates_lists_and_cancels(
    lone_store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(lone_store, [contact(k) for k in range(3)])
    url = str(lone_store.engine.url)
    base = ["--database", url]
    assert cli(["broadcast", "create", "--template", "re-engagement", "--segment", "pros",
                "--preview", *base]) == 0  # fmt: skip
    assert "Send re-engagement to 3 members of segment pros now" in capsys.readouterr().out
    when = datetime.fromtimestamp(time.time() + 30 * 86_400, UTC).replace(second=0, microsecond=0)
    local = when.astimezone(timezone(timedelta(hours=1))).isoformat()  # e.g. ...T09:00:00+01:00
    assert cli(["broadcast", "create", "--template", "re-engagement", "--segment", "pros",
                "--at", local, *base]) == 0  # fmt: skip
    out = capsys.readouterr().out
    ident = out.strip().rsplit(" ", 1)[1]
    assert f"at {when:%Y-%m-%d %H:%M} UTC" in out
    assert cli(["broadcast", "list", *base]) == 0
    assert "scheduled" in capsys.readouterr().out
    assert cli(["broadcast", "cancel", ident, "--reason", "wrong day", *base]) == 0
    assert "Cancelled 0 pending emails" in capsys.readouterr().out
    assert cli(["broadcast", "create", "--template", "x", "--segment", "pros", *base]) == 2
    assert "there is no template 'x'" in capsys.readouterr().err
