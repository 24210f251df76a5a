"""Console responsiveness while the engine runs flat out: frame times, freezes, console CPU.

    python -m bench.console_frames                 # demo traffic at 20,000 events/s, 20 s
    python -m bench.console_frames --rate 2000 --seconds 10

Starts a real engine (``campaign-engine run``: embedded nats-server, SQLite, capture inbox) on a
temporary data directory, opens the console window on the Live page in this process (offscreen
unless QT_QPA_PLATFORM says otherwise), asks the engine for demo traffic at ``--rate`` and, after
a warm-up, measures for ``--seconds``:

- frame time: each Live page redraw tick (the charts and tiles whose turn it is) and each tick
  of the slow refresh (histogram, stage bar or workflow table), plus the repaint they cause:
  timed from the tick until an event posted below the repaint's priority is delivered, so the
  paint is inside. p50/p95/max, and the GUI thread's CPU time for the same span.
  Target: p95 <= 16.7 ms (60 frames a second). Time spent in pyqtgraph paint events is
  printed beside it (a check that the frames hold the painting).
- freezes: a 10 ms precise QTimer probe; any gap between its ticks longer than 100 ms is a
  freeze the operator would feel. Target: none.
  Its GUI-thread CPU time is printed beside it: on a busy machine the difference is time
  spent waiting for a core, not work the console does.
- console CPU: user + system time of this process only (the engine is a child process and not
  counted) over wall time, as a share of one core. Target: <= 25 %.

The figures are printed; nothing is asserted (benchmarks are not timed tests).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pyqtgraph as pg
import qasync
from PySide6.QtCore import QCoreApplication, QEvent, QObject, Qt, QTimer
from PySide6.QtWidgets import QApplication

from bench.harness import percentile
from console import pages
from console.client import EngineClient
from console.main_window import MainWindow
from console.metrics_model import Metric
from console.pages.live import LivePage
from console.stack import StackConnection, engine_command

PROBE_MS = 10
FREEZE_MS = 100.0
FRAME_BUDGET_MS = 1000.0 / 60.0


@dataclass
class Figures:
    frames_ms: list[float] = field(default_factory=list)
    frames_cpu_ms: list[float] = field(default_factory=list)
    slow_ms: list[float] = field(default_factory=list)
    slow_cpu_ms: list[float] = field(default_factory=list)
    slow_parts_ms: dict[str, list[float]] = field(default_factory=dict)
    paint_s: float = 0.0
    paints: int = 0
    probe_gaps_ms: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    wall_s: float = 0.0
    events_per_s: list[float] = field(default_factory=list)
    emails_per_s: list[float] = field(default_factory=list)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def start_engine(data_dir: Path) -> tuple[subprocess.Popen[bytes], StackConnection]:
    log = open(data_dir / "engine.log", "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        [*engine_command(), "run", "--data-dir", str(data_dir), "--http", "127.0.0.1:0"],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        conn = StackConnection.load(data_dir)
        if conn is not None and conn.pid == process.pid:
            return process, conn
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    tail = (data_dir / "engine.log").read_text(errors="replace")[-2000:]
    raise SystemExit(f"the engine did not start:\n{tail}")


# Posted events are delivered by priority; repaints (UpdateRequest) are posted at
# Qt.LowEventPriority, so an event posted lower still arrives after the repaint it follows.
_AFTER_PAINT = QEvent.Type(QEvent.registerEventType())
_BELOW_PAINT_PRIORITY = Qt.EventPriority.LowEventPriority.value - 10


class _AfterPaint(QObject):
    """Calls its callback when the low-priority event posted to it arrives."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[tuple[float, float, list[float], list[float]]] = []

    def post(self, start: float, cpu: float, wall: list[float], cpus: list[float]) -> None:
        self.pending.append((start, cpu, wall, cpus))
        QCoreApplication.postEvent(self, QEvent(_AFTER_PAINT), _BELOW_PAINT_PRIORITY)

    def event(self, event: QEvent) -> bool:
        if event.type() == _AFTER_PAINT:
            start, cpu, wall, cpus = self.pending.pop(0)
            wall.append((time.perf_counter() - start) * 1000.0)
            cpus.append((time.thread_time() - cpu) * 1000.0)
            return True
        return super().event(event)


class FrameTimer:
    """Times each Live redraw tick and slow refresh, repaint included (see the docstring)."""

    def __init__(self, page: LivePage, figures: Figures) -> None:
        self.figures = figures
        self.recording = False
        self._after = _AfterPaint()
        group = page.group
        # The bench wraps the page's own timer slots, so the ticks it measures are the real ones.
        timer = group._timer
        timer.timeout.disconnect(group.tick)
        timer.timeout.connect(self._tick)
        page._slow.timeout.disconnect(page._slow_tick)
        page._slow.timeout.connect(self._slow)
        self._group = group
        self._page = page
        self._paint_hook()

    def _paint_hook(self) -> None:
        original = pg.GraphicsView.paintEvent
        figures = self.figures
        timer = self

        def paint_event(view: pg.GraphicsView, event: object) -> None:
            start = time.perf_counter()
            original(view, event)
            if timer.recording:
                figures.paint_s += time.perf_counter() - start
                figures.paints += 1

        pg.GraphicsView.paintEvent = paint_event

    def _tick(self) -> None:
        start, cpu = time.perf_counter(), time.thread_time()
        self._group.tick()
        if self.recording:
            self._after.post(start, cpu, self.figures.frames_ms, self.figures.frames_cpu_ms)

    def _slow(self) -> None:
        parts = self._page._slow_parts()
        name = parts[self._page._slow_step % len(parts)].__name__.strip("_")
        start, cpu = time.perf_counter(), time.thread_time()
        self._page._slow_tick()
        if self.recording:
            self._after.post(start, cpu, self.figures.slow_ms, self.figures.slow_cpu_ms)
            part = self.figures.slow_parts_ms.setdefault(name, [])
            self._after.post(start, cpu, part, [])


class Probe:
    """A precise 10 ms timer; the gaps between its ticks show how long the loop was busy."""

    def __init__(self, figures: Figures) -> None:
        self.figures = figures
        self.recording = False
        self._last = time.perf_counter()
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(PROBE_MS)
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    def _tick(self) -> None:
        now = time.perf_counter()
        if self.recording:
            self.figures.probe_gaps_ms.append((now - self._last) * 1000.0)
        self._last = now


async def measure(conn: StackConnection, rate: float, warmup: float, seconds: float) -> Figures:
    figures = Figures()
    pages.register_builtin_pages()
    client = EngineClient()
    await client.connect_to(
        conn.nats_url,
        conn.nats_token or None,
        user=conn.nats_user or None,
        password=conn.nats_password or None,
    )
    window = MainWindow(client, target="Local stack", target_detail=conn.nats_url)
    window.resize(1600, 1000)
    window.show()
    page = window.page("live")
    assert isinstance(page, LivePage)
    frames = FrameTimer(page, figures)
    probe = Probe(figures)
    try:
        await client.request("demo.start", {"rate": rate})
        await asyncio.sleep(warmup)
        frames.recording = probe.recording = True
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        end = wall0 + seconds
        while time.perf_counter() < end:
            await asyncio.sleep(1.0)
            figures.events_per_s.append(client.model.latest(Metric.EVENTS_IN))
            figures.emails_per_s.append(client.model.latest(Metric.EMAILS_OUT))
        figures.cpu_s = cpu_seconds() - cpu0
        figures.wall_s = time.perf_counter() - wall0
        frames.recording = probe.recording = False
    finally:
        probe.timer.stop()
        try:
            await client.request("demo.stop")
        finally:
            window.stop_timers()
            await client.stop_intake()
            await client.close()
            window.hide()
            window.deleteLater()
    return figures


def report(figures: Figures, rate: float) -> None:
    frames = figures.frames_ms + figures.slow_ms
    gaps = figures.probe_gaps_ms
    freezes = [g for g in gaps if g > FREEZE_MS]
    cpu = figures.cpu_s / figures.wall_s if figures.wall_s else float("nan")
    finite = [v for v in figures.events_per_s if v == v]
    sent = [v for v in figures.emails_per_s if v == v]
    print(f"console frames on the Live page, demo traffic asked at {rate:,.0f} events/s")
    print(
        f"  engine took in   {sum(finite) / max(1, len(finite)):,.0f} events/s on average,"
        f" sent {sum(sent) / max(1, len(sent)):,.0f} emails/s"
    )
    ticks = len(figures.frames_ms) / figures.wall_s if figures.wall_s else 0.0
    print(
        f"  measured         {figures.wall_s:.1f} s, {len(figures.frames_ms)} redraw ticks"
        f" ({ticks:.1f}/s) and {len(figures.slow_ms)} slow refreshes, all counted as frames"
    )
    if frames:
        p50, p95 = percentile(frames, 0.50), percentile(frames, 0.95)
        print(
            f"  frame time       p50 {p50:.1f} ms  p95 {p95:.1f} ms  max {max(frames):.1f} ms"
            f"   (target p95 <= {FRAME_BUDGET_MS:.1f} ms)"
        )
        cpu_frames = figures.frames_cpu_ms + figures.slow_cpu_ms
        print(
            f"  frame CPU        p50 {percentile(cpu_frames, 0.5):.1f} ms"
            f"  p95 {percentile(cpu_frames, 0.95):.1f} ms  (the GUI thread's own work per frame;"
            " the rest of the frame time is waiting for a core)"
        )
        for name, wall in (("redraw ticks", figures.frames_ms), ("slow refresh", figures.slow_ms)):
            if wall:
                print(
                    f"    {name:<14} p50 {percentile(wall, 0.5):.1f} ms"
                    f"  p95 {percentile(wall, 0.95):.1f} ms  max {max(wall):.1f} ms"
                )
        for name, wall in sorted(figures.slow_parts_ms.items()):
            print(
                f"      {name:<30} p50 {percentile(wall, 0.5):.1f} ms"
                f"  p95 {percentile(wall, 0.95):.1f} ms"
            )
        if figures.paints:
            print(
                f"  chart paints     {figures.paint_s * 1000 / figures.wall_s:.0f} ms/s in"
                f" {figures.paints / figures.wall_s:.0f} paint events/s (inside the frames above)"
            )
    if gaps:
        print(
            f"  loop probe gaps  p95 {percentile(gaps, 0.95):.1f} ms  longest {max(gaps):.1f} ms;"
            f" {len(freezes)} freeze(s) > {FREEZE_MS:.0f} ms   (target: none)"
        )
    print(f"  console CPU      {cpu:.1%} of one core   (target <= 25%)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rate", type=float, default=20_000, help="demo events/s (max 20,000)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured time")
    parser.add_argument("--warmup", type=float, default=4.0, help="seconds before measuring")
    args = parser.parse_args(argv)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    with tempfile.TemporaryDirectory(prefix="console-frames-") as tmp:
        process, conn = start_engine(Path(tmp))
        try:
            with asyncio.Runner(loop_factory=lambda: qasync.QEventLoop(app)) as runner:
                figures = runner.run(measure(conn, args.rate, args.warmup, args.seconds))
        finally:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    report(figures, args.rate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
