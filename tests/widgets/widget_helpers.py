"""Helpers for widget tests: themed frames (light and dark) and checked screenshots.

A plain module, not conftest.py: ``from conftest import`` would pick whichever conftest was
imported last when the whole suite runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QLayout, QVBoxLayout, QWidget
from pytestqt.qtbot import QtBot

from tests.screens import screenshot_dir
from widgets import theme

SCREENSHOTS = screenshot_dir("widgets")
NOW = 1_750_000_000.0  # a fixed "now" (2025-06-15) so tests never depend on the wall clock


def themed_frame(qtbot: QtBot, widget: QWidget, dark: bool, width: int, height: int) -> QWidget:
    """Put ``widget`` in a shown frame with the dark or light palette, sized ``width`` x ``height``.

    Keep the returned frame referenced: qtbot only holds it weakly, and Python owns it.
    """
    frame = QWidget()
    qtbot.addWidget(frame)
    theme.use_palette(frame, theme.make_palette(dark))
    layout = QVBoxLayout(frame)
    layout.setContentsMargins(12, 12, 12, 12)
    # The offscreen platform warns when a window's minimum size changes after it is shown
    # ("does not support propagateSizeHints"); the frame's size is fixed here anyway.
    layout.setSizeConstraint(QLayout.SizeConstraint.SetNoConstraint)
    layout.addWidget(widget)
    frame.resize(width, height)
    frame.show()
    qtbot.waitExposed(frame)
    return frame


def distinct_colours(image: QImage) -> int:
    """How many different colours ``image`` holds (a blank or single-colour grab has 1-2)."""
    rgb = image.convertToFormat(QImage.Format.Format_RGB32)
    data = np.frombuffer(rgb.constBits(), dtype=np.uint32, count=rgb.width() * rgb.height())
    return int(np.unique(data).size)


def save_screenshot(widget: QWidget, name: str, min_colours: int = 40) -> Path:
    """Grab ``widget`` into docs/screenshots/widgets/``name``.png and check it is not blank."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    pixmap = widget.grab()
    assert pixmap.save(str(path)), f"could not write {path}"
    colours = distinct_colours(pixmap.toImage())
    assert colours > min_colours, f"{name}: only {colours} colours, the widget looks blank"
    return path
