"""An in-window notification ("toast") for when the desktop has no notification area."""

from __future__ import annotations

import qtawesome as qta
from PySide6.QtCore import QEvent, QObject, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QPaintEvent
from PySide6.QtWidgets import QHBoxLayout, QLabel, QToolButton, QVBoxLayout, QWidget

from widgets import theme
from widgets.theme import Status

DEFAULT_TIMEOUT_MS = 10_000


class Toast(QWidget):
    """A card in the bottom-right corner of ``parent``: status icon and word, a title, a line of
    text; it hides itself after ``timeout_ms`` or when closed, and follows its parent's size.

    Signals:
        closed(): the toast hid (timed out or closed by the operator).
    """

    closed = Signal()

    def __init__(self, parent: QWidget) -> None:
        super().__init__(parent)
        self._status = Status.FAILING
        self._icon = QLabel()
        self._title = QLabel()
        self._title.setWordWrap(True)
        self._text = QLabel()
        self._text.setWordWrap(True)
        self._text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._close = QToolButton()
        self._close.setAutoRaise(True)
        self._close.setToolTip("Dismiss")
        self._close.setAccessibleName("Dismiss notification")
        self._close.clicked.connect(self.dismiss)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.dismiss)

        words = QVBoxLayout()
        words.setSpacing(2)
        words.addWidget(self._title)
        words.addWidget(self._text)
        layout = QHBoxLayout(self)
        layout.setSpacing(10)
        layout.addWidget(self._icon, 0, Qt.AlignmentFlag.AlignTop)
        layout.addLayout(words, 1)
        layout.addWidget(self._close, 0, Qt.AlignmentFlag.AlignTop)
        parent.installEventFilter(self)
        self._restyle()
        self.setVisible(False)

    def show_toast(
        self,
        title: str,
        text: str,
        status: str | Status = Status.FAILING,
        timeout_ms: int = DEFAULT_TIMEOUT_MS,
    ) -> None:
        """Show ``title`` and ``text`` with ``status``'s colour, icon and word."""
        self._status = Status.parse(status)
        word = theme.status_style(self._status).word
        self._title.setText(f"<b>{word}:</b> {title}")
        self._text.setText(text)
        self.setAccessibleName(f"{word} notification: {title}. {text}")
        self._restyle()
        self.setVisible(True)
        self._place()
        self.raise_()
        self._timer.start(timeout_ms)

    def dismiss(self) -> None:
        """Hide now (emits ``closed``)."""
        self._timer.stop()
        if not self.isHidden():
            self.setVisible(False)
            self.closed.emit()

    def title(self) -> str:
        return self._title.text()

    def text(self) -> str:
        return self._text.text()

    def status(self) -> Status:
        return self._status

    def _place(self) -> None:
        parent = self.parentWidget()
        if parent is None:
            return
        em = self.fontMetrics().height()
        width = min(em * 26, max(em * 12, parent.width() - 2 * em))
        self.setFixedWidth(width)
        self.adjustSize()
        margin = em
        self.move(parent.width() - width - margin, parent.height() - self.height() - 3 * margin)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if (
            watched is self.parentWidget()
            and event.type() == QEvent.Type.Resize
            and self.isVisible()
        ):
            self._place()
        return False

    def _restyle(self) -> None:
        palette = self.palette()
        height = self.fontMetrics().height()
        icon_px = round(height * 1.5)
        self._icon.setPixmap(theme.status_icon(self._status, palette).pixmap(icon_px, icon_px))
        self._close.setIcon(qta.icon("mdi6.close", color=theme.text_color(palette)))
        self._close.setIconSize(QSize(height, height))
        m = round(height * 0.7)
        layout = self.layout()
        if layout is not None:
            layout.setContentsMargins(m + 4, m, m, m)
        self.update()

    def changeEvent(self, event: QEvent) -> None:
        if event.type() in theme.RESTYLE_EVENTS:
            self._restyle()
        super().changeEvent(event)

    def paintEvent(self, event: QPaintEvent) -> None:
        palette = self.palette()
        colour = theme.status_color(self._status, palette)
        border = theme.blend(theme.border_color(palette), colour, 0.6)
        fill = theme.surface_color(palette)
        theme.paint_status_card(self, colour, border=border, fill=fill, radius=8)
