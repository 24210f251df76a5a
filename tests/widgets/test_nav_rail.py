"""NavRail: pages, checked state, page_selected, Ctrl+N shortcuts."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot
from widget_helpers import themed_frame

from widgets.nav_rail import NavRail

PAGES = [
    ("live", "Live", "mdi6.chart-timeline-variant"),
    ("queues", "Queues", "mdi6.tray-full"),
    ("workflows", "Workflows", "mdi6.sitemap"),
]


def _rail(qtbot: QtBot) -> NavRail:
    rail = NavRail()
    for n, (key, label, icon) in enumerate(PAGES, start=1):
        rail.add_page(key, label, icon, f"Ctrl+{n}")
    return rail


def test_add_pages(qtbot: QtBot) -> None:
    rail = _rail(qtbot)
    qtbot.addWidget(rail)
    assert rail.keys() == ["live", "queues", "workflows"]
    assert rail.current() is None
    assert rail.button("queues").toolTip() == "Queues (Ctrl+2)"
    with pytest.raises(ValueError):
        rail.add_page("live", "Live", "mdi6.chart-line")


def test_click_selects_and_checks(qtbot: QtBot) -> None:
    rail = _rail(qtbot)
    frame = themed_frame(qtbot, rail, False, 200, 300)
    assert frame.isVisible()
    with qtbot.waitSignal(rail.page_selected, timeout=1000) as blocker:
        qtbot.mouseClick(rail.button("workflows"), Qt.MouseButton.LeftButton)
    assert blocker.args == ["workflows"]
    assert rail.current() == "workflows"
    assert rail.button("workflows").isChecked()
    assert rail.button("workflows").font().bold()  # the state reads without colour too
    assert not rail.button("live").isChecked()
    with qtbot.assertNotEmitted(rail.page_selected):
        rail.set_current("workflows")  # already current


def test_shortcuts_select_pages(qtbot: QtBot) -> None:
    rail = _rail(qtbot)
    frame = themed_frame(qtbot, rail, True, 200, 300)
    frame.activateWindow()
    qtbot.waitUntil(frame.isActiveWindow, timeout=1000)
    with qtbot.waitSignal(rail.page_selected, timeout=1000) as blocker:
        qtbot.keyClick(frame, Qt.Key.Key_2, Qt.KeyboardModifier.ControlModifier)
    assert blocker.args == ["queues"]
    assert rail.button("queues").isChecked()
