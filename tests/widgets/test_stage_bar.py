"""StageBar: the slow stage is obvious."""

from __future__ import annotations

from PySide6.QtGui import QFont
from pytestqt.qtbot import QtBot

from widgets.stage_bar import StageBar

VALUES = {"ingest": 0.0012, "decide": 0.0085, "claim": 0.0004, "render": 0.021, "smtp": 0.142}


def test_slowest_stage_and_summary(qtbot: QtBot) -> None:
    bar = StageBar()
    qtbot.addWidget(bar)
    assert bar.slowest() is None
    bar.set_values(VALUES)
    assert bar.slowest() == "smtp"
    assert bar.total() == sum(VALUES.values())
    assert bar.summary() == (
        "ingest 1.2 ms \u00b7 <1% \u2192 decide 8.5 ms \u00b7 5% \u2192 "
        "claim 400 \u00b5s \u00b7 <1% \u2192 "
        "render 21 ms \u00b7 12% \u2192 SMTP 142 ms \u00b7 82%"
    )
    assert bar.toolTip() == bar.summary()
    bar.set_values({"decide": 2.0})  # missing stages count as zero
    assert bar.slowest() == "decide"


def test_legend_wraps_when_narrow_and_grows_with_font(qtbot: QtBot) -> None:
    bar = StageBar(title="Per-stage latency (p95)")
    qtbot.addWidget(bar)
    bar.set_values(VALUES)
    assert bar.hasHeightForWidth()
    wide, narrow = bar.heightForWidth(1200), bar.heightForWidth(260)
    assert narrow > wide
    font = QFont(bar.font())
    font.setPointSizeF(font.pointSizeF() * 1.5)
    bar.setFont(font)
    assert bar.heightForWidth(1200) > wide


def test_unchanged_values_do_not_repaint(qtbot: QtBot) -> None:
    bar = StageBar()
    qtbot.addWidget(bar)
    bar.set_values(VALUES)
    bar.setToolTip("marker")  # set_values rewrites the tooltip only when it changes something
    bar.set_values(dict(VALUES))
    assert bar.toolTip() == "marker"
    bar.set_values({**VALUES, "smtp": 0.2})
    assert bar.toolTip() == bar.summary()
