"""Opening the store: engine creation, SQLite pragmas, durability, migrations."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, Insert, Table, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError

from engine.errors import StoreError
from engine.store.checkpoint import WalCheckpointer

MIGRATIONS = Path(__file__).parent / "migrations"


@dataclass
class Store:
    """The database the engine keeps its state in."""

    engine: Engine
    url: str
    # Run store work on the event loop instead of a worker thread. True for SQLite: its
    # transactions here are short and CPU-bound, and on two cores a thread hand-off (wake-up,
    # GIL ping-pong) costs more latency than the work itself. False where queries wait on a
    # network (PostgreSQL), so the loop keeps serving while they do.
    inline: bool = False
    # A running node's SQLite file: WAL checkpoints on a thread (engine/store/checkpoint.py).
    checkpointer: WalCheckpointer | None = None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """One transaction; commits on success, rolls back on error."""
        with self.engine.begin() as conn:
            yield conn

    def insert_ignore(self, table: Table, *, index: list[str] | None = None) -> Insert:
        """INSERT that silently skips rows whose unique key already exists."""
        if self.dialect == "postgresql":
            return postgresql.insert(table).on_conflict_do_nothing(index_elements=index)
        if self.is_sqlite:
            return sqlite.insert(table).on_conflict_do_nothing(index_elements=index)
        return table.insert().prefix_with("IGNORE")

    def upsert(self, table: Table, *, index: list[str], update: list[str]) -> Insert:
        """INSERT ... ON CONFLICT (index) DO UPDATE SET the named columns from the new row."""
        if self.dialect == "postgresql":
            pg = postgresql.insert(table)
            return pg.on_conflict_do_update(
                index_elements=index, set_={c: pg.excluded[c] for c in update}
            )
        lite = sqlite.insert(table)
        return lite.on_conflict_do_update(
            index_elements=index, set_={c: lite.excluded[c] for c in update}
        )

    def dispose(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.close()
            self.checkpointer = None
        self.engine.dispose()


# 256 MiB (engine/store/checkpoint.py restarts the log at that size): what a running node's WAL
# file is cut back to after a burst.
WAL_SIZE_LIMIT = 256 * 1024 * 1024


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value, default=str).decode("utf-8")


def _sqlite_pragmas(synchronous: str, *, autocheckpoint: bool = True) -> Any:
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL: a commit survives the process being killed; FULL: also power loss.
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA busy_timeout=10000")
        cur.execute("PRAGMA foreign_keys=OFF")
        cur.execute("PRAGMA temp_store=MEMORY")
        cur.execute("PRAGMA cache_size=-65536")
        if not autocheckpoint:  # a WalCheckpointer thread does it, off the event loop
            cur.execute("PRAGMA wal_autocheckpoint=0")
            # A log restarted after a burst is cut back to this size (engine/store/checkpoint.py).
            cur.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        cur.close()

    return on_connect


def open_store(
    url: str,
    *,
    durability: str = "process",
    migrate: bool = True,
    background_checkpoints: bool = False,
    checkpointed_elsewhere: bool = False,
) -> Store:
    """Open (and by default migrate) the store at ``url``; errors name the URL without secrets.

    ``background_checkpoints`` (a running node's store): a SQLite file's WAL is checkpointed by a
    thread instead of by whichever commit crosses the threshold (see engine/store/checkpoint.py).
    ``checkpointed_elsewhere`` (a node's deliver process): the parent's thread checkpoints the
    file, so this process runs none, neither on a thread nor inside its own commits.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(f"not a database URL: {url!r}") from exc
    safe = parsed.render_as_string(hide_password=True)
    kwargs: dict[str, Any] = {
        # orjson: JSON columns (traits, properties, contexts) are on every hot path.
        "json_serializer": _json_dumps,
        "json_deserializer": orjson.loads,
    }
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # cached_statements: the hot paths' statements, IN lists padded to a few sizes
        # (engine.decide.lite.padded), stay prepared; Python's default keeps 128.
        kwargs["connect_args"] = {"check_same_thread": False, "cached_statements": 256}
    elif parsed.get_backend_name() == "postgresql":
        if parsed.get_driver_name() in ("", "psycopg2"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        kwargs["pool_pre_ping"] = True
        kwargs["pool_size"] = 8
    try:
        engine = create_engine(parsed, **kwargs)
    except (ArgumentError, ImportError) as exc:
        raise StoreError(f"cannot open database {safe}: {exc}") from exc
    checkpointer = None
    if engine.dialect.name == "sqlite":
        synchronous = "FULL" if durability == "power" else "NORMAL"
        on_file = bool(parsed.database) and parsed.database != ":memory:"
        if background_checkpoints and on_file and not checkpointed_elsewhere:
            checkpointer = WalCheckpointer(str(parsed.database))
        automatic = checkpointer is None and not checkpointed_elsewhere
        pragmas = _sqlite_pragmas(synchronous, autocheckpoint=automatic)
        event.listen(engine, "connect", pragmas)
    store = Store(
        engine=engine,
        url=safe,
        inline=engine.dialect.name == "sqlite",
        checkpointer=checkpointer,
    )
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        engine.dispose()
        raise StoreError(f"cannot connect to database {safe}: {exc.orig}") from exc
    if migrate:
        migrate_store(store)
    if checkpointer is not None:
        checkpointer.start()
    return store


def migrate_store(store: Store) -> None:
    """Bring the schema to the latest Alembic revision."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection_engine"] = store.engine
    try:
        command.upgrade(cfg, "head")
    except SQLAlchemyError as exc:
        raise StoreError(f"migrating {store.url} failed: {exc}") from exc
