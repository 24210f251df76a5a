"""The Contacts page: why someone did or did not get an email.

Search a contact (name, email or id; ``contacts.search``), then read their story:

- the profile: traits, consent, marketing subscription, suppression, and what would stop
  marketing or transactional mail now (``contacts.show``);
- **Decisions**: each enrollment as an expandable trace, every decision in order with its time
  ("12:04:10 trigger matched - 12:34:10 timed out: no Order Completed within 30m - 12:34:10
  sent: the relay replied 250 ..."), the email's outcome and the relay's reply
  (``contacts.enrollments``);
- **Timeline**: events, emails and segment changes in order (``contacts.timeline``);
- **Segments**: memberships with enter and exit times (``contacts.segments``);
- **Why not?**: for every workflow, whether the contact got it and otherwise the first reason,
  in words, with what would still stop it (``contacts.why_not``).
"""

from __future__ import annotations

import html
import json
import re
from datetime import datetime
from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QBrush
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from console.client import EngineClient
from console.errors import describe
from console.pages.requests import KeyedRequests
from widgets import theme
from widgets.empty_state import EmptyState

SEARCH_DELAY_MS = 300
ID_ROLE = Qt.ItemDataRole.UserRole

# The status a decision reads as (colour with an icon, never colour alone).
DECISION_STATUS = {
    "sent": theme.Status.HEALTHY,
    "converted": theme.Status.HEALTHY,
    "suppressed": theme.Status.FAILING,
    "bounced": theme.Status.FAILING,
    "failed": theme.Status.FAILING,
    "no_email": theme.Status.FAILING,
    "expired": theme.Status.FAILING,
    "deferred": theme.Status.DEGRADED,
    "quiet_hours": theme.Status.PAUSED,
    "capped": theme.Status.DEGRADED,
    "uncertain": theme.Status.DEGRADED,
    "pending": theme.Status.DRAINING,
    "waiting": theme.Status.PAUSED,
}


def moment(ts: float | None) -> str:
    """A time in local time: ``27 Nov 14:03:12``."""
    if ts is None:
        return "\u2014"
    return datetime.fromtimestamp(float(ts)).strftime("%d %b %H:%M:%S")


_EPOCH = re.compile(r"\b1\d{9}(?:\.\d+)?\b")


def readable(detail: str) -> str:
    """Trace details name moments in epoch seconds; people read local time."""
    return _EPOCH.sub(lambda m: moment(float(m.group())), detail)


def _table(headers: list[str]) -> QTableWidget:
    table = QTableWidget(0, len(headers))
    table.setHorizontalHeaderLabels(headers)
    table.verticalHeader().setVisible(False)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setWordWrap(True)
    header = table.horizontalHeader()
    for column in range(len(headers) - 1):
        header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
    header.setStretchLastSection(True)
    return table


def _cell(text: str, tooltip: str = "") -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    item.setToolTip(tooltip or text)
    return item


class ContactsPage(QWidget):
    """Search, profile, decisions, timeline, segments and "why not" (see the module docstring).

    Signals: none of its own.
    """

    def __init__(self, client: EngineClient, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.client = client
        self.requests = KeyedRequests(self, client)
        self.contact: str | None = None
        self.profile: dict[str, Any] | None = None
        self.stories: list[dict[str, Any]] = []
        self.answers: list[dict[str, Any]] = []

        title = QLabel("Contacts")
        title.setFont(theme.scaled_font(self.font(), 1.5, bold=True))
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search by name, email or id")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(lambda _t: self._search_delay.start())
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.setToolTip("Read this contact's story again")
        self.refresh_button.clicked.connect(self.reload)
        header = QHBoxLayout()
        header.addWidget(title)
        header.addSpacing(12)
        header.addWidget(self.search, 1)
        header.addWidget(self.refresh_button)

        self.results = QListWidget()
        self.results.itemClicked.connect(lambda item: self.open_contact(str(item.data(ID_ROLE))))
        self.results.itemActivated.connect(lambda item: self.open_contact(str(item.data(ID_ROLE))))
        self.results_note = QLabel("Recently seen contacts")
        self.results_note.setWordWrap(True)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.results_note)
        left_layout.addWidget(self.results, 1)

        # -- the story ----------------------------------------------------------------------
        self.profile_view = QLabel("")
        self.profile_view.setWordWrap(True)
        self.profile_view.setTextFormat(Qt.TextFormat.RichText)
        self.profile_view.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.profile_view.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)

        self.decisions = QTreeWidget()
        self.decisions.setColumnCount(3)
        self.decisions.setHeaderLabels(["When", "Decision", "Detail"])
        self.decisions.setUniformRowHeights(False)
        self.decisions.setWordWrap(True)
        self.decisions.setAlternatingRowColors(True)
        dheader = self.decisions.header()
        dheader.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        dheader.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        dheader.setStretchLastSection(True)
        self.timeline = _table(["When", "Kind", "What", "Detail"])
        self.segments = _table(["Segment", "Member now", "Entered", "Exited"])
        self.why = _table(["Workflow", "Got it?", "First reason"])
        self.why.itemSelectionChanged.connect(self._show_answer)
        self.answer = QLabel("")
        self.answer.setWordWrap(True)
        self.answer.setTextFormat(Qt.TextFormat.RichText)
        self.answer.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        why_page = QWidget()
        why_layout = QVBoxLayout(why_page)
        why_layout.setContentsMargins(0, 0, 0, 0)
        why_layout.addWidget(self.why, 3)
        why_layout.addWidget(self.answer, 1)

        self.tabs = QTabWidget()
        self.tabs.addTab(self.decisions, "Decisions")
        self.tabs.addTab(self.timeline, "Timeline")
        self.tabs.addTab(self.segments, "Segments")
        self.tabs.addTab(why_page, "Why not?")

        story = QWidget()
        story_layout = QVBoxLayout(story)
        story_layout.setContentsMargins(0, 0, 0, 0)
        story_layout.addWidget(self.profile_view)
        story_layout.addWidget(self.tabs, 1)

        self.empty = EmptyState(
            "mdi6.card-account-details-outline",
            "Pick a contact to see why they got (or did not get) each email",
            detail="Search by name, email or id above; the list shows the contacts seen most"
            " recently. No contacts yet? Start demo traffic on the Live page.",
        )
        self.problem = QLabel("")
        self.problem.setWordWrap(True)
        self.problem.setTextFormat(Qt.TextFormat.PlainText)
        self.problem.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.states = QStackedWidget()
        self.states.addWidget(self.empty)
        self.states.addWidget(story)
        self.states.addWidget(self.problem)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(self.states)
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 7)
        splitter.setChildrenCollapsible(False)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 12, 16, 12)
        layout.setSpacing(8)
        layout.addLayout(header)
        layout.addWidget(splitter, 1)

        self._search_delay = QTimer(self)
        self._search_delay.setSingleShot(True)
        self._search_delay.setInterval(SEARCH_DELAY_MS)
        self._search_delay.timeout.connect(self.run_search)

    # ---------------------------------------------------------------- page hooks

    def page_shown(self) -> None:
        if self.results.count() == 0:
            self.run_search()

    def page_hidden(self) -> None:
        self._search_delay.stop()

    def busy(self) -> bool:
        """Whether a request is on its way (tests wait for quiet)."""
        return self.requests.busy() or self._search_delay.isActive()

    # ---------------------------------------------------------------- search

    def run_search(self) -> None:
        query = self.search.text().strip()
        self.requests.ask(
            "search", "contacts.search", {"query": query, "limit": 50}, self._show_results
        )

    def _show_results(self, reply: dict[str, Any]) -> None:
        found = list(reply.get("contacts") or [])
        query = str(reply.get("query") or "")
        self.results.clear()
        for row in found:
            name = row.get("name") or row.get("email") or row["id"]
            email = row.get("email") or "no email address"
            item = QListWidgetItem(f"{name}\n{email} \u00b7 {row['id']}")
            item.setData(ID_ROLE, row["id"])
            item.setToolTip(f"Last seen {moment(row.get('last_seen_at'))}")
            self.results.addItem(item)
        if query:
            self.results_note.setText(f"{len(found)} contact(s) matching \u201c{query}\u201d")
        else:
            self.results_note.setText("Recently seen contacts")

    # ---------------------------------------------------------------- one contact

    def open_contact(self, contact_id: str) -> None:
        """Read this contact's profile, decisions, timeline, segments and why-not answers."""
        self.contact = contact_id
        self.reload()

    def reload(self) -> None:
        cid = self.contact
        if cid is None:
            return
        self.requests.ask(
            "show", "contacts.show", {"contact": cid}, self._show_profile, self._failed
        )

    def _read_story(self, cid: str) -> None:
        """The rest of the story, once the contact is known to exist."""
        args = {"contact": cid}
        self.requests.ask(
            "enrollments", "contacts.enrollments", {**args, "limit": 50}, self._show_stories
        )
        self.requests.ask(
            "timeline", "contacts.timeline", {**args, "limit": 200}, self._show_timeline
        )
        self.requests.ask("segments", "contacts.segments", args, self._show_segments)
        self.requests.ask("why", "contacts.why_not", args, self._show_why, timeout=20)

    def _failed(self, exc: BaseException) -> None:
        self.problem.setText(f"Could not read this contact: {describe(exc)}")
        self.states.setCurrentWidget(self.problem)

    def _show_profile(self, reply: dict[str, Any]) -> None:
        self.profile = reply
        self._read_story(str(reply["id"]))
        self.states.setCurrentWidget(self.states.widget(1))
        pal = self.palette()
        muted = theme.secondary_text_color(pal).name()

        def status_word(status: theme.Status, word: str) -> str:
            colour = theme.status_color(status, pal).name()
            return f"<span style='color:{colour}'>\u25cf {html.escape(word)}</span>"

        name = reply.get("name") or reply["id"]
        subscribed = (
            status_word(theme.Status.HEALTHY, "subscribed to marketing")
            if reply.get("subscribed")
            else status_word(
                theme.Status.FAILING,
                f"unsubscribed from marketing {moment(reply.get('unsubscribed_at'))}",
            )
        )
        lines = [
            f"<span style='font-size:large'><b>{html.escape(str(name))}</b></span>"
            f" &nbsp;{html.escape(str(reply.get('email') or 'no email address'))}"
            f" <span style='color:{muted}'>\u00b7 {html.escape(reply['id'])}"
            f" \u00b7 first seen {moment(reply.get('first_seen_at'))}"
            f" \u00b7 last seen {moment(reply.get('last_seen_at'))}</span>",
            subscribed,
        ]
        suppression = reply.get("suppression")
        if suppression:
            lines[-1] += " &nbsp; " + status_word(
                theme.Status.FAILING,
                f"suppressed ({suppression['scope']}, {suppression['reason']})",
            )
        counts = reply.get("counts") or {}
        lines[-1] += (
            f" &nbsp; <span style='color:{muted}'>{counts.get('events', 0)} events \u00b7"
            f" {counts.get('enrollments', 0)} enrollments \u00b7 {counts.get('emails', 0)}"
            " emails</span>"
        )
        orders = reply.get("orders") or {}
        if orders.get("count"):
            value, count = float(orders.get("lifetime_value") or 0), int(orders["count"])
            lines[-1] += (
                f" &nbsp; <span style='color:{muted}'>lifetime value {value:,.2f} over"
                f" {count} order{'s' if count != 1 else ''} (average {value / count:,.2f}),"
                f" last {moment(orders.get('last_at'))}</span>"
            )
        blocked = reply.get("blocked") or {}
        for category in ("marketing", "transactional"):
            reasons = blocked.get(category) or []
            if reasons:
                lines.append(
                    status_word(theme.Status.DEGRADED, f"{category} mail would not go: ")
                    + html.escape("; ".join(reasons))
                )
        traits = {k: v for k, v in (reply.get("traits") or {}).items() if k != "email"}
        if traits:
            shown = ", ".join(
                f"<b>{html.escape(str(k))}</b> {html.escape(json.dumps(v, ensure_ascii=False))}"
                for k, v in sorted(traits.items())[:14]
            )
            lines.append(f"<span style='color:{muted}'>Traits:</span> {shown}")
        consent = reply.get("consent") or {}
        if consent:
            lines.append(
                f"<span style='color:{muted}'>Consent:</span> "
                + html.escape(
                    ", ".join(
                        f"{purpose} {'granted' if (entry or {}).get('granted') else 'not granted'}"
                        for purpose, entry in sorted(consent.items())
                    )
                )
            )
        self.profile_view.setText("<br>".join(lines))

    def _decision_item(self, decision: dict[str, Any]) -> QTreeWidgetItem:
        label = str(decision.get("label") or decision["kind"])
        detail = readable(str(decision.get("detail") or ""))
        item = QTreeWidgetItem([moment(decision.get("ts")), label, detail])
        item.setToolTip(2, detail)
        status = DECISION_STATUS.get(str(decision["kind"]))
        if status is not None:
            item.setIcon(1, theme.status_icon(status, self.palette()))
            item.setForeground(1, QBrush(theme.status_color(status, self.palette())))
        return item

    def _show_stories(self, reply: dict[str, Any]) -> None:
        self.stories = list(reply.get("enrollments") or [])
        self.decisions.clear()
        if not self.stories:
            self.decisions.addTopLevelItem(
                QTreeWidgetItem(["", "No enrollments", "No workflow has started for this contact"])
            )
        for index, story in enumerate(self.stories):
            outcome = story["state"]
            if story.get("converted"):
                outcome = "converted"
            sent = [x for x in story.get("intents", []) if x["status"] == "sent"]
            summary = f"{story['name']} (v{story['version']}) \u2014 {outcome}"
            if sent:
                summary += f", {len(sent)} sent"
            trigger = story.get("trigger") or {}
            top = QTreeWidgetItem(
                [
                    moment(story.get("entered_at")),
                    summary,
                    f"on {trigger.get('name')} (messageId {trigger.get('message_id')})",
                ]
            )
            font = top.font(1)
            font.setBold(True)
            top.setFont(1, font)
            top.setData(0, ID_ROLE, story["id"])
            for decision in story.get("decisions", []):
                top.addChild(self._decision_item(decision))
            self.decisions.addTopLevelItem(top)
            top.setExpanded(index < 3)

    def _show_timeline(self, reply: dict[str, Any]) -> None:
        entries = list(reply.get("entries") or [])
        self.timeline.setRowCount(len(entries))
        for row, entry in enumerate(reversed(entries)):  # newest at the top
            kind = entry["kind"]
            if kind == "event":
                detail = json.dumps(entry.get("properties") or {}, ensure_ascii=False)
            elif kind == "email":
                detail = f"{entry.get('status')}: {entry.get('reply') or ''}".rstrip(": ")
            else:
                detail = ""
            self.timeline.setItem(row, 0, _cell(moment(entry["ts"])))
            self.timeline.setItem(row, 1, _cell(kind))
            self.timeline.setItem(row, 2, _cell(str(entry.get("title"))))
            self.timeline.setItem(row, 3, _cell(detail))
        self.timeline.resizeRowsToContents()

    def _show_segments(self, reply: dict[str, Any]) -> None:
        rows = [(seg, period) for seg in reply.get("segments") or [] for period in seg["periods"]]
        self.segments.setRowCount(len(rows))
        for row, (seg, period) in enumerate(rows):
            current = seg["member"] and period.get("exited_at") is None
            self.segments.setItem(row, 0, _cell(f"{seg['name']} ({seg['segment']})"))
            self.segments.setItem(row, 1, _cell("\u2713 member" if current else "no"))
            self.segments.setItem(row, 2, _cell(moment(period.get("entered_at"))))
            exited = period.get("exited_at")
            self.segments.setItem(row, 3, _cell("still in" if exited is None else moment(exited)))

    def _show_why(self, reply: dict[str, Any]) -> None:
        self.answers = list(reply.get("answers") or [])
        self.why.setRowCount(len(self.answers))
        pal = self.palette()
        for row, answer in enumerate(self.answers):
            got = bool(answer.get("got"))
            status = theme.Status.HEALTHY if got else theme.Status.DEGRADED
            self.why.setItem(row, 0, _cell(f"{answer['name']} ({answer['workflow']})"))
            verdict = _cell("got it" if got else "not sent")
            verdict.setIcon(theme.status_icon(status, pal))
            self.why.setItem(row, 1, verdict)
            self.why.setItem(row, 2, _cell(str(answer.get("answer"))))
        self.why.resizeRowsToContents()
        if self.answers and not self.why.selectedItems():
            self.why.selectRow(0)
        self._show_answer()

    def _show_answer(self) -> None:
        rows = {i.row() for i in self.why.selectedItems()}
        if not rows or not self.answers:
            self.answer.setText("")
            return
        answer = self.answers[min(rows)]
        who = (self.profile or {}).get("name") or answer["contact"]
        question = (
            f"Did {who} get {answer['name']}?"
            if answer.get("got")
            else f"Why didn't {who} get {answer['name']}?"
        )
        said = html.escape(str(answer.get("answer")), quote=False)
        text = f"<b>{html.escape(question, quote=False)}</b><br>{said}"
        also = answer.get("also") or []
        if also:
            text += "<br>Even then: " + html.escape("; ".join(also)) + "."
        text += f"<br><i>{html.escape(str(answer.get('category')))} workflow</i>"
        self.answer.setText(text)
