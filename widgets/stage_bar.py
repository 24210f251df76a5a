"""A horizontal stacked bar of per-stage latency, so the slow stage stands out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from PySide6.QtCore import QEvent, QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QFont, QFontMetrics, QHelpEvent, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QSizePolicy, QToolTip, QWidget

from widgets import theme
from widgets.format import Formatter, format_duration

DEFAULT_STAGES: tuple[tuple[str, str], ...] = (
    ("ingest", "ingest"),
    ("decide", "decide"),
    ("claim", "claim"),
    ("render", "render"),
    ("smtp", "SMTP"),
)


@dataclass(frozen=True, slots=True)
class _Item:
    key: str
    label: str
    text: str  # "SMTP 142 ms · 78%"
    width: int


class StageBar(QWidget):
    """Per-stage latency as one stacked bar (ingest → decide → render → SMTP) plus a legend.

    Segment widths are proportional to each stage's time; the slowest stage keeps its full
    colour, gets its label inside the bar when it fits, and is named in bold in the legend with
    "slowest" - the other stages are muted. Values are seconds (``set_values``).

    Signals: none.
    """

    def __init__(
        self,
        stages: Sequence[tuple[str, str]] = DEFAULT_STAGES,
        *,
        title: str = "",
        formatter: Formatter = format_duration,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._stages = list(stages)
        self._title = title
        self._formatter = formatter
        self._values: dict[str, float] = {}
        policy = QSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        policy.setHeightForWidth(True)
        self.setSizePolicy(policy)
        self.setMouseTracking(True)

    # -- API -------------------------------------------------------------------------------
    def set_values(self, values: Mapping[str, float]) -> None:
        """Seconds per stage key (missing stages count as 0)."""
        new = {key: max(float(values.get(key, 0.0)), 0.0) for key, _ in self._stages}
        if new == self._values:
            return  # unchanged: no relayout, no repaint
        self._values = new
        self.setToolTip(self.summary())
        self.setAccessibleDescription(self.summary())
        self.updateGeometry()
        self.update()

    def set_title(self, title: str) -> None:
        """The caption above the bar, e.g. "Per-stage latency (p95)"."""
        if title == self._title:
            return
        self._title = title
        self.updateGeometry()
        self.update()

    def total(self) -> float:
        """The sum over stages, in seconds."""
        return sum(self._values.values())

    def slowest(self) -> str | None:
        """The key of the stage taking the most time, or None without data."""
        if not self._values or self.total() <= 0:
            return None
        return max(self._values, key=lambda k: self._values[k])

    def summary(self) -> str:
        """All stages as one line of text (tooltip and accessibility)."""
        return " \u2192 ".join(self._item(key, label).text for key, label in self._stages)

    # -- layout ----------------------------------------------------------------------------
    def _item(self, key: str, label: str) -> _Item:
        value = self._values.get(key, 0.0)
        total = self.total()
        share = f" \u00b7 {_share(value / total)}" if total > 0 else ""
        text = f"{label} {self._formatter(value)}{share}"
        return _Item(key, label, text, 0)

    def _fonts(self) -> tuple[QFont, QFont]:
        base = self.font()
        return base, theme.scaled_font(base, 1.0, bold=True)

    def _legend_rows(self, width: int) -> list[list[_Item]]:
        """Legend items flowed into rows that fit ``width``."""
        normal, bold = self._fonts()
        slowest = self.slowest()
        fm_n, fm_b = QFontMetrics(normal), QFontMetrics(bold)
        swatch = fm_n.height()
        gap = fm_n.height()
        rows: list[list[_Item]] = [[]]
        x = 0
        for key, label in self._stages:
            item = self._item(key, label)
            text = item.text + ("  slowest" if key == slowest else "")
            fm = fm_b if key == slowest else fm_n
            w = swatch + 6 + fm.horizontalAdvance(text)
            if rows[-1] and x + w > width:
                rows.append([])
                x = 0
            rows[-1].append(_Item(key, label, text, w))
            x += w + gap
        return rows

    def _geometry(self, width: int) -> tuple[int, int, int, int]:
        """(title height, bar top, bar height, legend top)."""
        fm = QFontMetrics(self.font())
        title_h = fm.height() + 4 if self._title else 0
        bar_h = round(fm.height() * 1.8)
        return title_h, title_h, bar_h, title_h + bar_h + round(fm.height() * 0.5)

    def hasHeightForWidth(self) -> bool:
        return True

    def heightForWidth(self, width: int) -> int:
        fm = QFontMetrics(self.font())
        *_, legend_top = self._geometry(width)
        rows = len(self._legend_rows(width))
        return legend_top + rows * round(fm.height() * 1.35)

    def sizeHint(self) -> QSize:
        width = QFontMetrics(self.font()).averageCharWidth() * 80
        return QSize(width, self.heightForWidth(width))

    def minimumSizeHint(self) -> QSize:
        width = QFontMetrics(self.font()).averageCharWidth() * 30
        return QSize(width, self.heightForWidth(width))

    def _segments(self, rect: QRectF) -> list[tuple[str, str, QRectF]]:
        total = self.total()
        if total <= 0:
            return []
        min_w = 3.0
        visible = [(k, label) for k, label in self._stages if self._values.get(k, 0) > 0]
        # Every stage that took any time gets at least a sliver, taken from the others.
        spare = rect.width() - min_w * len(visible)
        out: list[tuple[str, str, QRectF]] = []
        x = rect.left()
        for key, label in visible:
            w = min_w + max(spare, 0) * self._values[key] / total
            out.append((key, label, QRectF(x, rect.top(), w, rect.height())))
            x += w
        return out

    # -- Qt --------------------------------------------------------------------------------
    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ToolTip and isinstance(event, QHelpEvent):
            _, bar_top, bar_h, _ = self._geometry(self.width())
            rect = QRectF(0, bar_top, self.width(), bar_h)
            for key, label, seg in self._segments(rect):
                if seg.contains(QPointF(event.pos())):
                    QToolTip.showText(event.globalPos(), self._item(key, label).text, self)
                    return True
        return super().event(event)

    def changeEvent(self, event: QEvent) -> None:
        if event.type() in (QEvent.Type.FontChange, QEvent.Type.ApplicationFontChange):
            self.updateGeometry()
        super().changeEvent(event)

    def paintEvent(self, event: QPaintEvent) -> None:
        palette = self.palette()
        normal, bold = self._fonts()
        fm = QFontMetrics(normal)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        title_h, bar_top, bar_h, legend_top = self._geometry(self.width())
        width = self.width()
        total = self.total()

        if self._title:
            painter.setFont(bold)
            painter.setPen(theme.secondary_text_color(palette))
            painter.drawText(
                QRectF(0, 0, width, title_h), Qt.AlignmentFlag.AlignVCenter, self._title
            )
            if total > 0:
                painter.setFont(normal)
                painter.drawText(
                    QRectF(0, 0, width, title_h),
                    Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight,
                    f"total {self._formatter(total)}",
                )

        bar = QRectF(0.5, bar_top + 0.5, width - 1.0, bar_h - 1.0)
        radius = min(6.0, bar_h / 4)
        painter.setPen(QPen(theme.border_color(palette), 1))
        painter.setBrush(theme.surface_color(palette))
        painter.drawRoundedRect(bar, radius, radius)

        slowest = self.slowest()
        surface = theme.surface_color(palette)
        colours = {
            key: theme.series_color(index, palette) for index, (key, _l) in enumerate(self._stages)
        }
        painter.save()
        clip = QRectF(bar)
        painter.setClipRect(clip)
        for key, label, seg in self._segments(bar):
            colour = colours[key]
            fill = colour if key == slowest else theme.blend(surface, colour, 0.45)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(fill)
            if key == slowest:
                painter.drawRoundedRect(seg, radius, radius)
                painter.drawRect(seg.adjusted(radius, 0, -radius, 0))
            else:
                painter.drawRect(seg)
            # A thin separator keeps neighbouring segments apart.
            painter.setPen(QPen(surface, 1))
            painter.drawLine(seg.topRight(), seg.bottomRight())
            text = f"{label} {self._formatter(self._values[key])}"
            painter.setFont(bold if key == slowest else normal)
            tfm = QFontMetrics(painter.font())
            if tfm.horizontalAdvance(text) + 12 <= seg.width():
                painter.setPen(theme.contrasting_text(fill))
                painter.drawText(seg, Qt.AlignmentFlag.AlignCenter, text)
            elif tfm.horizontalAdvance(label) + 8 <= seg.width():
                painter.setPen(theme.contrasting_text(fill))
                painter.drawText(seg, Qt.AlignmentFlag.AlignCenter, label)
        painter.restore()
        # Rounded outline on top so clipped corners stay clean.
        painter.setPen(QPen(theme.border_color(palette), 1))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawRoundedRect(bar, radius, radius)

        if total <= 0:
            painter.setFont(normal)
            painter.setPen(theme.secondary_text_color(palette))
            painter.drawText(bar, Qt.AlignmentFlag.AlignCenter, "no latency data yet")

        row_h = round(fm.height() * 1.35)
        swatch = fm.height() * 0.75
        y = legend_top
        for row in self._legend_rows(width):
            x = 0.0
            for item in row:
                is_slow = item.key == slowest
                colour = colours[item.key]
                painter.setPen(Qt.PenStyle.NoPen)
                painter.setBrush(colour if is_slow else theme.blend(surface, colour, 0.45))
                painter.drawRoundedRect(QRectF(x, y + (row_h - swatch) / 2, swatch, swatch), 2, 2)
                painter.setFont(bold if is_slow else normal)
                painter.setPen(
                    theme.text_color(palette) if is_slow else theme.secondary_text_color(palette)
                )
                painter.drawText(
                    QRectF(x + swatch + 6, y, item.width, row_h),
                    Qt.AlignmentFlag.AlignVCenter,
                    item.text,
                )
                x += item.width + fm.height()
            y += row_h
        painter.end()


def _share(ratio: float) -> str:
    """A stage's share of the total in whole percent ("82%", "<1%"): the bar shows the rest."""
    if 0 < ratio < 0.01:
        return "<1%"
    return f"{round(ratio * 100)}%"
