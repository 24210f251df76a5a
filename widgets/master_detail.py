"""A list beside the detail of its selection, or a teaching empty state in place of both.

The Audit, Dead letters and Inbox pages share this shape (Mailpit's inbox, Postmark's activity
feed): a master table on the left, on the right either "select something" or the selected
item's detail, and, when there is nothing to list at all (or the filters hide everything), an
empty state that says what will be there and how to get it.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QSplitter, QStackedWidget, QWidget

from widgets.empty_state import EmptyState


class MasterDetail(QStackedWidget):
    """``master`` beside ``detail`` (or ``pick`` while nothing is selected); ``empty`` and
    ``no_match`` take the whole area when there is nothing to list.

    It is the stacked widget of those states: ``setCurrentWidget(splitter)`` still works, and
    ``show_list()``/``show_empty()``/``show_no_match()`` say it in words; ``show_detail()``
    and ``show_pick()`` switch the right-hand side.

    Signals: those of QStackedWidget.
    """

    def __init__(
        self,
        master: QWidget,
        detail: QWidget,
        *,
        pick: EmptyState,
        empty: EmptyState,
        no_match: EmptyState | None = None,
        stretch: tuple[int, int] = (3, 2),
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.master = master
        self.detail = detail
        self.pick = pick
        self.empty = empty
        self.no_match = no_match
        self.side = QStackedWidget()
        self.side.addWidget(pick)
        self.side.addWidget(detail)
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(master)
        self.splitter.addWidget(self.side)
        self.splitter.setStretchFactor(0, stretch[0])
        self.splitter.setStretchFactor(1, stretch[1])
        self.splitter.setChildrenCollapsible(False)
        for widget in (empty, no_match, self.splitter):
            if widget is not None:
                self.addWidget(widget)

    def show_list(self) -> None:
        self.setCurrentWidget(self.splitter)

    def show_empty(self) -> None:
        self.setCurrentWidget(self.empty)

    def show_no_match(self) -> None:
        self.setCurrentWidget(self.no_match if self.no_match is not None else self.empty)

    def show_detail(self) -> None:
        self.side.setCurrentWidget(self.detail)

    def show_pick(self) -> None:
        self.side.setCurrentWidget(self.pick)
