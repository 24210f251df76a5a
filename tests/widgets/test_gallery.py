"""The gallery builds every widget with fake data and screenshots light and dark."""

from __future__ import annotations

import time
from pathlib import Path

from pytestqt.qtbot import QtBot
from widget_helpers import SCREENSHOTS, distinct_colours

from widgets.gallery import Gallery


def test_gallery_screenshot(qtbot: QtBot, tmp_path: Path) -> None:
    gallery = Gallery()
    qtbot.addWidget(gallery)
    gallery.resize(1680, 2000)
    now = time.time()
    gallery.prefill(now)
    gallery.show()
    qtbot.waitExposed(gallery)
    for page in gallery.pages:
        page.group.refresh(now)
        assert page.tiles["queue_depth"].is_stale()  # its feed "stopped" 40 s ago
        assert not page.tiles["events_in"].is_stale()
    pixmap = gallery.screenshot(SCREENSHOTS / "gallery.png")
    assert distinct_colours(pixmap.toImage()) > 500
    gallery.start()
    qtbot.wait(300)  # live mode runs its timers without warnings
    gallery.stop()
