"""Every widget together with fake live data, light and dark side by side.

    python -m widgets.gallery                      # a live window (data ticks, charts scroll)
    python -m widgets.gallery --screenshot out.png # an hour of history, one frame, saved, exit

The gallery is how the widgets are reviewed: it is a Live page sketch, not the console.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PySide6.QtCore import QPoint, QTimer
from PySide6.QtGui import QColor, QPainter, QPixmap
from PySide6.QtWidgets import (
    QApplication,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLayout,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from widgets import theme
from widgets.banner import AlertBanner
from widgets.chart_controls import ChartControls
from widgets.confirm import ConfirmImpactDialog
from widgets.empty_state import EmptyState
from widgets.format import format_count, format_duration, format_percent, format_rate
from widgets.histogram import LatencyHistogram
from widgets.live_chart import ChartGroup, LiveChart
from widgets.nav_rail import NavRail
from widgets.sparkline_table import SparklineTableModel, SparklineTableView
from widgets.stage_bar import StageBar
from widgets.stat_tile import StatTile
from widgets.status_pill import StatusPill
from widgets.theme import Status

PAGES: tuple[tuple[str, str, str], ...] = (
    ("live", "Live", "mdi6.chart-timeline-variant"),
    ("queues", "Queues", "mdi6.tray-full"),
    ("workflows", "Workflows", "mdi6.sitemap"),
    ("segments", "Segments", "mdi6.account-group"),
    ("templates", "Templates", "mdi6.file-document-edit"),
    ("contacts", "Contacts", "mdi6.card-account-details"),
    ("inbox", "Inbox", "mdi6.inbox"),
    ("audit", "Audit", "mdi6.clipboard-text-clock"),
    ("settings", "Settings", "mdi6.cog"),
)
WORKFLOWS = ("Abandoned cart", "Welcome series", "Price drop", "Win-back", "Birthday")
HISTORY_SECONDS = 3600


class FakeTraffic:
    """Plausible, deterministic metrics for time ``t``: daily-ish waves plus noise."""

    def __init__(self, seed: int = 7, incident_at: float | None = None) -> None:
        self._rng = np.random.default_rng(seed)
        # An incident began ten minutes before the gallery opened: p99, errors and the queue
        # climb for ten minutes, then stay high (what the tiles and the banner talk about).
        self._incident_at = (time.time() if incident_at is None else incident_at) - 600

    def sample(self, t: float) -> dict[str, float]:
        """One snapshot of every metric the gallery shows."""
        wave = math.sin(t / 420.0)
        slow = math.sin(t / 1300.0 + 1.0)
        noise = self._rng.normal(0, 1, 8)
        events_in = max(0.0, 2400 + 380 * wave + 120 * slow + 40 * noise[0])
        emails_out = max(0.0, events_in * 0.9 + 30 * noise[1])
        p50 = 0.018 * (1 + 0.15 * slow) + 0.0006 * noise[2]
        p95 = 0.058 * (1 + 0.2 * slow) + 0.002 * noise[3]
        incident = min(max((t - self._incident_at) / 600.0, 0.0), 1.0)
        p99 = 0.14 * (1 + 0.25 * slow) + 0.006 * noise[4] + 0.25 * incident
        error_rate = max(0.0, 0.002 + 0.0008 * wave + 0.0002 * noise[5] + 0.006 * incident)
        delivery = min(1.0, 0.9985 - 0.0004 * abs(noise[6]) - 0.004 * incident)
        depth = max(0.0, 1800 + 900 * slow + 4000 * incident + 60 * noise[7])
        return {
            "events_in": events_in,
            "emails_out": emails_out,
            "p50": p50,
            "p95": p95,
            "p99": p99,
            "error_rate": error_rate,
            "delivery_rate": delivery,
            "queue_depth": depth,
            "cpu": 0.35 + 0.1 * wave,
            "rss": 148 * 1024**2 * (1 + 0.05 * slow),
        }

    def latencies(self, n: int = 20_000) -> np.ndarray:
        """Raw end-to-end latencies (seconds): a main mode and a slow tail."""
        main = self._rng.lognormal(math.log(0.02), 0.45, n)
        tail = self._rng.lognormal(math.log(0.3), 0.6, n // 40)
        return np.concatenate([main, tail])


class LivePage(QWidget):
    """A sketch of the console's Live page built from the widgets, in one palette."""

    def __init__(self, dark: bool, clock_now: float, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        theme.use_palette(self, theme.make_palette(dark))
        self.traffic = FakeTraffic(seed=11 if dark else 7, incident_at=clock_now)
        self.group = ChartGroup(window=900, clock=time.time, parent=self)

        # Top bar: where we are connected, one pill per part, the emergency stop.
        connected = QLabel("Connected to <b>Local stack</b>")
        self.pills = {
            "nats": StatusPill(Status.HEALTHY, "NATS"),
            "engine": StatusPill(Status.DEGRADED, "engine 2/3"),
            "database": StatusPill(Status.HEALTHY, "database"),
            "relays": StatusPill(Status.FAILING, "relay-a"),
            "sending": StatusPill(Status.DRAINING, "node-3"),
        }
        self.pause_all = QPushButton(
            theme.icon("mdi6.pause-octagon", QColor(theme.DESTRUCTIVE_FG)),
            "Pause all sending",
        )
        self.pause_all.setStyleSheet(theme.destructive_button_qss(self.palette()))
        self.pause_all.clicked.connect(self.confirm_pause_all)
        top = QHBoxLayout()
        top.addWidget(connected)
        top.addSpacing(12)
        for pill in self.pills.values():
            top.addWidget(pill)
        top.addStretch(1)
        top.addWidget(self.pause_all)

        self.banner = AlertBanner()
        self.rail = NavRail()
        for n, (key, label, icon) in enumerate(PAGES, start=1):
            self.rail.add_page(key, label, icon, f"Ctrl+{n}")

        # Tiles.
        self.tiles: dict[str, StatTile] = {
            "events_in": StatTile("Events in/s", format_rate),
            "emails_out": StatTile("Emails out/s", format_rate),
            "p99": StatTile("p99 latency", format_duration, higher_is_better=False),
            "error_rate": StatTile(
                "Error rate", format_percent, higher_is_better=False, absolute_change=True
            ),
            "delivery_rate": StatTile("Delivery rate", format_percent, absolute_change=True),
            "queue_depth": StatTile("Queue depth", format_count, higher_is_better=None),
        }
        tiles = QHBoxLayout()
        tiles.setSpacing(8)
        for tile in self.tiles.values():
            tile.set_window(self.group.window_seconds())
            tiles.addWidget(tile)
            self.group.add_refresher(tile.refresh)
        self.group.window_changed.connect(self._set_tiles_window)

        # Charts with one time axis.
        self.throughput = LiveChart("Throughput", unit="/s", y_label="rate", formatter=format_rate)
        self.throughput.add_series("events_in", "events in")
        self.throughput.add_series("emails_out", "emails out")
        self.latency = LiveChart("Latency", unit="s", y_label="latency", formatter=format_duration)
        for key in ("p50", "p95", "p99"):
            self.latency.add_series(key, key)
        self.rates = LiveChart(
            "Errors and delivery",
            unit="%",
            y_label="share",
            si_prefix=False,
            formatter=lambda v: format_percent(v / 100),
        )
        self.rates.add_series("error_rate", "errors")
        self.rates.add_series("undelivered", "not delivered")
        self.resources = LiveChart(
            "Queue depth", y_label="intents queued", si_prefix=False, formatter=format_count
        )
        self.resources.add_series("queue_depth", "queued")
        for chart in (self.throughput, self.latency, self.rates, self.resources):
            self.group.add_chart(chart)
        self.histogram = LatencyHistogram("Latency distribution")
        controls = ChartControls(self.group)

        grid = QGridLayout()
        grid.setSpacing(8)
        grid.addWidget(self.throughput, 0, 0)
        grid.addWidget(self.latency, 0, 1)
        grid.addWidget(self.histogram, 0, 2)
        grid.addWidget(self.rates, 1, 0)
        grid.addWidget(self.resources, 1, 1)
        self.stages = StageBar(title="Per-stage latency (p95)")
        grid.addWidget(self.stages, 1, 2)
        for column, stretch in enumerate((4, 4, 3)):
            grid.setColumnStretch(column, stretch)

        self.model = SparklineTableModel()
        self.table = SparklineTableView(self.model)
        self.inbox_empty = EmptyState(
            "mdi6.inbox-arrow-down",
            "No messages in the test inbox yet \u2014 send a test email",
            "Send a test email",
            detail="Messages sent to the local relay land here, rendered with headers.",
        )
        bottom = QSplitter()
        bottom.addWidget(self.table)
        bottom.addWidget(self.inbox_empty)
        bottom.setSizes([700, 400])

        content = QVBoxLayout()
        content.setSpacing(8)
        content.addLayout(tiles)
        content.addWidget(controls)
        content.addLayout(grid, 3)
        content.addWidget(bottom, 2)
        body = QHBoxLayout()
        body.addWidget(self.rail)
        body.addLayout(content, 1)

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.banner)
        layout.addLayout(body, 1)
        # The gallery window is sized by its owner; see test frames about propagateSizeHints.
        layout.setSizeConstraint(QLayout.SizeConstraint.SetNoConstraint)

        self.rail.set_current("live")
        self.banner.show_alert(
            "relay-a rejects 38% of messages with 421 since 12:04 \u2014 12,408 intents deferred",
            Status.FAILING,
            action="Open Queues",
        )
        self._now = clock_now
        self._dialog: ConfirmImpactDialog | None = None

    def _set_tiles_window(self, seconds: float) -> None:
        for tile in self.tiles.values():
            tile.set_window(seconds)

    # -- data ------------------------------------------------------------------------------
    def push(self, t: float, skip: Sequence[str] = ()) -> None:
        """Append one snapshot at ``t`` to every widget (arrival only appends).

        Tiles named in ``skip`` get nothing (their feed is "down").
        """
        s = self.traffic.sample(t)
        for key in ("events_in", "emails_out"):
            self.throughput.push(key, t, s[key])
        for key in ("p50", "p95", "p99"):
            self.latency.push(key, t, s[key])
        self.rates.push("error_rate", t, s["error_rate"] * 100)
        self.rates.push("undelivered", t, (1 - s["delivery_rate"]) * 100)
        self.resources.push("queue_depth", t, s["queue_depth"])
        for key, tile in self.tiles.items():
            if key not in skip:
                tile.push(t, s[key])

    def prefill(self, now: float, seconds: int = HISTORY_SECONDS) -> None:
        """An hour of history, as the console would fetch on connect.

        The queue-depth feed "stopped" 40 s ago, to show a stale tile.
        """
        for t in np.arange(now - seconds, now + 1e-9, 1.0):
            self.push(float(t), skip=("queue_depth",) if t > now - 40 else ())
        self.update_slow_widgets()

    def update_slow_widgets(self) -> None:
        """Histogram, stage bar, table and pills: refreshed every few seconds, not per frame."""
        self.histogram.set_samples(self.traffic.latencies())
        self.stages.set_values({"ingest": 0.0012, "decide": 0.0085, "render": 0.021, "smtp": 0.142})
        rng = np.random.default_rng(3)
        for i, name in enumerate(WORKFLOWS):
            triggered = [12408, 3120, 884, 0, 57][i]
            trend = np.maximum(0, triggered / 60 + rng.normal(0, triggered / 300 + 0.5, 30))
            self.model.update_row(
                {
                    "name": name,
                    "triggered": triggered,
                    "sent": int(triggered * 0.93),
                    "deferred": int(triggered * 0.04),
                    "bounced": int(triggered * 0.006),
                    "p99": [0.182, 0.95, 0.061, None, 0.2][i],
                    "trend": trend,
                }
            )
        p99 = self.tiles["p99"]
        p99.set_status(Status.DEGRADED)
        self.tiles["error_rate"].set_status(Status.FAILING)
        self.tiles["delivery_rate"].set_status(Status.HEALTHY)
        self.tiles["events_in"].set_status(Status.HEALTHY)
        self.tiles["emails_out"].set_status(Status.HEALTHY)

    # -- actions ---------------------------------------------------------------------------
    def confirm_pause_all(self) -> ConfirmImpactDialog:
        """The emergency stop, confirmed with its impact (opened, never exec'd)."""
        dialog = ConfirmImpactDialog(
            "Pause all sending",
            "Stop sending for all 5 workflows. 12,408 queued intents wait until you resume.",
            confirm_text="Pause all sending",
            details=(
                "Events keep being received and decided; nothing is dropped.",
                "38 messages in flight to relay-a finish first (draining).",
            ),
            reason_required=True,
            parent=self,
        )
        dialog.accepted_with.connect(
            lambda reason: self.banner.show_alert(
                f"Sending paused by you: {reason}", Status.PAUSED, action="Resume sending"
            )
        )
        dialog.open()
        self._dialog = dialog
        return dialog


class Gallery(QWidget):
    """The light and the dark Live page, one above the other."""

    def __init__(self, schemes: Sequence[str] = ("light", "dark")) -> None:
        super().__init__()
        self.setWindowTitle("Campaign Console \u2014 widget gallery")
        now = time.time()
        self.pages = [LivePage(scheme == "dark", now) for scheme in schemes]
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.setSizeConstraint(QLayout.SizeConstraint.SetNoConstraint)
        for page in self.pages:
            layout.addWidget(page)
        self._feed = QTimer(self)
        self._feed.setInterval(1000)
        self._feed.timeout.connect(self._tick)
        self._slow = QTimer(self)
        self._slow.setInterval(5000)
        self._slow.timeout.connect(self._slow_tick)

    def prefill(self, now: float) -> None:
        """History for every page, then one redraw."""
        for page in self.pages:
            page.prefill(now)
            page.group.refresh(now)

    def start(self) -> None:
        """Live mode: a sample a second, charts redrawn in turn by their group."""
        self._feed.start()
        self._slow.start()
        for page in self.pages:
            page.group.start()

    def stop(self) -> None:
        """Stop every timer (tests, shutdown)."""
        self._feed.stop()
        self._slow.stop()
        for page in self.pages:
            page.group.stop()

    def _slow_tick(self) -> None:
        for page in self.pages:
            page.update_slow_widgets()

    def _tick(self) -> None:
        now = time.time()
        for page in self.pages:
            page.push(now)

    def screenshot(self, path: Path, with_dialog: bool = True) -> QPixmap:
        """Grab the gallery (with the pause-all confirmation over the dark page) to ``path``."""
        pixmap = self.grab()
        if with_dialog and self.pages:
            page = self.pages[-1]
            dialog = page.confirm_pause_all()
            dialog.set_reason("relay-a rejects with 421, pausing while we reroute")
            QApplication.processEvents()
            shot = dialog.grab()
            origin = page.mapTo(self, QPoint(0, 0))
            x = origin.x() + page.width() - shot.width() - 40
            y = origin.y() + page.height() - shot.height() - 40
            painter = QPainter(pixmap)
            painter.drawPixmap(x, y, shot)
            # The window manager's frame is not in the grab; a hairline stands in for it.
            painter.setPen(theme.border_color(page.palette()))
            painter.drawRect(x - 1, y - 1, shot.width() + 1, shot.height() + 1)
            painter.end()
            dialog.reject()
        path.parent.mkdir(parents=True, exist_ok=True)
        if not pixmap.save(str(path)):
            raise OSError(f"could not write {path}")
        return pixmap


def main(argv: Sequence[str] | None = None) -> int:
    """Run the gallery; with ``--screenshot PATH`` save one frame and exit."""
    parser = argparse.ArgumentParser(prog="python -m widgets.gallery", description=__doc__)
    parser.add_argument("--screenshot", type=Path, help="save a PNG of the gallery and exit")
    parser.add_argument("--theme", choices=("both", "light", "dark"), default="both")
    parser.add_argument("--size", default="1680x1000", help="size of each page, WxH")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    schemes = ("light", "dark") if args.theme == "both" else (args.theme,)

    app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    # No application stylesheet: it would stop each half's palette reaching its widgets.
    theme.apply_theme(app, dark=None if args.screenshot is None else False, stylesheet=False)
    gallery = Gallery(schemes)
    gallery.resize(width, height * len(schemes))
    now = time.time()
    gallery.prefill(now)
    gallery.show()
    gallery.pages[0].rail.button("live").setFocus()  # not the emergency stop
    if args.screenshot is not None:
        QApplication.processEvents()
        for page in gallery.pages:
            page.group.refresh(now)
        QApplication.processEvents()
        gallery.screenshot(args.screenshot)
        gallery.close()
        print(f"saved {args.screenshot}")
        return 0
    gallery.start()
    return app.exec()


if __name__ == "__main__":
    raise SystemExit(main())
