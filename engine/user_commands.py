"""``campaign-engine users``: add, list, change and remove the users of the control API.

The users live in the database, so these commands work whether or not an engine runs. After a
change, a running local stack reloads its embedded nats-server at once (``users.sync``, sent as
its generated admin); an external NATS needs the block ``users nats-config`` prints.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import sys
import time
from typing import Any, TextIO

from engine.access import LOCAL_ADMIN, SERVICE_USER
from engine.config import Settings
from engine.errors import ConfigError
from engine.natsserver import NatsUser, authorization_block
from engine.store import Store, open_store
from engine.users import (
    UserError,
    add_user,
    check_password,
    hash_password,
    list_users,
    nats_users,
    new_nkey,
    remove_user,
    set_role,
)


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli"


def _open(settings: Settings) -> Store:
    return open_store(settings.database_url(), durability=settings.engine.durability)


def _read_password(stdin: TextIO | None, from_stdin: bool) -> str:
    if from_stdin:
        source = stdin or sys.stdin
        return check_password(source.readline().rstrip("\r\n"))
    if not sys.stdin.isatty():
        raise UserError("give --password-stdin (the password on standard input) or --nkey")
    first = getpass.getpass("Password for the new user: ")
    check_password(first)
    if getpass.getpass("Again: ") != first:
        raise UserError("the two passwords differ; nothing was changed")
    return first


def users_add(
    settings: Settings,
    name: str,
    role: str,
    *,
    password_stdin: bool = False,
    nkey: str | None = None,
    stdin: TextIO | None = None,
) -> int:
    """Add a user. ``nkey``: "" generates a key pair and prints its seed once; a public key
    registers a key its owner made (the better way: the seed never leaves them)."""
    seed = ""
    if nkey == "":
        seed, nkey = new_nkey()
    password = None if nkey is not None else _read_password(stdin, password_stdin)
    store = _open(settings)
    try:
        user = add_user(
            store, name, role, password=password, nkey=nkey, actor=_actor(), now=time.time()
        )
    finally:
        store.dispose()
    print(f"Added {user.name} ({user.role}, signs in with {'an nkey' if nkey else 'a password'}).")
    if seed:
        print(f"nkey seed (shown once, stored nowhere; keep it in the console's keyring): {seed}")
        print(f"public key: {nkey}")
    _after_change(settings)
    return 0


def users_list(settings: Settings) -> int:
    store = _open(settings)
    try:
        users = list_users(store)
    finally:
        store.dispose()
    if not users:
        print("No users yet: campaign-engine users add NAME --role ROLE --password-stdin")
        return 0
    print(f"{'NAME':<20} {'ROLE':<9} {'SIGNS IN WITH':<14} ADDED")
    for user in users:
        added = time.strftime("%Y-%m-%d %H:%M", time.localtime(user.created_at))
        how = f"nkey {user.nkey[:8]}…" if user.nkey else "password"
        print(f"{user.name:<20} {user.role:<9} {how:<14} {added}")
    return 0


def users_set_role(settings: Settings, name: str, role: str) -> int:
    store = _open(settings)
    try:
        user = set_role(store, name, role, actor=_actor(), now=time.time())
    finally:
        store.dispose()
    print(f"{user.name} is now {user.role} (from its next request, on every node).")
    return 0


def users_remove(settings: Settings, name: str) -> int:
    if name == LOCAL_ADMIN and not settings.nats.url:
        print(
            f"note: the local stack creates {LOCAL_ADMIN!r} again at its next start",
            file=sys.stderr,
        )
    store = _open(settings)
    try:
        remove_user(store, name, actor=_actor(), now=time.time())
    finally:
        store.dispose()
    print(f"Removed {name}.")
    _after_change(settings)
    return 0


def engine_nats_user(settings: Settings) -> NatsUser | None:
    """The engines' own user on an external NATS, from their settings (None: not set)."""
    nats = settings.nats
    if nats.nkey_file:
        import nkeys

        path = os.path.expanduser(nats.nkey_file)
        try:
            with open(path, "rb") as handle:
                public = nkeys.from_seed(bytearray(handle.read().strip())).public_key
        except (OSError, nkeys.NkeysError) as exc:
            raise ConfigError(f"nats.nkey_file: cannot read an nkey seed from {path}") from exc
        return NatsUser(nats.user or SERVICE_USER, nkey=public.decode("ascii"))
    if nats.user and nats.password:
        return NatsUser(nats.user, password_hash=hash_password(nats.password))
    return None


def users_nats_config(settings: Settings) -> int:
    """Print the authorization block for an external nats-server (no clear-text secret)."""
    store = _open(settings)
    try:
        users = nats_users(store)
    finally:
        store.dispose()
    service = engine_nats_user(settings)
    print("# Campaign Console users (docs/access.md): paste into the nats-server configuration,")
    print("# in place of its authorization block, then reload it: nats-server --signal reload")
    if service is None:
        print(
            "# The engines' own user is missing: set nats.user and nats.password (or "
            "nats.nkey_file) in the engines' settings and run this again."
        )
    print(authorization_block([u for u in (service, *users) if u is not None]), end="")
    return 0


def _after_change(settings: Settings) -> None:
    """Have a running local stack reload its NATS users; otherwise say what to do."""
    if settings.nats.url:
        print("NATS is external: run 'campaign-engine users nats-config' and reload the server.")
        return
    from engine.node import Connection

    conn = Connection.load(settings.data_path)
    if conn is None or not _alive(conn.pid):
        return  # the next start writes the users into the embedded server
    try:
        asyncio.run(_sync(conn))
    except Exception as exc:  # the change is stored; only the reload failed
        print(
            f"The change is stored, but the running engine did not reload its users ({exc}); "
            "restart it to apply.",
            file=sys.stderr,
        )
        return
    print("The running local engine reloaded its NATS users.")


async def _sync(conn: Any) -> None:
    from engine import bus
    from engine.control import request

    nc = await bus.connect(
        conn.nats_url, user=conn.nats_user, password=conn.nats_password, name="campaign-users"
    )
    try:
        await request(nc, conn.node, "users.sync", user=conn.nats_user, timeout=15)
    finally:
        await nc.drain()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
