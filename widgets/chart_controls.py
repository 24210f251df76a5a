"""The window selector (1 min / 15 min / 1 h) and the freeze toggle for a ``ChartGroup``."""

from __future__ import annotations

import qtawesome as qta
from PySide6.QtCore import QEvent
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QButtonGroup, QHBoxLayout, QPushButton, QWidget

from widgets import theme
from widgets.live_chart import WINDOWS, ChartGroup


class ChartControls(QWidget):
    """Segmented window buttons and a Freeze/Live toggle, bound to a ``ChartGroup``.

    The controls follow the group (a drag on a chart freezes it; the toggle shows that).

    Signals: none of its own; it drives the group's ``window_changed``/``frozen_changed``.
    """

    def __init__(
        self,
        group: ChartGroup,
        windows: dict[str, float] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._group = group
        self._buttons: dict[float, QPushButton] = {}
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        self._window_group = QButtonGroup(self)
        self._window_group.setExclusive(True)
        for label, seconds in (windows or WINDOWS).items():
            button = QPushButton(label)
            button.setCheckable(True)
            button.setToolTip(f"Show the last {label}")
            button.clicked.connect(lambda _=False, s=seconds: group.set_window(s))
            self._window_group.addButton(button)
            self._buttons[seconds] = button
            layout.addWidget(button)
        layout.addSpacing(12)
        self._freeze = QPushButton()
        self._freeze.setCheckable(True)
        self._freeze.setToolTip("Stop following now and scroll back through the history")
        self._freeze.toggled.connect(group.set_frozen)
        layout.addWidget(self._freeze)
        layout.addStretch(1)

        group.window_changed.connect(self._sync)
        group.frozen_changed.connect(self._sync)
        self._restyle()
        self._sync()

    def freeze_button(self) -> QPushButton:
        """The Freeze/Live toggle."""
        return self._freeze

    def window_button(self, seconds: float) -> QPushButton:
        """The button selecting the window of ``seconds``."""
        return self._buttons[seconds]

    def _restyle(self) -> None:
        qss = theme.toggle_button_qss(self.palette())
        for button in (*self._buttons.values(), self._freeze):
            button.setStyleSheet(qss)

    def _sync(self, *_args: object) -> None:
        button = self._buttons.get(self._group.window_seconds())
        if button is not None:
            button.setChecked(True)
        frozen = self._group.is_frozen()
        self._freeze.blockSignals(True)
        self._freeze.setChecked(frozen)
        self._freeze.blockSignals(False)
        palette = self.palette()
        if frozen:
            self._freeze.setText("Frozen \u2014 resume live")
            colour = palette.color(QPalette.ColorRole.HighlightedText)
            self._freeze.setIcon(qta.icon("mdi6.play", color=colour))
        else:
            self._freeze.setText("Freeze")
            colour = palette.color(QPalette.ColorRole.ButtonText)
            self._freeze.setIcon(qta.icon("mdi6.snowflake", color=colour))

    def changeEvent(self, event: QEvent) -> None:
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            self._restyle()
            self._sync()
        super().changeEvent(event)
