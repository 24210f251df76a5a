"""The frequency cap under concurrent writers on PostgreSQL: two broadcasts fanned out at the
same moment by two threads (two nodes) to the same contacts never give anyone two mails on a
day capped at one."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import sqlalchemy as sa

from engine import broadcasts
from engine.library import seed_library
from engine.pacing.policy import Pacing
from engine.store import open_store, schema

START = 1_800_000_000.0
CONTACTS = 60


@pytest.mark.postgres
def test_two_nodes_fanning_out_at_once_respect_the_cap(pg_url: str) -> None:
    store = open_store(pg_url)
    try:
        seed_library(store, None, START)
        with store.begin() as conn:
            conn.execute(
                schema.segments.insert(),
                {"id": "all", "version": 1, "name": "All", "definition": "trait plan exists",
                 "actor": "t", "created_at": START},
            )  # fmt: skip
            rows: list[dict[str, Any]] = [
                {"id": f"c{k:03d}", "email": f"c{k}@example.com", "traits": {}, "consent": {},
                 "first_seen_at": 0.0, "last_seen_at": 0.0, "updated_at": 0.0}
                for k in range(CONTACTS)
            ]  # fmt: skip
            conn.execute(schema.contacts.insert(), rows)
            conn.execute(
                schema.segment_members.insert(),
                [{"segment_id": "all", "contact_id": r["id"], "entered_at": 0.0} for r in rows],
            )
        idents = []
        for name in ("a", "b"):
            request = broadcasts.BroadcastRequest(
                template="re-engagement", segment="all", name=name
            )
            reply = broadcasts.create(store, request, actor="t", now=START, routes=["default"])
            idents.append(reply["id"])
        for owner, ident in zip(("n1/x", "n2/y"), idents, strict=True):
            with store.begin() as conn:
                conn.execute(
                    sa.update(schema.broadcasts)
                    .where(schema.broadcasts.c.id == ident)
                    .values(state="sending", claimed_by=owner, lease_until=START + 60)
                )
        pacing = Pacing(per_day=1)
        start = threading.Barrier(2)
        errors: list[BaseException] = []

        def run(owner: str, ident: str) -> None:
            try:
                start.wait()
                while not broadcasts.fan_out_page(store, pacing, ident, owner, START, page=7).done:
                    pass
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [
            threading.Thread(target=run, args=(o, i))
            for o, i in zip(("n1/x", "n2/y"), idents, strict=True)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        i = schema.intents.c
        with store.begin() as conn:
            per_contact = dict(
                conn.execute(
                    sa.select(i.contact_id, sa.func.count())
                    .where(i.status == "queued")
                    .group_by(i.contact_id)
                ).all()
            )
            total = conn.execute(sa.select(sa.func.count()).select_from(schema.intents)).scalar()
        assert total == 2 * CONTACTS  # everyone has one intent per broadcast ...
        assert per_contact == {f"c{k:03d}": 1 for k in range(CONTACTS)}  # ... one of them queued
    finally:
        store.dispose()
