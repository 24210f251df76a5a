"""ConfirmImpactDialog: states the impact, requires a reason, opened with open()."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialog
from pytestqt.qtbot import QtBot

from widgets.confirm import ConfirmImpactDialog


def _dialog(qtbot: QtBot, reason_required: bool = True) -> ConfirmImpactDialog:
    dialog = ConfirmImpactDialog(
        "Reroute queued intents",
        "Reroute 12,408 queued intents from relay-a to relay-b.",
        confirm_text="Reroute 12,408 intents",
        details=("Workflows: Abandoned cart (11,902), Welcome series (506)",),
        reason_required=reason_required,
    )
    qtbot.addWidget(dialog)
    dialog.open()
    qtbot.waitExposed(dialog)
    return dialog


def test_confirm_emits_the_reason(qtbot: QtBot) -> None:
    dialog = _dialog(qtbot)
    assert dialog.isVisible() and dialog.isModal()
    assert dialog.impact() == "Reroute 12,408 queued intents from relay-a to relay-b."
    assert dialog.confirm_button().property("destructive") is True
    assert not dialog.confirm_button().isEnabled()  # no reason yet
    qtbot.keyClicks(dialog.reason_field(), "  relay-a returns 421  ")
    assert dialog.confirm_button().isEnabled()
    with (
        qtbot.waitSignal(dialog.accepted_with, timeout=1000) as blocker,
        qtbot.waitSignal(dialog.finished, timeout=1000) as finished,
    ):
        qtbot.mouseClick(dialog.confirm_button(), Qt.MouseButton.LeftButton)
    assert blocker.args == ["relay-a returns 421"]
    assert finished.args == [QDialog.DialogCode.Accepted.value]


def test_enter_in_the_reason_does_not_confirm(qtbot: QtBot) -> None:
    dialog = _dialog(qtbot)
    qtbot.keyClicks(dialog.reason_field(), "maintenance")
    with qtbot.assertNotEmitted(dialog.accepted_with):
        qtbot.keyClick(dialog.reason_field(), Qt.Key.Key_Return)
    assert dialog.isVisible()


def test_cancel_and_escape_reject(qtbot: QtBot) -> None:
    dialog = _dialog(qtbot)
    with (
        qtbot.assertNotEmitted(dialog.accepted_with),
        qtbot.waitSignal(dialog.rejected, timeout=1000),
    ):
        qtbot.mouseClick(dialog.cancel_button(), Qt.MouseButton.LeftButton)
    again = _dialog(qtbot)
    with qtbot.waitSignal(again.finished, timeout=1000) as blocker:
        qtbot.keyClick(again, Qt.Key.Key_Escape)
    assert blocker.args == [QDialog.DialogCode.Rejected.value]


def test_reason_optional(qtbot: QtBot) -> None:
    dialog = _dialog(qtbot, reason_required=False)
    assert dialog.confirm_button().isEnabled()
    assert dialog.reason_field().isHidden()
    with qtbot.waitSignal(dialog.accepted_with, timeout=1000) as blocker:
        qtbot.mouseClick(dialog.confirm_button(), Qt.MouseButton.LeftButton)
    assert blocker.args == [""]


def test_exec_is_refused(qtbot: QtBot) -> None:
    dialog = ConfirmImpactDialog("Pause", "Pause all sending.", confirm_text="Pause")
    qtbot.addWidget(dialog)
    with pytest.raises(RuntimeError, match="open"):
        dialog.exec()
