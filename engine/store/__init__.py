"""The store: SQLAlchemy 2 Core over SQLite (default, WAL) or PostgreSQL."""

from engine.store import schema
from engine.store.db import Store, open_store

__all__ = ["Store", "open_store", "schema"]
