"""The store opens, migrates and enforces its unique keys on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from engine.errors import StoreError
from engine.store import open_store, schema


def test_migrates_and_keeps_intents_unique(store_url: str) -> None:
    store = open_store(store_url)
    try:
        row = {
            "id": "i1",
            "dedup_key": "k1",
            "workflow_id": "w",
            "workflow_version": 1,
            "step_id": "s",
            "contact_id": "c",
            "event_id": "e",
            "template_id": "t",
            "route": "default",
            "category": "marketing",
            "to_addr": "a@example.com",
            "domain": "example.com",
            "context": {"x": 1},
            "status": "queued",
            "attempts": 0,
            "next_attempt_at": 0.0,
            "received_at": 0.0,
            "decided_at": 0.0,
        }
        with store.begin() as conn:
            conn.execute(schema.intents.insert(), [row])
        with store.begin() as conn:
            inserted = conn.execute(
                store.insert_ignore(schema.intents, index=["dedup_key"]).returning(
                    schema.intents.c.id
                ),
                {**row, "id": "i2"},
            ).all()
            assert inserted == []
        with store.begin() as conn:
            count = conn.execute(sa.select(sa.func.count()).select_from(schema.intents)).scalar()
        assert count == 1
        # Migrating again is a no-op.
        open_store(store_url).dispose()
    finally:
        store.dispose()


def test_bad_url_is_a_clear_error() -> None:
    with pytest.raises(StoreError, match="not a database URL"):
        open_store("nonsense")


def test_unreachable_database_names_it_without_password() -> None:
    with pytest.raises(StoreError) as info:
        open_store("postgresql://user:hunter2@127.0.0.1:1/db")
    assert "hunter2" not in str(info.value)
    assert "127.0.0.1:1" in str(info.value)


def test_migrations_match_the_schema(store_url: str) -> None:
    """Every table, column and index in schema.py has a migration (no drift)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    store = open_store(store_url)
    try:
        with store.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), schema.metadata)
    finally:
        store.dispose()
    assert diff == []


def test_migration_0011_gives_stored_contacts_no_orders_and_goes_back(store_url: str) -> None:
    from alembic import command
    from alembic.config import Config

    from engine.store.db import MIGRATIONS

    store = open_store(store_url, migrate=False)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection_engine"] = store.engine
    try:
        command.upgrade(cfg, "0010")
        with store.begin() as conn:  # a contact from before lifetime value existed
            conn.execute(
                sa.text(
                    "INSERT INTO contacts (id, traits, consent, first_seen_at, last_seen_at,"
                    " updated_at) VALUES ('old', '{}', '{}', 1, 1, 1)"
                )
            )
        command.upgrade(cfg, "head")
        c = schema.contacts
        with store.begin() as conn:
            row = conn.execute(
                sa.select(c.c.lifetime_value, c.c.orders, c.c.first_order_at, c.c.last_order_at)
            ).one()
        assert tuple(row) == (0.0, 0, None, None)
        command.downgrade(cfg, "0010")
        with store.begin() as conn:
            columns = {col["name"] for col in sa.inspect(conn).get_columns("contacts")}
        assert "lifetime_value" not in columns and "orders" not in columns
        command.upgrade(cfg, "head")
    finally:
        store.dispose()
