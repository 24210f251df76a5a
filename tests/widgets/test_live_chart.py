"""LiveChart and ChartGroup: follow now, window, freeze, linked axes, legend, hover, timer."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication, QHBoxLayout, QScrollArea, QVBoxLayout, QWidget
from pytestqt.qtbot import QtBot
from widget_helpers import NOW, themed_frame

from widgets.chart_controls import ChartControls
from widgets.format import format_rate
from widgets.live_chart import (
    FAST_PERIOD_S,
    MIN_TICK_MS,
    ChartGroup,
    LiveChart,
    nice_ceil,
    on_screen,
)


class FakeClock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _chart(qtbot: QtBot, title: str = "Throughput") -> LiveChart:
    chart = LiveChart(title, unit="/s", formatter=format_rate)
    qtbot.addWidget(chart)
    chart.add_series("in", "events in")
    chart.add_series("out", "emails out")
    return chart


def _shown_group(
    qtbot: QtBot, clock: FakeClock
) -> tuple[ChartGroup, LiveChart, LiveChart, QWidget]:
    group = ChartGroup(window=60, clock=clock)
    holder = QWidget()
    layout = QHBoxLayout(holder)
    a, b = _chart(qtbot, "A"), _chart(qtbot, "B")
    for chart in (a, b):
        group.add_chart(chart)
        layout.addWidget(chart)
        for i in range(600):
            chart.push("in", NOW - 600 + i, 2000.0 + i)
            chart.push("out", NOW - 600 + i, 1800.0 + i)
    frame = themed_frame(qtbot, holder, False, 900, 300)
    group.refresh()
    return group, a, b, frame


def test_curves_are_created_once_then_fed(qtbot: QtBot) -> None:
    chart = _chart(qtbot)
    curve = chart.curve("out")
    chart.push("out", NOW - 2, 10.0)
    chart.push("out", NOW - 1, 12.0)
    chart.refresh(NOW)
    assert list(curve.yData) == [10.0, 12.0]
    chart.push("out", NOW, 14.0)
    chart.refresh(NOW)
    assert chart.curve("out") is curve
    assert list(curve.yData) == [10.0, 12.0, 14.0]
    with pytest.raises(ValueError):
        chart.add_series("out")


def test_live_chart_rules_from_style(qtbot: QtBot) -> None:
    chart = _chart(qtbot)
    item = chart.getPlotItem()
    for key in chart.series_keys():
        curve = chart.curve(key)
        assert curve.opts["clipToView"] is True
        assert curve.opts["autoDownsample"] is True
        assert curve.opts["downsampleMethod"] == "peak"
    # clipping does nothing while x auto-range is on
    assert item.getViewBox().state["autoRange"][0] is False


def test_follows_now_over_the_window(qtbot: QtBot) -> None:
    clock = FakeClock()
    group, a, b, _frame = _shown_group(qtbot, clock)
    assert a.x_range() == pytest.approx((NOW - 60, NOW))
    clock.now += 5
    group.refresh()
    assert a.x_range() == pytest.approx((NOW - 55, NOW + 5))
    assert b.x_range() == pytest.approx(a.x_range())


def test_window_change_applies_to_all(qtbot: QtBot) -> None:
    clock = FakeClock()
    group, a, b, _frame = _shown_group(qtbot, clock)
    with qtbot.waitSignal(group.window_changed, timeout=1000) as blocker:
        group.set_window(900)
    assert blocker.args == [900.0]
    group.refresh()
    for chart in (a, b):
        assert chart.window_seconds() == 900
        assert chart.x_range() == pytest.approx((NOW - 900, NOW))


def test_freeze_stops_following_and_resume_catches_up(qtbot: QtBot) -> None:
    clock = FakeClock()
    group, a, b, _frame = _shown_group(qtbot, clock)
    with qtbot.waitSignal(group.frozen_changed, timeout=1000) as blocker:
        group.set_frozen(True)
    assert blocker.args == [True]
    assert a.is_frozen() and b.is_frozen()
    frozen_range = a.x_range()
    clock.now += 30
    a.push("in", clock.now, 1.0)
    group.refresh()
    assert a.x_range() == pytest.approx(frozen_range)
    # scrolling back while frozen moves both (linked axes)
    a.getPlotItem().getViewBox().setXRange(NOW - 400, NOW - 340, padding=0)
    group.refresh()
    assert b.x_range() == pytest.approx((NOW - 400, NOW - 340))
    x = a.curve("in").xData
    assert x.min() <= NOW - 400 and x.max() >= NOW - 340  # the curve holds the scrolled-to data
    with qtbot.waitSignal(group.frozen_changed, timeout=1000) as blocker:
        group.set_frozen(False)
    assert blocker.args == [False]
    assert a.x_range() == pytest.approx((clock.now - 60, clock.now))


def test_wheel_on_a_following_chart_freezes_the_group(qtbot: QtBot) -> None:
    clock = FakeClock()
    group, a, b, _frame = _shown_group(qtbot, clock)
    viewport = a.viewport()
    centre = QPointF(viewport.rect().center())
    wheel = QWheelEvent(
        centre,
        QPointF(viewport.mapToGlobal(centre.toPoint())),
        QPoint(0, 0),
        QPoint(0, 120),
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
        Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    with qtbot.waitSignal(group.frozen_changed, timeout=1000) as blocker:
        QApplication.sendEvent(viewport, wheel)
    assert blocker.args == [True]
    assert b.is_frozen()


def test_legend_shows_current_values(qtbot: QtBot) -> None:
    chart = _chart(qtbot)
    assert chart.legend_text("out") == "emails out"
    chart.push("out", NOW - 1, 2431.0)
    chart.refresh(NOW)
    assert chart.legend_text("out") == "emails out  2,431/s"
    assert chart.legend_text("in") == "events in  \u2014"


def test_hover_readout_shows_exact_values(qtbot: QtBot) -> None:
    clock = FakeClock()
    _group, a, _b, _frame = _shown_group(qtbot, clock)
    assert a.readout_text() == ""
    a.show_readout_at(NOW - 30)
    text = a.readout_text()
    assert "events in: 2,570/s" in text
    assert "emails out: 2,370/s" in text
    # a real mouse move over the plot shows it too, leaving hides it
    vb_rect = a.getPlotItem().getViewBox().sceneBoundingRect()
    target = a.mapFromScene(vb_rect.center())
    qtbot.mouseMove(a.viewport(), target)
    qtbot.waitUntil(lambda: "events in" in a.readout_text(), timeout=1000)
    a._hide_readout()
    assert a.readout_text() == ""


def test_gaps_draw_without_warnings(qtbot: QtBot) -> None:
    chart = _chart(qtbot)
    for i, value in enumerate((1.0, math.nan, math.nan, 4.0)):
        chart.push("in", NOW - 10 + i, value)
    chart.refresh(NOW)
    assert np.isnan(chart.curve("in").yData).sum() == 2


def test_timer_drives_redraws(qtbot: QtBot) -> None:
    clock = FakeClock()
    group, a, _b, _frame = _shown_group(qtbot, clock)
    group.start()
    try:
        assert group.is_running()
        clock.now += 10
        qtbot.waitUntil(lambda: a.x_range()[1] == pytest.approx(NOW + 10), timeout=2000)
    finally:
        group.stop()
    assert not group.is_running()


def test_refreshers_move_with_the_group(qtbot: QtBot) -> None:
    clock = FakeClock()
    group = ChartGroup(clock=clock)
    seen: list[float] = []
    group.add_refresher(seen.append)
    group.refresh()
    assert seen == [NOW]


def test_controls_drive_the_group(qtbot: QtBot) -> None:
    clock = FakeClock()
    group, _a, _b, _frame = _shown_group(qtbot, clock)
    controls = ChartControls(group)
    qtbot.addWidget(controls)
    with qtbot.waitSignal(group.window_changed, timeout=1000) as blocker:
        qtbot.mouseClick(controls.window_button(3600), Qt.MouseButton.LeftButton)
    assert blocker.args == [3600.0]
    assert controls.window_button(3600).isChecked()
    with qtbot.waitSignal(group.frozen_changed, timeout=1000) as blocker:
        qtbot.mouseClick(controls.freeze_button(), Qt.MouseButton.LeftButton)
    assert blocker.args == [True]
    assert "resume live" in controls.freeze_button().text()
    group.set_frozen(False)  # from elsewhere (e.g. a keyboard shortcut): the button follows
    assert not controls.freeze_button().isChecked()
    assert controls.freeze_button().text() == "Freeze"


# -- redraw turns: a few charts per tick, hidden ones skipped --------------------------------


def _many_charts(
    qtbot: QtBot, clock: FakeClock, count: int, window: float = 60.0
) -> tuple[ChartGroup, list[LiveChart], QScrollArea, QWidget]:
    """``count`` charts in a scroll area (shrink the frame to scroll the lower ones away)."""
    group = ChartGroup(window=window, clock=clock)
    inner = QWidget()
    column = QVBoxLayout(inner)
    charts = []
    for i in range(count):
        # Owned by the frame (not qtbot.addWidget): the frame deletes them when it goes.
        chart = LiveChart(f"C{i}", unit="/s", formatter=format_rate)
        chart.add_series("in", "events in")
        chart.setFixedHeight(200)
        chart.push("in", NOW - 1, 1.0)
        group.add_chart(chart)
        column.addWidget(chart)
        charts.append(chart)
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setWidget(inner)
    frame = themed_frame(qtbot, scroll, False, 700, 200 * count + 100)
    group.refresh()
    return group, charts, scroll, frame


def _count_redraws(monkeypatch: pytest.MonkeyPatch, charts: list[LiveChart]) -> list[str]:
    redrawn: list[str] = []
    for chart in charts:
        original = chart.refresh

        def refresh(now: float | None = None, *, follow: bool = True, _c=chart, _o=original):
            redrawn.append(_c._title)
            _o(now, follow=follow)

        monkeypatch.setattr(chart, "refresh", refresh)
    return redrawn


def test_a_tick_redraws_one_chart_and_every_chart_gets_its_turn(
    qtbot: QtBot, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    group, charts, _scroll, _frame = _many_charts(qtbot, clock, 7)
    redrawn = _count_redraws(monkeypatch, charts)
    # 3 Hz per chart: 7 charts, one a tick, a tick every 333 / 7 ms.
    assert group.refresh_period() == pytest.approx(1 / 3)
    assert group.per_tick() == 1
    assert group.tick_interval_ms() == round(1000 / 3 / 7)
    for _ in range(7):
        before = len(redrawn)
        clock.now += group.tick_interval_ms() / 1000
        group.tick()
        assert len(redrawn) - before == 1
    assert sorted(redrawn) == sorted(c._title for c in charts)  # each exactly once
    # and the newest time reaches each chart on its turn
    assert all(c.x_range()[1] > NOW for c in charts)


def test_many_units_share_ticks_no_faster_than_the_minimum(qtbot: QtBot) -> None:
    clock = FakeClock()
    group = ChartGroup(clock=clock)
    seen: list[int] = []
    for i in range(40):
        group.add_refresher(lambda _now, i=i: seen.append(i))
    # 40 turns in one period (333 ms) would need a tick every 8 ms: ticks stay >= 15 ms, with
    # two turns each.
    period_ms = FAST_PERIOD_S * 1000
    per = group.per_tick()
    assert per == math.ceil(40 * MIN_TICK_MS / period_ms) == 2
    assert MIN_TICK_MS <= group.tick_interval_ms() <= period_ms * per / 40 + 1
    for _ in range(21):
        group.tick()
    assert sorted(seen[:40]) == list(range(40))
    assert len(seen) == 42


def test_long_windows_are_redrawn_once_a_second(qtbot: QtBot) -> None:
    clock = FakeClock()
    group, _charts, _scroll, _frame = _many_charts(qtbot, clock, 2)
    group.set_window(3600)
    assert group.refresh_period() == 1.0
    assert group.per_tick() == 1
    assert group.tick_interval_ms() == 500  # two charts, one a tick, each once a second
    assert group._timer.interval() == 500


def test_charts_scrolled_away_or_hidden_are_not_redrawn(
    qtbot: QtBot, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    group, charts, scroll, frame = _many_charts(qtbot, clock, 4)
    frame.resize(700, 300)  # room for the first chart only
    qtbot.waitUntil(lambda: not on_screen(charts[3]))
    assert on_screen(charts[0])
    redrawn = _count_redraws(monkeypatch, charts)
    for _ in range(20):
        group.tick()
    assert "C0" in redrawn
    assert "C3" not in redrawn
    scroll.ensureWidgetVisible(charts[3])
    qtbot.waitUntil(lambda: on_screen(charts[3]))
    redrawn.clear()
    for _ in range(20):
        group.tick()
    assert "C3" in redrawn
    scroll.hide()
    redrawn.clear()
    for _ in range(20):
        group.tick()
    assert redrawn == []


def test_refreshers_with_a_widget_are_skipped_while_it_is_hidden(qtbot: QtBot) -> None:
    clock = FakeClock()
    group = ChartGroup(clock=clock)
    tile = QWidget()
    frame = themed_frame(qtbot, tile, False, 200, 100)
    seen: list[float] = []
    group.add_refresher(seen.append, tile)
    group.tick()
    assert seen == [NOW]
    frame.hide()
    group.tick()
    assert seen == [NOW]


def test_following_charts_are_not_linked_frozen_ones_are(qtbot: QtBot) -> None:
    clock = FakeClock()
    group, a, b, _frame = _shown_group(qtbot, clock)
    # Following: moving one chart leaves the other alone (no cascade of linked updates).
    a.getPlotItem().getViewBox().setXRange(NOW - 30, NOW - 20, padding=0)
    assert b.x_range() == pytest.approx((NOW - 60, NOW))
    group.set_frozen(True)
    # Frozen on one range, and panning one pans both.
    assert b.x_range() == pytest.approx(a.x_range())
    b.getPlotItem().getViewBox().setXRange(NOW - 300, NOW - 240, padding=0)
    assert a.x_range() == pytest.approx((NOW - 300, NOW - 240))
    group.set_frozen(False)
    clock.now += 1
    a.getPlotItem().getViewBox().setXRange(NOW - 30, NOW - 20, padding=0)
    assert b.x_range() == pytest.approx((clock.now - 60, clock.now))


def test_y_range_moves_in_nice_steps_not_with_every_sample(qtbot: QtBot) -> None:
    chart = _chart(qtbot)
    for i in range(60):
        chart.push("in", NOW - 60 + i, 700.0 + (i % 7))
    chart.refresh(NOW)
    _, (y0, y1) = chart.getPlotItem().getViewBox().viewRange()
    assert y1 == pytest.approx(800.0)  # 706 plus a tenth, up to a nice number
    assert y0 < 0 <= y0 + 0.06 * y1  # "0" stays in view
    chart.push("in", NOW + 1, 712.0)
    chart.refresh(NOW + 1)
    assert chart.getPlotItem().getViewBox().viewRange()[1] == pytest.approx([y0, y1])
    chart.push("in", NOW + 2, 900.0)  # above the range: it grows
    chart.refresh(NOW + 2)
    assert chart.getPlotItem().getViewBox().viewRange()[1][1] == pytest.approx(1000.0)


@pytest.mark.parametrize(
    ("value", "nice"),
    [(0.7, 0.8), (1.0, 1.0), (1.01, 1.2), (7.3, 8.0), (806.0, 1000.0), (0.0021, 0.0025)],
)
def test_nice_ceil(value: float, nice: float) -> None:
    assert nice_ceil(value) == pytest.approx(nice)


def test_an_unchanged_frozen_chart_is_not_redrawn(qtbot: QtBot) -> None:
    chart = _chart(qtbot)
    chart.push("in", NOW - 1, 5.0)
    chart.set_frozen(True)
    chart.refresh(NOW)
    curve = chart.curve("in")
    data = curve.xData
    chart.refresh(NOW + 1)
    assert curve.xData is data  # no setData: nothing moved, nothing arrived
    chart.push("in", NOW, 6.0)
    chart.refresh(NOW + 2)
    assert curve.xData is not data


def test_refreshers_can_take_every_other_round(qtbot: QtBot) -> None:
    clock = FakeClock()
    group = ChartGroup(clock=clock)
    fast: list[float] = []
    slow: list[float] = []
    group.add_refresher(fast.append)
    group.add_refresher(slow.append, every=2)
    # one and a half turns a round: a tick every period / 1.5, one turn each
    assert group.per_tick() == 1
    assert group.tick_interval_ms() == round(FAST_PERIOD_S * 1000 / 1.5)
    for _ in range(12):
        group.tick()
    assert len(fast) == 2 * len(slow) > 0
