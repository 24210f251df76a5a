"""Engine alerts in the console, against a real engine: banner, notification, audit, settings.

The engine's own rule fires: the test lowers the latency rule's threshold to a microsecond
(through the control API, as an operator could) and starts demo traffic, so the first email
sent makes the p99 go above it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from console.alerts import banner_words, describe_alert, most_urgent
from console.client import EngineClient
from console.errors import ControlRefused, describe
from console.main_window import MainWindow
from console.pages.audit import AuditPage
from console.pages.settings import SettingsPage
from console.stack import StackConnection
from tests.console.conftest import run, save_screenshot, wait_until

DEFAULT_LATENCY = {"rule": "latency_p99", "threshold": 5.0, "for_seconds": 60, "clear_seconds": 30}


def test_banner_words_pick_the_most_urgent_alert() -> None:
    now = 1_800_000_100.0
    slow = {
        "id": "a",
        "rule": "latency_p99",
        "severity": "degraded",
        "since": now - 300,
        "node": "n1",
        "message": "p99 latency (event to SMTP accepted) is 3.2 s, above 2.0 s",
    }
    down = {
        "id": "b",
        "rule": "relay_down",
        "severity": "failing",
        "since": now - 30,
        "node": "n2",
        "message": "Relay for route relay-a is unreachable",
    }
    assert most_urgent([slow, down]) is down  # failing beats older
    text, tooltip = banner_words([slow, down], now=now)
    assert text.startswith("Relay for route relay-a is unreachable on n2 \u2014 since ")
    assert text.endswith("(30 s)  (+1 more active alert)")
    assert tooltip.count("\n") == 1 and "3.2 s" in tooltip and "(5 min)" in tooltip
    assert "on n1" not in describe_alert(slow, now=now)


def test_an_engine_alert_shows_notifies_and_resolves(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop, console: MainWindow, engine: StackConnection
) -> None:
    client = console.client
    notified: list[tuple[str, str]] = []
    console.notifier.notified.connect(lambda how, text: notified.append((how, text)))

    async def scenario() -> None:
        await wait_until(lambda: client.nodes() == [engine.node], timeout=10)
        assert not console.banner.isVisible()
        await client.request(
            "alerts.set_rule",
            {"rule": "latency_p99", "threshold": 1e-6, "for_seconds": 0, "clear_seconds": 0},
        )
        await client.request("demo.start", {"rate": 20})
        try:
            await wait_until(lambda: console.banner.isVisible(), timeout=60, interval=0.1)
            text = console.banner.text()
            assert text.startswith("p99 latency (event to SMTP accepted) is ")
            assert "above 1.0 \u00b5s \u2014 since " in text
            assert "\u2014 since " in text
            assert console.banner.status().value == "degraded"
            # Offscreen there is no system tray: the notification is an in-window toast.
            await wait_until(lambda: bool(notified), timeout=10)
            assert notified[0][0] == "toast"
            assert console.notifier.toast.isVisible()
            assert console.notifier.toast.title().endswith(f"Alert fired on {engine.node}")
            assert console.notifier.toast.text().startswith("p99 latency")
            await asyncio.sleep(1.2)  # the banner's age ticks once a second
            save_screenshot(console, "alert-banner")

            # A console that connects later sees the active alert at once.
            late = EngineClient()
            await late.connect_to(
                engine.nats_url, user=engine.nats_user, password=engine.nats_password
            )
            try:
                await wait_until(lambda: bool(late.active_alerts()), timeout=5)
                assert late.active_alerts()[0]["rule"] == "latency_p99"
            finally:
                await late.close()
            listed = await client.request("alerts.list")
            assert [a["rule"] for a in listed["active"]] == ["latency_p99"]

            # It is an audit entry by the engine.
            audit = console.show_page("audit")
            assert isinstance(audit, AuditPage)
            await wait_until(lambda: "alert.fired" in audit.visible_actions(), timeout=15)
            fired = next(r for r in audit.table.rows if r["action"] == "alert.fired")
            assert fired["actor"] == "engine" and fired["target"] == "latency_p99"

            # Back to normal: the alert resolves and the banner goes, on every page.
            await client.request("alerts.set_rule", {"rule": "latency_p99", "threshold": 600})
            await wait_until(lambda: not console.banner.isVisible(), timeout=15)
            listed = await client.request("alerts.list")
            assert listed["active"] == []
            assert listed["recent"][0]["rule"] == "latency_p99"
        finally:
            await client.request("demo.stop")
            await client.request("alerts.set_rule", DEFAULT_LATENCY)

    run(qloop, scenario(), timeout=120)


def test_thresholds_set_in_settings_reach_the_engine_with_the_operators_name(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop, console: MainWindow, engine: StackConnection
) -> None:
    client = console.client

    async def rules() -> dict[str, dict[str, Any]]:
        answer = await client.request("alerts.rules")
        return {r["rule"]: r for r in answer["rules"]}

    async def scenario() -> None:
        await wait_until(lambda: client.nodes() == [engine.node], timeout=10)
        page = console.show_page("settings")
        assert isinstance(page, SettingsPage)
        await wait_until(lambda: len(page.rows) == 5, timeout=10)
        assert not page.apply_button.isEnabled()
        queue_age = page.rows["queue_age"]
        error_rate = page.rows["error_rate"]
        assert queue_age.threshold is not None and error_rate.threshold is not None
        assert page.rows["relay_down"].threshold is None  # an on/off gauge: no threshold
        assert error_rate.threshold.value() == 5.0  # shown in percent
        queue_age.threshold.setValue(123)
        error_rate.threshold.setValue(12.5)
        page.rows["route_paused"].enabled.setChecked(False)
        assert page.apply_button.isEnabled()
        save_screenshot(console, "settings-alert-rules")
        qtbot.mouseClick(page.apply_button, Qt.MouseButton.LeftButton)

        await wait_until(lambda: page.status.text().startswith("Applied"), timeout=10)
        now = await rules()
        assert now["queue_age"]["threshold"] == 123
        assert now["error_rate"]["threshold"] == 0.125
        assert now["route_paused"]["enabled"] is False
        assert now["latency_p99"]["threshold"] == 5.0  # untouched
        audit = await client.request("audit.list", {"search": "alert.set_rule"})
        mine = {r["target"]: r for r in audit if r["actor"] == client.actor}
        assert {"queue_age", "error_rate", "route_paused"} <= set(mine)
        assert mine["queue_age"]["detail"]["after"]["threshold"] == 123
        # The page reloaded what the engine holds: nothing left to apply.
        await wait_until(lambda: not page.apply_button.isEnabled(), timeout=5)

        # A value the engine refuses comes back in words.
        with pytest.raises(ControlRefused) as refused:
            await client.request("alerts.set_rule", {"rule": "error_rate", "threshold": 3})
        assert "fraction between 0 and 1" in describe(refused.value)

    run(qloop, scenario(), timeout=60)
