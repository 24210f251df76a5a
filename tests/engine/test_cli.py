"""campaign-engine's commands: what people see, including errors in words."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from engine.cli import main
from engine.store import open_store, schema


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_config_show_redacts_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAMPAIGN_INGEST_WRITE_KEY", "very-secret-key")
    code, out, _ = run(
        capsys,
        "config",
        "show",
        "--data-dir",
        str(tmp_path),
        "--database",
        "postgresql://app:pw-77@db.internal/campaign",
    )
    assert code == 0
    assert "very-secret-key" not in out and "pw-77" not in out
    assert 'write_key = "********"' in out
    assert "[engine]" in out and "db.internal" in out


def test_bad_config_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "c.toml"
    bad.write_text("[smtp]\nconections = 3\n")
    code, _, err = run(capsys, "config", "show", "--config", str(bad))
    assert code == 2
    assert err.strip() == f"campaign-engine: {bad}: unknown setting smtp.conections"


def test_migrate_import_export_round_trip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data-dir", str(tmp_path / "d")]
    assert run(capsys, "migrate", *data)[0] == 0
    contacts = tmp_path / "in" / "contacts.jsonl"
    contacts.parent.mkdir()
    contacts.write_text(
        json.dumps({"id": "c1", "email": "A@Example.com", "traits": {"plan": "pro"}})
        + "\n"
        + json.dumps({"userId": "c2", "email": "b@example.com", "first_name": "Bea"})
        + "\n"
    )
    code, out, err = run(capsys, "import", str(contacts.parent), *data)
    assert code == 0, err
    assert "contacts: 2" in err
    out_dir = tmp_path / "out"
    code, out, _ = run(capsys, "export", str(out_dir), *data)
    assert code == 0
    assert "2 contacts" in out
    lines = (out_dir / "contacts.jsonl").read_text().splitlines()
    rows = {json.loads(line)["id"]: json.loads(line) for line in lines}
    assert rows["c1"]["email"] == "a@example.com"
    assert rows["c2"]["traits"]["first_name"] == "Bea"
    assert (out_dir / "emails" / "order-confirmation" / "template.toml").exists()
    assert list((out_dir / "workflows").glob("abandoned-cart.v1.json"))
    # The export imports again, unchanged: no new template or workflow versions.
    code, out, _ = run(capsys, "import", str(out_dir), *data)
    assert code == 0
    assert "templates: 0 imported" in out and "workflows: 0 imported" in out


def test_bad_import_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--data-dir", str(tmp_path / "d")]
    contacts = tmp_path / "contacts.jsonl"
    contacts.write_text(
        json.dumps({"id": "ok", "email": "ok@example.com"})
        + "\n"
        + json.dumps({"id": "bad", "email": "not-an-address"})
        + "\n"
    )
    code, _, err = run(capsys, "import", str(contacts), *data)
    assert code == 2
    assert "contacts.jsonl:2: email 'not-an-address' is not an email address" in err
    store = open_store(f"sqlite:///{tmp_path / 'd' / 'engine.sqlite3'}")
    try:
        with store.begin() as conn:
            count = conn.execute(sa.select(sa.func.count()).select_from(schema.contacts)).scalar()
    finally:
        store.dispose()
    assert count == 0
    code, _, err = run(capsys, "import", str(tmp_path / "absent"), *data)
    assert code == 2 and "does not exist" in err


def test_inbox_and_demo_errors_are_plain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data-dir", str(tmp_path)]
    code, out, _ = run(capsys, "inbox", "list", *data)
    assert code == 0 and "The inbox is empty." in out
    code, _, err = run(capsys, "inbox", "show", "nope", *data)
    assert code == 2 and "no message 'nope'" in err
    code, _, err = run(capsys, "demo", "--rate", "10", "--duration", "1", *data)
    assert code == 2 and "no running local engine found" in err


def test_dry_run_prints_what_a_draft_would_send(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], nats_url: str, nats_token: str
) -> None:
    import asyncio
    import time

    import orjson

    from engine.bus import connect, ensure_streams
    from engine.ingest.validate import format_time

    async def record() -> None:
        nc = await connect(nats_url, token=nats_token, name="cli-test")
        try:
            js = nc.jetstream()
            await ensure_streams(js)
            now = format_time(time.time())
            for k, body in enumerate(
                [
                    {"type": "identify", "userId": "u1", "traits": {"email": "u1@cli.test"}},
                    {"type": "track", "userId": "u1", "event": "Signed Up"},
                    {"type": "track", "userId": "u2", "event": "Signed Up"},
                ]
            ):
                event = {**body, "messageId": f"cli-{k}", "timestamp": now, "receivedAt": now}
                await js.publish(f"events.{body['type']}", orjson.dumps(event))
        finally:
            await nc.drain()

    asyncio.run(record())
    (tmp_path / "settings.toml").write_text(f'[nats]\ntoken = "{nats_token}"\n')
    draft = tmp_path / "welcome.toml"
    draft.write_text(
        'id = "welcome-draft"\nname = "Welcome"\ncategory = "transactional"\n'
        '[trigger]\nevent = "Signed Up"\n'
        '[[steps]]\nid = "hello"\ntype = "send"\ntemplate = "welcome"\n'
    )
    common = ["--config", str(tmp_path / "settings.toml"), "--data-dir", str(tmp_path / "d")]
    common += ["--nats", nats_url]
    code, out, err = run(capsys, "dry-run", "--workflow", str(draft), "--since", "1h", *common)
    assert code == 0, err
    assert "scanned 3 of 3 recorded events" in err
    assert "emails that would go out: 1 to 1 contacts" in out
    assert "1 without an address" in out
    assert "cli.test" in out and "u1@cli.test" in out
    # The data directory's fresh store has the starter templates only: no "welcome".
    assert "warning: step 'hello': there is no template 'welcome'" in out
    code, out, err = run(capsys, "dry-run", "--workflow", str(draft), "--json", *common)
    assert code == 0 and json.loads(out)["emails"]["would_send"] == 1
    code, _, err = run(capsys, "dry-run", "--workflow", str(draft), "--since", "soon", *common)
    assert code == 2 and "since: bad duration 'soon'" in err
    code, _, err = run(capsys, "dry-run", "--workflow", str(draft), "--max-events", "2", *common)
    assert code == 2 and "3 events were recorded in this window, more than the 2" in err
    code, _, err = run(capsys, "dry-run", "--workflow", str(tmp_path / "nope.toml"), *common)
    assert code == 2 and "cannot read" in err


def test_clv_rebuild_counts_history_with_progress_segments_and_audit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data-dir", str(tmp_path / "d")]
    assert run(capsys, "migrate", *data)[0] == 0
    store = open_store(f"sqlite:///{tmp_path / 'd' / 'engine.sqlite3'}")
    try:
        with store.begin() as conn:  # history from before the values were kept
            conn.execute(
                schema.contacts.insert(),
                [
                    {"id": cid, "traits": {}, "consent": {}, "first_seen_at": 1.0,
                     "last_seen_at": 1.0, "updated_at": 1.0}
                    for cid in ("ann", "bob")
                ],
            )  # fmt: skip
            conn.execute(
                schema.activity.insert(),
                [
                    {"contact_id": "ann", "name": "Order Completed", "properties": {"total": 80},
                     "message_id": "m1", "ts": 1_700_000_000.0},
                    {"contact_id": "ann", "name": "Order Completed",
                     "properties": {"revenue": 20.25}, "message_id": "m2", "ts": 1_700_086_400.0},
                    {"contact_id": "bob", "name": "Product Viewed", "properties": {"total": 5},
                     "message_id": "m3", "ts": 1_700_000_000.0},
                ],
            )  # fmt: skip
            conn.execute(
                schema.segments.insert(),
                {"id": "big", "version": 1, "name": "Big", "definition": "clv > 100",
                 "actor": "test", "created_at": 1.0},
            )  # fmt: skip
        code, out, err = run(capsys, "clv", "rebuild", *data)
        assert code == 0, err
        assert "segments reading the value re-evaluated (big): 1 entered, 0 left" in out
        assert "contacts 2 / 2 (100%)" in err
        assert "rebuilt for 2 contacts" in out and "1 with orders, 2 orders, 100.25 in all" in out
        assert "oldest order: 2023-11-14 22:13:20 UTC" in out
        code, out, _ = run(capsys, "clv", "show", "ann", *data)
        assert code == 0
        assert "lifetime value     100.25" in out and "orders             2" in out
        assert "average order      50.12" in out
        assert "last order         2023-11-15 22:13:20 UTC" in out
        code, _, err = run(capsys, "clv", "show", "nobody", *data)
        assert code != 0 and "there is no contact 'nobody'" in err
        with store.begin() as conn:
            audit = conn.execute(
                sa.select(schema.audit_log).where(schema.audit_log.c.action == "clv.rebuild")
            ).one()
            members = conn.execute(sa.select(schema.segment_members.c.contact_id)).scalars()
            assert list(members) == ["ann"]
        assert audit.count == 2 and audit.actor.startswith("cli")
        assert audit.detail["segment_changes"] == {"entered": 1, "exited": 0}
    finally:
        store.dispose()
