"""Toast: an in-window notification in the corner, with status word, that hides itself."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QWidget
from pytestqt.qtbot import QtBot

from widgets.theme import Status
from widgets.toast import Toast


def test_toast_shows_in_the_corner_then_hides(qtbot: QtBot) -> None:
    host = QWidget()
    qtbot.addWidget(host)
    host.resize(900, 600)
    host.show()
    qtbot.waitExposed(host)
    toast = Toast(host)
    assert toast.isHidden()
    toast.show_toast("p99 latency", "is 3.2 s, above 2.0 s", "degraded", timeout_ms=200)
    assert toast.isVisible()
    assert toast.status() is Status.DEGRADED
    assert "degraded" in toast.title() and "p99 latency" in toast.title()
    assert toast.accessibleName().startswith("degraded notification: p99 latency")
    # Bottom-right, inside the host, and it follows the host's size.
    geometry = toast.geometry()
    assert host.rect().contains(geometry)
    assert geometry.right() > host.width() * 0.6 and geometry.bottom() > host.height() * 0.6
    host.resize(1200, 700)
    qtbot.waitUntil(lambda: toast.geometry().right() > 900, timeout=1000)
    with qtbot.waitSignal(toast.closed, timeout=2000):
        pass  # times out by itself
    assert toast.isHidden()


def test_toast_close_button(qtbot: QtBot) -> None:
    host = QWidget()
    qtbot.addWidget(host)
    host.resize(600, 400)
    host.show()
    toast = Toast(host)
    toast.show_toast("Relay unreachable", "route default", Status.FAILING)
    button = toast.findChildren(type(toast._close))[0]
    with qtbot.waitSignal(toast.closed, timeout=1000):
        qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    assert toast.isHidden()
