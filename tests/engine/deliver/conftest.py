"""Fixtures for deliver tests: a scripted SMTP server on a free port and a migrated store.

``smtp_server`` is a real aiosmtpd server whose replies are scripted by the recipient's local
part (see ``deliver_support``). ``store`` is SQLite; ``any_store`` runs a test on SQLite and on
PostgreSQL (for claims and recovery, where the dialects differ).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from deliver_support import ScriptedSmtp


@pytest.fixture
async def smtp_server() -> AsyncIterator[ScriptedSmtp]:
    server = ScriptedSmtp()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
