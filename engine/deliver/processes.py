"""Deliver processes of the local node: the same engine, started with ``--role deliver``.

One Python process renders, builds and sends on one core. ``engine.deliver_processes = N`` makes
the local node start N child processes that claim and send intents from the same store, woken by
``intents.ready`` (see :mod:`engine.deliver.wakeup`), so decide and deliver run on different
cores. They share the route limits through ``presence`` like separate deliver nodes.
Each child gets the parent's settings on stdin (never on the command line, where other
users could read the NATS token), dies with its parent (PR_SET_PDEATHSIG) and is stopped with
SIGINT — finishing its in-flight sends — when the parent stops.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

import nats.errors
import orjson
from nats.aio.client import Client as NatsClient

from engine.access import SERVICE_USER
from engine.config import Settings
from engine.control import ControlError, request
from engine.errors import EngineError
from engine.natsserver import die_with_parent

log = logging.getLogger(__name__)


def child_settings(
    settings: Settings,
    *,
    index: int,
    nats_url: str,
    nats_token: str,
    relay_url: str,
    count: int = 1,
    nats_auth: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The settings of deliver process ``index`` of ``count``: the parent's, pointed at its
    services, with 1/count of every connection pool, so that together the processes open as
    many connections as the operator set. The route limits are left whole: the processes
    share them like any deliver nodes, through ``presence`` (a process that dies hands its
    share to the others)."""
    data = settings.to_dict(redact=False)
    if count > 1:
        data["smtp"]["connections"] = max(1, int(data["smtp"]["connections"]) // count)
        for route in data.get("routes", {}).values():
            if route.get("connections"):
                route["connections"] = max(1, int(route["connections"]) // count)
    data["engine"].update(
        role="deliver", node=f"{settings.engine.node}-deliver{index}", deliver_processes=0
    )
    if settings.database_url().startswith("sqlite"):  # one writer: the parent (ledger_proxy)
        data["engine"]["ledger_node"] = settings.engine.node
    # The parent's partition count as set; on "automatic" the child joins the layout the
    # parent laid (engine.bus.stream_partitions), so its ensure_streams keeps the parent's
    # decide consumers.
    data["nats"].update(url=nats_url, token=nats_token, partitions=settings.nats.partitions)
    if nats_auth and "user" in nats_auth:  # the parent's own NATS user (docs/access.md)
        data["nats"].update(user=nats_auth["user"], password=nats_auth.get("password", ""))
    data["database"]["url"] = settings.database_url()
    data["smtp"]["url"] = relay_url
    return data


@dataclass
class DeliverProcesses:
    """Start, watch and stop the local node's deliver processes."""

    settings: Settings
    nats_url: str
    nats_token: str
    relay_url: str
    count: int
    nats_auth: dict[str, str] = field(default_factory=dict)
    stop_timeout: float = 40.0
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self) -> None:
        for index in range(1, self.count + 1):
            data = child_settings(
                self.settings,
                index=index,
                nats_url=self.nats_url,
                nats_token=self.nats_token,
                relay_url=self.relay_url,
                count=self.count,
                nats_auth=self.nats_auth,
            )
            proc = subprocess.Popen(
                [sys.executable, "-m", "engine", "run", "--settings-stdin"],
                stdin=subprocess.PIPE,
                preexec_fn=die_with_parent,
                start_new_session=True,  # stopped by the parent, in order (see stop)
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            assert proc.stdin is not None
            proc.stdin.write(orjson.dumps(data))
            proc.stdin.close()
            self.procs.append(proc)
            log.info("started deliver process %s (pid %d)", data["engine"]["node"], proc.pid)

    @property
    def nodes(self) -> list[str]:
        return [f"{self.settings.engine.node}-deliver{i}" for i in range(1, self.count + 1)]

    async def wait_ready(
        self, nc: NatsClient, timeout: float = 60.0, *, user: str = SERVICE_USER
    ) -> None:
        """Until every child answers ``ping`` on the control API (it is then delivering);
        ``EngineError`` if one exits first or the time runs out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        waiting = dict(zip(self.nodes, self.procs, strict=True))
        while waiting:
            for node, proc in list(waiting.items()):
                if proc.poll() is not None:
                    raise EngineError(
                        f"deliver process {node} exited with code {proc.returncode} while "
                        "starting (its log is above)"
                    )
                try:
                    await request(nc, node, "ping", user=user, timeout=0.5)
                except (ControlError, nats.errors.Error):
                    continue
                del waiting[node]
            if waiting and loop.time() > deadline:
                raise EngineError(
                    f"deliver processes {', '.join(waiting)} did not start in {timeout:g} s"
                )

    def alive(self) -> int:
        return sum(1 for proc in self.procs if proc.poll() is None)

    async def stop(self) -> None:
        """SIGINT each child (it finishes its in-flight sends), then wait; kill stragglers."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.stop_timeout
        for proc in self.procs:
            try:
                await asyncio.to_thread(proc.wait, max(0.0, deadline - loop.time()))
            except subprocess.TimeoutExpired:
                log.warning("deliver process %d did not stop in time; killing it", proc.pid)
                proc.kill()
                await asyncio.to_thread(proc.wait)
        self.procs.clear()
