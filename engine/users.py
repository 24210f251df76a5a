"""The users of the control API, kept in the store without clear-text secrets.

A user signs in to NATS with a password (stored as a bcrypt hash, the form nats-server checks)
or an nkey (only the public key is stored; the seed stays with its owner). Every change writes
an audit entry in the same transaction. The NATS side of a user (its name, hash or key, and
what it may publish and subscribe) comes from :func:`nats_users`.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from typing import Any

import bcrypt
import nkeys
import sqlalchemy as sa

from engine.access import (
    SERVICE_USER,
    AccessDenied,
    check_role,
    check_user_name,
    nats_permissions,
)
from engine.natsserver import NatsUser
from engine.store import Store, schema

PASSWORD = "password"
NKEY = "nkey"
MIN_PASSWORD = 12
MAX_PASSWORD = 72  # bcrypt reads no further
PERSON_COST = 11  # nats-server's own default for people's passwords
GENERATED_COST = 4
"""Generated passwords are 32 random bytes: stretching adds nothing to that, and a low cost
keeps every engine (re)connect cheap."""


class UserError(AccessDenied, ValueError):
    """A user could not be added or changed; the message says why, and nothing changed."""


@dataclass(frozen=True)
class User:
    name: str
    role: str
    auth: str
    nkey: str | None
    created_at: float
    updated_at: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def hash_password(password: str, *, generated: bool = False) -> str:
    """A bcrypt hash nats-server accepts (``$2b$``)."""
    cost = GENERATED_COST if generated else PERSON_COST
    return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(cost)).decode("ascii")


def password_matches(password: str, hashed: str) -> bool:
    return bcrypt.checkpw(password.encode("utf-8"), hashed.encode("ascii"))


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"the password is too short (at least {MIN_PASSWORD} characters)")
    if len(password.encode("utf-8")) > MAX_PASSWORD:
        raise UserError(f"the password is too long (at most {MAX_PASSWORD} bytes)")
    if any(ch in password for ch in "\r\n\0"):
        raise UserError("the password may not contain line breaks or NUL")
    return password


def new_nkey() -> tuple[str, str]:
    """A fresh user nkey: (seed, public key). The seed is the secret; print it once."""
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(bytearray(seed)).public_key
    return seed.decode("ascii"), public.decode("ascii")


def check_nkey(public: str) -> str:
    """A user's public nkey ("U" and 55 more base32 characters, checksum intact)."""
    text = public.strip()
    ok = len(text) == 56 and text.startswith("U")
    if ok:
        try:
            raw = base64.b32decode(text)
            ok = nkeys.crc16(bytearray(raw[:-2])) == int.from_bytes(raw[-2:], "little")
        except (binascii.Error, ValueError):
            ok = False
    if not ok:
        raise UserError(
            "that is not a user's public nkey (56 characters starting with U; never the seed)"
        )
    return text


def _row_to_user(row: Any) -> User:
    return User(
        name=row.name,
        role=row.role,
        auth=row.auth,
        nkey=row.nkey,
        created_at=float(row.created_at),
        updated_at=float(row.updated_at),
    )


def _audit(
    conn: sa.Connection, actor: str, action: str, name: str, detail: Any, now: float
) -> None:
    conn.execute(
        schema.audit_log.insert(),
        {
            "ts": now,
            "actor": actor[:200],
            "action": action,
            "target": f"user {name}",
            "count": 1,
            "detail": detail,
        },
    )


def list_users(store: Store) -> list[User]:
    t = schema.users
    with store.begin() as conn:
        return [_row_to_user(r) for r in conn.execute(sa.select(t).order_by(t.c.name))]


def get_user(store: Store, name: str) -> User | None:
    t = schema.users
    with store.begin() as conn:
        row = conn.execute(sa.select(t).where(t.c.name == name)).first()
    return _row_to_user(row) if row is not None else None


def role_of(store: Store, name: str) -> str | None:
    t = schema.users
    with store.begin() as conn:
        role = conn.execute(sa.select(t.c.role).where(t.c.name == name)).scalar()
    return str(role) if role is not None else None


def add_user(
    store: Store,
    name: str,
    role: str,
    *,
    password: str | None = None,
    nkey: str | None = None,
    actor: str,
    now: float,
    generated: bool = False,
) -> User:
    """Add a user signing in with ``password`` or the public ``nkey`` (exactly one)."""
    check_user_name(name)
    check_role(role)
    if name == SERVICE_USER:
        raise UserError(f"{SERVICE_USER!r} is the engines' own NATS user; choose another name")
    if (password is None) == (nkey is None):
        raise UserError("give either a password or an nkey")
    values: dict[str, Any] = {"name": name, "role": role, "created_at": now, "updated_at": now}
    if password is not None:
        if not generated:
            check_password(password)
        values.update(auth=PASSWORD, password_hash=hash_password(password, generated=generated))
    else:
        assert nkey is not None
        values.update(auth=NKEY, nkey=check_nkey(nkey))
    t = schema.users
    with store.begin() as conn:
        taken = conn.execute(
            sa.select(t.c.name).where(sa.or_(t.c.name == name, t.c.nkey == values.get("nkey", "-")))
        ).scalar()
        if taken == name:
            raise UserError(f"user {name!r} already exists")
        if taken is not None:
            raise UserError(f"that nkey already belongs to user {taken!r}")
        conn.execute(t.insert(), values)
        _audit(conn, actor, "users.add", name, {"role": role, "auth": values["auth"]}, now)
    return User(name, role, values["auth"], values.get("nkey"), now, now)


def set_role(store: Store, name: str, role: str, *, actor: str, now: float) -> User:
    check_role(role)
    t = schema.users
    with store.begin() as conn:
        before = conn.execute(sa.select(t.c.role).where(t.c.name == name)).scalar()
        if before is None:
            raise UserError(f"user {name!r} does not exist")
        conn.execute(t.update().where(t.c.name == name).values(role=role, updated_at=now))
        _audit(conn, actor, "users.set_role", name, {"before": before, "after": role}, now)
    user = get_user(store, name)
    assert user is not None
    return user


def set_password(
    store: Store, name: str, password: str, *, actor: str, now: float, generated: bool = False
) -> None:
    if not generated:
        check_password(password)
    t = schema.users
    with store.begin() as conn:
        changed = conn.execute(
            t.update()
            .where(t.c.name == name)
            .values(
                auth=PASSWORD,
                password_hash=hash_password(password, generated=generated),
                nkey=None,
                updated_at=now,
            )
        ).rowcount
        if not changed:
            raise UserError(f"user {name!r} does not exist")
        _audit(conn, actor, "users.set_password", name, {}, now)


def remove_user(store: Store, name: str, *, actor: str, now: float) -> None:
    t = schema.users
    with store.begin() as conn:
        role = conn.execute(sa.select(t.c.role).where(t.c.name == name)).scalar()
        if role is None:
            raise UserError(f"user {name!r} does not exist")
        conn.execute(t.delete().where(t.c.name == name))
        _audit(conn, actor, "users.remove", name, {"role": role}, now)


def ensure_local_admin(store: Store, name: str, password: str, *, now: float) -> None:
    """The local stack's generated user: created on first start as admin; its password follows
    the generated file. Its role is left as an admin set it."""
    t = schema.users
    with store.begin() as conn:
        row = conn.execute(sa.select(t).where(t.c.name == name)).first()
    if row is None:
        add_user(store, name, "admin", password=password, actor="engine", now=now, generated=True)
    elif row.auth != PASSWORD or not password_matches(password, row.password_hash or ""):
        set_password(store, name, password, actor="engine", now=now, generated=True)


def nats_users(store: Store) -> list[NatsUser]:
    """Every user as nats-server sees it: credentials and permissions, no clear text."""
    t = schema.users
    with store.begin() as conn:
        rows = conn.execute(sa.select(t).order_by(t.c.name)).all()
    out = []
    for row in rows:
        publish, subscribe = nats_permissions(row.name)
        out.append(
            NatsUser(
                name=row.name,
                password_hash=row.password_hash or "" if row.auth == PASSWORD else "",
                nkey=row.nkey or "" if row.auth == NKEY else "",
                publish=publish,
                subscribe=subscribe,
            )
        )
    return out
