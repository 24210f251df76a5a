"""The Nodes page on two real engine nodes sharing one embedded nats-server and one store.

The first node is the local stack deciding (``campaign-engine run --role decide``: embedded
NATS, SQLite, the capture inbox); the second is another ``campaign-engine run --role deliver
--nats URL`` on the same data directory, signed in as the engines' own NATS user, sending what
the first decides. Both are listed with their
real pids and roles, the totals add up, and when the second stops it is flagged as not
reporting within the console's staleness limit while staying listed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from console import pages
from console.client import EngineClient
from console.main_window import MainWindow
from console.metrics_model import ALL
from console.node_rows import TOTALS
from console.pages.live import LivePage
from console.pages.nodes import NodesPage
from console.stack import StackConnection, engine_command
from tests.console.conftest import (
    _die_with_parent,
    _engine_secret,
    close_console,
    open_console,
    run,
    running_engine,
    save_screenshot,
    wait_until,
)
from tests.console.test_metrics_model import FakeNode

SECOND = "deliver-2"


@contextlib.contextmanager
def second_node(data_dir: Path, engine: StackConnection) -> Iterator[subprocess.Popen[bytes]]:
    """A deliver node on the first one's NATS and store, sending to its capture inbox."""
    env = dict(
        os.environ,
        PYTHONUNBUFFERED="1",
        CAMPAIGN_NATS_USER="engine",
        CAMPAIGN_NATS_PASSWORD=_engine_secret(engine.pid),
    )
    with open(data_dir / "second.log", "wb") as log:
        process = subprocess.Popen(
            [
                *engine_command(),
                "run",
                "--data-dir",
                str(data_dir),
                "--nats",
                engine.nats_url,
                "--role",
                "deliver",
                "--node",
                SECOND,
                "--smtp",
                f"smtp://{engine.inbox}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_die_with_parent,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _by_name(page: NodesPage) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in page.rows()}


@pytest.mark.timeout(240)
def test_nodes_page_screenshots_two_real_nodes_with_totals_and_one_that_stops_reporting(
    qloop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    pages.register_builtin_pages()
    data_dir = tmp_path / "engine"
    data_dir.mkdir()
    with (
        running_engine(data_dir, "--role", "decide") as engine,
        second_node(data_dir, engine) as second,
    ):
        window = run(qloop, open_console(EngineClient(), engine))
        client = window.client
        try:
            page = window.show_page("nodes")
            assert isinstance(page, NodesPage)

            def both_report() -> bool:
                rows = _by_name(page)
                return {engine.node, SECOND} <= set(rows) and all(
                    rows[n]["reporting"] for n in (engine.node, SECOND)
                )

            run(qloop, wait_until(both_report, timeout=90), timeout=100)
            # To one node: on "all" every node would start its own demo traffic.
            run(qloop, client.request("demo.start", {"rate": 40}, node=engine.node))

            def both_send() -> bool:
                page.refresh()
                rows = _by_name(page)
                return (rows[engine.node]["events_in"] or 0) > 0 and (
                    rows[SECOND]["emails_out"] or 0
                ) > 0

            run(qloop, wait_until(both_send, timeout=60), timeout=70)
            page.refresh()
            rows = _by_name(page)
            first, other, totals = rows[engine.node], rows[SECOND], rows[TOTALS]
            assert list(rows) == [*sorted([engine.node, SECOND]), TOTALS]  # totals last
            assert (first["role"], other["role"]) == ("decide", "deliver")
            assert first["identity"].endswith(f"pid {engine.pid}")
            assert other["identity"].endswith(f"pid {second.pid}")
            assert first["state"] == other["state"] == "healthy"
            assert other["checks"] == "NATS, store, routes healthy"
            assert other["events_in"] == 0  # a deliver node decides nothing
            assert first["emails_out"] == 0  # and a decide node sends nothing
            assert first["checks"] == "NATS, store healthy"  # no routes: it does not send
            for field in ("events_in", "emails_out", "inflight", "cpu", "rss"):
                values = [r[field] for r in (first, other) if r[field] is not None]
                assert totals[field] == pytest.approx(sum(values)), field
            assert totals["consumer_lag"] == first["consumer_lag"]  # only decide reports it
            assert totals["role"] == "2 of 2 reporting"
            assert window.top_bar.pills["nodes"].text() == "Engines 2/2 · healthy"
            assert not page.detail.isVisible() and page.pick.isVisible()
            page.select(SECOND)
            assert page.detail.isVisible() and not page.pick.isVisible()
            detail = page.detail.text().splitlines()
            assert detail[0] == f"{SECOND} · deliver · {other['identity']}"
            assert detail[1:5] == [
                "State: healthy",
                "Health checks: NATS healthy",
                ": store healthy",
                ": routes healthy",
            ]
            assert "Partitions: —" in detail and "Alerts: none active" in detail
            run(qloop, asyncio.sleep(0.3))  # laid out and painted
            save_screenshot(window, "nodes")

            # The second node stops: flagged within the staleness limit, still listed.
            heard: list[float] = []
            client.metrics_received.connect(
                lambda node, _snap: heard.append(time.monotonic()) if node == SECOND else None
            )
            run(qloop, wait_until(lambda: bool(heard), timeout=10), timeout=15)
            second.terminate()
            second.wait(30)

            seen: list[tuple[float, bool]] = []  # (silent for, listed as reporting)

            def flagged() -> bool:
                page.refresh()
                reporting = bool(_by_name(page)[SECOND]["reporting"])
                seen.append((time.monotonic() - heard[-1] if heard else 0.0, reporting))
                return not reporting

            run(qloop, wait_until(flagged, timeout=client.stale_after_s + 20), timeout=30)
            # Flagged exactly when its silence passes the limit: reporting before, flagged
            # after. The clock starts when the console took the node's last snapshot (a busy
            # machine may hand it over late); the poll itself may run late too.
            limit = client.stale_after_s
            assert all(reporting for silent, reporting in seen if silent < limit - 0.1), seen
            assert all(not reporting for silent, reporting in seen if silent > limit + 0.1), seen
            assert seen[-1][0] <= limit + 3.0
            run(qloop, asyncio.sleep(1.2))  # "not reporting N s" with N counting up
            page.refresh()
            rows = _by_name(page)
            assert rows[SECOND]["state"].startswith("not reporting ")
            assert int(rows[SECOND]["state"].split()[2]) >= client.stale_after_s
            assert rows[TOTALS]["role"] == "1 of 2 reporting"
            assert rows[TOTALS]["state"] == "1 not reporting"
            assert rows[TOTALS]["emails_out"] == 0  # the only sender is silent
            assert rows[TOTALS]["events_in"] == pytest.approx(rows[engine.node]["events_in"])
            assert f"not reporting: {SECOND}" in page.summary.text()
            assert window.top_bar.pills["nodes"].text() == "Engines 1/2 · degraded"
            assert page.table.selected_key() == SECOND  # the selection survived the refreshes
            assert (
                page.detail.text()
                .splitlines()[1]
                .startswith(f"State: No metrics from {SECOND} for ")
            )
            save_screenshot(window, "nodes-not-reporting")

            # Selecting a node and "Show on Live" filters the Live page to that node.
            page.select(engine.node)
            assert page.live_button.isEnabled()
            page.live_button.click()
            live = window.page("live")
            assert isinstance(live, LivePage)
            assert window.current_page() == "live"
            assert (live.selected_node(), live.node_box.currentText()) == (engine.node, engine.node)
            window.show_page("nodes")
            page.select(TOTALS)
            page.live_button.click()
            assert live.selected_node() == ALL
            run(qloop, client.request("demo.stop", node=engine.node))
        finally:
            run(qloop, close_console(window))


def test_failing_checks_show_on_the_node_its_detail_and_the_top_bar_pills(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop
) -> None:
    """Snapshots as the engines publish them (taken in as if from NATS): a node whose store
    fails and whose only route is down is failing, and so are the Database and Relays pills."""
    pages.register_builtin_pages()
    client = EngineClient()
    window = MainWindow(client, target="Local stack", target_detail="nats://127.0.0.1:4222")
    qtbot.addWidget(window)
    window.show()
    bad = FakeNode("d1", pid=41)
    good = FakeNode("d2", pid=42)
    details = {"store": "4 database errors and no commit in the last 10 s", "routes": "x down: y"}
    for _ in range(3):
        snap = good.snapshot()
        snap["role"] = "deliver"
        snap["health"].update(store="healthy", routes="healthy", details={})
        client.ingest(snap)
        snap = bad.snapshot()
        snap["role"] = "all"  # decides (partitions) and delivers (routes)
        snap["partitions"] = [4, 5]
        snap["health"].update(store="failing", routes="failing", details=details)
        client.ingest(snap)
    window.refresh_health()
    pills = window.top_bar.pills
    assert pills["database"].text() == "Database (sqlite) · failing"
    assert pills["database"].toolTip() == f"d1: {details['store']}"
    assert pills["relays"].text() == "Relays · failing"
    assert pills["relays"].toolTip() == "d1: x down: y"

    qtbot.mouseClick(pills["nodes"], Qt.MouseButton.LeftButton)  # the pill opens the page
    assert window.current_page() == "nodes"
    page = window.page("nodes")
    assert isinstance(page, NodesPage)
    rows = _by_name(page)
    assert (rows["d1"]["state"], rows["d2"]["state"]) == ("failing", "healthy")
    assert rows["d1"]["checks"] == (
        f"store failing: {details['store']}; routes failing: {details['routes']}"
    )
    assert rows["d1"]["partitions"] == "4\u20135"
    assert (rows[TOTALS]["state"], rows[TOTALS]["partitions"]) == ("failing", "2 owned")
    page.select("d1")
    assert page.detail.text().splitlines()[1:5] == [
        "State: failing",
        "Health checks: NATS healthy",
        f": store failing: {details['store']}",
        f": routes failing: {details['routes']}",
    ]
    assert "Partitions: 4\u20135 (2)" in page.detail.text()
    window.stop_timers()
