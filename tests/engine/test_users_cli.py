"""``campaign-engine users``: managing users, the NATS block for an external server, and a
running local stack picking up a change at once."""

from __future__ import annotations

import asyncio
import io
import subprocess
from pathlib import Path

import nats
import nats.errors
import pytest
import sqlalchemy as sa

from engine.access import inbox_prefix
from engine.bus import settle
from engine.cli import main
from engine.config import load_settings
from engine.control import request
from engine.natsserver import find_binary, free_port
from engine.node import Node
from engine.store import open_store, schema
from engine.users import new_nkey

PASSWORD = "a long enough password"


def run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *argv: str, stdin: str = ""
) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_add_list_change_and_remove_users(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    d = ("--data-dir", str(tmp_path))
    code, out, err = run(
        capsys, monkeypatch, "users", "add", "ana", "--role", "support", "--password-stdin", *d,
        stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert (code, err) == (0, "") and "Added ana (support" in out
    code, out, _ = run(
        capsys, monkeypatch, "users", "add", "mo", "--role", "marketer", "--nkey", *d
    )
    assert code == 0
    seed = out.split("keyring): ", 1)[1].split()[0]
    public = out.split("public key: ", 1)[1].split()[0]
    assert seed.startswith("SU") and public.startswith("U")
    # A public key its owner made (the seed never leaves them); one key, one user.
    _, own_public = new_nkey()
    code, out, _ = run(
        capsys, monkeypatch, "users", "add", "x", "--role", "viewer", "--nkey", own_public, *d
    )
    assert code == 0 and "nkey seed" not in out
    code, _, err = run(
        capsys, monkeypatch, "users", "add", "kim", "--role", "viewer", "--nkey", own_public, *d
    )
    assert code == 2 and "that nkey already belongs to user 'x'" in err

    # Bad input: one plain line, exit code 2, nothing stored.
    for argv, stdin, words in [
        (("add", "ana", "--role", "viewer", "--password-stdin"), PASSWORD, "already exists"),
        (("add", "Ana Smith", "--role", "viewer", "--password-stdin"), PASSWORD, "not valid"),
        (("add", "bo", "--role", "viewer", "--password-stdin"), "short", "too short"),
        (("add", "engine", "--role", "admin", "--password-stdin"), PASSWORD, "engines' own"),
        (("add", "bo", "--role", "viewer", "--nkey", "SUAAAA"), "", "not a user's public nkey"),
        (("add", "bo", "--role", "viewer"), "", "give --password-stdin"),
        (("set-role", "nobody", "admin"), "", "does not exist"),
        (("remove", "nobody"), "", "does not exist"),
    ]:
        code, out, err = run(capsys, monkeypatch, "users", *argv, *d, stdin=stdin)
        assert code == 2 and words in err and err.count("\n") == 1, (argv, err)

    code, out, _ = run(capsys, monkeypatch, "users", "set-role", "ana", "admin", *d)
    assert code == 0 and "ana is now admin" in out
    code, out, _ = run(capsys, monkeypatch, "users", "remove", "x", *d)
    assert code == 0
    code, out, _ = run(capsys, monkeypatch, "users", "list", *d)
    lines = out.splitlines()
    assert [line.split()[:2] for line in lines[1:]] == [["ana", "admin"], ["mo", "marketer"]]
    assert seed not in out and PASSWORD not in out

    store = open_store(f"sqlite:///{tmp_path / 'engine.sqlite3'}")
    try:
        with store.begin() as conn:
            rows = [tuple(r) for r in conn.execute(sa.select(schema.users))]
            audit = [
                (r.actor.startswith("cli"), r.action, r.target)
                for r in conn.execute(sa.select(schema.audit_log).order_by(schema.audit_log.c.id))
            ]
    finally:
        store.dispose()
    assert PASSWORD not in repr(rows) and seed not in repr(rows)
    assert audit == [
        (True, "users.add", "user ana"),
        (True, "users.add", "user mo"),
        (True, "users.add", "user x"),
        (True, "users.set_role", "user ana"),
        (True, "users.remove", "user x"),
    ]


async def test_nats_config_runs_an_external_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The printed block, pasted into a nats-server's own configuration: the engines' user and
    each console user sign in, and a user may publish only under its own name."""
    d = ("--data-dir", str(tmp_path))
    monkeypatch.setenv("CAMPAIGN_NATS_URL", "nats://127.0.0.1:1")
    monkeypatch.setenv("CAMPAIGN_NATS_USER", "engine-prod")
    monkeypatch.setenv("CAMPAIGN_NATS_PASSWORD", "engine prod password")
    code, out, _ = await asyncio.to_thread(
        run, capsys, monkeypatch, "users", "add", "ana", "--role", "viewer", "--password-stdin",
        *d, stdin=PASSWORD,
    )  # fmt: skip
    assert code == 0 and "NATS is external" in out
    code, block, _ = await asyncio.to_thread(run, capsys, monkeypatch, "users", "nats-config", *d)
    assert code == 0 and "engine prod password" not in block and PASSWORD not in block
    port = free_port()
    conf = tmp_path / "external.conf"
    conf.write_text(f"host: 127.0.0.1\nport: {port}\n{block}")
    checked = await asyncio.to_thread(
        subprocess.run, [find_binary(), "-t", "-c", str(conf)], capture_output=True
    )
    assert checked.returncode == 0, checked.stderr
    server = await asyncio.create_subprocess_exec(
        find_binary(), "-c", str(conf), stderr=subprocess.DEVNULL
    )
    try:
        url = f"nats://127.0.0.1:{port}"
        for _ in range(100):
            try:
                engine = await nats.connect(
                    url, user="engine-prod", password="engine prod password", allow_reconnect=False
                )
                break
            except (nats.errors.Error, OSError):
                await asyncio.sleep(0.05)
        errors: list[str] = []

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc))

        ana = await nats.connect(
            url,
            user="ana",
            password=PASSWORD,
            inbox_prefix=inbox_prefix("ana"),
            error_cb=on_error,
            allow_reconnect=False,
        )
        got: list[str] = []

        async def on_request(msg: nats.aio.msg.Msg) -> None:
            got.append(msg.subject)
            await msg.respond(b'{"ok": true, "result": "pong"}')

        await engine.subscribe("control.*.all.>", cb=on_request)
        await settle(engine)
        assert await request(ana, "all", "ping", user="ana") == "pong"
        with pytest.raises(nats.errors.TimeoutError):
            await request(ana, "all", "ping", user="admin", timeout=0.5)
        assert got == ["control.ana.all.ping"]
        assert any("control.admin.all.ping" in e for e in errors)
        await ana.close()
        await engine.close()
    finally:
        server.terminate()
        await server.wait()


async def test_a_running_local_stack_applies_a_new_user_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    settings = load_settings(
        None,
        environ={},
        overrides={
            "engine": {"data_dir": str(data), "node": "u1"},
            "http": {"listen": "127.0.0.1:0"},
            "ingest": {"write_key": "wk-test"},
        },
    )
    node = Node(settings)
    await node.start()
    try:
        code, out, err = await asyncio.to_thread(
            run, capsys, monkeypatch, "users", "add", "newbie", "--role", "support",
            "--password-stdin", "--data-dir", str(data), stdin=PASSWORD,
        )  # fmt: skip
        assert code == 0 and "reloaded its NATS users" in out, (out, err)
        nc = await nats.connect(
            node.nats_url, user="newbie", password=PASSWORD, inbox_prefix=inbox_prefix("newbie")
        )
        try:
            who = await request(nc, "u1", "whoami", user="newbie")
            assert (who["user"], who["role"]) == ("newbie", "support")
        finally:
            await nc.close()
    finally:
        await node.stop()
