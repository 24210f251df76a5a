"""The Templates page: edit an email template beside its live, personalized preview.

Three panes (UI.md): the editor (subject, preheader, the body in HTML or MJML with Jinja, and
the optional text part; line numbers, highlighting, completion of the variables seen in the
stream, find/replace), the preview (rendered by the engine's own composer for a chosen contact
and triggering event, or sample data: HTML in QtWebEngine at desktop or mobile width, the text
part, the headers), and the side panel (contact search, event choice, variables, lint findings;
click a finding to jump to its line).

Every edit marks the template unsaved and, after a short pause, asks the engine to lint and
preview the draft (``templates.lint``, ``templates.preview``): one request of each at a time,
the latest edit always gets its turn. Save stores a new version, live on every engine at once
(``templates.save``); Versions shows every version with a diff; Test send mails the preview to
the local capture inbox or an address.
"""

from __future__ import annotations

import logging
from typing import Any

import qtawesome as qta
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from console.client import CONNECTED, EngineClient
from console.errors import ControlRefused, describe
from console.operations import Operation, show_message
from console.pages.template_panels import (
    LATEST_EVENT,
    SAMPLE_EVENT,
    PreviewPane,
    SidePanel,
    TestSendDialog,
    VersionsDialog,
)
from widgets import theme
from widgets.code_editor import CodeEditor, FindBar
from widgets.empty_state import EmptyState

log = logging.getLogger(__name__)

DEFAULT_ROUTE_LABEL = "The workflow's, else \u201cdefault\u201d"
DRAFT_DELAY_MS = 450
"""Pause after the last keystroke before the draft is linted and previewed."""
SEARCH_DELAY_MS = 300
FILTERS = ("money", "date", "http_url", "shop_link", "default", "escape", "upper", "title", "int")
BASE_NAMES = (
    "contact.email",
    "contact.id",
    "contact.lifetime_value",
    "contact.orders",
    "contact.average_order_value",
    "contact.first_order_at",
    "contact.last_order_at",
    "event.name",
    "event.properties",
    "event.ts",
    "unsubscribe_url",
    "shop.name",
    "shop.url",
    "shop.address",
)


class TemplatesPage(QWidget):
    """The template editor (see the module docstring). Built with ``TemplatesPage(client)``.

    Signals: none of its own.
    """

    def __init__(self, client: EngineClient, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.client = client
        self.templates: list[dict[str, Any]] = []
        self.template: dict[str, Any] | None = None  # the saved version loaded
        self.contact: dict[str, Any] | None = None  # None: sample data
        self.dirty = False
        self.last_lint: dict[str, Any] | None = None
        self.last_preview: dict[str, Any] | None = None
        self._loading = False
        self._ops: dict[str, Operation[Any]] = {}
        self._again: set[str] = set()
        self._versions: VersionsDialog | None = None

        # -- header ---------------------------------------------------------------------------
        title = QLabel("Templates")
        title.setFont(theme.scaled_font(self.font(), 1.5, bold=True))
        self.chooser = QComboBox()
        self.chooser.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.chooser.setMinimumWidth(self.fontMetrics().averageCharWidth() * 40)
        self.chooser.activated.connect(self._chooser_activated)
        self.state = QLabel("")
        self.versions_button = QPushButton(qta.icon("mdi6.history"), "Versions")
        self.versions_button.clicked.connect(self.open_versions)
        self.test_button = QPushButton(qta.icon("mdi6.email-fast-outline"), "Test send")
        self.test_button.clicked.connect(self.open_test_send)
        self.save_button = QPushButton("Save")
        self.save_button.setShortcut("Ctrl+S")
        self.save_button.setToolTip("Save a new version; it is live on every engine at once")
        self.save_button.setStyleSheet(theme.primary_button_qss(self.palette()))
        self.save_button.clicked.connect(self.save)
        header = QHBoxLayout()
        header.setSpacing(10)
        header.addWidget(title)
        header.addSpacing(8)
        header.addWidget(self.chooser)
        header.addWidget(self.state, 1)
        header.addWidget(self.versions_button)
        header.addWidget(self.test_button)
        header.addWidget(self.save_button)

        # -- editor -----------------------------------------------------------------------------
        self.subject = QLineEdit()
        self.subject.setPlaceholderText("Subject (Jinja: {{ contact.first_name }})")
        self.preheader = QLineEdit()
        self.preheader.setPlaceholderText("Inbox preview text (optional)")
        # The route its sends take when the workflow's send step names none (saved with the
        # version; migration 0009). The engine refuses a route it does not have configured.
        self.route_names: list[str] = []
        self.route = QComboBox()
        self.route.setObjectName("template-route")
        self.route.addItem(DEFAULT_ROUTE_LABEL, None)
        self.route.setToolTip(
            "The route this template's mails take unless the workflow's send step names one"
        )
        self.route.activated.connect(lambda _i: self._edited())
        self.body = CodeEditor()
        self.text_part = CodeEditor()
        self.text_part.setPlaceholderText(
            "Leave empty to derive the text part from the HTML (recommended)."
        )
        self.find_bar = FindBar(self.body)
        self.editor_tabs = QTabWidget()
        self.editor_tabs.addTab(self.body, "Body")
        self.editor_tabs.addTab(self.text_part, "Text part")
        form = QFormLayout()
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Subject", self.subject)
        form.addRow("Preheader", self.preheader)
        form.addRow("Route", self.route)
        editor = QWidget()
        editor_layout = QVBoxLayout(editor)
        editor_layout.setContentsMargins(0, 0, 0, 0)
        editor_layout.addLayout(form)
        editor_layout.addWidget(self.editor_tabs, 1)
        editor_layout.addWidget(self.find_bar)
        for field in (self.subject, self.preheader):
            field.textEdited.connect(self._edited)
        for code in (self.body, self.text_part):
            code.textChanged.connect(self._edited)

        # -- preview and side panel ------------------------------------------------------------
        self.preview = PreviewPane()
        self.side = SidePanel()
        self.side.search_changed.connect(lambda _t: self._search_delay.start())
        self.side.contact_chosen.connect(self.choose_contact)
        self.side.event_chosen.connect(self.refresh_draft)
        self.side.variable_inserted.connect(self._insert)
        self.side.finding_activated.connect(self.go_to_finding)

        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(editor)
        self.splitter.addWidget(self.preview)
        self.splitter.addWidget(self.side)
        self.splitter.setStretchFactor(0, 5)
        self.splitter.setStretchFactor(1, 5)
        self.splitter.setStretchFactor(2, 3)
        self.splitter.setChildrenCollapsible(False)

        self.empty = EmptyState(
            "mdi6.email-edit-outline",
            "No templates yet \u2014 connect to an engine",
            "Try again",
            detail="Templates live in the engine's store; a fresh engine starts with the"
            " starter emails (welcome, abandoned cart, order confirmation ...).",
        )
        self.empty.action_triggered.connect(self.load_list)
        self.states = QStackedWidget()
        self.states.addWidget(self.empty)
        self.states.addWidget(self.splitter)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 12, 16, 12)
        layout.setSpacing(8)
        layout.addLayout(header)
        layout.addWidget(self.states, 1)

        self._draft_delay = QTimer(self)
        self._draft_delay.setSingleShot(True)
        self._draft_delay.setInterval(DRAFT_DELAY_MS)
        self._draft_delay.timeout.connect(self.refresh_draft)
        self._search_delay = QTimer(self)
        self._search_delay.setSingleShot(True)
        self._search_delay.setInterval(SEARCH_DELAY_MS)
        self._search_delay.timeout.connect(self.search_contacts)
        self._set_state()

    # ---------------------------------------------------------------- page hooks

    def page_shown(self) -> None:
        if not self.templates:
            self.load_list()
            self.load_fields()
            self.load_routes()

    def page_hidden(self) -> None:
        self._draft_delay.stop()

    # ---------------------------------------------------------------- requests

    def _request(
        self,
        key: str,
        verb: str,
        args: dict[str, Any],
        on_success: Any,
        on_failure: Any = None,
        timeout: float = 10,
    ) -> None:
        """One request per ``key`` at a time: a newer one waits and runs after (latest wins)."""
        running = self._ops.get(key)
        if running is not None and not running.done():
            self._again.add(key)
            return
        if self.client.state != CONNECTED:
            return
        op: Operation[Any] = Operation(
            self, lambda: self.client.request_one(verb, args, timeout=timeout), label=verb
        ).success(on_success)
        if on_failure is not None:
            op.failure(on_failure)
        op.signals.finished.connect(lambda: self._finished(key))
        self._ops[key] = op.run()

    def _finished(self, key: str) -> None:
        if key in self._again:
            self._again.discard(key)
            if key in ("lint", "preview"):
                self.refresh_draft()

    def busy(self) -> bool:
        """Whether a request is on its way (tests wait for quiet)."""
        return any(not op.done() for op in self._ops.values()) or bool(self._again)

    def load_list(self) -> None:
        self._request("list", "templates.list", {}, self._show_list)

    def _show_list(self, reply: dict[str, Any]) -> None:
        self.templates = list(reply.get("templates") or [])
        current = self.template["id"] if self.template else None
        self.chooser.blockSignals(True)
        self.chooser.clear()
        for row in self.templates:
            self.chooser.addItem(f"{row['name']}  ({row['id']}, v{row['version']})", row["id"])
        self.chooser.blockSignals(False)
        if not self.templates:
            self.states.setCurrentWidget(self.empty)
            self.empty.set_sentence("No templates in this engine's store yet")
            return
        self.states.setCurrentWidget(self.splitter)
        wanted = current or self.templates[0]["id"]
        self.chooser.setCurrentIndex(max(0, self.chooser.findData(wanted)))
        if current is None:
            self.open_template(wanted)

    def load_routes(self) -> None:
        self._request("routes", "routes.list", {}, self._show_routes)

    def _show_routes(self, reply: dict[str, Any]) -> None:
        self.route_names = sorted(
            {str(r["name"]) for r in reply.get("routes", []) if r.get("name")}
        )
        self.set_route(self.route.currentData())

    def set_route(self, chosen: str | None) -> None:
        """Offer the engine's routes with ``chosen`` picked; a chosen route the engine does
        not have is still shown (and said so), so the choice is never silently lost."""
        current = chosen
        was = self.route.blockSignals(True)
        self.route.clear()
        self.route.addItem(DEFAULT_ROUTE_LABEL, None)
        for name in self.route_names:
            self.route.addItem(name, name)
        if current and self.route.findData(current) < 0:
            self.route.addItem(f"{current} (not configured here)", current)
        self.route.setCurrentIndex(max(0, self.route.findData(current)) if current else 0)
        self.route.blockSignals(was)

    def load_fields(self) -> None:
        self._request("fields", "templates.fields", {}, self._show_fields)

    def _show_fields(self, reply: dict[str, Any]) -> None:
        self.side.set_fields(reply)
        names = set(BASE_NAMES)
        names |= {f"contact.{e['path']}" for e in reply.get("traits", [])}
        names |= {
            f"properties.{e['path']}".replace("[]", "[0]") for e in reply.get("properties", [])
        }
        names |= set(FILTERS)
        for editor in (self.body, self.text_part):
            editor.set_completions(names)

    def _chooser_activated(self, index: int) -> None:
        template = self.chooser.itemData(index)
        if template and (self.template is None or template != self.template["id"]):
            if self.dirty:
                show_message(
                    self,
                    f"Unsaved changes to {self.template['id'] if self.template else ''} were"
                    " discarded.",
                    "info",
                )
            self.open_template(str(template))

    def open_template(self, template: str, version: int | None = None) -> None:
        """Load a saved version into the editor (the newest when ``version`` is None)."""
        args: dict[str, Any] = {"template": template}
        if version is not None:
            args["version"] = version
        self._request(
            "get", "templates.get", args, lambda reply: self._show_template(reply, version)
        )

    def _show_template(self, reply: dict[str, Any], restored: int | None) -> None:
        self._loading = True
        try:
            self.subject.setText(str(reply.get("subject") or ""))
            self.subject.setCursorPosition(0)
            self.preheader.setText(str(reply.get("preheader") or ""))
            self.preheader.setCursorPosition(0)
            self.body.setPlainText(str(reply.get("body") or ""))
            self.text_part.setPlainText(str(reply.get("text") or ""))
            self.set_route(reply.get("route") or None)
        finally:
            self._loading = False
        fmt = "MJML" if reply.get("format") == "mjml" else "HTML"
        self.editor_tabs.setTabText(0, f"Body ({fmt})")
        if restored is None or self.template is None:
            self.template = reply
            self.dirty = False
        else:  # an older version in the editor: unsaved changes on top of the newest
            self.dirty = True
        self.chooser.setCurrentIndex(max(0, self.chooser.findData(reply["id"])))
        self._set_state()
        self.refresh_draft()

    # ---------------------------------------------------------------- draft, lint, preview

    def _edited(self) -> None:
        if self._loading or self.template is None:
            return
        self.dirty = True
        self._set_state()
        self._draft_delay.start()

    def draft(self) -> dict[str, Any]:
        """The editor's content, as ``templates.*`` take it."""
        fmt = (self.template or {}).get("format", "html")
        return {
            "subject": self.subject.text(),
            "preheader": self.preheader.text() or None,
            "body": self.body.toPlainText(),
            "text": self.text_part.toPlainText() or None,
            "format": fmt,
            "route": self.route.currentData() or None,
        }

    def target_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {}
        choice = self.side.event_choice()
        if self.contact is not None:
            args["contact"] = self.contact["id"]
            if choice == SAMPLE_EVENT:
                args["sample"] = True
            elif choice != LATEST_EVENT:
                args["event"] = choice
        else:
            args["sample"] = True
        return args

    def refresh_draft(self) -> None:
        """Lint and preview what the editor holds now."""
        if self.template is None:
            return
        args = {"template": self.template["id"], **self.target_args()}
        if self.dirty:
            args["draft"] = self.draft()
        self._request("lint", "templates.lint", args, self._show_lint)
        self._request(
            "preview", "templates.preview", args, self._show_preview, self._preview_failed
        )

    def _show_lint(self, reply: dict[str, Any]) -> None:
        self.last_lint = reply
        findings = list(reply.get("findings") or [])
        self.side.set_findings(findings)
        for part, editor in (("body", self.body), ("text", self.text_part)):
            markers: dict[int, tuple[str, str]] = {}
            for f in findings:
                if f["part"] == part and f.get("line"):
                    previous = markers.get(int(f["line"]))
                    severity = (
                        "error"
                        if f["severity"] == "error" or (previous and previous[0] == "error")
                        else "warning"
                    )
                    text = f["message"] if previous is None else f"{previous[1]}\n{f['message']}"
                    markers[int(f["line"])] = (severity, text)
            editor.set_markers(markers)

    def _show_preview(self, reply: dict[str, Any]) -> None:
        self.last_preview = reply
        self.preview.show_reply(reply)

    def _preview_failed(self, exc: BaseException) -> None:
        self.last_preview = None
        if isinstance(exc, ControlRefused):
            self.preview.show_problem(str(exc))
        else:
            self.preview.show_problem(describe(exc))

    def go_to_finding(self, part: str, line: int) -> None:
        if part in ("subject", "preheader"):
            (self.subject if part == "subject" else self.preheader).setFocus()
            return
        editor = self.text_part if part == "text" else self.body
        self.editor_tabs.setCurrentWidget(editor)
        if line:
            editor.go_to_line(line)

    def _insert(self, text: str) -> None:
        editor = self.text_part if self.editor_tabs.currentWidget() is self.text_part else self.body
        editor.insertPlainText(text)
        editor.setFocus()

    # ---------------------------------------------------------------- contact and event

    def search_contacts(self) -> None:
        query = self.side.search.text().strip()
        if not query:
            self.side.set_results([])
            return
        self._request(
            "search",
            "contacts.search",
            {"query": query, "limit": 20},
            lambda reply: self.side.set_results(list(reply.get("contacts") or [])),
        )

    def choose_contact(self, contact_id: str) -> None:
        """Preview as this contact ("" for sample data)."""
        if not contact_id:
            self.contact = None
            self.side.set_contact(None)
            self.side.set_events([], sample_only=True)
            self.refresh_draft()
            return
        found = None
        for row in range(self.side.results.count()):
            data = self.side.results.item(row).data(Qt.ItemDataRole.UserRole)
            if isinstance(data, dict) and data.get("id") == contact_id:
                found = data
        self.contact = found or {"id": contact_id}
        self.side.set_contact(self.contact)
        self.load_fields()  # the stream has moved on since the page opened
        self._request(
            "events",
            "contacts.events",
            {"contact": contact_id, "limit": 30},
            self._show_events,
        )

    def _show_events(self, reply: dict[str, Any]) -> None:
        self.side.set_events(list(reply.get("events") or []))
        self.refresh_draft()

    # ---------------------------------------------------------------- save, versions, test

    def _set_state(self) -> None:
        if self.template is None:
            self.state.setText("")
            self.save_button.setEnabled(False)
            return
        version = self.template.get("version")
        if self.dirty:
            colour = theme.status_color(theme.Status.DEGRADED, self.palette()).name()
            self.state.setText(
                f"<span style='color:{colour}'>\u25cf Unsaved changes</span> (live: v{version})"
            )
        else:
            self.state.setText(f"v{version} \u00b7 live")
        self.save_button.setEnabled(self.dirty)

    def save(self) -> None:
        if self.template is None or not self.dirty:
            return
        tid = self.template["id"]
        args = {
            "template": tid,
            "draft": self.draft(),
            "base_version": self.template.get("version"),
        }
        self.save_button.setEnabled(False)
        self.state.setText("Saving\u2026")

        def saved(reply: dict[str, Any]) -> None:
            if reply.get("changed"):
                show_message(
                    self,
                    f"Saved {tid} v{reply['version']}: live on every engine now.",
                    "healthy",
                )
            self.dirty = False
            self.template = None  # reloaded below
            self.open_template(tid)
            self.load_list()

        def failed(exc: BaseException) -> None:
            self._set_state()
            show_message(self, f"Not saved: {describe(exc)}")

        self._request("save", "templates.save", args, saved, failed)

    def open_versions(self) -> None:
        if self.template is None:
            return
        tid = self.template["id"]
        dialog = VersionsDialog(tid, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.diff_requested.connect(
            lambda old, new: self._request(
                "diff",
                "templates.diff",
                {"template": tid, "from": old, "to": new},
                dialog.show_diff,
            )
        )
        dialog.restore_requested.connect(lambda v: self._restore(dialog, tid, v))
        self._versions = dialog
        dialog.open()  # never exec() inside the event loop (qasync)
        self._request(
            "versions",
            "templates.versions",
            {"template": tid},
            lambda reply: dialog.set_versions(list(reply.get("versions") or [])),
        )

    def _restore(self, dialog: VersionsDialog, template: str, version: int) -> None:
        dialog.accept()
        self.open_template(template, version)

    def open_test_send(self) -> None:
        if self.template is None:
            return
        dialog = TestSendDialog(self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.send_requested.connect(self.test_send)
        dialog.open()

    def test_send(self, address: str) -> None:
        """Send the preview (as the chosen contact and event) to the inbox or ``address``."""
        if self.template is None:
            return
        args: dict[str, Any] = {"template": self.template["id"], **self.target_args()}
        if self.dirty:
            args["draft"] = self.draft()
        if address:
            args["to"] = address
        self.test_button.setEnabled(False)

        def sent(reply: dict[str, Any]) -> None:
            self.test_button.setEnabled(True)
            where = "the local inbox" if reply.get("via") == "inbox" else reply.get("to")
            show_message(self, f"Test email sent to {where} ({reply.get('reply')}).", "healthy")

        def failed(exc: BaseException) -> None:
            self.test_button.setEnabled(True)
            show_message(self, f"Test send failed: {describe(exc)}")

        self._request("test", "templates.test_send", args, sent, failed, timeout=30)
