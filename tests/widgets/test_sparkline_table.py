"""SparklineTableModel/View: in-place updates, numeric sort, activation by key."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QModelIndex, Qt
from pytestqt.qtbot import QtBot

from widgets.sparkline_table import (
    KEY_ROLE,
    SORT_ROLE,
    SPARKLINE_ROLE,
    SparklineTableModel,
    SparklineTableView,
)

ROWS = [
    {"name": "Abandoned cart", "triggered": 12408, "sent": 11539, "p99": 0.182, "trend": [1, 2, 3]},
    {"name": "Price drop", "triggered": 884, "sent": 822, "p99": 0.061, "trend": [3, 2, 1]},
    {"name": "Welcome series", "triggered": 3120, "sent": 2901, "p99": None, "trend": []},
]


def _model() -> SparklineTableModel:
    model = SparklineTableModel()
    model.set_rows(ROWS)
    return model


def test_display_sort_and_sparkline_roles() -> None:
    model = _model()
    assert model.rowCount() == 3
    assert model.columnCount() == 7
    assert model.headerData(0, Qt.Orientation.Horizontal) == "Workflow"
    index = model.index(0, 1)
    assert index.data() == "12,408"
    assert index.data(SORT_ROLE) == 12408
    assert model.index(0, 5).data() == "182 ms"
    assert model.index(2, 5).data() == "\u2014"
    trend = model.index(0, 6).data(SPARKLINE_ROLE)
    assert isinstance(trend, np.ndarray) and trend.tolist() == [1.0, 2.0, 3.0]
    assert model.index(0, 6).data(Qt.ItemDataRole.ToolTipRole) == "latest 3, min 1, max 3"
    assert model.index(1, 0).data(KEY_ROLE) == "Price drop"
    right = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    assert model.index(0, 1).data(Qt.ItemDataRole.TextAlignmentRole) == right


def test_updates_in_place_without_reset(qtbot: QtBot) -> None:
    model = _model()
    resets: list[bool] = []
    model.modelReset.connect(lambda: resets.append(True))
    with qtbot.waitSignal(model.dataChanged, timeout=1000) as blocker:
        model.update_row({"name": "Price drop", "triggered": 900})
    top_left: QModelIndex = blocker.args[0]
    assert top_left.row() == 1
    assert model.index(1, 1).data() == "900"
    assert model.index(1, 2).data() == "822"  # other fields kept
    model.set_rows(ROWS[:2])
    assert model.rowCount() == 2
    assert model.row_for_key("Welcome series") is None
    assert resets == []


def test_view_sorts_numerically_and_keeps_selection(qtbot: QtBot) -> None:
    model = _model()
    view = SparklineTableView(model)
    qtbot.addWidget(view)
    view.sortByColumn(1, Qt.SortOrder.DescendingOrder)
    names = [view.model().index(r, 0).data() for r in range(3)]
    assert names == ["Abandoned cart", "Welcome series", "Price drop"]  # not "884" > "12,408"
    view.selectRow(2)
    assert view.selected_key() == "Price drop"
    model.update_row({"name": "Price drop", "triggered": 100})
    assert view.selected_key() == "Price drop"


def test_double_click_and_enter_activate_the_row(qtbot: QtBot) -> None:
    view = SparklineTableView(_model())
    qtbot.addWidget(view)
    view.resize(700, 200)
    view.show()
    qtbot.waitExposed(view)
    index = view.model().index(1, 0)
    rect = view.visualRect(index)
    with qtbot.waitSignal(view.row_activated, timeout=1000) as blocker:
        # A real double-click: press-release, then the double-click event.
        qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
        qtbot.mouseDClick(view.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert blocker.args == [index.data(KEY_ROLE)]
    view.setCurrentIndex(view.model().index(0, 0))
    with qtbot.waitSignal(view.row_activated, timeout=1000) as blocker:
        qtbot.keyClick(view, Qt.Key.Key_Return)
    assert blocker.args == [view.model().index(0, 0).data(KEY_ROLE)]


def test_unchanged_rows_emit_no_data_changed() -> None:
    model = _model()
    changed: list[int] = []
    model.dataChanged.connect(lambda top, _bottom, _roles=(): changed.append(top.row()))
    same = [dict(r, trend=np.array(r["trend"], dtype=np.float64)) for r in ROWS]
    model.set_rows(same)  # the same numbers (sparklines as arrays): nothing to repaint
    assert changed == []
    model.set_rows([dict(ROWS[0], sent=11540), *ROWS[1:]])
    assert changed == [0]
    nan_trend = dict(ROWS[1], trend=np.array([np.nan, 1.0]))
    model.update_row(nan_trend)
    changed.clear()
    model.update_row(dict(nan_trend, trend=np.array([np.nan, 1.0])))  # NaN equals NaN here
    assert changed == []
