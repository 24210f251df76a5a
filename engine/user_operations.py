"""The access verbs (envelope in engine/control.py; who may call them in engine/access.py).

- ``whoami`` -> ``{user, role, verbs}``: the caller as the engine sees it and every verb its
  role may call (the console shows the user and role, and may grey out the rest);
- ``users.list`` -> every user: name, role, auth ("password" or "nkey"), nkey (public),
  created_at, updated_at; never a secret;
- ``users.sync`` -> ``{reloaded}``: write the users table into the embedded nats-server's
  configuration and reload it (``false`` on an external NATS: paste
  ``campaign-engine users nats-config`` there instead). The ``users`` CLI sends it after a
  change while the local stack runs.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from engine.access import verbs_for
from engine.control import ControlError, ControlServer

if TYPE_CHECKING:
    from engine.node import Node


def register_user_operations(control: ControlServer, node: Node) -> None:
    """Register the access verbs on the node's control server."""

    async def whoami(args: dict[str, Any], actor: str) -> Any:
        role = await node.role_of(actor)
        return {"user": actor, "role": role, "verbs": verbs_for(role) if role else []}

    async def users_list(args: dict[str, Any], actor: str) -> Any:
        from engine.users import list_users

        store = node.store
        if store is None:
            raise ControlError("the store is not open")
        return [u.to_dict() for u in await asyncio.to_thread(list_users, store)]

    async def users_sync(args: dict[str, Any], actor: str) -> Any:
        return {"reloaded": await node.sync_nats_users()}

    for verb, handler in {
        "whoami": whoami,
        "users.list": users_list,
        "users.sync": users_sync,
    }.items():
        control.register(verb, handler)
