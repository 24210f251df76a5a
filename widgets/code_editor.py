"""A code editor for email templates: line numbers, markers, completion, find and replace.

``CodeEditor`` is a ``QPlainTextEdit`` with a line-number gutter (lint findings drawn as a
coloured mark beside their line, the message as the tooltip), the current line tinted,
highlighting (``TemplateHighlighter``), and completion of template variables with a
``QCompleter``: typing inside ``{{ … }}`` or ``{% … %}`` offers the names given to
``set_completions`` (``contact.first_name``, ``properties.products``, filters …); Ctrl+Space
asks at any time. ``FindBar`` is the find/replace strip (Ctrl+F, Ctrl+H; Enter and Shift+Enter
for next and previous; Esc closes it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from PySide6.QtCore import QEvent, QRect, QSize, QStringListModel, Qt, Signal
from PySide6.QtGui import (
    QFontDatabase,
    QKeyEvent,
    QKeySequence,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QResizeEvent,
    QShortcut,
    QTextCharFormat,
    QTextCursor,
    QTextDocument,
    QTextFormat,
)
from PySide6.QtWidgets import (
    QCompleter,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QTextEdit,
    QToolButton,
    QToolTip,
    QWidget,
)

from widgets import theme
from widgets.template_highlighter import TemplateHighlighter

_WORD = re.compile(r"[\w.\[\]]*$")
_OPEN = ("{{", "{%")
_CLOSE = ("}}", "%}")


class _Gutter(QWidget):
    """The line-number area; paints through its editor."""

    def __init__(self, editor: CodeEditor) -> None:
        super().__init__(editor)
        self.editor = editor
        self.setMouseTracking(True)

    def sizeHint(self) -> QSize:
        return QSize(self.editor.gutter_width(), 0)

    def paintEvent(self, event: QPaintEvent) -> None:
        self.editor.paint_gutter(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # the finding under the pointer
        pos = event.position().toPoint()
        line = self.editor.line_at(pos.y())
        marker = self.editor.markers.get(line)
        if marker:
            QToolTip.showText(self.mapToGlobal(pos), marker[1], self)
        else:
            QToolTip.hideText()


class CodeEditor(QPlainTextEdit):
    """The template source editor (see the module docstring).

    Signals:
        completion_inserted(str): a completion was accepted.
    """

    completion_inserted = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        font = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
        font.setPointSizeF(max(font.pointSizeF(), self.font().pointSizeF()))
        self.setFont(font)
        self.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.setTabStopDistance(self.fontMetrics().horizontalAdvance(" ") * 2)
        self.markers: dict[int, tuple[str, str]] = {}  # line -> (severity, message)
        self.gutter = _Gutter(self)
        self.highlighter = TemplateHighlighter(self.document(), self.palette())
        self.blockCountChanged.connect(self._update_gutter_width)
        self.updateRequest.connect(self._update_gutter)
        self.cursorPositionChanged.connect(self._highlight_current_line)
        self._update_gutter_width()
        self._highlight_current_line()

        self._completions = QStringListModel(self)
        self.completer = QCompleter(self._completions, self)
        self.completer.setWidget(self)
        self.completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.completer.setFilterMode(Qt.MatchFlag.MatchContains)
        self.completer.setCompletionMode(QCompleter.CompletionMode.PopupCompletion)
        self.completer.activated.connect(self.insert_completion)

    # ---------------------------------------------------------------- gutter

    def gutter_width(self) -> int:
        digits = len(str(max(1, self.blockCount())))
        return 14 + self.fontMetrics().horizontalAdvance("9") * max(3, digits)

    def _update_gutter_width(self, _count: int = 0) -> None:
        self.setViewportMargins(self.gutter_width(), 0, 0, 0)

    def _update_gutter(self, rect: QRect, dy: int) -> None:
        if dy:
            self.gutter.scroll(0, dy)
        else:
            self.gutter.update(0, rect.y(), self.gutter.width(), rect.height())

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        rect = self.contentsRect()
        self.gutter.setGeometry(QRect(rect.left(), rect.top(), self.gutter_width(), rect.height()))

    def line_at(self, y: int) -> int:
        """The 1-based line shown at gutter height ``y`` (0 if none)."""
        block = self.firstVisibleBlock()
        top = round(self.blockBoundingGeometry(block).translated(self.contentOffset()).top())
        while block.isValid():
            bottom = top + round(self.blockBoundingRect(block).height())
            if top <= y < bottom:
                return block.blockNumber() + 1
            block = block.next()
            top = bottom
        return 0

    def paint_gutter(self, event: QPaintEvent) -> None:
        palette = self.palette()
        painter = QPainter(self.gutter)
        painter.fillRect(event.rect(), theme.surface_color(palette))
        block = self.firstVisibleBlock()
        top = round(self.blockBoundingGeometry(block).translated(self.contentOffset()).top())
        height = self.fontMetrics().height()
        current = self.textCursor().blockNumber()
        while block.isValid() and top <= event.rect().bottom():
            bottom = top + round(self.blockBoundingRect(block).height())
            if block.isVisible() and bottom >= event.rect().top():
                line = block.blockNumber() + 1
                marker = self.markers.get(line)
                if marker is not None:
                    status = theme.Status.FAILING if marker[0] == "error" else theme.Status.DEGRADED
                    painter.fillRect(0, top, 4, height, theme.status_color(status, palette))
                    painter.fillRect(
                        4, top, self.gutter.width() - 4, height, theme.tint(status, palette, 0.22)
                    )
                color = (
                    theme.text_color(palette)
                    if block.blockNumber() == current
                    else theme.secondary_text_color(palette)
                )
                painter.setPen(color)
                painter.drawText(
                    0, top, self.gutter.width() - 6, height, Qt.AlignmentFlag.AlignRight, str(line)
                )
            block = block.next()
            top = bottom
        painter.end()

    def set_markers(self, markers: dict[int, tuple[str, str]]) -> None:
        """Mark lines: ``{line: (severity "error"|"warning", message)}`` (1-based)."""
        self.markers = dict(markers)
        self.gutter.update()
        self._highlight_current_line()

    def _highlight_current_line(self) -> None:
        palette = self.palette()
        selections = []
        current = QTextEdit.ExtraSelection()
        base, accent = palette.base().color(), palette.highlight().color()
        current.format.setBackground(theme.blend(base, accent, 0.08))
        current.format.setProperty(QTextFormat.Property.FullWidthSelection, True)
        current.cursor = self.textCursor()
        current.cursor.clearSelection()
        selections.append(current)
        for line, (severity, _message) in self.markers.items():
            block = self.document().findBlockByNumber(line - 1)
            if not block.isValid():
                continue
            mark = QTextEdit.ExtraSelection()
            status = theme.Status.FAILING if severity == "error" else theme.Status.DEGRADED
            mark.format.setUnderlineStyle(QTextCharFormat.UnderlineStyle.WaveUnderline)
            mark.format.setUnderlineColor(theme.status_color(status, palette))
            mark.cursor = QTextCursor(block)
            mark.cursor.movePosition(
                QTextCursor.MoveOperation.EndOfBlock, QTextCursor.MoveMode.KeepAnchor
            )
            selections.append(mark)
        self.setExtraSelections(selections)
        self.gutter.update()

    def go_to_line(self, line: int) -> None:
        """Put the cursor at the start of ``line`` (1-based) and show it."""
        block = self.document().findBlockByNumber(max(0, line - 1))
        if block.isValid():
            cursor = QTextCursor(block)
            self.setTextCursor(cursor)
            self.centerCursor()
            self.setFocus()

    # ---------------------------------------------------------------- completion

    def set_completions(self, words: Iterable[str]) -> None:
        """The names completion offers (sorted, duplicates dropped)."""
        self._completions.setStringList(sorted(set(words)))

    def completions(self) -> list[str]:
        return list(self._completions.stringList())

    def _prefix(self) -> str | None:
        """The word being typed, when the cursor is inside ``{{ … }}`` or ``{% … %}``."""
        cursor = self.textCursor()
        line = cursor.block().text()[: cursor.positionInBlock()]
        opened = max(line.rfind(mark) for mark in _OPEN)
        closed = max(line.rfind(mark) for mark in _CLOSE)
        if opened < 0 or closed > opened:
            return None
        m = _WORD.search(line)
        return m.group() if m else ""

    def insert_completion(self, completion: str) -> None:
        cursor = self.textCursor()
        prefix = self.completer.completionPrefix()
        cursor.movePosition(
            QTextCursor.MoveOperation.Left, QTextCursor.MoveMode.KeepAnchor, len(prefix)
        )
        cursor.insertText(completion)
        self.setTextCursor(cursor)
        self.completion_inserted.emit(completion)

    def show_completions(self, prefix: str) -> None:
        """Offer the completions containing ``prefix`` under the cursor."""
        self.completer.setCompletionPrefix(prefix)
        if self.completer.completionCount() == 0:
            self.completer.popup().hide()
            return
        self.completer.popup().setCurrentIndex(self.completer.completionModel().index(0, 0))
        rect = self.cursorRect()
        rect.setWidth(
            self.completer.popup().sizeHintForColumn(0)
            + self.completer.popup().verticalScrollBar().sizeHint().width()
            + 16
        )
        self.completer.complete(rect)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        popup = self.completer.popup()
        if popup.isVisible() and event.key() in (
            Qt.Key.Key_Enter,
            Qt.Key.Key_Return,
            Qt.Key.Key_Escape,
            Qt.Key.Key_Tab,
            Qt.Key.Key_Backtab,
        ):
            event.ignore()  # the completer's popup takes these
            return
        forced = (
            event.key() == Qt.Key.Key_Space
            and event.modifiers() & Qt.KeyboardModifier.ControlModifier
        )
        if not forced:
            super().keyPressEvent(event)
        prefix = self._prefix()
        if prefix is None:
            popup.hide()
            return
        typed = event.text()
        if forced or (typed and (len(prefix) >= 2 or typed == ".")):
            self.show_completions(prefix)
        elif not typed or len(prefix) < 2:
            popup.hide()

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange:
            self.highlighter.set_palette(self.palette())


class FindBar(QWidget):
    """Find and replace in a ``CodeEditor``: Ctrl+F finds, Ctrl+H replaces, Esc closes.

    Signals: none.
    """

    def __init__(self, editor: CodeEditor, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.editor = editor
        self.find = QLineEdit()
        self.find.setPlaceholderText("Find")
        self.find.setClearButtonEnabled(True)
        self.replace = QLineEdit()
        self.replace.setPlaceholderText("Replace with")
        self.case = QToolButton()
        self.case.setText("Aa")
        self.case.setCheckable(True)
        self.case.setToolTip("Match case")
        self.count = QLabel("")
        buttons = []
        for text, tip, slot in (
            ("\u2191", "Previous match (Shift+Enter)", self.find_previous),
            ("\u2193", "Next match (Enter)", self.find_next),
            ("Replace", "Replace this match and find the next", self.replace_one),
            ("All", "Replace every match", self.replace_all),
            ("\u2715", "Close (Esc)", self.close_bar),
        ):
            button = QToolButton()
            button.setText(text)
            button.setToolTip(tip)
            button.clicked.connect(slot)
            buttons.append(button)
        self.replace_buttons = buttons[2:4]
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 2, 0, 2)
        layout.addWidget(self.find, 2)
        layout.addWidget(self.case)
        layout.addWidget(buttons[0])
        layout.addWidget(buttons[1])
        layout.addWidget(self.count)
        layout.addWidget(self.replace, 2)
        layout.addWidget(buttons[2])
        layout.addWidget(buttons[3])
        layout.addWidget(buttons[4])
        self.find.textChanged.connect(self._update_count)
        self.find.returnPressed.connect(self.find_next)
        self.replace.returnPressed.connect(self.replace_one)
        for keys, slot in (
            (QKeySequence.StandardKey.Find, self.open_find),
            (QKeySequence.StandardKey.Replace, self.open_replace),
            ("Ctrl+H", self.open_replace),
        ):
            shortcut = QShortcut(QKeySequence(keys), editor)
            shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            shortcut.activated.connect(slot)
        close = QShortcut(QKeySequence("Escape"), self)
        close.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        close.activated.connect(self.close_bar)
        previous = QShortcut(QKeySequence("Shift+Return"), self.find)
        previous.setContext(Qt.ShortcutContext.WidgetShortcut)
        previous.activated.connect(self.find_previous)
        self.setVisible(False)

    def _flags(self, backward: bool = False) -> QTextDocument.FindFlag:
        flags = QTextDocument.FindFlag(0)
        if self.case.isChecked():
            flags |= QTextDocument.FindFlag.FindCaseSensitively
        if backward:
            flags |= QTextDocument.FindFlag.FindBackward
        return flags

    def open_find(self) -> None:
        self._open(replace=False)

    def open_replace(self) -> None:
        self._open(replace=True)

    def _open(self, *, replace: bool) -> None:
        self.setVisible(True)
        self.replace.setVisible(replace)
        for button in self.replace_buttons:
            button.setVisible(replace)
        selected = self.editor.textCursor().selectedText()
        if selected and "\u2029" not in selected:
            self.find.setText(selected)
        self.find.setFocus()
        self.find.selectAll()

    def close_bar(self) -> None:
        self.setVisible(False)
        self.editor.setFocus()

    def matches(self) -> int:
        """How many times the search text occurs."""
        text = self.find.text()
        if not text:
            return 0
        document = self.editor.toPlainText()
        if self.case.isChecked():
            return document.count(text)
        return document.lower().count(text.lower())

    def _update_count(self) -> None:
        n = self.matches()
        self.count.setText(f"{n:,} match{'es' if n != 1 else ''}" if self.find.text() else "")

    def find_next(self, backward: bool = False) -> bool:
        """Select the next (or previous) match, wrapping around; False when there is none."""
        text = self.find.text()
        if not text:
            return False
        if self.editor.find(text, self._flags(backward)):
            return True
        cursor = self.editor.textCursor()
        cursor.movePosition(
            QTextCursor.MoveOperation.End if backward else QTextCursor.MoveOperation.Start
        )
        self.editor.setTextCursor(cursor)
        return self.editor.find(text, self._flags(backward))

    def find_previous(self) -> bool:
        return self.find_next(backward=True)

    def _selection_matches(self) -> bool:
        selected = self.editor.textCursor().selectedText()
        text = self.find.text()
        if self.case.isChecked():
            return selected == text
        return selected.lower() == text.lower()

    def replace_one(self) -> None:
        """Replace the selected match (finding one first when none is selected)."""
        if not self.find.text():
            return
        if not self._selection_matches() and not self.find_next():
            return
        self.editor.textCursor().insertText(self.replace.text())
        self.find_next()
        self._update_count()

    def replace_all(self) -> int:
        """Replace every match in one undo step; returns how many."""
        text = self.find.text()
        if not text:
            return 0
        count = 0
        cursor = self.editor.textCursor()
        cursor.beginEditBlock()
        found = self.editor.document().find(text, 0, self._flags())
        while not found.isNull():
            found.insertText(self.replace.text())
            count += 1
            found = self.editor.document().find(text, found, self._flags())
        cursor.endEditBlock()
        self._update_count()
        return count
