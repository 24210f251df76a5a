"""Pieces the benchmarks share: Postfix's smtp-sink, process sampling, percentiles."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SMTP_SINK = ROOT.parent / "shared" / "tools" / "smtp-sink"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SmtpSink:
    """Postfix's smtp-sink on a free loopback port (accepts and discards mail, C speed)."""

    def __init__(self, backlog: int = 1024) -> None:
        if not SMTP_SINK.exists():
            raise SystemExit(f"smtp-sink not found at {SMTP_SINK} (it comes with ../shared/tools)")
        self.port = free_port()
        self.backlog = backlog
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> SmtpSink:
        self.process = subprocess.Popen(
            [str(SMTP_SINK), f"127.0.0.1:{self.port}", str(self.backlog)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60  # the first run unpacks Postfix's package
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    if s.recv(3) == b"220":
                        return self
            except OSError:
                time.sleep(0.1)
        raise SystemExit("smtp-sink did not start")

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)


def smtp_source_path() -> str | None:
    """Postfix's smtp-source beside smtp-sink, for the C reference figure."""
    try:
        out = subprocess.run(
            [str(SMTP_SINK)],
            env={**os.environ, "SMTP_SINK_PRINT_PATH": "1"},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    candidate = Path(out) / "smtp-source"
    return str(candidate) if candidate.exists() else shutil.which("smtp-source")


@dataclass
class ProcessSample:
    """CPU seconds and peak RSS of a process and the engine processes it started (Linux /proc).

    ``children=True`` adds the process's Python children (the local node's deliver processes),
    not its nats-server, so the figures are the engine's own.
    """

    pid: int
    children: bool = True
    cpu_start: float = 0.0
    wall_start: float = 0.0
    samples: list[float] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)

    def _pids(self) -> list[int]:
        if not self.children:
            return [self.pid]
        try:
            with open(f"/proc/{self.pid}/task/{self.pid}/children", encoding="ascii") as handle:
                kids = [int(p) for p in handle.read().split()]
        except OSError:
            kids = []
        engine_kids = []
        for kid in kids:
            try:
                with open(f"/proc/{kid}/cmdline", "rb") as handle:
                    if handle.read().split(b"\0")[1:3] == [b"-m", b"engine"]:
                        engine_kids.append(kid)
            except OSError:
                continue
        return [self.pid, *engine_kids]

    def cpu_seconds(self) -> float:
        total = 0.0
        for pid in self.pids or [self.pid]:
            try:
                with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        return total

    def rss_bytes(self) -> int:
        total = 0
        for pid in self.pids or [self.pid]:
            try:
                with open(f"/proc/{pid}/status", encoding="ascii") as handle:
                    for line in handle:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1]) * 1024
                            break
            except OSError:
                continue
        return total

    def start(self) -> None:
        self.pids = self._pids()
        self.cpu_start = self.cpu_seconds()
        self.wall_start = time.monotonic()

    def sample(self) -> None:
        self.samples.append(self.rss_bytes())

    def cpu_ratio(self) -> float:
        """CPU time over wall time, summed over the processes (2.0 = two cores busy)."""
        wall = time.monotonic() - self.wall_start
        return (self.cpu_seconds() - self.cpu_start) / wall if wall > 0 else 0.0

    @property
    def peak_rss(self) -> int:
        return max(self.samples, default=0)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]
