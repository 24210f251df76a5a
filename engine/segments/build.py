"""Building a new or edited segment over the contacts already stored, in the background.

The segment is in the live index before its build starts, so events keep updating it for the
contacts they touch while the build walks every contact in id order, a page per transaction,
with the same ``refresh`` the decide stage uses. Each page first takes the write lock (SQLite)
or locks its contacts' rows (PostgreSQL), so a page and a decide batch touching the same contact
run one after the other and each sees the other's result. When the walk ends, every contact
has been evaluated at least once against the current definition: membership is correct.

Progress is kept per node in memory (``status``): contacts done of the total counted at start.
Saving a segment again supersedes its running build.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa

from engine.clock import Clock
from engine.segments.membership import MembershipChange, SegmentRegistry, refresh
from engine.store import Store, schema

log = logging.getLogger(__name__)


@dataclass
class BuildStatus:
    """One build's progress."""

    segment_id: str
    version: int
    started_at: float
    state: str = "running"  # running | done | failed | superseded | stopped
    done: int = 0
    total: int = 0
    entered: int = 0
    exited: int = 0
    finished_at: float | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Build:
    status: BuildStatus
    task: asyncio.Task[None] | None = None
    cancelled: bool = False


@dataclass
class SegmentBuilder:
    """Runs builds on one background thread, a page of contacts at a time."""

    store: Store
    segments: SegmentRegistry
    clock: Clock
    page: int = 500
    _builds: dict[str, _Build] = field(default_factory=dict)
    _executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segment-build")

    async def stop(self) -> None:
        """Stop running builds after their current page."""
        for build in self._builds.values():
            build.cancelled = True
        tasks = [b.task for b in self._builds.values() if b.task is not None]
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def build(self, segment_id: str) -> BuildStatus:
        """Start building the newest version of a segment (superseding a running build)."""
        if self._executor is None:
            raise RuntimeError("the segment builder is not started")
        segment = self.segments.index.segments[segment_id]
        old = self._builds.get(segment_id)
        if old is not None and old.status.state == "running":
            old.cancelled = True
            old.status.state = "superseded"
        status = BuildStatus(segment_id, segment.version, self.clock.now())
        build = _Build(status)
        self._builds[segment_id] = build
        build.task = asyncio.create_task(self._run(build), name=f"segment-build-{segment_id}")
        return status

    def status(self, segment_id: str | None = None) -> list[dict[str, Any]]:
        return [
            b.status.as_dict()
            for sid, b in sorted(self._builds.items())
            if segment_id is None or sid == segment_id
        ]

    async def _run(self, build: _Build) -> None:
        loop = asyncio.get_running_loop()
        status = build.status
        try:
            status.total = await loop.run_in_executor(self._executor, self._count)
            after: str | None = None
            while not build.cancelled:
                after, n, changes = await loop.run_in_executor(
                    self._executor, self.evaluate_page, status.segment_id, after
                )
                status.done += n
                status.total = max(status.total, status.done)
                status.entered += sum(1 for c in changes if c.kind == "entered")
                status.exited += sum(1 for c in changes if c.kind == "exited")
                if after is None:
                    break
        except Exception as exc:
            log.exception("segment build of %s failed", status.segment_id)
            status.state, status.error = "failed", f"{type(exc).__name__}: {exc}"
        else:
            if status.state == "running":
                status.state = "stopped" if build.cancelled else "done"
        status.finished_at = self.clock.now()

    def _count(self) -> int:
        with self.store.begin() as conn:
            found = conn.execute(sa.select(sa.func.count()).select_from(schema.contacts)).scalar()
        return int(found or 0)

    def evaluate_page(
        self, segment_id: str, after: str | None
    ) -> tuple[str | None, int, list[MembershipChange]]:
        """Evaluate the next page of contacts; returns the last id (None at the end)."""
        c, r = schema.contacts, schema.segment_rechecks
        now = self.clock.now()
        with self.store.begin() as conn:
            # A write first: on SQLite the page then holds the write lock before it reads.
            conn.execute(sa.delete(r).where(r.c.segment_id == segment_id, r.c.fire_at < 0))
            query = sa.select(c.c.id).order_by(c.c.id).limit(self.page)
            if after is not None:
                query = query.where(c.c.id > after)
            if not self.store.is_sqlite:
                query = query.with_for_update()
            ids = list(conn.execute(query).scalars())
            if not ids:
                return None, 0, []
            index = self.segments.index
            if segment_id not in index.segments:
                return None, 0, []
            # The page's pending re-checks of the segment (and its dependents, evaluated too)
            # go in one delete rather than one per contact; refresh writes the new ones. On
            # SQLite the write lock keeps the id range to this page's contacts; on PostgreSQL
            # a contact inserted meanwhile could fall in the range, so the ids are named.
            targets = sorted(index.with_dependents((segment_id,)))
            if self.store.is_sqlite:
                in_page = sa.and_(r.c.contact_id >= ids[0], r.c.contact_id <= ids[-1])
                conn.execute(sa.delete(r).where(r.c.segment_id.in_(targets), in_page))
            else:
                conn.execute(
                    sa.delete(r).where(r.c.segment_id.in_(targets), r.c.contact_id.in_(ids))
                )
            target = frozenset((segment_id,))  # one set shared by the page's contacts
            changes, _ = refresh(
                conn, index, dict.fromkeys(ids, target), now, rechecks_cleared=True
            )
        return ids[-1], len(ids), changes
