"""Fixtures for deliver tests: a scripted SMTP server on a free port and a migrated store.

``smtp_server`` is a real aiosmtpd server whose replies are scripted by the recipient's local
part (see ``deliver_support``). ``store`` is SQLite; ``any_store`` runs a test on SQLite and on
PostgreSQL (for claims and recovery, where the dialects differ).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from deliver_support import ScriptedSmtp

from engine.store import Store, open_store


@pytest.fixture
async def smtp_server() -> AsyncIterator[ScriptedSmtp]:
    server = ScriptedSmtp()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = open_store(f"sqlite:///{tmp_path / 'engine.sqlite3'}")
    try:
        yield store
    finally:
        store.dispose()


@pytest.fixture
def any_store(store_url: str) -> Iterator[Store]:
    store = open_store(store_url)
    try:
        yield store
    finally:
        store.dispose()
