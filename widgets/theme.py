"""The console's look: one status vocabulary, palette-aware colours, relative fonts.

Every status has exactly one hue, in two shades: a light shade to read on dark palettes and a
dark shade to read on light ones (both about 4.5:1 against the window colour). A status is never
shown by colour alone: widgets pair it with its icon (``status_icon``) or its word.

Widgets read their own ``palette()`` when they paint, so a dark and a light panel can live in the
same application (the gallery does this) and a change of the OS colour scheme restyles everything.
Fonts are never given in pixels: ``scaled_font`` derives sizes from the widget's font, which follows
the system font size.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import qtawesome as qta
from PySide6.QtCore import QEvent, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QGuiApplication, QIcon, QPainter, QPalette, QPen, QPixmap
from PySide6.QtWidgets import QApplication, QStyleFactory, QWidget


class Status(StrEnum):
    """The one status vocabulary of the console."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    FAILING = "failing"
    PAUSED = "paused"
    DRAINING = "draining"
    UNKNOWN = "unknown"

    @classmethod
    def parse(cls, value: str | Status | None) -> Status:
        """The status named by ``value``; anything unrecognised is ``UNKNOWN`` (never raises).

        A console must keep drawing when a newer engine reports a state it does not know yet.
        """
        if isinstance(value, Status):
            return value
        if not value:
            return cls.UNKNOWN
        try:
            return cls(value.strip().lower())
        except ValueError:
            return _ALIASES.get(value.strip().lower(), cls.UNKNOWN)


_ALIASES: dict[str, Status] = {
    "ok": Status.HEALTHY,
    "up": Status.HEALTHY,
    "warning": Status.DEGRADED,
    "warn": Status.DEGRADED,
    "error": Status.FAILING,
    "critical": Status.FAILING,
    "down": Status.FAILING,
    "neutral": Status.UNKNOWN,
}


@dataclass(frozen=True, slots=True)
class StatusStyle:
    """How one status looks: the word, the icon, and its shade for each kind of palette."""

    word: str
    icon: str
    on_dark: str
    on_light: str


STATUS_STYLES: dict[Status, StatusStyle] = {
    Status.HEALTHY: StatusStyle("healthy", "mdi6.check-circle", "#4ade80", "#15803d"),
    Status.DEGRADED: StatusStyle("degraded", "mdi6.alert", "#fbbf24", "#b45309"),
    Status.FAILING: StatusStyle("failing", "mdi6.close-octagon", "#f87171", "#b91c1c"),
    Status.PAUSED: StatusStyle("paused", "mdi6.pause-circle", "#60a5fa", "#1d4ed8"),
    Status.DRAINING: StatusStyle("draining", "mdi6.timer-sand", "#c084fc", "#7e22ce"),
    Status.UNKNOWN: StatusStyle("unknown", "mdi6.help-circle-outline", "#a1a1aa", "#52525b"),
}

# Stale data is shown in the "degraded" amber: it is a warning, not a failure.
STALE_STATUS = Status.DEGRADED
STALE_ICON = "mdi6.clock-alert-outline"

# Categorical colours for chart series and stages (not statuses), as (on dark, on light).
_SERIES: tuple[tuple[str, str], ...] = (
    ("#60a5fa", "#2563eb"),  # blue
    ("#2dd4bf", "#0f766e"),  # teal
    ("#fb923c", "#c2410c"),  # orange
    ("#f472b6", "#be185d"),  # pink
    ("#a3e635", "#4d7c0f"),  # lime
    ("#818cf8", "#4338ca"),  # indigo
)

DESTRUCTIVE_BG = "#c62828"  # white text on it is 5.6:1, on either palette
DESTRUCTIVE_BG_HOVER = "#b71c1c"
DESTRUCTIVE_FG = "#ffffff"


def is_dark(palette: QPalette) -> bool:
    """Whether ``palette`` is a dark one (its window colour is darker than mid-grey)."""
    return palette.color(QPalette.ColorRole.Window).lightnessF() < 0.5


def status_style(status: str | Status) -> StatusStyle:
    """The word, icon and shades of ``status`` (unknown names get the ``unknown`` style)."""
    return STATUS_STYLES[Status.parse(status)]


def status_color(status: str | Status, palette: QPalette) -> QColor:
    """The colour of ``status`` that reads on ``palette``."""
    style = status_style(status)
    return QColor(style.on_dark if is_dark(palette) else style.on_light)


def status_icon_name(status: str | Status) -> str:
    """The qtawesome icon name of ``status``."""
    return status_style(status).icon


def status_icon(status: str | Status, palette: QPalette) -> QIcon:
    """The icon of ``status`` in its palette-aware colour."""
    return icon(status_icon_name(status), status_color(status, palette))


def icon(name: str, color: QColor) -> QIcon:
    """The qtawesome icon ``name`` in ``color`` (also when disabled: meaning must not fade)."""
    result: QIcon = qta.icon(name, color=color, color_disabled=color)
    return result


def icon_pixmap(name: str, color: QColor, size: int) -> QPixmap:
    """The qtawesome icon ``name`` in ``color`` as a ``size``-pixel square pixmap."""
    return icon(name, color).pixmap(size, size)


def series_color(index: int, palette: QPalette) -> QColor:
    """The ``index``-th categorical colour (chart series, stages), readable on ``palette``."""
    on_dark, on_light = _SERIES[index % len(_SERIES)]
    return QColor(on_dark if is_dark(palette) else on_light)


def blend(a: QColor, b: QColor, t: float) -> QColor:
    """``a`` moved a fraction ``t`` of the way towards ``b`` (alpha included)."""
    t = min(max(t, 0.0), 1.0)
    return QColor.fromRgbF(
        a.redF() + (b.redF() - a.redF()) * t,
        a.greenF() + (b.greenF() - a.greenF()) * t,
        a.blueF() + (b.blueF() - a.blueF()) * t,
        a.alphaF() + (b.alphaF() - a.alphaF()) * t,
    )


def text_color(palette: QPalette) -> QColor:
    """The main text colour for text drawn on the window background."""
    return palette.color(QPalette.ColorRole.WindowText)


def secondary_text_color(palette: QPalette) -> QColor:
    """A quieter text colour for titles and captions that still reads (about 5:1)."""
    return blend(
        palette.color(QPalette.ColorRole.WindowText), palette.color(QPalette.ColorRole.Window), 0.35
    )


def surface_color(palette: QPalette) -> QColor:
    """The fill of cards and panels (tiles, pills): a step away from the window colour."""
    window = palette.color(QPalette.ColorRole.Window)
    return window.lighter(118) if is_dark(palette) else palette.color(QPalette.ColorRole.Base)


def border_color(palette: QPalette) -> QColor:
    """A hairline border that shows on both palettes."""
    return blend(
        palette.color(QPalette.ColorRole.Window), palette.color(QPalette.ColorRole.WindowText), 0.2
    )


def tint(status: str | Status, palette: QPalette, amount: float = 0.16) -> QColor:
    """A background wash of ``status``'s colour over the surface, for pills and banners."""
    return blend(surface_color(palette), status_color(status, palette), amount)


def contrasting_text(background: QColor) -> QColor:
    """Black or white, whichever reads better on ``background``."""
    r, g, b = background.redF(), background.greenF(), background.blueF()
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return QColor("#111111") if luminance > 0.45 else QColor("#ffffff")


def scaled_font(base: QFont, scale: float = 1.0, *, bold: bool = False) -> QFont:
    """``base`` resized by ``scale`` (relative to the system size, never in pixels)."""
    font = QFont(base)
    if base.pointSizeF() > 0:
        font.setPointSizeF(base.pointSizeF() * scale)
    elif base.pixelSize() > 0:  # a platform that hands out pixel fonts: still scale relatively
        font.setPixelSize(max(1, round(base.pixelSize() * scale)))
    if bold:
        font.setWeight(QFont.Weight.DemiBold)
    return font


def font_points(widget: QWidget, scale: float = 1.0) -> str:
    """The widget's font size times ``scale`` as a CSS size (``"9.9pt"``), for pyqtgraph labels."""
    size = widget.font().pointSizeF()
    if size <= 0:
        size = QApplication.font().pointSizeF() if QApplication.instance() else 9.0
    return f"{size * scale:.1f}pt"


def make_palette(dark: bool) -> QPalette:
    """A complete Fusion palette, dark or light, with the console's neutral greys."""
    if dark:
        window, base, alt, button = "#1e1f23", "#17181b", "#232429", "#2b2c31"
        text, disabled_text, highlight, link = "#e4e4e7", "#71717a", "#3b82f6", "#7cb4ff"
        light, mid, darker, shadow = "#3a3b40", "#2e2f34", "#121316", "#000000"
        tooltip_base, placeholder = "#2b2c31", "#8b8b93"
    else:
        window, base, alt, button = "#f4f4f5", "#ffffff", "#f7f7f8", "#fafafa"
        text, disabled_text, highlight, link = "#18181b", "#a1a1aa", "#2563eb", "#1d4ed8"
        light, mid, darker, shadow = "#ffffff", "#d4d4d8", "#a1a1aa", "#52525b"
        tooltip_base, placeholder = "#ffffff", "#71717a"
    role = QPalette.ColorRole
    group = QPalette.ColorGroup
    palette = QPalette()
    for colour_role, value in (
        (role.Window, window),
        (role.WindowText, text),
        (role.Base, base),
        (role.AlternateBase, alt),
        (role.Text, text),
        (role.Button, button),
        (role.ButtonText, text),
        (role.BrightText, "#ffffff"),
        (role.Highlight, highlight),
        (role.HighlightedText, "#ffffff"),
        (role.Link, link),
        (role.LinkVisited, link),
        (role.ToolTipBase, tooltip_base),
        (role.ToolTipText, text),
        (role.PlaceholderText, placeholder),
        (role.Light, light),
        (role.Midlight, mid),
        (role.Mid, mid),
        (role.Dark, darker),
        (role.Shadow, shadow),
        (role.Accent, highlight),
    ):
        palette.setColor(colour_role, QColor(value))
    for colour_role in (role.WindowText, role.Text, role.ButtonText):
        palette.setColor(group.Disabled, colour_role, QColor(disabled_text))
    return palette


def app_stylesheet(palette: QPalette) -> str:
    """The small application stylesheet: destructive buttons, tooltips, focus rings.

    No font sizes here (they follow the system font); colours come from ``palette`` or are
    palette-independent (the destructive red works on both).
    """
    border = border_color(palette).name()
    return f"""
QToolTip {{
    color: palette(tooltip-text);
    background: palette(tooltip-base);
    border: 1px solid {border};
    padding: 4px;
}}
QPushButton[destructive="true"] {{
    color: {DESTRUCTIVE_FG};
    background: {DESTRUCTIVE_BG};
    border: 1px solid {DESTRUCTIVE_BG_HOVER};
    border-radius: 4px;
    padding: 5px 14px;
    font-weight: 600;
}}
QPushButton[destructive="true"]:hover {{ background: {DESTRUCTIVE_BG_HOVER}; }}
QPushButton[destructive="true"]:disabled {{
    color: palette(placeholder-text);
    background: palette(button);
    border: 1px solid {border};
}}
"""


def toggle_button_qss(palette: QPalette) -> str:
    """A stylesheet for checkable buttons whose checked state is unmistakable (highlight fill).

    Concrete colours from ``palette``: set it on the buttons, and again from their parent's
    palette change (``palette()`` references in a style sheet are frozen when it is applied).
    """
    role = QPalette.ColorRole
    button = palette.color(role.Button)
    text = palette.color(role.ButtonText)
    highlight = palette.color(role.Highlight).name()
    on_highlight = palette.color(role.HighlightedText).name()
    hover = blend(button, text, 0.08).name()
    return (
        f"QPushButton {{ color: {text.name()}; background: {button.name()};"
        f" border: 1px solid {border_color(palette).name()}; border-radius: 4px;"
        " padding: 4px 12px; }"
        f"QPushButton:hover {{ background: {hover}; }}"
        f"QPushButton:checked {{ color: {on_highlight}; background: {highlight};"
        f" border: 1px solid {highlight}; }}"
        f"QPushButton:focus {{ border: 1px solid {highlight}; }}"
    )


def destructive_button_qss(palette: QPalette) -> str:
    """A button stylesheet for actions that stop or change live sending (red, white text).

    Set it on the button itself so it is red with or without the application stylesheet, and
    again when the owner's palette changes (the disabled colours come from ``palette``).
    """
    role = QPalette.ColorRole
    disabled_fg = palette.color(QPalette.ColorGroup.Disabled, role.ButtonText).name()
    focus = palette.color(role.Highlight).name()
    return (
        f"QPushButton {{ color: {DESTRUCTIVE_FG}; background: {DESTRUCTIVE_BG};"
        f" border: 1px solid {DESTRUCTIVE_BG_HOVER}; border-radius: 4px; padding: 5px 14px;"
        " font-weight: 600; }"
        f"QPushButton:hover {{ background: {DESTRUCTIVE_BG_HOVER}; }}"
        f"QPushButton:focus {{ border: 2px solid {focus}; }}"
        f"QPushButton:disabled {{ color: {disabled_fg};"
        f" background: {palette.color(role.Button).name()};"
        f" border: 1px solid {border_color(palette).name()}; }}"
    )


def primary_button_qss(palette: QPalette) -> str:
    """A button stylesheet for the one obvious next step (highlight fill), e.g. in empty states."""
    role = QPalette.ColorRole
    highlight = palette.color(role.Highlight)
    hover = highlight.darker(112).name()
    return (
        f"QPushButton {{ color: {palette.color(role.HighlightedText).name()};"
        f" background: {highlight.name()}; border: 1px solid {hover}; border-radius: 4px;"
        " padding: 6px 16px; font-weight: 600; }"
        f"QPushButton:hover {{ background: {hover}; }}"
        f"QPushButton:focus {{ border: 2px solid {text_color(palette).name()}; }}"
        f"QPushButton:disabled {{ color: {palette.color(role.PlaceholderText).name()};"
        f" background: {palette.color(role.Button).name()};"
        f" border: 1px solid {border_color(palette).name()}; }}"
    )


def apply_theme(app: QApplication, dark: bool | None = None, *, stylesheet: bool = True) -> None:
    """Fusion, a dark or light palette and the stylesheet, following the OS colour scheme.

    ``dark=None`` follows ``QStyleHints.colorScheme()`` and keeps following it when the user
    switches the OS theme; an explicit ``dark`` pins it.

    Any application stylesheet stops palettes set on a widget from reaching its children (Qt
    then polishes every widget with the application palette). That is fine for the console,
    which has one palette; a window mixing palettes (the gallery's light and dark halves) passes
    ``stylesheet=False``. The widgets never depend on the stylesheet.
    """
    fusion = QStyleFactory.create("Fusion")
    if fusion is not None:
        app.setStyle(fusion)

    def apply() -> None:
        scheme = QGuiApplication.styleHints().colorScheme()
        use_dark = dark if dark is not None else scheme == Qt.ColorScheme.Dark
        palette = make_palette(use_dark)
        app.setPalette(palette)
        app.setStyleSheet(app_stylesheet(palette) if stylesheet else "")

    apply()
    if dark is None and not app.property("_cc_theme_follows_os"):
        app.setProperty("_cc_theme_follows_os", True)
        QGuiApplication.styleHints().colorSchemeChanged.connect(lambda _scheme: apply())


def use_palette(widget: QWidget, palette: QPalette) -> None:
    """Give ``widget`` (and by propagation its children) ``palette`` and fill its background."""
    widget.setPalette(palette)
    widget.setAutoFillBackground(True)


__all__ = [
    "DESTRUCTIVE_BG",
    "DESTRUCTIVE_FG",
    "STALE_ICON",
    "STALE_STATUS",
    "STATUS_STYLES",
    "Status",
    "StatusStyle",
    "app_stylesheet",
    "apply_theme",
    "blend",
    "border_color",
    "contrasting_text",
    "destructive_button_qss",
    "font_points",
    "icon",
    "icon_pixmap",
    "is_dark",
    "make_palette",
    "primary_button_qss",
    "scaled_font",
    "secondary_text_color",
    "series_color",
    "status_color",
    "status_icon",
    "status_icon_name",
    "status_style",
    "surface_color",
    "text_color",
    "tint",
    "toggle_button_qss",
    "use_palette",
]


# The events after which a widget drawn from the palette and font must restyle itself.
RESTYLE_EVENTS = frozenset(
    {
        QEvent.Type.PaletteChange,
        QEvent.Type.ApplicationPaletteChange,
        QEvent.Type.FontChange,
        QEvent.Type.ApplicationFontChange,
    }
)


def paint_status_card(
    widget: QWidget, colour: QColor, *, border: QColor, fill: QColor, radius: float
) -> None:
    """A rounded card with a status-coloured stripe down its left edge (banners, toasts)."""
    painter = QPainter(widget)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    rect = QRectF(widget.rect()).adjusted(0.5, 0.5, -0.5, -0.5)
    painter.setPen(QPen(border, 1))
    painter.setBrush(fill)
    painter.drawRoundedRect(rect, radius, radius)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(colour)
    painter.setClipRect(QRectF(rect.left(), rect.top(), 5, rect.height()))
    painter.drawRoundedRect(rect, radius, radius)
    painter.end()
