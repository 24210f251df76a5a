"""Parts of the Templates page: the preview pane, the side panel, the versions and test-send
dialogs. Each is a plain widget fed by the page; none talks to the engine itself."""

from __future__ import annotations

import html
from datetime import datetime
from typing import Any

import qtawesome as qta
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont, QFontDatabase, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QButtonGroup,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QRadioButton,
    QSplitter,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QToolButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from console.pages.inbox import HtmlView
from widgets import theme
from widgets.format import format_bytes

DESKTOP_WIDTH = 0  # as wide as the pane
MOBILE_WIDTH = 375  # an iPhone's CSS width
LATEST_EVENT = ""
SAMPLE_EVENT = "\x00sample"


def _mono(widget: QWidget) -> None:
    font = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
    font.setPointSizeF(max(font.pointSizeF(), widget.font().pointSizeF()))
    widget.setFont(font)


def _section(text: str, parent: QWidget) -> QLabel:
    label = QLabel(text)
    label.setFont(theme.scaled_font(parent.font(), 1.0, bold=True))
    return label


# ------------------------------------------------------------------------------- preview


class PreviewPane(QWidget):
    """The rendered email: HTML in a browser engine (desktop or mobile width), the text part
    and the headers, with what it was rendered for and its size.

    Signals: none.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.reply: dict[str, Any] | None = None
        self.desktop = QToolButton()
        self.mobile = QToolButton()
        group = QButtonGroup(self)
        for button, text, icon in (
            (self.desktop, "Desktop", "mdi6.monitor"),
            (self.mobile, "Mobile", "mdi6.cellphone"),
        ):
            button.setText(text)
            button.setCheckable(True)
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
            button.setIcon(qta.icon(icon, color=theme.text_color(self.palette())))
            group.addButton(button)
        self.desktop.setChecked(True)
        self.desktop.setToolTip("As wide as this pane (most desktop clients: 600-800 px)")
        self.mobile.setToolTip(f"{MOBILE_WIDTH} px wide, as on a phone")
        group.buttonClicked.connect(lambda _b: self._apply_width())
        self.about = QLabel("")
        self.about.setWordWrap(True)
        self.about.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        top = QHBoxLayout()
        top.addWidget(_section("Preview", self))
        top.addSpacing(8)
        top.addWidget(self.desktop)
        top.addWidget(self.mobile)
        top.addStretch(1)

        self.html_view = HtmlView()
        self.frame = QWidget()
        frame_layout = QHBoxLayout(self.frame)
        frame_layout.setContentsMargins(0, 0, 0, 0)
        frame_layout.addStretch(0)
        frame_layout.addWidget(self.html_view, 1)
        frame_layout.addStretch(0)
        self.text_view = QPlainTextEdit()
        self.text_view.setReadOnly(True)
        _mono(self.text_view)
        self.headers = QTableWidget(0, 2)
        self.headers.setHorizontalHeaderLabels(["Header", "Value"])
        self.headers.verticalHeader().setVisible(False)
        self.headers.horizontalHeader().setSectionResizeMode(
            0, QHeaderView.ResizeMode.ResizeToContents
        )
        self.headers.horizontalHeader().setStretchLastSection(True)
        self.headers.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.headers.setWordWrap(True)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.frame, "HTML")
        self.tabs.addTab(self.text_view, "Text")
        self.tabs.addTab(self.headers, "Headers")

        self.problem = QLabel("")
        self.problem.setWordWrap(True)
        self.problem.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.problem.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.problem.setContentsMargins(12, 12, 12, 12)
        self.states = QStackedWidget()
        self.states.addWidget(self.tabs)
        self.states.addWidget(self.problem)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.about)
        layout.addWidget(self.states, 1)

    def _apply_width(self) -> None:
        if self.mobile.isChecked():
            self.html_view.setFixedWidth(MOBILE_WIDTH)
        else:
            self.html_view.setMinimumWidth(0)
            self.html_view.setMaximumWidth(16_777_215)

    def is_mobile(self) -> bool:
        return self.mobile.isChecked()

    def show_reply(self, reply: dict[str, Any]) -> None:
        """Show a ``templates.preview`` reply."""
        self.reply = reply
        self.states.setCurrentWidget(self.tabs)
        self.html_view.set_html(str(reply.get("html", "")))
        self.text_view.setPlainText(str(reply.get("text", "")))
        headers = [h for h in reply.get("headers", []) if h[0] not in ("MIME-Version",)]
        self.headers.setRowCount(len(headers))
        for row, (name, value) in enumerate(headers):
            self.headers.setItem(row, 0, QTableWidgetItem(name))
            self.headers.setItem(row, 1, QTableWidgetItem(value))
        self.headers.resizeRowsToContents()
        target = reply.get("target", {})
        who = target.get("name") or target.get("contact", "")
        event = target.get("event") or "no event"
        when = ""
        if target.get("event_ts") and not target.get("sample"):
            when = " at " + datetime.fromtimestamp(float(target["event_ts"])).strftime(
                "%d %b %H:%M"
            )
        version = "draft" if reply.get("draft") else f"v{reply.get('version')}"
        kind = "sample data" if target.get("sample") else f"{who} <{target.get('email', '')}>"
        size = format_bytes(int(reply.get("html_size", 0)))
        words = (
            f"<b>{html.escape(str(reply.get('subject', '')))}</b><br>"
            f"{html.escape(kind)} \u2014 {html.escape(event)}{html.escape(when)}"
            f" \u00b7 {version} \u00b7 {reply.get('category', '')} \u00b7 HTML {size}"
        )
        notes = list(reply.get("notes") or [])
        if 'src="http' in str(reply.get("html", "")):
            notes.append("Remote images are not loaded here (nothing leaves the console).")
        if notes:
            colour = theme.status_color(theme.Status.DEGRADED, self.palette()).name()
            words += "".join(
                f"<br><span style='color:{colour}'>\u26a0 {html.escape(n)}</span>" for n in notes
            )
        self.about.setText(words)

    def show_problem(self, text: str) -> None:
        """The preview could not be made: say why, in place of the email."""
        colour = theme.status_color(theme.Status.FAILING, self.palette()).name()
        self.problem.setText(
            f"<p style='color:{colour}'><b>This email cannot be rendered.</b></p>"
            f"<p>{html.escape(text)}</p><p>Fix the template (the lint list names the line);"
            " the preview updates as you type.</p>"
        )
        self.states.setCurrentWidget(self.problem)


# ------------------------------------------------------------------------------- side panel


class SidePanel(QWidget):
    """Who to preview as (contact search, their events or sample data), the variables seen in
    the stream (double-click inserts one), and the lint findings (click one to go to its line).

    Signals:
        search_changed(str): the contact search text changed.
        contact_chosen(str): a contact id was picked from the results ("" for sample data).
        event_chosen(): the event choice changed (see ``event_choice``).
        variable_inserted(str): a variable to insert at the cursor ("{{ contact.first_name }}").
        finding_activated(str, int): a finding was clicked (part, line).
    """

    search_changed = Signal(str)
    contact_chosen = Signal(str)
    event_chosen = Signal()
    variable_inserted = Signal(str)
    finding_activated = Signal(str, int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search contacts by name or email")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(self.search_changed)
        self.results = QListWidget()
        self.results.setMaximumHeight(self.fontMetrics().height() * 6)
        self.results.itemActivated.connect(self._pick)
        self.results.itemClicked.connect(self._pick)
        self.chosen = QLabel("Previewing with sample data")
        self.chosen.setWordWrap(True)
        self.sample_button = QPushButton("Use sample data")
        self.sample_button.clicked.connect(lambda: self.contact_chosen.emit(""))
        self.events = QComboBox()
        self.events.currentIndexChanged.connect(lambda _i: self.event_chosen.emit())

        self.variables = QTreeWidget()
        self.variables.setHeaderLabels(["Variable", "Example"])
        self.variables.setRootIsDecorated(True)
        self.variables.itemDoubleClicked.connect(self._insert_variable)
        self.variables.setToolTip("Double-click to insert at the cursor")

        self.lint_summary = QLabel("")
        self.findings = QListWidget()
        self.findings.setWordWrap(True)
        self.findings.itemClicked.connect(self._activate_finding)
        self.findings.itemActivated.connect(self._activate_finding)

        who = QWidget()
        who_layout = QVBoxLayout(who)
        who_layout.setContentsMargins(0, 0, 0, 0)
        who_layout.addWidget(_section("Preview as", self))
        who_layout.addWidget(self.search)
        who_layout.addWidget(self.results)
        row = QHBoxLayout()
        row.addWidget(self.chosen, 1)
        row.addWidget(self.sample_button)
        who_layout.addLayout(row)
        who_layout.addWidget(QLabel("Triggering event"))
        who_layout.addWidget(self.events)
        variables = QWidget()
        var_layout = QVBoxLayout(variables)
        var_layout.setContentsMargins(0, 6, 0, 0)
        var_layout.addWidget(_section("Variables seen in the stream", self))
        var_layout.addWidget(self.variables, 1)
        lint = QWidget()
        lint_layout = QVBoxLayout(lint)
        lint_layout.setContentsMargins(0, 6, 0, 0)
        title = QHBoxLayout()
        title.addWidget(_section("Checks", self))
        title.addStretch(1)
        title.addWidget(self.lint_summary)
        lint_layout.addLayout(title)
        lint_layout.addWidget(self.findings, 1)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(variables)
        split.addWidget(lint)
        split.setSizes([300, 300])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(who)
        layout.addWidget(split, 1)
        self.set_events([])

    # -- contact and event ------------------------------------------------------------------

    def set_results(self, contacts: list[dict[str, Any]]) -> None:
        self.results.clear()
        for contact in contacts:
            name = contact.get("name") or contact.get("id")
            item = QListWidgetItem(f"{name} \u2014 {contact.get('email') or 'no email'}")
            item.setData(Qt.ItemDataRole.UserRole, contact)
            self.results.addItem(item)
        if not contacts and self.search.text().strip():
            item = QListWidgetItem("No contact matches")
            item.setFlags(Qt.ItemFlag.NoItemFlags)
            self.results.addItem(item)

    def _pick(self, item: QListWidgetItem) -> None:
        contact = item.data(Qt.ItemDataRole.UserRole)
        if isinstance(contact, dict):
            self.contact_chosen.emit(str(contact["id"]))

    def set_contact(self, contact: dict[str, Any] | None) -> None:
        """Show who is chosen (None: sample data)."""
        if contact is None:
            self.chosen.setText("Previewing with <b>sample data</b>")
            self.sample_button.setEnabled(False)
        else:
            name = html.escape(str(contact.get("name") or contact.get("id")))
            email = html.escape(str(contact.get("email") or "no email"))
            self.chosen.setText(f"Previewing as <b>{name}</b><br>{email}")
            self.sample_button.setEnabled(True)

    def set_events(self, events: list[dict[str, Any]], *, sample_only: bool = False) -> None:
        """The event choices: the latest trigger event, the contact's recent events, sample."""
        self.events.blockSignals(True)
        self.events.clear()
        if not sample_only:
            self.events.addItem("Latest event that triggers this email", LATEST_EVENT)
            for event in events:
                when = datetime.fromtimestamp(float(event["ts"])).strftime("%d %b %H:%M:%S")
                self.events.addItem(f"{when}  {event['name']}", str(event["message_id"]))
        self.events.addItem("Sample event data", SAMPLE_EVENT)
        self.events.blockSignals(False)

    def event_choice(self) -> str:
        """The chosen event's messageId, ``LATEST_EVENT`` or ``SAMPLE_EVENT``."""
        return str(self.events.currentData() or LATEST_EVENT)

    # -- variables ----------------------------------------------------------------------------

    def set_fields(self, fields: dict[str, Any]) -> None:
        self.variables.clear()
        groups = (
            ("contact", "Contact traits", fields.get("traits", [])),
            ("properties", "Event properties", fields.get("properties", [])),
        )
        for root, label, entries in groups:
            parent = QTreeWidgetItem([label, f"{len(entries)} seen"])
            parent.setFlags(Qt.ItemFlag.ItemIsEnabled)
            self.variables.addTopLevelItem(parent)
            for entry in entries:
                path = f"{root}.{entry['path']}"
                child = QTreeWidgetItem([path, str(entry.get("example", ""))])
                child.setToolTip(0, f"seen {entry['count']:,} times")
                child.setData(0, Qt.ItemDataRole.UserRole, path)
                parent.addChild(child)
            parent.setExpanded(True)
        fixed = QTreeWidgetItem(["Always there", ""])
        fixed.setFlags(Qt.ItemFlag.ItemIsEnabled)
        self.variables.addTopLevelItem(fixed)
        for path, about in (
            ("contact.email", "the recipient"),
            ("event.name", "the triggering event"),
            ("unsubscribe_url", "one-click unsubscribe"),
            ("shop.name", "from the settings"),
            ("shop.url", "from the settings"),
            ("shop.address", "postal address"),
        ):
            child = QTreeWidgetItem([path, about])
            child.setData(0, Qt.ItemDataRole.UserRole, path)
            fixed.addChild(child)
        fixed.setExpanded(True)
        self.variables.resizeColumnToContents(0)

    def _insert_variable(self, item: QTreeWidgetItem, _column: int) -> None:
        path = item.data(0, Qt.ItemDataRole.UserRole)
        if path:
            path = str(path).replace("[]", "[0]")
            self.variable_inserted.emit(f"{{{{ {path} }}}}")

    # -- lint ---------------------------------------------------------------------------------

    def set_findings(self, findings: list[dict[str, Any]]) -> None:
        self.findings.clear()
        palette = self.palette()
        errors = sum(1 for f in findings if f["severity"] == "error")
        warnings = len(findings) - errors
        if not findings:
            item = QListWidgetItem(
                theme.status_icon(theme.Status.HEALTHY, palette),
                "No problems found: unsubscribe link, postal address, size, alt text and"
                " variables all check out.",
            )
            item.setFlags(Qt.ItemFlag.ItemIsEnabled)
            self.findings.addItem(item)
            self.lint_summary.setText("all clear")
            return
        self.lint_summary.setText(
            f"{errors} error{'s' if errors != 1 else ''}, "
            f"{warnings} warning{'s' if warnings != 1 else ''}"
        )
        for finding in findings:
            status = (
                theme.Status.FAILING if finding["severity"] == "error" else theme.Status.DEGRADED
            )
            where = finding["part"]
            if finding.get("line"):
                where += f" line {finding['line']}"
            item = QListWidgetItem(
                theme.status_icon(status, palette), f"{where}: {finding['message']}"
            )
            item.setData(Qt.ItemDataRole.UserRole, finding)
            item.setToolTip(f"{finding['code']} ({finding['severity']})")
            self.findings.addItem(item)

    def _activate_finding(self, item: QListWidgetItem) -> None:
        finding = item.data(Qt.ItemDataRole.UserRole)
        if isinstance(finding, dict):
            self.finding_activated.emit(str(finding["part"]), int(finding.get("line") or 0))


# ------------------------------------------------------------------------------- dialogs


class VersionsDialog(QDialog):
    """Every version of a template, and the diff of the chosen one against another.

    Signals:
        diff_requested(int, int): show the diff from the first version to the second.
        restore_requested(int): load that version into the editor (as unsaved changes).
    """

    diff_requested = Signal(int, int)
    restore_requested = Signal(int)

    def __init__(self, template: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Versions of {template}")
        self.resize(900, 560)
        self.versions = QListWidget()
        self.versions.currentRowChanged.connect(self._chosen)
        self.against = QComboBox()
        self.against.currentIndexChanged.connect(
            lambda _i: self._chosen(self.versions.currentRow())
        )
        self.diff = QPlainTextEdit()
        self.diff.setReadOnly(True)
        _mono(self.diff)
        self.restore = QPushButton("Load this version into the editor")
        self.restore.clicked.connect(self._restore)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        right = QVBoxLayout()
        row = QHBoxLayout()
        row.addWidget(QLabel("Compare with"))
        row.addWidget(self.against, 1)
        right.addLayout(row)
        right.addWidget(self.diff, 1)
        right.addWidget(self.restore, 0, Qt.AlignmentFlag.AlignRight)
        body = QHBoxLayout()
        body.addWidget(self.versions, 1)
        body.addLayout(right, 3)
        layout = QVBoxLayout(self)
        layout.addLayout(body, 1)
        layout.addWidget(buttons)
        self._rows: list[dict[str, Any]] = []

    def set_versions(self, rows: list[dict[str, Any]]) -> None:
        self._rows = rows
        self.versions.clear()
        self.against.blockSignals(True)
        self.against.clear()
        for row in rows:
            when = datetime.fromtimestamp(float(row["created_at"])).strftime("%d %b %Y %H:%M")
            who = str(row.get("source") or "").removeprefix("console:")
            self.versions.addItem(f"v{row['version']}  {when}  {who}")
            self.against.addItem(f"v{row['version']}", int(row["version"]))
        self.against.blockSignals(False)
        if rows:
            self.versions.setCurrentRow(0)

    def _chosen(self, index: int) -> None:
        if not 0 <= index < len(self._rows):
            return
        version = int(self._rows[index]["version"])
        other = self.against.currentData()
        if other is None or int(other) == version:
            older = self._rows[index + 1]["version"] if index + 1 < len(self._rows) else None
            if older is None:
                self.diff.setPlainText(f"v{version} is the first version.")
                return
            other = older
        self.diff_requested.emit(int(other), version)

    def selected_version(self) -> int | None:
        index = self.versions.currentRow()
        return int(self._rows[index]["version"]) if 0 <= index < len(self._rows) else None

    def _restore(self) -> None:
        version = self.selected_version()
        if version is not None:
            self.restore_requested.emit(version)

    def show_diff(self, reply: dict[str, Any]) -> None:
        parts = reply.get("parts") or []
        self.diff.clear()
        if not parts:
            self.diff.setPlainText(f"v{reply['from']} and v{reply['to']} are the same.")
            return
        palette = self.palette()
        added = QTextCharFormat()
        added.setBackground(theme.tint(theme.Status.HEALTHY, palette, 0.25))
        removed = QTextCharFormat()
        removed.setBackground(theme.tint(theme.Status.FAILING, palette, 0.25))
        heading = QTextCharFormat()
        heading.setFontWeight(QFont.Weight.Bold)
        plain = QTextCharFormat()
        cursor = self.diff.textCursor()
        for part in parts:
            cursor.insertText(
                f"{part['part']}: +{part['added']} \u2212{part['removed']}\n", heading
            )
            for line in str(part["diff"]).splitlines()[2:]:
                fmt = plain
                if line.startswith("+"):
                    fmt = added
                elif line.startswith("-"):
                    fmt = removed
                elif line.startswith("@@"):
                    fmt = heading
                cursor.insertText(line + "\n", fmt)
            cursor.insertText("\n", plain)
        self.diff.moveCursor(QTextCursor.MoveOperation.Start)


class TestSendDialog(QDialog):
    """Where a test send goes: the local capture inbox, or an address.

    Signals:
        send_requested(str): send now; the address, or "" for the local inbox.
    """

    send_requested = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Send a test email")
        self.inbox = QRadioButton("The local capture inbox (nobody receives it)")
        self.address_choice = QRadioButton("This address, through the default route:")
        self.address = QLineEdit()
        self.address.setPlaceholderText("you@example.com")
        self.inbox.setChecked(True)
        self.address.textEdited.connect(lambda _t: self.address_choice.setChecked(True))
        note = QLabel(
            "The email is rendered as the contact and event chosen for the preview. Its"
            " unsubscribe link is void, so clicking it unsubscribes nobody."
        )
        note.setWordWrap(True)
        buttons = QDialogButtonBox()
        send = buttons.addButton("Send test", QDialogButtonBox.ButtonRole.AcceptRole)
        send.setStyleSheet(theme.primary_button_qss(self.palette()))
        buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self._send)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.inbox)
        layout.addWidget(self.address_choice)
        layout.addWidget(self.address)
        layout.addWidget(note)
        frame = QFrame()
        frame.setFrameShape(QFrame.Shape.HLine)
        layout.addWidget(frame)
        layout.addWidget(buttons)

    def _send(self) -> None:
        target = self.address.text().strip() if self.address_choice.isChecked() else ""
        if self.address_choice.isChecked() and not target:
            self.address.setFocus()
            return
        self.send_requested.emit(target)
        self.accept()
