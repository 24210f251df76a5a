"""WAL checkpoints off the event loop.

SQLite in WAL mode copies the log back into the database file in a *checkpoint*. By default the
commit that pushes the log past 1,000 pages runs it, inline: with ``synchronous=NORMAL`` that
commit also writes and fsyncs the database file, and on the engine's single event-loop thread it
stalls every stage behind it (measured: 11% of the decide path's time was spent in commits).

The engine's connections turn automatic checkpoints off (``wal_autocheckpoint=0``) and this thread
runs ``PRAGMA wal_checkpoint(PASSIVE)`` on its own connection instead: every ``interval`` seconds,
without blocking writers or readers (SQLite releases the GIL while it works, so on two cores the
checkpoint runs beside the loop, not in it). Durability is unchanged: a commit is durable in the
WAL exactly as before; the checkpoint only moves pages that are already safe.

If the thread cannot keep up (or dies), the WAL grows but nothing is lost; ``close`` stops it.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 0.5


class WalCheckpointer:
    """A daemon thread checkpointing one SQLite database file's WAL."""

    def __init__(self, path: str, *, interval: float = DEFAULT_INTERVAL_S) -> None:
        self.path = path
        self.interval = interval
        self.checkpoints = 0
        self.pages = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wal-checkpoint", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop the thread after one last checkpoint."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            db = sqlite3.connect(self.path, timeout=10, check_same_thread=False)
        except sqlite3.Error as exc:
            log.error("store: cannot open %s for WAL checkpoints: %s", self.path, exc)
            return
        try:
            db.execute("PRAGMA busy_timeout=10000")
            while True:
                stopping = self._stop.wait(self.interval)
                self.checkpoint(db)
                if stopping:
                    return
        finally:
            db.close()

    def checkpoint(self, db: sqlite3.Connection) -> None:
        try:
            _busy, _log_pages, moved = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:  # busy or locked: the next turn tries again
            log.debug("store: WAL checkpoint skipped: %s", exc)
            return
        if moved > 0:
            self.checkpoints += 1
            self.pages += moved
