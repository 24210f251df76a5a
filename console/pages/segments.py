"""The Segments page: build a segment as a rule tree or as text, see who is in it as you edit.

Layout (UI.md): the rule tree on the left with the text form below it; the live count, sample
members and membership over time on the right.

- The tree and the text are two views of one condition: editing the tree rewrites the text
  (the engine's canonical form), editing the text redraws the tree after a short pause; a
  mistake in the text is shown with its line and column and the tree keeps its last good state.
- A short pause after any good edit, the engine evaluates the draft over the stored contacts
  without saving it (``segments.preview``): the member count, whether every contact was looked
  at (it is bounded, and says so), and a few sample members.
- Save stores a new version (``segments.save``) and follows the build over the stored contacts
  with a progress bar (``segments.build_status``); membership over the last day is drawn from
  ``segments.history``.
- "Dry run..." replays the recorded events against the draft (console/pages/dry_run.py): who
  would enter it, when, and at which domains, without saving anything.
- Completion of trait names, event names and event properties comes from the stream
  (``templates.fields``).
"""

from __future__ import annotations

import html
import time
from typing import Any

import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QColor, QFontDatabase, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTextEdit,
    QVBoxLayout,
    QWidget,
)

from console.client import EngineClient
from console.errors import describe
from console.operations import show_message
from console.pages.dry_run import DryRunDialog
from console.pages.requests import KeyedRequests
from console.pages.segment_tree import RuleTree
from engine.segments.model import SEGMENT_ID, Condition, SegmentInvalid
from engine.segments.text import format_condition, parse_condition
from widgets import theme
from widgets.format import format_count

TEXT_DELAY_MS = 350
"""Pause after the last keystroke in the text form before the tree is redrawn."""
COUNT_DELAY_MS = 600
"""Pause after the last good edit before the draft is counted."""
BUILD_POLL_MS = 400
NEW = ""
STARTER = 'trait plan = "pro" and subscribed to marketing'


def position_of(message: str, text: str) -> int | None:
    """The character offset a ``line L, col C:`` message points at, if any."""
    if not message.startswith("line "):
        return None
    try:
        where = message.split(":", 1)[0]
        line = int(where.split(",")[0].split()[1])
        col = int(where.split("col")[1])
    except (IndexError, ValueError):
        return None
    lines = text.split("\n")
    if not 1 <= line <= len(lines):
        return None
    return sum(len(x) + 1 for x in lines[: line - 1]) + min(col - 1, len(lines[line - 1]))


class SegmentsPage(QWidget):
    """The segment builder (see the module docstring). Built with ``SegmentsPage(client)``.

    Signals: none of its own.
    """

    def __init__(self, client: EngineClient, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.client = client
        self.requests = KeyedRequests(self, client)
        self.segments: list[dict[str, Any]] = []
        self.current: dict[str, Any] | None = None  # the saved segment loaded (None: new)
        self.last_preview: dict[str, Any] | None = None
        self.last_build: dict[str, Any] | None = None
        self.history: dict[str, Any] | None = None
        self.text_error: str | None = None
        self.fields: dict[str, Any] = {}
        self._writing = False  # the text form is being rewritten from the tree

        # -- header ---------------------------------------------------------------------------
        title = QLabel("Segments")
        title.setFont(theme.scaled_font(self.font(), 1.5, bold=True))
        self.chooser = QComboBox()
        self.chooser.setMinimumWidth(self.fontMetrics().averageCharWidth() * 34)
        self.chooser.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.chooser.activated.connect(self._chosen)
        self.sid = QLineEdit()
        self.sid.setPlaceholderText("id, e.g. cart-abandoners")
        self.name = QLineEdit()
        self.name.setPlaceholderText("Name people read")
        self.save_button = QPushButton("Save and build")
        self.save_button.setShortcut("Ctrl+S")
        self.save_button.setStyleSheet(theme.primary_button_qss(self.palette()))
        self.save_button.setToolTip(
            "Store a new version and build its membership over the stored contacts"
        )
        self.save_button.clicked.connect(self.save)
        self.dry_run_button = QPushButton("Dry run\u2026")
        self.dry_run_button.setToolTip(
            "Replay the recorded events against this draft: who would enter it and when, "
            "without saving or sending anything"
        )
        self.dry_run_button.clicked.connect(self.open_dry_run)
        self.dry_run: DryRunDialog | None = None
        header = QHBoxLayout()
        header.setSpacing(8)
        header.addWidget(title)
        header.addSpacing(8)
        header.addWidget(self.chooser)
        header.addWidget(QLabel("Id"))
        header.addWidget(self.sid, 1)
        header.addWidget(QLabel("Name"))
        header.addWidget(self.name, 2)
        header.addWidget(self.dry_run_button)
        header.addWidget(self.save_button)

        # -- left: the tree and the text form --------------------------------------------------
        self.rules = RuleTree()
        self.rules.changed.connect(self._tree_changed)
        self.text = QPlainTextEdit()
        font = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
        font.setPointSizeF(max(font.pointSizeF(), self.font().pointSizeF()))
        self.text.setFont(font)
        self.text.setPlaceholderText(STARTER)
        self.text.textChanged.connect(self._text_edited)
        self.text.setMaximumHeight(self.fontMetrics().height() * 7)
        self.text_state = QLabel("")
        self.text_state.setWordWrap(True)
        text_label = QLabel("<b>Text form</b> \u2014 edit either side; both stay in step")
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(QLabel("<b>Rules</b>"))
        left_layout.addWidget(self.rules, 1)
        left_layout.addWidget(text_label)
        left_layout.addWidget(self.text)
        left_layout.addWidget(self.text_state)

        # -- right: count, build, history, sample ---------------------------------------------
        self.count = QLabel("\u2014")
        self.count.setFont(theme.scaled_font(self.font(), 2.4, bold=True))
        self.count_note = QLabel("members now (draft, not saved)")
        self.count_note.setWordWrap(True)
        self.build = QProgressBar()
        self.build.setVisible(False)
        self.build_note = QLabel("")
        self.build_note.setWordWrap(True)
        self.chart = pg.PlotWidget(axisItems={"bottom": pg.DateAxisItem(orientation="bottom")})
        self.chart.setMinimumHeight(160)
        self.chart.setLabel("left", "members")
        self.chart.setMouseEnabled(x=False, y=False)
        self.chart.hideButtons()
        self.chart.showGrid(x=False, y=True, alpha=0.2)
        self._style_chart()
        self.curve = self.chart.plot(
            [], [], stepMode="right", pen=pg.mkPen(theme.series_color(0, self.palette()), width=2)
        )
        self.chart_note = QLabel("Membership over the last 24 h appears once the segment is saved.")
        self.chart_note.setWordWrap(True)
        self.sample = QListWidget()
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addWidget(self.count)
        right_layout.addWidget(self.count_note)
        right_layout.addWidget(self.build)
        right_layout.addWidget(self.build_note)
        right_layout.addWidget(QLabel("<b>Membership over time</b>"))
        right_layout.addWidget(self.chart, 2)
        right_layout.addWidget(self.chart_note)
        right_layout.addWidget(QLabel("<b>Sample members</b> (draft)"))
        right_layout.addWidget(self.sample, 2)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        splitter.setChildrenCollapsible(False)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 12, 16, 12)
        layout.setSpacing(8)
        layout.addLayout(header)
        layout.addWidget(splitter, 1)

        self._text_delay = QTimer(self)
        self._text_delay.setSingleShot(True)
        self._text_delay.setInterval(TEXT_DELAY_MS)
        self._text_delay.timeout.connect(self.text_to_tree)
        self._count_delay = QTimer(self)
        self._count_delay.setSingleShot(True)
        self._count_delay.setInterval(COUNT_DELAY_MS)
        self._count_delay.timeout.connect(self.count_draft)
        self._build_poll = QTimer(self)
        self._build_poll.setInterval(BUILD_POLL_MS)
        self._build_poll.timeout.connect(self._poll_build)
        self.new_segment()

    # ---------------------------------------------------------------- page hooks

    def page_shown(self) -> None:
        self.load_list()
        self.requests.ask("fields", "templates.fields", {}, self._show_fields)
        if self.current is None:
            self._count_delay.start()

    def page_hidden(self) -> None:
        self._count_delay.stop()

    def busy(self) -> bool:
        """Whether anything is pending (tests wait for quiet)."""
        return (
            self.requests.busy()
            or self._text_delay.isActive()
            or self._count_delay.isActive()
            or self._build_poll.isActive()
        )

    # ---------------------------------------------------------------- the list

    def load_list(self) -> None:
        self.requests.ask("list", "segments.list", {}, self._show_list)

    def _show_list(self, reply: list[dict[str, Any]]) -> None:
        self.segments = list(reply or [])
        chosen = self.current["id"] if self.current else NEW
        self.chooser.blockSignals(True)
        self.chooser.clear()
        self.chooser.addItem("New segment\u2026", NEW)
        for seg in self.segments:
            self.chooser.addItem(
                f"{seg['name']} ({seg['id']}, v{seg['version']}) \u00b7"
                f" {format_count(seg['members'])}",
                seg["id"],
            )
        self.chooser.setCurrentIndex(max(0, self.chooser.findData(chosen)))
        self.chooser.blockSignals(False)
        self._completions()

    def _chosen(self, index: int) -> None:
        sid = str(self.chooser.itemData(index) or NEW)
        if sid == NEW:
            self.new_segment()
            return
        found = next((s for s in self.segments if s["id"] == sid), None)
        if found is not None:
            self.open_segment(found)

    def new_segment(self) -> None:
        self.current = None
        self.sid.setReadOnly(False)
        self.sid.setText("")
        self.name.setText("")
        self.set_text(STARTER)
        self.text_to_tree()
        self.history = None
        self.curve.setData([], [])
        self.chart_note.setText("Membership over the last 24 h appears once the segment is saved.")
        self.build.setVisible(False)
        self.build_note.setText("")

    def open_segment(self, segment: dict[str, Any]) -> None:
        """Load a saved segment into the builder."""
        self.current = segment
        self.sid.setText(segment["id"])
        self.sid.setReadOnly(True)
        self.name.setText(segment["name"])
        self.set_text(segment["text"])
        self.text_to_tree()
        self.load_history()
        build = segment.get("build")
        if build and build.get("state") == "running":
            self._build_poll.start()

    # ---------------------------------------------------------------- tree <-> text

    def set_text(self, text: str) -> None:
        """Replace the text form (the tree follows after the pause, as if typed)."""
        self.text.setPlainText(text)

    def _text_edited(self) -> None:
        if self._writing:
            return
        self._text_delay.start()

    def text_to_tree(self) -> None:
        """Read the text form; draw it as the tree, or show where it is wrong."""
        self._text_delay.stop()
        source = self.text.toPlainText()
        try:
            condition = parse_condition(source)
        except SegmentInvalid as exc:
            self._text_problem(str(exc), source)
            return
        self._text_ok()
        self.rules.set_condition(condition)
        self._count_delay.start()

    def _tree_changed(self) -> None:
        try:
            condition = self.rules.condition()
        except SegmentInvalid:
            return  # the tree says what is missing; the text keeps its last good form
        self.write_text(condition)
        self._text_ok()
        self._count_delay.start()

    def write_text(self, condition: Condition) -> None:
        """Show ``condition``'s canonical text without redrawing the tree from it."""
        self._writing = True
        try:
            self.text.setPlainText(format_condition(condition))
        finally:
            self._writing = False

    def _text_problem(self, message: str, source: str) -> None:
        self.text_error = message
        colour = theme.status_color(theme.Status.FAILING, self.palette())
        self.text_state.setText(
            f"<span style='color:{colour.name()}'>\u2716 {html.escape(message)}</span>"
            " \u2014 the tree keeps the last correct version"
        )
        offset = position_of(message, source)
        marks: list[QTextEdit.ExtraSelection] = []
        if offset is not None:
            mark = QTextEdit.ExtraSelection()
            cursor = QTextCursor(self.text.document())
            cursor.setPosition(min(offset, len(source)))
            cursor.movePosition(
                QTextCursor.MoveOperation.NextCharacter, QTextCursor.MoveMode.KeepAnchor
            )
            fmt = QTextCharFormat()
            fmt.setUnderlineStyle(QTextCharFormat.UnderlineStyle.WaveUnderline)
            fmt.setUnderlineColor(colour)
            fmt.setBackground(QColor(colour.red(), colour.green(), colour.blue(), 60))
            mark.format = fmt
            mark.cursor = cursor
            marks.append(mark)
        self.text.setExtraSelections(marks)

    def _text_ok(self) -> None:
        self.text_error = None
        colour = theme.status_color(theme.Status.HEALTHY, self.palette()).name()
        self.text_state.setText(f"<span style='color:{colour}'>\u2714 reads correctly</span>")
        self.text.setExtraSelections([])

    # ---------------------------------------------------------------- live count

    def draft_text(self) -> str | None:
        """The canonical text of the tree, or None while it is not a complete condition."""
        try:
            return format_condition(self.rules.condition())
        except SegmentInvalid:
            return None

    def count_draft(self) -> None:
        text = self.draft_text()
        if text is None or self.text_error:
            return
        self.count_note.setText("counting\u2026")
        self.requests.ask(
            "preview",
            "segments.preview",
            {"text": text, "limit": 10},
            self._show_preview,
            self._preview_failed,
            timeout=20,
        )

    def _show_preview(self, reply: dict[str, Any]) -> None:
        self.last_preview = reply
        self.count.setText(format_count(reply["members"]))
        note = f"members now of {format_count(reply['total'])} contacts, as drafted here"
        if not reply.get("complete"):
            colour = theme.status_color(theme.Status.DEGRADED, self.palette()).name()
            note += (
                f"<br><span style='color:{colour}'>\u26a0 counted over"
                f" {format_count(reply['scanned'])} contacts only:"
                f" {html.escape(str(reply.get('stopped')))}</span>"
            )
        self.count_note.setText(note)
        self.sample.clear()
        for member in reply.get("sample") or []:
            email = member.get("email") or "no email"
            self.sample.addItem(f"{email} \u00b7 {member['contact_id']}")
        if not reply.get("sample"):
            self.sample.addItem("Nobody matches this draft yet.")

    def _preview_failed(self, exc: BaseException) -> None:
        self.last_preview = None
        self.count.setText("\u2014")
        self.count_note.setText(f"Could not count: {html.escape(describe(exc))}")

    # ---------------------------------------------------------------- save and build

    def save(self) -> None:
        sid = self.sid.text().strip()
        name = self.name.text().strip()
        text = self.draft_text()
        if not SEGMENT_ID.fullmatch(sid):
            show_message(self, "Give the segment an id: lower-case letters, digits, - and _.")
            return
        if not name:
            show_message(self, "Give the segment a name people will read.")
            return
        if text is None or self.text_error:
            show_message(self, "Fix the rules first (the tree or the text says what is wrong).")
            return
        self.save_button.setEnabled(False)

        def saved(reply: dict[str, Any]) -> None:
            self.save_button.setEnabled(True)
            self.current = {"id": reply["id"], "name": reply["name"], "text": reply["text"]}
            self.sid.setReadOnly(True)
            show_message(
                self, f"Saved {reply['id']} v{reply['version']}; building its members.", "healthy"
            )
            self._show_build(reply["build"])
            self._build_poll.start()
            self.load_list()

        def failed(exc: BaseException) -> None:
            self.save_button.setEnabled(True)
            show_message(self, f"Not saved: {describe(exc)}")

        self.requests.ask(
            "save", "segments.save", {"segment": sid, "name": name, "text": text}, saved, failed
        )

    def open_dry_run(self) -> DryRunDialog | None:
        """Open the dry run of the draft as it stands (a window of its own, not modal)."""
        text = self.draft_text()
        if text is None or self.text_error:
            show_message(self, "Fix the rules first (the tree or the text says what is wrong).")
            return None
        if self.dry_run is not None:
            self.dry_run.close()
            self.dry_run.deleteLater()
        self.dry_run = DryRunDialog(self.client, "segment", {"text": text}, self)
        self.dry_run.show()
        return self.dry_run

    def _poll_build(self) -> None:
        if self.current is None:
            self._build_poll.stop()
            return
        self.requests.ask(
            "build",
            "segments.build_status",
            {"segment": self.current["id"]},
            lambda reply: self._show_build((reply.get("builds") or [None])[0]),
        )

    def _show_build(self, build: dict[str, Any] | None) -> None:
        self.last_build = build
        if build is None:
            self._build_poll.stop()
            self.build.setVisible(False)
            return
        self.build.setVisible(True)
        self.build.setMaximum(max(int(build.get("total") or 0), 1))
        self.build.setValue(int(build.get("done") or 0))
        self.build.setFormat(f"building: %v of %m contacts (v{build.get('version')})")
        if build["state"] == "running":
            self.build_note.setText(f"+{build['entered']} entered, -{build['exited']} left so far")
            return
        self._build_poll.stop()
        self.build.setVisible(False)
        if build["state"] == "done":
            seconds = (build.get("finished_at") or 0) - build["started_at"]
            self.build_note.setText(
                f"Built v{build['version']} over {format_count(build['total'])} contacts in"
                f" {max(seconds, 0):.1f} s: {build['entered']} entered, {build['exited']} left."
            )
        else:
            self.build_note.setText(
                f"Build {build['state']}: {html.escape(str(build.get('error') or ''))}"
            )
        self.load_history()
        self.load_list()

    # ---------------------------------------------------------------- history

    def load_history(self) -> None:
        if self.current is None:
            return
        since = time.time() - 24 * 3600
        self.requests.ask(
            "history",
            "segments.history",
            {"segment": self.current["id"], "since": since, "bucket": 600},
            self._show_history,
        )

    def _show_history(self, reply: dict[str, Any]) -> None:
        self.history = reply
        points = reply.get("points") or []
        xs = [float(reply["since"])] + [float(p["at"]) for p in points]
        ys = [float(p["members"]) for p in points]
        if not ys:
            self.curve.setData([], [])
            return
        ys = [*ys, ys[-1]]
        self.curve.setData(xs, ys)
        self.chart.setXRange(xs[0], xs[-1], padding=0)
        self.chart.setYRange(0, max(max(ys), 1) * 1.15, padding=0)
        entered = sum(int(p["entered"]) for p in points)
        exited = sum(int(p["exited"]) for p in points)
        self.chart_note.setText(
            f"Last 24 h: {format_count(entered)} entered, {format_count(exited)} left; now"
            f" {format_count(ys[-1])} members."
        )

    def _style_chart(self) -> None:
        palette = self.palette()
        self.chart.setBackground(theme.surface_color(palette))
        for name in ("left", "bottom"):
            axis = self.chart.getAxis(name)
            axis.setPen(pg.mkPen(theme.border_color(palette)))
            axis.setTextPen(pg.mkPen(theme.text_color(palette)))

    # ---------------------------------------------------------------- completion

    def _show_fields(self, reply: dict[str, Any]) -> None:
        self.fields = reply
        self._completions()

    def _completions(self) -> None:
        fields = self.fields
        traits = [str(e["path"]) for e in fields.get("traits", []) if "[]" not in e["path"]]
        events = sorted(fields.get("events", {}))
        properties = sorted(
            {
                str(e["path"])
                for entries in fields.get("events", {}).values()
                for e in entries
                if "[]" not in e["path"]
            }
        )
        self.rules.editor.set_completions(traits, events, [s["id"] for s in self.segments])
        self.rules.editor.set_properties(properties)
