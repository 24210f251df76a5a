"""StatusPill: icon + word (+ detail), set by set_status."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QFont
from pytestqt.qtbot import QtBot

from widgets.status_pill import StatusPill
from widgets.theme import Status


def test_text_pairs_detail_and_word(qtbot: QtBot) -> None:
    pill = StatusPill()
    qtbot.addWidget(pill)
    assert pill.text() == "unknown"
    pill.set_status("healthy", "NATS")
    assert pill.status() is Status.HEALTHY
    assert pill.text() == "NATS \u00b7 healthy"
    assert pill.toolTip() == "NATS \u00b7 healthy"
    assert pill.accessibleName() == "NATS \u00b7 healthy"


def test_unknown_status_names_show_as_unknown(qtbot: QtBot) -> None:
    pill = StatusPill("healthy", "relay-a")
    qtbot.addWidget(pill)
    pill.set_status("rebalancing", "relay-a")
    assert pill.status() is Status.UNKNOWN
    assert pill.text() == "relay-a \u00b7 unknown"


def test_width_follows_text_and_font(qtbot: QtBot) -> None:
    pill = StatusPill("failing", "DB")
    qtbot.addWidget(pill)
    short = pill.sizeHint()
    pill.set_status("failing", "database (primary)")
    assert pill.sizeHint().width() > short.width()
    font = QFont(pill.font())
    font.setPointSizeF(font.pointSizeF() * 1.5)
    pill.setFont(font)
    assert pill.sizeHint().height() > short.height()


def test_click_emits_clicked(qtbot: QtBot) -> None:
    pill = StatusPill("degraded", "engine")
    qtbot.addWidget(pill)
    pill.show()
    qtbot.waitExposed(pill)
    with qtbot.waitSignal(pill.clicked, timeout=1000) as blocker:
        qtbot.mouseClick(pill, Qt.MouseButton.LeftButton)
    assert blocker.args == []
