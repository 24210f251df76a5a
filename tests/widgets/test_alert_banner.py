"""AlertBanner: severity + icon + word + text, action, dismiss."""

from __future__ import annotations

from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot
from widget_helpers import themed_frame

from widgets.banner import AlertBanner
from widgets.theme import Status


def test_show_action_dismiss(qtbot: QtBot) -> None:
    banner = AlertBanner()
    frame = themed_frame(qtbot, banner, False, 700, 80)
    assert frame.isVisible()
    assert banner.isHidden()
    banner.show_alert("relay-a rejects 38%", "degraded", action="Open Queues", key="relay-a-421")
    assert banner.isVisible()
    assert banner.status() is Status.DEGRADED
    assert banner.text() == "relay-a rejects 38%"
    assert banner.accessibleName() == "degraded alert: relay-a rejects 38%"
    with qtbot.waitSignal(banner.action_triggered, timeout=1000) as blocker:
        qtbot.mouseClick(banner.action_button(), Qt.MouseButton.LeftButton)
    assert blocker.args == ["relay-a-421"]
    with qtbot.waitSignal(banner.dismissed, timeout=1000) as blocker:
        qtbot.mouseClick(banner.close_button(), Qt.MouseButton.LeftButton)
    assert blocker.args == ["relay-a-421"]
    assert banner.isHidden()


def test_clear_hides_quietly_and_no_action_button(qtbot: QtBot) -> None:
    banner = AlertBanner()
    frame = themed_frame(qtbot, banner, True, 700, 80)
    assert frame.isVisible()
    banner.show_alert("NATS reconnecting", Status.DEGRADED)
    assert banner.action_button().isHidden()
    with qtbot.assertNotEmitted(banner.dismissed):
        banner.clear()
    assert banner.isHidden()
