"""A confirmation that states the impact of an action before it runs."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from widgets import theme
from widgets.theme import Status


class ConfirmImpactDialog(QDialog):
    """Says what an action will touch, asks why when required, and confirms with a red button.

    "Reroute 12,408 queued intents from relay-a to relay-b" - the numbers are the point: a
    tired operator reads what will happen, not "Are you sure?". Cancel is the safe default
    (focused, Escape); Enter in the reason field does not confirm. The confirm button stays
    disabled until a reason is typed when ``reason_required``.

    Open it with ``open()`` and listen to ``accepted_with``/``finished``; ``exec()`` is refused
    because a nested event loop inside a qasync slot deadlocks (qasync #59, #82).

    Signals:
        accepted_with(str): the operator confirmed; the reason given ("" if none was asked).
        finished(int), accepted(), rejected(): inherited from QDialog.
    """

    accepted_with = Signal(str)

    def __init__(
        self,
        title: str,
        impact: str,
        *,
        confirm_text: str,
        details: Sequence[str] = (),
        reason_required: bool = False,
        ask_reason: bool | None = None,
        destructive: bool = True,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.setModal(True)
        self._reason_required = reason_required
        self._destructive = destructive
        show_reason = reason_required if ask_reason is None else ask_reason or reason_required

        self._icon = QLabel()
        self._title = QLabel(title)
        self._impact = QLabel(impact)
        self._impact.setWordWrap(True)
        self._impact.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._details = QLabel("\n".join(f"\u2022 {line}" for line in details))
        self._details.setWordWrap(True)
        self._details.setVisible(bool(details))

        self._reason_label = QLabel(
            "Reason (required, recorded in the audit log)"
            if reason_required
            else "Reason (optional, recorded in the audit log)"
        )
        self._reason = QLineEdit()
        self._reason.setPlaceholderText("e.g. relay-a returns 421 for gmail.com")
        self._reason.setClearButtonEnabled(True)
        self._reason_label.setBuddy(self._reason)
        for widget in (self._reason_label, self._reason):
            widget.setVisible(show_reason)

        self._cancel = QPushButton("Cancel")
        self._confirm = QPushButton(confirm_text)
        for button in (self._cancel, self._confirm):
            button.setAutoDefault(False)
            button.setDefault(False)
        if destructive:
            self._confirm.setProperty("destructive", True)
        self._cancel.clicked.connect(self.reject)
        self._confirm.clicked.connect(self._on_confirm)
        self._reason.textChanged.connect(self._update_confirm)

        header = QHBoxLayout()
        header.setSpacing(10)
        header.addWidget(self._icon, 0, Qt.AlignmentFlag.AlignTop)
        header.addWidget(self._title, 1)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self._cancel)
        buttons.addWidget(self._confirm)

        layout = QVBoxLayout(self)
        layout.setSpacing(10)
        layout.addLayout(header)
        layout.addWidget(self._impact)
        layout.addWidget(self._details)
        layout.addSpacing(4)
        layout.addWidget(self._reason_label)
        layout.addWidget(self._reason)
        layout.addSpacing(6)
        layout.addLayout(buttons)

        # Take the parent's palette and font (a dark panel gets a dark dialog).
        self.setAttribute(Qt.WidgetAttribute.WA_WindowPropagation)
        self._restyle()
        self._update_confirm()
        # Size the dialog now, before it has a window: constraints changing after the window
        # exists make some platforms (offscreen) warn, and the dialog would visibly jump.
        layout.activate()
        (self._reason if show_reason and reason_required else self._cancel).setFocus()

    # -- API -------------------------------------------------------------------------------
    def reason(self) -> str:
        """The reason typed, stripped."""
        return self._reason.text().strip()

    def set_reason(self, text: str) -> None:
        """Prefill the reason (e.g. from the alert that prompted the action)."""
        self._reason.setText(text)

    def confirm_button(self) -> QPushButton:
        """The (destructive) confirm button."""
        return self._confirm

    def cancel_button(self) -> QPushButton:
        """The cancel button."""
        return self._cancel

    def reason_field(self) -> QLineEdit:
        """The reason line edit."""
        return self._reason

    def impact(self) -> str:
        """The impact sentence."""
        return self._impact.text()

    def exec(self) -> int:
        """Refused: use ``open()`` and the ``finished``/``accepted_with`` signals."""
        raise RuntimeError("ConfirmImpactDialog must be opened with open(), not exec()")

    # -- internals -------------------------------------------------------------------------
    def _update_confirm(self) -> None:
        ok = bool(self.reason()) or not self._reason_required
        self._confirm.setEnabled(ok)
        self._confirm.setToolTip("" if ok else "Type a reason first")

    def _on_confirm(self) -> None:
        if self._reason_required and not self.reason():
            return
        self.accepted_with.emit(self.reason())
        self.accept()

    def _restyle(self) -> None:
        palette = self.palette()
        status = Status.FAILING if self._destructive else Status.DEGRADED
        size = round(self.fontMetrics().height() * 2.0)
        self._icon.setPixmap(
            theme.icon_pixmap("mdi6.alert", theme.status_color(status, palette), size)
        )
        self._title.setFont(theme.scaled_font(self.font(), 1.3, bold=True))
        self._impact.setFont(theme.scaled_font(self.font(), 1.1))
        muted = self._details.palette()
        muted.setColor(QPalette.ColorRole.WindowText, theme.secondary_text_color(palette))
        self._details.setPalette(muted)
        self._reason_label.setPalette(muted)
        self._confirm.setFont(theme.scaled_font(self.font(), 1.0, bold=True))
        if self._destructive:
            # Concrete colours, regenerated when the dialog's palette changes (a style sheet's
            # palette() references would be frozen at polish time).
            self._confirm.setStyleSheet(theme.destructive_button_qss(palette))
        width = self.fontMetrics().averageCharWidth() * 64
        self._impact.setMinimumWidth(width)

    def changeEvent(self, event: QEvent) -> None:
        if hasattr(self, "_confirm") and event.type() in (
            QEvent.Type.PaletteChange,
            QEvent.Type.ApplicationPaletteChange,
            QEvent.Type.FontChange,
            QEvent.Type.ApplicationFontChange,
        ):
            self._restyle()
        super().changeEvent(event)
