"""Alembic environment: the engine passes its own SQLAlchemy engine in ``config.attributes``."""

from __future__ import annotations

from alembic import context

from engine.store.schema import metadata

config = context.config
engine = config.attributes["connection_engine"]

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
