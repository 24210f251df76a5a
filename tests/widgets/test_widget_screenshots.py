"""One screenshot per widget, light and dark, saved to docs/screenshots/widgets/.

Each is checked for not being blank; the PNGs are there to be looked at.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtWidgets import QHBoxLayout, QWidget
from pytestqt.qtbot import QtBot
from widget_helpers import NOW, save_screenshot, themed_frame

from widgets.banner import AlertBanner
from widgets.chart_controls import ChartControls
from widgets.confirm import ConfirmImpactDialog
from widgets.empty_state import EmptyState
from widgets.format import format_duration, format_percent
from widgets.histogram import LatencyHistogram
from widgets.live_chart import ChartGroup, LiveChart
from widgets.nav_rail import NavRail
from widgets.sparkline_table import SparklineTableModel, SparklineTableView
from widgets.stage_bar import StageBar
from widgets.stat_tile import StatTile
from widgets.status_pill import StatusPill
from widgets.theme import Status, make_palette, use_palette

RNG_SEED = 7


def _walk(n: int, base: float, spread: float, seed: int = RNG_SEED) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.maximum(base + np.cumsum(rng.normal(0, spread, n)) * 0.3, 0)


def test_status_pills(qtbot: QtBot, scheme: str) -> None:
    row = QWidget()
    layout = QHBoxLayout(row)
    for status, detail in (
        (Status.HEALTHY, "NATS"),
        (Status.DEGRADED, "engine nodes 2/3"),
        (Status.FAILING, "relay-a"),
        (Status.PAUSED, "sending"),
        (Status.DRAINING, "node-2"),
        (Status.UNKNOWN, "database"),
    ):
        layout.addWidget(StatusPill(status, detail))
    layout.addStretch(1)
    frame = themed_frame(qtbot, row, scheme == "dark", 980, 70)
    save_screenshot(frame, f"status_pill-{scheme}")


def test_stat_tiles(qtbot: QtBot, scheme: str) -> None:
    row = QWidget()
    layout = QHBoxLayout(row)
    t = NOW - 900 + np.arange(900.0)
    out = StatTile("Emails out/s", window=900, clock=lambda: NOW)
    for ts, v in zip(t, 2000 + 400 * np.sin(t / 120) + np.linspace(0, 300, t.size), strict=True):
        out.push(ts, v)
    out.set_status(Status.HEALTHY)
    p99 = StatTile("p99 latency", format_duration, higher_is_better=False, clock=lambda: NOW)
    for ts, v in zip(t, 0.11 + 0.01 * np.sin(t / 150) + 0.02 * (t > NOW - 300), strict=True):
        p99.push(ts, v)
    p99.set_status(Status.DEGRADED)
    errors = StatTile(
        "Error rate",
        format_percent,
        higher_is_better=False,
        absolute_change=True,
        clock=lambda: NOW,
    )
    for ts, v in zip(t[:-40], 0.004 + 0.002 * np.sin(t[:-40] / 90), strict=True):
        errors.push(ts, v)  # the last 40 s are missing: stale
    errors.set_status(Status.FAILING)
    for tile in (out, p99, errors):
        tile.refresh(NOW)
        layout.addWidget(tile)
    frame = themed_frame(qtbot, row, scheme == "dark", 900, 200)
    for tile in (out, p99, errors):
        tile.refresh(NOW)
    save_screenshot(frame, f"stat_tile-{scheme}")


def test_live_charts(qtbot: QtBot, scheme: str) -> None:
    group = ChartGroup(window=900, clock=lambda: NOW)
    holder = QWidget()
    layout = QHBoxLayout(holder)
    throughput = LiveChart("Throughput", unit="/s", y_label="rate", formatter=None)
    latency = LiveChart("Latency", unit="s", y_label="latency", formatter=format_duration)
    t = NOW - 3600 + np.arange(3600.0)
    throughput.add_series("in", "events in")
    throughput.add_series("out", "emails out")
    throughput.extend("in", t, 2400 + 300 * np.sin(t / 200) + _walk(3600, 0, 30))
    throughput.extend("out", t, 2100 + 250 * np.sin(t / 200 - 0.3) + _walk(3600, 0, 30, 8))
    for key, base in (("p50", 0.018), ("p95", 0.060), ("p99", 0.140)):
        latency.add_series(key, key)
        latency.extend(key, t, base * (1 + 0.25 * np.sin(t / 300)) + _walk(3600, 0, base / 20))
    for chart in (throughput, latency):
        group.add_chart(chart)
        layout.addWidget(chart)
    frame = themed_frame(qtbot, holder, scheme == "dark", 1100, 320)
    group.refresh()
    latency.show_readout_at(NOW - 300)
    save_screenshot(frame, f"live_chart-{scheme}")


def test_chart_controls(qtbot: QtBot, scheme: str) -> None:
    group = ChartGroup(window=900, clock=lambda: NOW)
    controls = ChartControls(group)
    frame = themed_frame(qtbot, controls, scheme == "dark", 520, 60)
    save_screenshot(frame, f"chart_controls-{scheme}", min_colours=20)


def test_latency_histogram(qtbot: QtBot, scheme: str) -> None:
    rng = np.random.default_rng(RNG_SEED)
    samples = np.concatenate(
        [rng.lognormal(np.log(0.018), 0.5, 20_000), rng.lognormal(np.log(0.25), 0.6, 600)]
    )
    histogram = LatencyHistogram("Latency, event to SMTP accepted")
    histogram.set_samples(samples)
    frame = themed_frame(qtbot, histogram, scheme == "dark", 560, 300)
    save_screenshot(frame, f"histogram-{scheme}")


def test_stage_bar(qtbot: QtBot, scheme: str) -> None:
    bar = StageBar(title="Per-stage latency (p95)")
    bar.set_values({"ingest": 0.0012, "decide": 0.0085, "render": 0.021, "smtp": 0.142})
    frame = themed_frame(qtbot, bar, scheme == "dark", 720, 120)
    save_screenshot(frame, f"stage_bar-{scheme}")


def test_sparkline_table(qtbot: QtBot, scheme: str) -> None:
    model = SparklineTableModel()
    rng = np.random.default_rng(RNG_SEED)
    for i, (name, triggered) in enumerate(
        (("Abandoned cart", 12408), ("Welcome series", 3120), ("Price drop", 884), ("Win-back", 0))
    ):
        model.update_row(
            {
                "name": name,
                "triggered": triggered,
                "sent": int(triggered * 0.93),
                "deferred": int(triggered * 0.04),
                "bounced": int(triggered * 0.006),
                "p99": [0.182, 0.95, 0.061, None][i],
                "trend": np.maximum(0, triggered / 60 + rng.normal(0, triggered / 300 + 1, 30)),
            }
        )
    view = SparklineTableView(model)
    frame = themed_frame(qtbot, view, scheme == "dark", 760, 220)
    view.selectRow(1)
    save_screenshot(frame, f"sparkline_table-{scheme}")


def test_nav_rail(qtbot: QtBot, scheme: str) -> None:
    rail = NavRail()
    pages = (
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
    for n, (key, label, icon) in enumerate(pages, start=1):
        rail.add_page(key, label, icon, f"Ctrl+{n}")
    rail.set_current("queues")
    frame = themed_frame(qtbot, rail, scheme == "dark", 200, 420)
    save_screenshot(frame, f"nav_rail-{scheme}")


def test_alert_banner(qtbot: QtBot, scheme: str) -> None:
    holder = QWidget()
    layout = QHBoxLayout(holder)
    layout.setContentsMargins(0, 0, 0, 0)
    banner = AlertBanner()
    layout.addWidget(banner)
    banner.show_alert(
        "relay-a rejects 38% of messages with 421 since 12:04 - 12,408 intents deferred",
        Status.FAILING,
        action="Open Queues",
    )
    frame = themed_frame(qtbot, holder, scheme == "dark", 900, 80)
    save_screenshot(frame, f"alert_banner-{scheme}")


def test_empty_state(qtbot: QtBot, scheme: str) -> None:
    empty = EmptyState(
        "mdi6.email-fast-outline",
        "No events yet \u2014 start demo traffic",
        "Start demo traffic",
        detail="Demo traffic sends 20 events a second through the local stack.",
    )
    frame = themed_frame(qtbot, empty, scheme == "dark", 520, 300)
    save_screenshot(frame, f"empty_state-{scheme}")


def test_confirm_dialog(qtbot: QtBot, scheme: str) -> None:
    dialog = ConfirmImpactDialog(
        "Reroute queued intents",
        "Reroute 12,408 queued intents from relay-a to relay-b.",
        confirm_text="Reroute 12,408 intents",
        details=(
            "Workflows: Abandoned cart (11,902), Welcome series (506)",
            "relay-b is at 41% of its hourly limit; this adds about 29%",
        ),
        reason_required=True,
    )
    qtbot.addWidget(dialog)
    use_palette(dialog, make_palette(scheme == "dark"))
    dialog.set_reason("relay-a returns 421 for gmail.com since 12:04")
    dialog.open()
    qtbot.waitExposed(dialog)
    save_screenshot(dialog, f"confirm_dialog-{scheme}")
    dialog.reject()
