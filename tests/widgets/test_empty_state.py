"""EmptyState: the teaching sentence with the action right there."""

from __future__ import annotations

from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot
from widget_helpers import themed_frame

from widgets.empty_state import EmptyState


def test_action_and_text(qtbot: QtBot) -> None:
    empty = EmptyState("mdi6.email-fast-outline", "No events yet", "Start demo traffic")
    frame = themed_frame(qtbot, empty, False, 400, 260)
    assert frame.isVisible()
    assert empty.sentence() == "No events yet"
    with qtbot.waitSignal(empty.action_triggered, timeout=1000) as blocker:
        qtbot.mouseClick(empty.action_button(), Qt.MouseButton.LeftButton)
    assert blocker.args == []
    empty.set_action("Starting\u2026", enabled=False)
    assert not empty.action_button().isEnabled()
    empty.set_action("")
    assert empty.action_button().isHidden()


def test_wrapped_text_is_never_squeezed(qtbot: QtBot) -> None:
    empty = EmptyState(
        "mdi6.inbox",
        "No messages in the test inbox yet \u2014 send a test email to see it here",
        "Send a test email",
        detail="Messages sent to the local relay land here, rendered with headers.",
    )
    frame = themed_frame(qtbot, empty, False, 260, 400)
    assert frame.isVisible()
    sentence = empty._sentence
    needed = sentence.heightForWidth(sentence.width())
    assert sentence.height() >= needed
    assert empty.minimumSizeHint().height() >= needed
