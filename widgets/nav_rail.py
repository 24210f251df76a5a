"""The left navigation rail: icon + label per page, Ctrl+1..9, one page checked."""

from __future__ import annotations

import qtawesome as qta
from PySide6.QtCore import QEvent, QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import (
    QFontMetrics,
    QIcon,
    QKeySequence,
    QPainter,
    QPaintEvent,
    QPalette,
    QPen,
    QShortcut,
)
from PySide6.QtWidgets import (
    QButtonGroup,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from widgets import theme


class _NavButton(QToolButton):
    """A rail entry painted from the palette (no style sheet: those stop palette propagation,
    so a rail in a dark panel would stay light)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAttribute(Qt.WidgetAttribute.WA_Hover)

    def _metrics(self) -> tuple[int, int, int]:
        """(horizontal padding, icon-text gap, vertical padding) from the font size."""
        h = self.fontMetrics().height()
        return round(h * 0.7), round(h * 0.6), round(h * 0.45)

    def sizeHint(self) -> QSize:
        pad, gap, vpad = self._metrics()
        bold = QFontMetrics(theme.scaled_font(self.font(), 1.0, bold=True))
        icon = self.iconSize()
        width = pad + icon.width() + gap + bold.horizontalAdvance(self.text()) + pad
        height = max(icon.height(), bold.height()) + 2 * vpad
        return QSize(width, height)

    def minimumSizeHint(self) -> QSize:
        return self.sizeHint()

    def paintEvent(self, event: QPaintEvent) -> None:
        palette = self.palette()
        pad, gap, _ = self._metrics()
        checked = self.isChecked()
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = QRectF(self.rect()).adjusted(1, 1, -1, -1)
        radius = min(6.0, rect.height() / 4)
        if checked:
            painter.setBrush(palette.color(QPalette.ColorRole.Highlight))
        elif self.underMouse():
            painter.setBrush(
                theme.blend(
                    palette.color(QPalette.ColorRole.Window),
                    palette.color(QPalette.ColorRole.WindowText),
                    0.09,
                )
            )
        else:
            painter.setBrush(Qt.BrushStyle.NoBrush)
        if self.hasFocus():
            focus = palette.color(
                QPalette.ColorRole.HighlightedText if checked else QPalette.ColorRole.Highlight
            )
            painter.setPen(QPen(focus, 1.5))
        else:
            painter.setPen(Qt.PenStyle.NoPen)
        painter.drawRoundedRect(rect, radius, radius)

        icon_size = self.iconSize()
        state = QIcon.State.On if checked else QIcon.State.Off
        pixmap = self.icon().pixmap(icon_size, self.devicePixelRatioF(), QIcon.Mode.Normal, state)
        y = (self.height() - icon_size.height()) / 2
        painter.drawPixmap(QPointF(pad, y), pixmap)

        painter.setFont(self.font())
        painter.setPen(
            palette.color(
                QPalette.ColorRole.HighlightedText if checked else QPalette.ColorRole.WindowText
            )
        )
        x = pad + icon_size.width() + gap
        painter.drawText(
            QRectF(x, 0, self.width() - x - pad, self.height()),
            Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft,
            self.text(),
        )
        painter.end()


class NavRail(QWidget):
    """Vertical page navigation. The owner adds pages; the user clicks or presses shortcuts.

    Exactly one page is checked once any is selected. The checked page is filled with the
    highlight colour and its label turns bold, so the state reads without colour too.

    Signals:
        page_selected(str): the key of the newly selected page (by click, shortcut or
            ``set_current``); not emitted when the page was already current.
    """

    page_selected = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._group = QButtonGroup(self)
        self._group.setExclusive(True)
        self._buttons: dict[str, QToolButton] = {}
        self._icons: dict[str, str | QIcon] = {}
        self._shortcuts: dict[str, QShortcut] = {}
        self._current: str | None = None
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(6, 8, 6, 8)
        self._layout.setSpacing(2)
        self._layout.addStretch(1)
        self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Preferred)

    def add_page(
        self,
        key: str,
        label: str,
        icon: str | QIcon,
        shortcut: str | QKeySequence | None = None,
    ) -> QToolButton:
        """Add a page entry: ``icon`` is a qtawesome name ("mdi6.inbox") or a QIcon.

        ``shortcut`` (e.g. "Ctrl+1") works anywhere in the rail's window.
        """
        if key in self._buttons:
            raise ValueError(f"page {key!r} already added")
        button = _NavButton(self)
        button.setText(label)
        button.setCheckable(True)
        button.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        button.setFocusPolicy(Qt.FocusPolicy.TabFocus)
        button.clicked.connect(lambda _checked=False, k=key: self.set_current(k))
        self._group.addButton(button)
        self._buttons[key] = button
        self._icons[key] = icon
        self._layout.insertWidget(self._layout.count() - 1, button)
        if shortcut is not None:
            sequence = QKeySequence(shortcut)
            action = QShortcut(sequence, self)
            action.setContext(Qt.ShortcutContext.WindowShortcut)
            action.activated.connect(lambda k=key: self.set_current(k))
            self._shortcuts[key] = action
            hint = sequence.toString(QKeySequence.SequenceFormat.NativeText)
            button.setToolTip(f"{label} ({hint})")
        else:
            button.setToolTip(label)
        button.setAccessibleName(label)
        self._style_button(key)
        self.updateGeometry()
        return button

    def set_current(self, key: str) -> None:
        """Select page ``key`` (emits ``page_selected`` if it was not current)."""
        if key not in self._buttons:
            raise KeyError(key)
        self._buttons[key].setChecked(True)
        if key == self._current:
            return
        previous = self._current
        self._current = key
        if previous is not None:
            self._style_button(previous)
        self._style_button(key)
        self.page_selected.emit(key)

    def current(self) -> str | None:
        """The selected page's key, or None before any selection."""
        return self._current

    def keys(self) -> list[str]:
        """The page keys in rail order."""
        return list(self._buttons)

    def button(self, key: str) -> QToolButton:
        """The button of page ``key`` (for tests and badges)."""
        return self._buttons[key]

    def shortcut(self, key: str) -> QShortcut | None:
        """The shortcut of page ``key``, if any."""
        return self._shortcuts.get(key)

    def _style_button(self, key: str) -> None:
        button = self._buttons[key]
        palette = self.palette()
        icon = self._icons[key]
        if isinstance(icon, str):
            normal = theme.text_color(palette)
            checked = palette.color(QPalette.ColorRole.HighlightedText)
            icon = qta.icon(icon, color=normal, color_on=checked, color_on_active=checked)
        button.setIcon(icon)
        size = round(self.fontMetrics().height() * 1.3)
        button.setIconSize(QSize(size, size))
        button.setFont(theme.scaled_font(self.font(), 1.0, bold=key == self._current))

    def paintEvent(self, event: QPaintEvent) -> None:
        # A hairline on the right edge separates the rail from the page.
        painter = QPainter(self)
        painter.setPen(QPen(theme.border_color(self.palette()), 1))
        x = self.width() - 1
        painter.drawLine(x, 0, x, self.height())
        painter.end()

    def changeEvent(self, event: QEvent) -> None:
        if event.type() in (
            QEvent.Type.PaletteChange,
            QEvent.Type.ApplicationPaletteChange,
            QEvent.Type.FontChange,
            QEvent.Type.ApplicationFontChange,
        ):
            for key in self._buttons:
                self._style_button(key)
        super().changeEvent(event)
