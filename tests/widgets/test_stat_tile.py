"""StatTile: value, change over the window, sparkline, staleness in amber."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QFont, QPalette
from pytestqt.qtbot import QtBot
from widget_helpers import NOW, themed_frame

from widgets import theme
from widgets.format import format_duration, format_percent
from widgets.stat_tile import StatTile, split_value_unit
from widgets.theme import Status


def _tile(qtbot: QtBot, **kwargs: object) -> StatTile:
    tile = StatTile("Emails out/s", clock=lambda: NOW, **kwargs)  # type: ignore[arg-type]
    qtbot.addWidget(tile)
    return tile


def _label_colour(tile: StatTile, name: str) -> str:
    label = getattr(tile, name)
    return str(label.palette().color(QPalette.ColorRole.WindowText).name())


def test_split_value_unit() -> None:
    assert split_value_unit("2,431/s") == ("2,431", "/s")
    assert split_value_unit("18.2 ms") == ("18.2", " ms")
    assert split_value_unit("99.96%") == ("99.96", "%")
    assert split_value_unit("3 min 10 s") == ("3 min 10 s", "")
    assert split_value_unit("\u2014") == ("\u2014", "")


def test_push_only_appends_refresh_draws(qtbot: QtBot) -> None:
    tile = _tile(qtbot)
    tile.push(NOW - 1, 2431.0)
    assert tile.value_text() == "\u2014"  # nothing drawn on arrival
    tile.refresh(NOW)
    assert tile.value_text() == "2,431/s"


def test_change_over_the_window_coloured_by_meaning(qtbot: QtBot) -> None:
    tile = _tile(qtbot, window=900)
    tile.push(NOW - 900, 1000.0)
    tile.push(NOW - 1, 1120.0)
    tile.refresh(NOW)
    assert tile.change_text() == "\u25b2 12% vs 15 min ago"
    healthy = theme.status_color(Status.HEALTHY, tile.palette()).name()
    assert _label_colour(tile, "_change_label") == healthy  # more emails out is good

    latency = _tile(qtbot, window=900, higher_is_better=False)
    latency.set_formatter(format_duration)
    latency.push(NOW - 900, 0.100)
    latency.push(NOW - 1, 0.112)
    latency.refresh(NOW)
    assert latency.value_text() == "112 ms"
    failing = theme.status_color(Status.FAILING, latency.palette()).name()
    assert _label_colour(latency, "_change_label") == failing  # slower is bad


def test_absolute_change_for_rates(qtbot: QtBot) -> None:
    tile = _tile(qtbot, window=900, higher_is_better=False, absolute_change=True)
    tile.set_formatter(format_percent)
    tile.push(NOW - 900, 0.002)
    tile.push(NOW - 1, 0.004)
    tile.refresh(NOW)
    assert tile.value_text() == "0.4%"
    assert tile.change_text() == "\u25b2 0.2% vs 15 min ago"


def test_window_change_and_short_history(qtbot: QtBot) -> None:
    tile = _tile(qtbot, window=900)
    tile.push(NOW - 180, 100.0)
    tile.push(NOW - 1, 150.0)
    tile.refresh(NOW)
    assert tile.change_text() == "\u25b2 50% vs 3 min ago"  # says how far back it really looked
    tile.set_window(60)
    assert tile.window_seconds() == 60
    tile.refresh(NOW)
    assert tile.change_text().endswith("vs 1 min ago")


def test_staleness_turns_amber(qtbot: QtBot) -> None:
    tile = _tile(qtbot, stale_after=10)
    tile.push(NOW - 5, 10.0)
    tile.refresh(NOW)
    assert not tile.is_stale()
    assert tile.stale_text() == ""
    tile.refresh(NOW + 37)  # the feed stopped: 42 s since the last sample
    assert tile.is_stale()
    assert tile.stale_text() == "updated 42 s ago"
    amber = theme.status_color(theme.STALE_STATUS, tile.palette()).name()
    assert _label_colour(tile, "_stale_label") == amber
    assert amber == theme.status_color(Status.DEGRADED, tile.palette()).name()
    tile.set_stale_after(60)
    tile.refresh(NOW + 37)
    assert not tile.is_stale()


def test_no_data_yet(qtbot: QtBot) -> None:
    tile = _tile(qtbot, stale_after=10)
    tile.refresh(NOW)
    assert tile.change_text() == "no data yet"
    assert not tile.is_stale()
    tile.refresh(NOW + 30)
    assert tile.is_stale()
    assert tile.stale_text() == "no data yet"


def test_status_accent(qtbot: QtBot) -> None:
    tile = _tile(qtbot)
    assert tile.status() is None
    tile.set_status("failing")
    assert tile.status() is Status.FAILING
    tile.set_status(None)
    assert tile.status() is None


def test_fonts_follow_the_tile_font(qtbot: QtBot) -> None:
    tile = _tile(qtbot)
    font = QFont(tile.font())
    font.setPointSizeF(12)
    tile.setFont(font)
    assert tile._value_label.font().pointSizeF() == pytest.approx(12 * 2.2)
    font.setPointSizeF(16)
    tile.setFont(font)
    assert tile._value_label.font().pointSizeF() == pytest.approx(16 * 2.2)


def test_click_emits_clicked(qtbot: QtBot) -> None:
    tile = _tile(qtbot)
    frame = themed_frame(qtbot, tile, False, 260, 160)
    assert frame.isVisible()
    with qtbot.waitSignal(tile.clicked, timeout=1000) as blocker:
        qtbot.mouseClick(tile, Qt.MouseButton.LeftButton)
    assert blocker.args == []
