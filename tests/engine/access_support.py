"""Users for tests that send control requests over an engine's own (unrestricted) connection:
the engine then trusts the subject's user, who must exist with a role."""

from __future__ import annotations

import time

from engine.store import Store
from engine.users import add_user, new_nkey


def grant(store: Store, name: str, role: str) -> str:
    """Add ``name`` with ``role`` (an nkey user: no hashing to wait for); returns its seed."""
    seed, public = new_nkey()
    add_user(store, name, role, nkey=public, actor="test", now=time.time())
    return seed
