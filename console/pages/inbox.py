"""The Inbox page: the mail the local capture inbox received, Mailpit style.

The list (newest first: time, to, subject, size) with search refreshes every 2 s while the page
is visible and keeps the selection. The selected message is parsed with the stdlib ``email``
parser (policy ``default``) and shown in tabs: the HTML part rendered by a real browser engine
(QtWebEngine), the text part, the headers as a table, and the raw source.

The mail is untrusted: the HTML is loaded with an ``about:blank`` base URL into an off-the-record
profile with JavaScript, plugins and remote content off, every request other than ``data:`` and
``about:`` blocked by an interceptor, link clicks refused, and a Content-Security-Policy added.
When QtWebEngine cannot start, a QTextBrowser shows the HTML instead, with a note saying so.
"""

from __future__ import annotations

import email
import email.policy
import html
import logging
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

from PySide6.QtCore import QItemSelectionModel, QModelIndex, Qt, QTimer, QUrl
from PySide6.QtGui import QFont, QFontDatabase, QPalette, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QTableView,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from console.client import EngineClient
from console.errors import describe
from console.operations import Operation, show_message
from console.pages.polling import PollingPage
from widgets import theme
from widgets.empty_state import EmptyState
from widgets.format import format_age, format_bytes
from widgets.master_detail import MasterDetail

log = logging.getLogger(__name__)

REFRESH_MS = 2000
LIST_LIMIT = 200
DEMO_RATE = 50
SEARCH_DELAY_MS = 300
BASE_URL = "about:blank"
"""Where relative URLs in a message would resolve: nowhere."""
CSP = (
    "default-src 'none'; img-src data: cid:; style-src 'unsafe-inline' data:;"
    " font-src data:; form-action 'none'; base-uri 'none'"
)
ALLOWED_SCHEMES = frozenset({"data", "about"})

ID_ROLE = Qt.ItemDataRole.UserRole + 1
COLUMNS = ("Received", "To", "Subject", "Size")

try:  # QtWebEngine is an optional part of the Qt install (the Addons wheel).
    from PySide6.QtWebEngineCore import (
        QWebEnginePage,
        QWebEngineProfile,
        QWebEngineSettings,
        QWebEngineUrlRequestInfo,
        QWebEngineUrlRequestInterceptor,
    )
    from PySide6.QtWebEngineWidgets import QWebEngineView

    WEBENGINE_ERROR = ""
except ImportError as exc:  # pragma: no cover - depends on the installation
    WEBENGINE_ERROR = str(exc) or "QtWebEngine is not installed"


def local_time(ts: float, now: float | None = None) -> str:
    """``14:03:12`` today, ``27 Nov 14:03`` on other days (local time)."""
    when = datetime.fromtimestamp(ts)
    today = datetime.fromtimestamp(time.time() if now is None else now).date()
    return when.strftime("%H:%M:%S") if when.date() == today else when.strftime("%d %b %H:%M")


def utc_time(ts: float) -> str:
    """The instant in UTC, for tooltips: ``2026-11-27 14:03:12 UTC``."""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# ------------------------------------------------------------------------------- parsing


class ParsedMessage:
    """A raw message split into what the tabs show (stdlib parser, ``policy.default``)."""

    def __init__(self, raw: str) -> None:
        self.raw = raw
        message = email.message_from_string(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.headers: list[tuple[str, str]] = [(k, str(v)) for k, v in message.items()]
        self.subject = str(message.get("Subject", ""))
        self.sender = str(message.get("From", ""))
        self.to = str(message.get("To", ""))
        self.date = str(message.get("Date", ""))
        self.html = _part_text(message, "html")
        self.text = _part_text(message, "plain")


def _part_text(message: EmailMessage, subtype: str) -> str:
    try:
        part = message.get_body(preferencelist=(subtype,))
        if part is None:
            return ""
        content = part.get_content()
    except (LookupError, ValueError, KeyError) as exc:  # broken charset or encoding
        log.debug("unreadable %s part: %s", subtype, exc)
        return ""
    if not isinstance(content, str):
        return ""
    return content.replace("\r\n", "\n")  # SMTP line ends; the widgets want one kind


def guarded_html(body: str) -> str:
    """``body`` with a Content-Security-Policy that forbids scripts and remote loads."""
    meta = f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
    lower = body.lower()
    at = lower.find("<head>")
    if at >= 0:
        at += len("<head>")
        return body[:at] + meta + body[at:]
    return f"<!DOCTYPE html><html><head>{meta}</head><body>{body}</body></html>"


# ------------------------------------------------------------------------------- HTML view

if not WEBENGINE_ERROR:

    class _BlockRemote(QWebEngineUrlRequestInterceptor):
        """Lets ``data:`` and ``about:`` through and blocks every other request."""

        def interceptRequest(self, info: QWebEngineUrlRequestInfo) -> None:
            if info.requestUrl().scheme() not in ALLOWED_SCHEMES:
                info.block(True)

    class _MailPage(QWebEnginePage):
        """A page that refuses to navigate away from the message (links included)."""

        def acceptNavigationRequest(
            self, url: QUrl | str, type: QWebEnginePage.NavigationType, isMainFrame: bool
        ) -> bool:
            scheme = QUrl(url).scheme()
            return type != QWebEnginePage.NavigationType.NavigationTypeLinkClicked and (
                scheme in ALLOWED_SCHEMES
            )


class HtmlView(QWidget):
    """The HTML part in a locked-down QWebEngineView, or a QTextBrowser with a note.

    Signals: none.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.note.setVisible(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.note)
        self._layout = layout
        self.browser: QWidget | None = None
        self.uses_webengine = False
        self._html = ""

    def _ensure_browser(self) -> QWidget:
        """Create the browser on first use: QtWebEngine starts helper processes, so a page
        that never shows HTML mail never starts them."""
        if self.browser is not None:
            return self.browser
        error = WEBENGINE_ERROR
        if not error:
            try:
                self.browser = self._make_webengine()
                self.uses_webengine = True
            except Exception as exc:  # any failure to start the engine: fall back, never crash
                log.exception("QtWebEngine could not start")
                error = describe(exc)
        if self.browser is None:
            self.browser = self._make_fallback(error)
        self._layout.addWidget(self.browser, 1)
        return self.browser

    def _make_webengine(self) -> QWidget:
        view = QWebEngineView(self)
        # Created after the view so it is destroyed after the page (a profile outliving no page
        # is what QtWebEngine expects); no storage name: off the record, nothing on disk.
        self._profile = QWebEngineProfile(self)
        self._interceptor = _BlockRemote(self._profile)
        self._profile.setUrlRequestInterceptor(self._interceptor)
        page = _MailPage(self._profile, view)
        settings = page.settings()
        attr = QWebEngineSettings.WebAttribute
        for attribute, on in (
            (attr.JavascriptEnabled, False),
            (attr.JavascriptCanOpenWindows, False),
            (attr.JavascriptCanAccessClipboard, False),
            (attr.PluginsEnabled, False),
            (attr.LocalContentCanAccessRemoteUrls, False),
            (attr.LocalContentCanAccessFileUrls, False),
            (attr.LocalStorageEnabled, False),
            (attr.AutoLoadIconsForPage, False),
            (attr.DnsPrefetchEnabled, False),
            (attr.NavigateOnDropEnabled, False),
            (attr.PdfViewerEnabled, False),
        ):
            settings.setAttribute(attribute, on)
        view.setPage(page)
        view.setContextMenuPolicy(Qt.ContextMenuPolicy.NoContextMenu)
        return view

    def _make_fallback(self, error: str) -> QWidget:
        self.note.setText(
            "Shown without a browser engine (QtWebEngine could not start: "
            f"{error}). Layout is approximate; nothing remote is loaded."
        )
        palette = self.note.palette()
        palette.setColor(
            QPalette.ColorRole.WindowText, theme.status_color(theme.Status.DEGRADED, palette)
        )
        self.note.setPalette(palette)
        self.note.setVisible(True)
        browser = QTextBrowser(self)
        browser.setOpenLinks(False)
        browser.setOpenExternalLinks(False)
        return browser

    def set_html(self, body: str) -> None:
        """Show ``body`` (untrusted HTML)."""
        self._html = body
        browser = self._ensure_browser()
        if self.uses_webengine:
            assert isinstance(browser, QWebEngineView)
            browser.setHtml(guarded_html(body), QUrl(BASE_URL))
        else:
            assert isinstance(browser, QTextBrowser)
            browser.setHtml(body)

    def html(self) -> str:
        """The HTML last shown (without the added policy)."""
        return self._html


# ------------------------------------------------------------------------------- page


class InboxPage(PollingPage):
    """The Inbox page (see the module docstring). Built with ``InboxPage(client)``.

    Signals: none of its own.
    """

    refresh_ms = REFRESH_MS

    def __init__(self, client: EngineClient, parent: QWidget | None = None) -> None:
        super().__init__(client, parent)
        self.entries: list[dict[str, Any]] = []
        self.message: ParsedMessage | None = None
        self._show_op: Operation[Any] | None = None
        self._shown_id: str | None = None
        self._loaded_at: float | None = None

        title = QLabel("Inbox")
        title.setFont(theme.scaled_font(self.font(), 1.5, bold=True))
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search subject, sender, recipient or Message-ID")
        self.search.setClearButtonEnabled(True)
        self.search.setMinimumWidth(self.fontMetrics().averageCharWidth() * 44)
        self._search_delay = QTimer(self)
        self._search_delay.setSingleShot(True)
        self._search_delay.setInterval(SEARCH_DELAY_MS)
        self._search_delay.timeout.connect(self.refresh)
        self.search.textChanged.connect(lambda _text: self._search_delay.start())
        self.count = QLabel("")
        self.freshness = QLabel("no data yet")
        header = QHBoxLayout()
        header.setSpacing(10)
        header.addWidget(title)
        header.addSpacing(8)
        header.addWidget(self.search, 1)
        header.addWidget(self.count)
        header.addSpacing(8)
        header.addWidget(self.freshness)

        self.empty = EmptyState(
            "mdi6.inbox-outline",
            "No mail yet \u2014 start demo traffic",
            "Start demo traffic",
            detail="Every email the engine sends to the local capture inbox appears here,"
            f" newest first. Demo traffic publishes a simulated shop's events at {DEMO_RATE}"
            " events/s; orders and sign-ups send mail within seconds.",
        )
        self.empty.action_triggered.connect(self.start_demo)
        self.no_match = EmptyState(
            "mdi6.email-search-outline",
            "No message matches the search",
            "Clear the search",
            detail="The search looks at the subject, the sender, the recipients and the"
            " Message-ID.",
        )
        self.no_match.action_triggered.connect(self.search.clear)

        self.model = QStandardItemModel(0, len(COLUMNS), self)
        self.model.setHorizontalHeaderLabels(list(COLUMNS))
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setShowGrid(False)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.verticalHeader().setVisible(False)
        # Widths from the font (the widest value each column can hold), not from the rows of
        # the moment: a refresh never makes the columns jump.
        head = self.table.horizontalHeader()
        fm = self.fontMetrics()
        pad = fm.averageCharWidth() * 3
        for column, mode in enumerate(
            (
                QHeaderView.ResizeMode.Fixed,
                QHeaderView.ResizeMode.Interactive,
                QHeaderView.ResizeMode.Stretch,
                QHeaderView.ResizeMode.Fixed,
            )
        ):
            head.setSectionResizeMode(column, mode)
        head.resizeSection(0, fm.horizontalAdvance("30 Sep 23:59") + pad)
        head.resizeSection(1, fm.averageCharWidth() * 30)
        head.resizeSection(3, fm.horizontalAdvance("999.9 KiB") + pad)
        self.table.selectionModel().currentRowChanged.connect(self._on_current_changed)

        message = self._build_viewer()
        self.table.setMinimumWidth(fm.averageCharWidth() * 60)
        self.states = MasterDetail(
            self.table,
            message,
            pick=self.pick,
            empty=self.empty,
            no_match=self.no_match,
            stretch=(1, 1),
        )
        self.splitter = self.states.splitter
        self.viewer = self.viewer_states = self.states.side

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 0)
        layout.setSpacing(8)
        layout.addLayout(header)
        layout.addWidget(self.states, 1)

        self._age_timer = QTimer(self)
        self._age_timer.setInterval(1000)
        self._age_timer.timeout.connect(self._show_age)

    def _build_viewer(self) -> QWidget:
        """The message: subject, envelope and its HTML, text, headers and raw tabs (the
        "select a message" state beside it is ``self.pick``)."""
        self.subject = QLabel("")
        self.subject.setFont(theme.scaled_font(self.font(), 1.2, bold=True))
        self.subject.setWordWrap(True)
        self.subject.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.envelope = QLabel("")
        self.envelope.setWordWrap(True)
        self.envelope.setTextFormat(Qt.TextFormat.RichText)
        self.envelope.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        mono = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
        self.html_view = HtmlView()
        self.text_view = QPlainTextEdit()
        self.text_view.setReadOnly(True)
        self.headers_table = QTableWidget(0, 2)
        self.headers_table.setHorizontalHeaderLabels(["Header", "Value"])
        self.headers_table.verticalHeader().setVisible(False)
        self.headers_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.headers_table.setWordWrap(True)
        self.headers_table.setAlternatingRowColors(True)
        hh = self.headers_table.horizontalHeader()
        hh.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        hh.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.raw_view = QPlainTextEdit()
        self.raw_view.setReadOnly(True)
        self.raw_view.setFont(mono)
        self.raw_view.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)

        self.tabs = QTabWidget()
        self.tabs.addTab(self.html_view, "HTML")
        self.tabs.addTab(self.text_view, "Text")
        self.tabs.addTab(self.headers_table, "Headers")
        self.tabs.addTab(self.raw_view, "Raw")

        self.pick = EmptyState(
            "mdi6.email-open-outline",
            "Select a message to read it",
            detail="The HTML part is rendered with scripts and remote content blocked.",
        )
        message = QWidget()
        column = QVBoxLayout(message)
        column.setContentsMargins(8, 0, 0, 0)
        column.setSpacing(4)
        column.addWidget(self.subject)
        column.addWidget(self.envelope)
        column.addWidget(self.tabs, 1)
        return message

    # ---------------------------------------------------------------- page hooks

    def on_shown(self) -> None:
        self._age_timer.start()

    def on_hidden(self) -> None:
        self._age_timer.stop()
        self._search_delay.stop()

    # ---------------------------------------------------------------- list

    def request_list(self) -> Operation[Any]:
        """Ask for the list (every 2 s while visible; see ``PollingPage.refresh``)."""
        args: dict[str, Any] = {"limit": LIST_LIMIT}
        query = self.search.text().strip()
        if query:
            args["search"] = query
        return (
            Operation(self, lambda: self.client.request("inbox.list", args), label="Inbox")
            .success(lambda rows: self.set_entries(rows, query))
            .run()
        )

    def set_entries(self, rows: list[dict[str, Any]], query: str = "") -> None:
        """Show ``rows`` (``inbox.list`` entries), newest first, keeping the selection."""
        self._loaded_at = time.monotonic()
        self._show_age()
        if query != self.search.text().strip():
            return  # an answer to an older search: the next tick asks again
        entries = sorted(rows, key=lambda e: e.get("received_at") or 0.0, reverse=True)
        self.count.setText(f"{len(entries):,} message{'s' if len(entries) != 1 else ''}")
        if not entries:
            self.states.setCurrentWidget(self.no_match if query else self.empty)
        else:
            self.states.setCurrentWidget(self.splitter)
        if [e["id"] for e in entries] == [e["id"] for e in self.entries]:
            self.entries = entries
            return
        selected = self.selected_id()
        self.entries = entries
        selection = self.table.selectionModel()
        selection.blockSignals(True)
        try:
            self.model.setRowCount(0)
            now = time.time()
            for entry in entries:
                self.model.appendRow(self._row(entry, now))
            if selected is not None:
                row = self.row_of(selected)
                if row >= 0:
                    index = self.model.index(row, 0)
                    selection.setCurrentIndex(
                        index,
                        QItemSelectionModel.SelectionFlag.ClearAndSelect
                        | QItemSelectionModel.SelectionFlag.Rows,
                    )
        finally:
            selection.blockSignals(False)

    def _row(self, entry: dict[str, Any], now: float) -> list[QStandardItem]:
        ts = float(entry.get("received_at") or 0.0)
        to = ", ".join(entry.get("rcpt_tos") or [])
        size = int(entry.get("size") or 0)
        cells = [
            QStandardItem(local_time(ts, now)),
            QStandardItem(to),
            QStandardItem(str(entry.get("subject") or "(no subject)")),
            QStandardItem(format_bytes(size)),
        ]
        cells[0].setToolTip(utc_time(ts))
        cells[1].setToolTip(to)
        cells[2].setToolTip(f"From {entry.get('mail_from') or '(empty sender)'}")
        cells[3].setToolTip(f"{size:,} bytes")
        cells[3].setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        for cell in cells:
            cell.setData(str(entry["id"]), ID_ROLE)
        return cells

    def row_of(self, ident: str) -> int:
        """The table row of message ``ident`` (-1 when not listed)."""
        return next((i for i, e in enumerate(self.entries) if str(e["id"]) == ident), -1)

    def selected_id(self) -> str | None:
        index = self.table.selectionModel().currentIndex()
        if not index.isValid():
            return None
        value = index.siblingAtColumn(0).data(ID_ROLE)
        return str(value) if value is not None else None

    def select(self, ident: str) -> None:
        """Select message ``ident`` in the list (and so show it)."""
        row = self.row_of(ident)
        if row < 0:
            raise LookupError(f"message {ident} is not listed")
        self.table.selectRow(row)

    def _show_age(self) -> None:
        if self._loaded_at is None:
            return
        age = time.monotonic() - self._loaded_at
        self.freshness.setText(format_age(age))
        stale = age > 3 * REFRESH_MS / 1000
        palette = self.freshness.palette()
        colour = (
            theme.status_color(theme.Status.DEGRADED, self.palette())
            if stale
            else theme.secondary_text_color(self.palette())
        )
        palette.setColor(QPalette.ColorRole.WindowText, colour)
        self.freshness.setPalette(palette)

    # ---------------------------------------------------------------- message

    def _on_current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        if not current.isValid():
            return
        ident = current.siblingAtColumn(0).data(ID_ROLE)
        if ident is not None and str(ident) != self._shown_id:
            self.open_message(str(ident))

    def open_message(self, ident: str) -> None:
        """Fetch message ``ident`` and show it in the tabs."""
        if self._show_op is not None:
            self._show_op.cancel()
        self._shown_id = ident
        self._show_op = (
            Operation(
                self, lambda: self.client.request("inbox.show", {"id": ident}), label="Message"
            )
            .success(lambda result: self.display_message(result["raw"]))
            .run()
        )

    def display_message(self, raw: str) -> None:
        """Parse ``raw`` and fill the tabs."""
        parsed = ParsedMessage(raw)
        self.message = parsed
        self.subject.setText(parsed.subject or "(no subject)")
        rows = (("From", parsed.sender), ("To", parsed.to), ("Date", parsed.date))
        self.envelope.setText(
            "<br>".join(
                f"<span style='color:{theme.secondary_text_color(self.palette()).name()}'>"
                f"{name}</span>&nbsp; {html.escape(value)}"
                for name, value in rows
                if value
            )
        )
        if parsed.html:
            self.html_view.set_html(parsed.html)
        elif self.html_view.browser is not None:  # do not leave the last message's HTML behind
            self.html_view.set_html("<p>This message has no HTML part.</p>")
        self.tabs.setTabEnabled(0, bool(parsed.html))
        self.text_view.setPlainText(parsed.text or "(This message has no text part.)")
        self.headers_table.setRowCount(len(parsed.headers))
        bold = QFont(self.headers_table.font())
        bold.setBold(True)
        for row, (name, value) in enumerate(parsed.headers):
            name_item = QTableWidgetItem(name)
            name_item.setFont(bold)
            name_item.setTextAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
            self.headers_table.setItem(row, 0, name_item)
            value_item = QTableWidgetItem(value)
            value_item.setToolTip(value)
            self.headers_table.setItem(row, 1, value_item)
        self.headers_table.resizeRowsToContents()
        self.raw_view.setPlainText(raw)
        if not parsed.html and self.tabs.currentIndex() == 0:
            self.tabs.setCurrentIndex(1)
        self.viewer_states.setCurrentIndex(1)

    def header_value(self, name: str) -> str:
        """The value shown in the Headers tab for header ``name`` ("" if absent)."""
        for row in range(self.headers_table.rowCount()):
            item = self.headers_table.item(row, 0)
            if item is not None and item.text().lower() == name.lower():
                value = self.headers_table.item(row, 1)
                return value.text() if value is not None else ""
        return ""

    # ---------------------------------------------------------------- demo

    def start_demo(self) -> None:
        """Start demo traffic (50 events/s) from the empty state."""
        self.empty.set_action("Starting demo traffic\u2026", enabled=False)

        def started(_result: Any) -> None:
            self.empty.set_action("Demo traffic running \u2014 mail arrives soon", enabled=False)
            self.refresh()

        def failed(exc: BaseException) -> None:
            self.empty.set_action("Start demo traffic")
            show_message(self, f"Demo traffic: {describe(exc)}")

        Operation(
            self, lambda: self.client.request_one("demo.start", {"rate": DEMO_RATE}), label="Demo"
        ).success(started).failure(failed).run()
