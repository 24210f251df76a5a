"""The template code editor: highlighting, line numbers and markers, completion, find/replace."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QTextCursor
from pytestqt.qtbot import QtBot

from tests.widgets.widget_helpers import save_screenshot, themed_frame
from widgets.code_editor import CodeEditor, FindBar
from widgets.template_highlighter import TemplateHighlighter

SOURCE = """<mjml>
  <mj-body>
    <!-- the greeting -->
    <mj-text font-size="16px">
      {% if contact.first_name %}Hi {{ contact.first_name | title }},{% endif %}
      {# a note
         over two lines #}
      <a href="{{ unsubscribe_url }}">Unsubscribe</a> &nbsp; {{ shop.address }}
    </mj-text>
  </mj-body>
</mjml>"""


def colour_at(editor: CodeEditor, line: int, column: int) -> QColor:
    """The foreground the highlighter gave the character at (line, column), 1-based line."""
    block = editor.document().findBlockByNumber(line - 1)
    for fmt in block.layout().formats():
        if fmt.start <= column < fmt.start + fmt.length:
            return fmt.format.foreground().color()
    return QColor()


def test_html_and_jinja_are_highlighted_apart(qtbot: QtBot) -> None:
    editor = CodeEditor()
    qtbot.addWidget(editor)
    editor.setPlainText(SOURCE)
    highlighter = editor.highlighter
    assert isinstance(highlighter, TemplateHighlighter)
    tag = highlighter.formats["tag"].foreground().color()
    jinja = highlighter.formats["jinja"].foreground().color()
    keyword = highlighter.formats["keyword"].foreground().color()
    comment = highlighter.formats["comment"].foreground().color()
    string = highlighter.formats["string"].foreground().color()
    assert len({tag.name(), jinja.name(), keyword.name(), comment.name(), string.name()}) == 5
    assert colour_at(editor, 1, 1) == tag  # <mjml
    assert colour_at(editor, 3, 6) == comment  # <!-- ... -->
    assert colour_at(editor, 4, 24) == string  # "16px"
    line5 = SOURCE.splitlines()[4]
    assert colour_at(editor, 5, line5.index("if")) == keyword
    assert colour_at(editor, 5, line5.index("{{ contact") + 3) == jinja
    # A Jinja comment over two lines stays a comment on the second line.
    assert colour_at(editor, 7, 10) == comment
    # A Jinja expression inside an attribute value is Jinja, not a string.
    line8 = SOURCE.splitlines()[7]
    assert colour_at(editor, 8, line8.index("unsubscribe_url")) == jinja


def test_gutter_numbers_lines_and_marks_findings(qtbot: QtBot) -> None:
    editor = CodeEditor()
    frame = themed_frame(qtbot, editor, dark=False, width=720, height=320)
    editor.setPlainText(SOURCE)
    width = editor.gutter_width()
    editor.setPlainText("\n" * 1200)
    assert editor.gutter_width() > width  # four digits need more room than three
    editor.setPlainText(SOURCE)
    editor.set_markers({5: ("error", "'contcat' is not defined"), 8: ("warning", "no alt")})
    assert editor.markers[5][0] == "error"
    underlined = [s for s in editor.extraSelections() if s.format.underlineColor().isValid()]
    assert {s.cursor.blockNumber() + 1 for s in underlined} == {5, 8}
    editor.go_to_line(8)
    assert editor.textCursor().blockNumber() == 7
    assert editor.line_at(editor.cursorRect().center().y()) == 8
    save_screenshot(frame, "code-editor")


# The completer's popup is a window of its own: the offscreen platform cannot raise it.
@pytest.mark.qt_log_ignore(r"^This plugin does not support (raise|grabbing)")
def test_completion_offers_variables_inside_jinja_only(qtbot: QtBot) -> None:
    editor = CodeEditor()
    qtbot.addWidget(editor)
    editor.show()
    qtbot.waitExposed(editor)
    editor.set_completions(["contact.first_name", "contact.email", "properties.price", "money"])
    editor.setPlainText("<p>Hi contact")
    editor.moveCursor(QTextCursor.MoveOperation.End)
    qtbot.keyClicks(editor, ".f")  # outside {{ }}: no popup
    assert not editor.completer.popup().isVisible()
    editor.setPlainText("<p>{{ ")
    editor.moveCursor(QTextCursor.MoveOperation.End)
    qtbot.keyClicks(editor, "contact.fi")
    assert editor.completer.popup().isVisible()
    assert editor.completer.completionCount() == 1
    qtbot.keyClick(editor.completer.popup(), Qt.Key.Key_Return)
    assert editor.toPlainText() == "<p>{{ contact.first_name"
    assert not editor.completer.popup().isVisible()
    # Ctrl+Space asks at any point inside a tag.
    editor.setPlainText("{{ x }} {{ ")
    editor.moveCursor(QTextCursor.MoveOperation.End)
    qtbot.keyClick(editor, Qt.Key.Key_Space, Qt.KeyboardModifier.ControlModifier)
    assert editor.completer.popup().isVisible()
    assert editor.completer.completionCount() == 4


def test_find_and_replace(qtbot: QtBot) -> None:
    editor = CodeEditor()
    bar = FindBar(editor)
    frame = themed_frame(qtbot, editor, dark=True, width=720, height=300)
    frame.layout().addWidget(bar)
    editor.setPlainText("Hi {{ name }}\nBye {{ Name }}\n{{ name }}")
    bar.open_replace()
    assert bar.isVisible() and bar.replace.isVisible()
    bar.find.setText("name")
    assert bar.count.text() == "3 matches"
    bar.case.setChecked(True)
    bar.find.setText("name ")
    assert bar.matches() == 2
    assert bar.find_next()
    assert editor.textCursor().selectedText() == "name "
    bar.replace.setText("who ")
    bar.replace_one()
    assert editor.toPlainText().startswith("Hi {{ who }}")
    bar.case.setChecked(False)
    assert bar.replace_all() == 2
    assert editor.toPlainText() == "Hi {{ who }}\nBye {{ who }}\n{{ who }}"
    editor.undo()  # one step undoes the whole replace-all
    assert editor.toPlainText() == "Hi {{ who }}\nBye {{ Name }}\n{{ name }}"
    assert bar.find_previous()
    bar.close_bar()
    assert not bar.isVisible()
