"""A rounded pill showing a status as icon + word, e.g. "✓ NATS · healthy"."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFontMetrics, QMouseEvent, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from widgets import theme
from widgets.theme import Status

SEPARATOR = " \u00b7 "  # middle dot


class StatusPill(QWidget):
    """A status as a pill: the status icon, then ``detail · word`` (or just the word).

    The pill is tinted with the status colour, but the icon shape and the word carry the meaning
    on their own (colour-blind operators, greyscale screenshots).

    Signals:
        clicked(): the pill was clicked (e.g. to open the part's details).
    """

    clicked = Signal()

    def __init__(
        self,
        status: str | Status = Status.UNKNOWN,
        detail: str = "",
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._status = Status.parse(status)
        self._detail = detail
        self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        self._refresh_text()

    # -- API -------------------------------------------------------------------------------
    def set_status(self, status: str | Status, detail: str = "") -> None:
        """Show ``status`` (unknown names show as "unknown") with optional ``detail`` text."""
        new = Status.parse(status)
        if new == self._status and detail == self._detail:
            return
        self._status = new
        self._detail = detail
        self._refresh_text()

    def status(self) -> Status:
        """The status shown."""
        return self._status

    def detail(self) -> str:
        """The detail text shown before the word (e.g. "NATS")."""
        return self._detail

    def text(self) -> str:
        """The words on the pill, e.g. "NATS · healthy"."""
        word = theme.status_style(self._status).word
        return f"{self._detail}{SEPARATOR}{word}" if self._detail else word

    # -- Qt --------------------------------------------------------------------------------
    def _refresh_text(self) -> None:
        self.setToolTip(self.text())
        self.setAccessibleName(self.text())
        self.updateGeometry()
        self.update()

    def _metrics(self) -> tuple[int, int, int]:
        """(icon size, horizontal padding, gap), all from the font so they scale with it."""
        fm = QFontMetrics(self.font())
        icon = round(fm.height() * 1.0)
        return icon, max(6, round(fm.height() * 0.6)), max(3, round(fm.height() * 0.3))

    def sizeHint(self) -> QSize:
        fm = QFontMetrics(self.font())
        icon, pad, gap = self._metrics()
        width = pad + icon + gap + fm.horizontalAdvance(self.text()) + pad
        return QSize(width, round(fm.height() * 1.7))

    def minimumSizeHint(self) -> QSize:
        return self.sizeHint()

    def changeEvent(self, event: QEvent) -> None:
        if event.type() in (QEvent.Type.FontChange, QEvent.Type.ApplicationFontChange):
            self.updateGeometry()
        super().changeEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton and self.rect().contains(
            event.position().toPoint()
        ):
            self.clicked.emit()
        super().mouseReleaseEvent(event)

    def paintEvent(self, event: QPaintEvent) -> None:
        palette = self.palette()
        colour = theme.status_color(self._status, palette)
        fm = QFontMetrics(self.font())
        icon_size, pad, gap = self._metrics()
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5)
        radius = rect.height() / 2
        painter.setPen(QPen(theme.blend(theme.tint(self._status, palette), colour, 0.45), 1))
        painter.setBrush(theme.tint(self._status, palette))
        painter.drawRoundedRect(rect, radius, radius)

        icon = theme.status_icon(self._status, palette)
        y_icon = round((self.height() - icon_size) / 2)
        icon.paint(painter, pad, y_icon, icon_size, icon_size)

        x = pad + icon_size + gap
        text_rect = QRectF(x, 0, self.width() - x - pad, self.height())
        if self._detail:
            painter.setPen(theme.text_color(palette))
            detail = f"{self._detail}{SEPARATOR}"
            painter.drawText(text_rect, Qt.AlignmentFlag.AlignVCenter, detail)
            text_rect.setLeft(text_rect.left() + fm.horizontalAdvance(detail))
        word = theme.status_style(self._status).word
        painter.setPen(QColor(colour))
        painter.drawText(text_rect, Qt.AlignmentFlag.AlignVCenter, word)
        painter.end()
