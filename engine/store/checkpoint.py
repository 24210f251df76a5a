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

Under a steady stream of commits a passive checkpoint never catches up with the log's end, and
SQLite only starts the log over from its first frame once a checkpoint has moved every frame.
Left alone the WAL grew without bound (760 MB in 32 s of sending 1,250 emails/s), every commit
appended to fresh file blocks, which the file system allocates and zeroes (7% of the engine's
CPU), and the disk filled. So once the log holds more than ``restart_pages``, the thread runs a
``RESTART`` checkpoint: it waits for the writer of the moment (new writers wait on it for the
few frames the passive checkpoints left), moves the rest, and the next commit writes from the
start of the file again, over blocks that already exist. ``journal_size_limit`` (set by
engine.store.db) shrinks the file back after a burst.

If the thread cannot keep up (or dies), the WAL grows but nothing is lost; ``close`` stops it.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 0.5
# 65,536 pages of 4 KiB: 256 MiB of log. A restart makes the writers of the moment wait for the
# last frames and the database file's fsync (p99 at 1,000 events/s rose by ~4 ms with a restart
# every 3 s at 64 MiB), so it comes rarely; the file's blocks, once there, are reused.
DEFAULT_RESTART_PAGES = 65_536
# How long a restart may wait for the writer of the moment before it gives up until next turn.
RESTART_BUSY_MS = 200


class WalCheckpointer:
    """A daemon thread checkpointing one SQLite database file's WAL."""

    def __init__(
        self,
        path: str,
        *,
        interval: float = DEFAULT_INTERVAL_S,
        restart_pages: int = DEFAULT_RESTART_PAGES,
    ) -> None:
        self.path = path
        self.interval = interval
        self.restart_pages = restart_pages
        self.checkpoints = 0
        self.pages = 0
        self.restarts = 0  # times the log was started over from its first frame
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
            db.execute(f"PRAGMA busy_timeout={RESTART_BUSY_MS}")
            while True:
                stopping = self._stop.wait(self.interval)
                self.checkpoint(db)
                if stopping:
                    return
        finally:
            db.close()

    def checkpoint(self, db: sqlite3.Connection) -> None:
        try:
            _busy, log_pages, moved = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:  # busy or locked: the next turn tries again
            log.debug("store: WAL checkpoint skipped: %s", exc)
            return
        if moved > 0:
            self.checkpoints += 1
            self.pages += moved
        if log_pages > self.restart_pages:
            self.restart(db)

    def restart(self, db: sqlite3.Connection) -> None:
        """Move the frames left and make the next commit start the log over."""
        try:
            busy, _log_pages, moved = db.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
        except sqlite3.Error as exc:
            log.debug("store: WAL restart skipped: %s", exc)
            return
        if moved > 0:
            self.pages += moved
        if not busy:  # busy: a reader or the writer held on past the busy timeout; next turn
            self.restarts += 1
