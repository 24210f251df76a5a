"""An empty state that teaches: an icon, what to do, and the button to do it right there."""

from __future__ import annotations

import qtawesome as qta
from PySide6.QtCore import QEvent, QSize, Qt, Signal
from PySide6.QtGui import QPalette, QResizeEvent
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QSizePolicy, QVBoxLayout, QWidget

from widgets import theme


class EmptyState(QWidget):
    """Shown instead of an empty list or chart: "No events yet — start demo traffic" [Start].

    Signals:
        action_triggered(): the action button was pressed.
    """

    action_triggered = Signal()

    def __init__(
        self,
        icon: str,
        sentence: str,
        action: str = "",
        *,
        detail: str = "",
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._icon_name = icon
        self._icon = QLabel()
        self._icon.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._sentence = QLabel(sentence)
        self._sentence.setWordWrap(True)
        self._sentence.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._detail = QLabel(detail)
        self._detail.setWordWrap(True)
        self._detail.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._detail.setVisible(bool(detail))
        self._button = QPushButton(action)
        self._button.setVisible(bool(action))
        self._button.setDefault(True)
        self._button.clicked.connect(self.action_triggered)

        # A centred column of limited width: wrapped labels get their full height only when
        # they fill the width of their layout (an alignment flag would squeeze them).
        self._column = QWidget()
        column = QVBoxLayout(self._column)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(self._icon)
        column.addWidget(self._sentence)
        column.addWidget(self._detail)
        column.addSpacing(6)
        column.addWidget(self._button, 0, Qt.AlignmentFlag.AlignHCenter)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self._column, 10)
        row.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addStretch(1)
        layout.addLayout(row)
        layout.addStretch(1)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self._restyle()

    def minimumSizeHint(self) -> QSize:
        # Wrapped text needs more height when narrow; without this a short splitter pane would
        # squeeze the sentence into the icon.
        hint = super().minimumSizeHint()
        layout = self.layout()
        if layout is None or not layout.hasHeightForWidth():
            return hint
        width = self.width() if self.width() > 0 else self.sizeHint().width()
        return QSize(hint.width(), max(hint.height(), layout.totalHeightForWidth(width)))

    def resizeEvent(self, event: QResizeEvent) -> None:
        if event.oldSize().width() != event.size().width():
            self.updateGeometry()
        super().resizeEvent(event)

    def set_sentence(self, sentence: str) -> None:
        """The teaching sentence."""
        self._sentence.setText(sentence)

    def set_detail(self, detail: str) -> None:
        """The smaller line under the sentence ("" hides it)."""
        self._detail.setText(detail)
        self._detail.setVisible(bool(detail))

    def sentence(self) -> str:
        """The teaching sentence shown."""
        return self._sentence.text()

    def set_action(self, text: str, enabled: bool = True) -> None:
        """The button's label ("" hides it) and whether it can be pressed right now."""
        self._button.setText(text)
        self._button.setVisible(bool(text))
        self._button.setEnabled(enabled)

    def action_button(self) -> QPushButton:
        """The action button."""
        return self._button

    def _restyle(self) -> None:
        palette = self.palette()
        muted = theme.secondary_text_color(palette)
        size = round(self.fontMetrics().height() * 3.2)
        self._icon.setPixmap(qta.icon(self._icon_name, color=muted).pixmap(size, size))
        self._sentence.setFont(theme.scaled_font(self.font(), 1.25, bold=True))
        self._detail.setFont(theme.scaled_font(self.font(), 1.0))
        detail_palette = self._detail.palette()
        detail_palette.setColor(QPalette.ColorRole.WindowText, muted)
        self._detail.setPalette(detail_palette)
        self._button.setFont(theme.scaled_font(self.font(), 1.05))
        self._button.setStyleSheet(theme.primary_button_qss(palette))
        self._column.setMaximumWidth(self.fontMetrics().averageCharWidth() * 60)

    def changeEvent(self, event: QEvent) -> None:
        if event.type() in (
            QEvent.Type.PaletteChange,
            QEvent.Type.ApplicationPaletteChange,
            QEvent.Type.FontChange,
            QEvent.Type.ApplicationFontChange,
        ):
            self._restyle()
        super().changeEvent(event)
