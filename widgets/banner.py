"""The banner for the active alert: severity colour + icon + text, an action, dismissible."""

from __future__ import annotations

import qtawesome as qta
from PySide6.QtCore import QEvent, QSize, Qt, Signal
from PySide6.QtGui import QPaintEvent, QPalette
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QSizePolicy, QToolButton, QWidget

from widgets import theme
from widgets.theme import Status


class AlertBanner(QWidget):
    """A strip across the top for the one active alert; hidden when there is none.

    Severity uses the status vocabulary (``failing`` red, ``degraded`` amber, ``paused`` blue,
    ...) and always shows its icon and word next to the text. The optional action button is the
    one obvious next step ("Open Queues"); the close button dismisses the alert until the next one.

    Signals:
        action_triggered(str): the action button was pressed; the alert's key.
        dismissed(str): the operator dismissed the alert; the alert's key.
    """

    action_triggered = Signal(str)
    dismissed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._status = Status.FAILING
        self._key = ""
        self._icon = QLabel()
        self._word = QLabel()
        self._text = QLabel()
        self._text.setWordWrap(True)
        self._text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._text.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self._action = QPushButton()
        self._action.setVisible(False)
        self._action.clicked.connect(lambda: self.action_triggered.emit(self._key))
        self._close = QToolButton()
        self._close.setAutoRaise(True)
        self._close.setToolTip("Dismiss this alert")
        self._close.setAccessibleName("Dismiss alert")
        self._close.clicked.connect(self.dismiss)

        layout = QHBoxLayout(self)
        layout.setSpacing(8)
        layout.addWidget(self._icon, 0, Qt.AlignmentFlag.AlignVCenter)
        layout.addWidget(self._word, 0, Qt.AlignmentFlag.AlignVCenter)
        layout.addWidget(self._text, 1)
        layout.addWidget(self._action, 0, Qt.AlignmentFlag.AlignVCenter)
        layout.addWidget(self._close, 0, Qt.AlignmentFlag.AlignVCenter)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self._restyle()
        self.setVisible(False)

    def show_alert(
        self,
        text: str,
        status: str | Status = Status.FAILING,
        *,
        action: str = "",
        key: str = "",
    ) -> None:
        """Show ``text`` with ``status``'s colour, icon and word; ``action`` labels the button."""
        self._status = Status.parse(status)
        self._key = key or text
        self._text.setText(text)
        self._action.setText(action)
        self._action.setVisible(bool(action))
        self._restyle()
        self.setAccessibleName(f"{theme.status_style(self._status).word} alert: {text}")
        self.setVisible(True)

    def dismiss(self) -> None:
        """Hide the banner and emit ``dismissed``."""
        if not self.isHidden():
            self.setVisible(False)
            self.dismissed.emit(self._key)

    def clear(self) -> None:
        """Hide the banner without emitting (the alert resolved itself)."""
        self.setVisible(False)

    def text(self) -> str:
        """The alert text."""
        return self._text.text()

    def status(self) -> Status:
        """The alert's severity."""
        return self._status

    def action_button(self) -> QPushButton:
        """The action button."""
        return self._action

    def close_button(self) -> QToolButton:
        """The dismiss button."""
        return self._close

    def _restyle(self) -> None:
        palette = self.palette()
        colour = theme.status_color(self._status, palette)
        height = self.fontMetrics().height()
        icon_px = round(height * 1.35)
        self._icon.setPixmap(theme.status_icon(self._status, palette).pixmap(icon_px, icon_px))
        self._word.setText(theme.status_style(self._status).word.upper())
        self._word.setFont(theme.scaled_font(self.font(), 0.95, bold=True))
        word_palette = self._word.palette()
        word_palette.setColor(QPalette.ColorRole.WindowText, colour)
        self._word.setPalette(word_palette)
        self._text.setFont(theme.scaled_font(self.font(), 1.0))
        self._close.setIcon(qta.icon("mdi6.close", color=theme.text_color(palette)))
        self._close.setIconSize(QSize(round(height * 1.1), round(height * 1.1)))
        m = round(height * 0.55)
        layout = self.layout()
        if layout is not None:
            layout.setContentsMargins(m + 6, m, m, m)
        self.update()

    def changeEvent(self, event: QEvent) -> None:
        if event.type() in theme.RESTYLE_EVENTS:
            self._restyle()
        super().changeEvent(event)

    def paintEvent(self, event: QPaintEvent) -> None:
        palette = self.palette()
        colour = theme.status_color(self._status, palette)
        border = theme.blend(theme.tint(self._status, palette), colour, 0.5)
        fill = theme.tint(self._status, palette, 0.2)
        theme.paint_status_card(self, colour, border=border, fill=fill, radius=6)
