"""The status vocabulary, palette-aware colours and relative fonts."""

from __future__ import annotations

import sys

import pytest
import qtawesome as qta
from PySide6.QtGui import QColor, QFont, QPalette

from widgets import theme
from widgets.theme import STATUS_STYLES, Status


def _luminance(colour: QColor) -> float:
    def channel(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    return (
        0.2126 * channel(colour.redF())
        + 0.7152 * channel(colour.greenF())
        + 0.0722 * channel(colour.blueF())
    )


def contrast(a: QColor, b: QColor) -> float:
    """The WCAG contrast ratio of two colours."""
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_vocabulary_is_complete() -> None:
    assert [s.value for s in Status] == [
        "healthy",
        "degraded",
        "failing",
        "paused",
        "draining",
        "unknown",
    ]
    assert set(STATUS_STYLES) == set(Status)


def test_parse_never_raises() -> None:
    assert Status.parse("Healthy ") is Status.HEALTHY
    assert Status.parse(Status.PAUSED) is Status.PAUSED
    assert Status.parse("warning") is Status.DEGRADED
    assert Status.parse("quantum-flux") is Status.UNKNOWN
    assert Status.parse("") is Status.UNKNOWN
    assert Status.parse(None) is Status.UNKNOWN


@pytest.mark.parametrize("dark", [False, True])
def test_one_distinct_readable_colour_per_status(qapp: object, dark: bool) -> None:
    palette = theme.make_palette(dark)
    window = palette.color(QPalette.ColorRole.Window)
    surface = theme.surface_color(palette)
    colours = {s: theme.status_color(s, palette).name() for s in Status}
    assert len(set(colours.values())) == len(Status)
    for status in Status:
        colour = theme.status_color(status, palette)
        assert contrast(colour, window) >= 4.5, (status, colour.name(), dark)
        assert contrast(colour, surface) >= 4.0, (status, colour.name(), dark)


def test_every_status_has_an_icon_and_a_word(qapp: object) -> None:
    icons = {theme.status_icon_name(s) for s in Status}
    assert len(icons) == len(Status)  # shapes differ too, not only colours
    for status in Status:
        assert not qta.icon(theme.status_icon_name(status)).isNull()
        assert theme.status_style(status).word == status.value


def test_is_dark(qapp: object) -> None:
    assert theme.is_dark(theme.make_palette(True))
    assert not theme.is_dark(theme.make_palette(False))


def test_text_colours_read_on_both_palettes(qapp: object) -> None:
    for dark in (False, True):
        palette = theme.make_palette(dark)
        window = palette.color(QPalette.ColorRole.Window)
        assert contrast(theme.text_color(palette), window) >= 7
        assert contrast(theme.secondary_text_color(palette), window) >= 4.5
        for i in range(6):
            assert contrast(theme.series_color(i, palette), theme.surface_color(palette)) >= 3


def test_fonts_scale_relatively(qapp: object) -> None:
    base = QFont("DejaVu Sans")
    base.setPointSizeF(10)
    assert theme.scaled_font(base, 2.0).pointSizeF() == pytest.approx(20)
    base.setPointSizeF(14)  # a user with a larger system font gets larger tiles
    assert theme.scaled_font(base, 2.0).pointSizeF() == pytest.approx(28)
    assert theme.scaled_font(base, 1.0, bold=True).weight() > base.weight()


def test_stylesheets_have_no_pixel_font_sizes(qapp: object) -> None:
    for dark in (False, True):
        palette = theme.make_palette(dark)
        for qss in (
            theme.app_stylesheet(palette),
            theme.destructive_button_qss(palette),
            theme.primary_button_qss(palette),
            theme.toggle_button_qss(palette),
        ):
            assert "font-size" not in qss


def test_pyside_keeps_none_and_true_alive(qapp: object) -> None:
    """PySide6 6.12.0's abi3 wheels dropped a reference to None/True on every void call and
    signal emit, aborting CPython 3.11; the pinned version must not (pyproject.toml)."""
    from PySide6.QtCore import QObject, Signal
    from PySide6.QtWidgets import QLabel

    class Emitter(QObject):
        fired = Signal(int)

    label, emitter = QLabel(), Emitter()
    none_before, true_before = sys.getrefcount(None), sys.getrefcount(True)
    for _ in range(2000):
        label.setText("x")
        emitter.fired.emit(1)
    assert sys.getrefcount(None) - none_before > -50
    assert sys.getrefcount(True) - true_before > -50
