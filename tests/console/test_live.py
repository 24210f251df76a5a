"""The Live page against a real engine: empty state, demo traffic, tiles, charts, screenshots."""

from __future__ import annotations

import asyncio
import math

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from console import pages
from console.client import EngineClient
from console.main_window import MainWindow
from console.metrics_model import ALL, Metric
from console.pages.live import CHARTS, LivePage
from console.stack import StackConnection
from tests.console.conftest import close_console, open_console, run, save_screenshot, wait_until
from widgets import theme

TRAFFIC_SECONDS = 10.0


def live_page(window: MainWindow) -> LivePage:
    page = window.page("live")
    assert isinstance(page, LivePage)
    return page


def test_demo_traffic_from_the_empty_state_fills_the_tiles(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop, console: MainWindow, engine: StackConnection
) -> None:
    page = live_page(console)
    client = console.client

    async def scenario() -> None:
        # A fresh engine reports, but nothing has happened yet: the page teaches.
        await wait_until(lambda: client.nodes() == [engine.node], timeout=10)
        page.refresh_slow()
        assert page.states.currentWidget() is page.empty
        assert page.empty.sentence() == "No events yet \u2014 start demo traffic"
        await wait_until(lambda: page.empty.action_button().isEnabled(), timeout=5)
        save_screenshot(console, "live-empty")

        qtbot.mouseClick(page.empty.action_button(), Qt.MouseButton.LeftButton)
        # The request reached the engine, under the operator's name.
        await wait_until(lambda: page._demo_running is True, timeout=10)
        status = await client.request("demo.status")
        assert status["running"] is True and status["rate"] == 50
        audit = await client.request("audit.list", {"search": "demo.start"})
        assert audit[0]["actor"] == "admin"  # the local stack's user, whom the console signs in as

        # Events flow: the dashboard replaces the empty state, the tile shows events/s.
        await wait_until(lambda: page.states.currentWidget() is page.dashboard, timeout=20)
        await wait_until(lambda: client.model.latest(Metric.EVENTS_IN) > 0, timeout=20)
        await asyncio.sleep(0.5)
        tile = page.tiles[Metric.EVENTS_IN]
        assert tile.value_text().endswith("/s")
        assert tile.value_text() not in ("0/s", "\u2014")
        assert page.charts["throughput"].legend_text(Metric.EVENTS_IN).startswith("events in")
        assert page.freshness.text() in ("updated just now", "updated 1 s ago")

    run(qloop, scenario(), timeout=90)


def test_live_screenshot_with_demo_traffic(
    qloop: asyncio.AbstractEventLoop, console: MainWindow, engine: StackConnection
) -> None:
    page = live_page(console)
    client = console.client

    async def scenario() -> None:
        status = await client.request("demo.status")
        if not status["running"]:
            await client.request("demo.start", {"rate": 50})
        await asyncio.sleep(TRAFFIC_SECONDS)
        page.refresh_slow()
        page.group.refresh()

        assert page.states.currentWidget() is page.dashboard
        assert client.model.latest(Metric.EVENTS_IN) > 0
        t, _ = client.model.series(Metric.EVENTS_IN)
        assert t.size >= 30  # about 4 samples a second
        save_screenshot(console, "live")
        inner = page.dashboard.widget()
        inner.resize(inner.width(), inner.sizeHint().height())
        save_screenshot(inner, "live-full")

    run(qloop, scenario(), timeout=60)


def test_live_screenshot_dark(qloop: asyncio.AbstractEventLoop, engine: StackConnection) -> None:
    """A dark OS theme: the palette is set before the window is built, as at start-up."""
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    theme.apply_theme(app, dark=True)
    pages.register_builtin_pages()

    async def scenario() -> None:
        window = await open_console(EngineClient(), engine)
        try:
            if not (await window.client.request("demo.status"))["running"]:
                await window.client.request("demo.start", {"rate": 50})
            await asyncio.sleep(TRAFFIC_SECONDS)
            page = live_page(window)
            page.refresh_slow()
            page.group.refresh()
            assert page.states.currentWidget() is page.dashboard
            save_screenshot(window, "live-dark")
        finally:
            await close_console(window)

    try:
        run(qloop, scenario(), timeout=60)
    finally:
        theme.apply_theme(app, dark=False)


def test_window_and_freeze_apply_to_every_chart(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop, console: MainWindow
) -> None:
    page = live_page(console)

    async def scenario() -> None:
        assert {c.window_seconds() for c in page.group.charts()} == {60.0}
        qtbot.mouseClick(page.controls.window_button(900.0), Qt.MouseButton.LeftButton)
        assert {c.window_seconds() for c in page.group.charts()} == {900.0}
        assert {t.window_seconds() for t in page.tiles.values()} == {900.0}
        qtbot.mouseClick(page.controls.freeze_button(), Qt.MouseButton.LeftButton)
        assert all(c.is_frozen() for c in page.group.charts())
        assert len(page.group.charts()) == len(CHARTS)
        qtbot.mouseClick(page.controls.freeze_button(), Qt.MouseButton.LeftButton)
        assert not any(c.is_frozen() for c in page.group.charts())

    run(qloop, scenario())


def test_one_node_or_all_nodes(
    qloop: asyncio.AbstractEventLoop, console: MainWindow, engine: StackConnection
) -> None:
    page = live_page(console)

    async def scenario() -> None:
        await wait_until(lambda: page.node_box.count() == 2, timeout=10)
        assert page.node_box.itemData(0) == ALL and page.node_box.itemData(1) == engine.node
        page.node_box.setCurrentIndex(1)
        await asyncio.sleep(1.5)
        assert page._node == engine.node
        latest = page.charts["throughput"].buffer(Metric.EVENTS_IN).latest()
        assert latest is not None and math.isfinite(latest[1])
        page.node_box.setCurrentIndex(0)
        assert page._node == ALL

    run(qloop, scenario())


def test_workflow_rows_open_the_workflow(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop, console: MainWindow
) -> None:
    page = live_page(console)

    async def scenario() -> None:
        await wait_until(lambda: page.workflow_model.rowCount() > 0, timeout=30)
        name = page.workflow_model.key_for_row(0)
        with qtbot.waitSignal(page.workflow_activated, timeout=2000) as opened:
            page.workflow_table.row_activated.emit(name)
        assert opened.args == [name]
        assert console.current_page() == "workflows"
        workflows = console.show_page("workflows")
        await wait_until(
            lambda: (
                getattr(workflows, "loaded", None) is not None and workflows.loaded["id"] == name
            ),  # type: ignore[attr-defined]
            timeout=20,
        )

    run(qloop, scenario(), timeout=40)


def test_stale_figures_show_their_age_in_amber(
    qloop: asyncio.AbstractEventLoop, console: MainWindow
) -> None:
    page = live_page(console)
    client = console.client

    async def scenario() -> None:
        await wait_until(lambda: client.seconds_since() < 1, timeout=10)
        await client.stop_intake()  # metrics stop arriving, as when an engine hangs
        await asyncio.sleep(client.stale_after_s + 1.5)
        page.refresh_slow()
        page.group.refresh()
        text = page.freshness.text()
        assert text.startswith("updated ") and text.endswith("s ago")
        amber = theme.status_color(theme.STALE_STATUS, page.palette()).name()
        assert amber in page.freshness.styleSheet()
        assert page.tiles[Metric.EVENTS_IN].is_stale()
        console.refresh_health()
        assert console.top_bar.pills["nodes"].status() == theme.Status.FAILING
        assert console.banner.isVisible()
        assert "No metrics from any engine" in console.banner.text()

    run(qloop, scenario())


def test_demo_traffic_at_a_chosen_rate(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop, console: MainWindow, engine: StackConnection
) -> None:
    page = live_page(console)
    client = console.client

    async def scenario() -> None:
        await wait_until(lambda: client.nodes() == [engine.node], timeout=10)
        if (await client.request("demo.status"))["running"]:
            await client.request("demo.stop")
        page.refresh_demo_status()
        await wait_until(lambda: page._demo_running is False, timeout=10)
        await wait_until(lambda: page.demo_button.isEnabled(), timeout=10)
        page.demo_rate.setValue(30)
        qtbot.mouseClick(page.demo_button, Qt.MouseButton.LeftButton)
        await wait_until(lambda: page._demo_running is True, timeout=10)
        status = await client.request("demo.status")
        assert status == {"running": True, "rate": 30.0}
        # Changing the rate while it runs applies it at once.
        await wait_until(lambda: page.demo_button.isEnabled(), timeout=10)
        page.demo_rate.setValue(45)
        await wait_until(lambda: console.messages.text().endswith("45 events/s."), timeout=10)
        assert (await client.request("demo.status"))["rate"] == 45.0
        await wait_until(lambda: page.demo_button.isEnabled(), timeout=10)
        assert page.demo_button.text() == "Stop demo traffic"
        qtbot.mouseClick(page.demo_button, Qt.MouseButton.LeftButton)
        await wait_until(lambda: page._demo_running is False, timeout=10)
        assert (await client.request("demo.status"))["running"] is False

    run(qloop, scenario(), timeout=60)


def test_complaint_rate_is_judged_against_gmails_thresholds() -> None:
    from console.pages.live import _complaint_status
    from widgets.theme import Status

    assert _complaint_status(float("nan")) is None
    assert _complaint_status(0.0) is Status.HEALTHY
    assert _complaint_status(0.00099) is Status.HEALTHY
    assert _complaint_status(0.001) is Status.DEGRADED
    assert _complaint_status(0.0029) is Status.DEGRADED
    assert _complaint_status(0.003) is Status.FAILING
