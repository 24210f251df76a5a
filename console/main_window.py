"""The console window: navigation rail, top bar (connection, health, alert, pause), pages.

Pages come from the registry in ``console.pages`` and are built the first time they are shown;
slots without a page show an empty state saying what will be there. Health pills and the alert
banner are recomputed once a second from ``client.model`` and the connection state, and at once
when an engine fires or resolves an alert. The banner shows the console's own problems (NATS
lost, engines silent) first, else the most urgent alert the engines report (``engine/alerts.py``
evaluates the rules; the console only shows them).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import qtawesome as qta
from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent, QKeySequence, QPainter, QPaintEvent, QShortcut
from PySide6.QtWidgets import (
    QDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLayout,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMenu,
    QPushButton,
    QSizePolicy,
    QStackedWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from console import pages as page_registry
from console.alerts import ACTIONS, AlertNotifier, banner_words, most_urgent, severity
from console.client import CONNECTED, CONNECTING, RECONNECTING, EngineClient
from console.connection import LOCAL_TITLE, Target
from console.connection_dialog import LOCAL_KEY, ConnectionDialog
from console.errors import ConsoleError, describe
from console.metrics_model import Metric
from console.operations import Operation
from console.profiles import ProfileStore, read_secret
from widgets import theme
from widgets.banner import AlertBanner
from widgets.confirm import ConfirmImpactDialog
from widgets.empty_state import EmptyState
from widgets.format import format_count
from widgets.nav_rail import NavRail
from widgets.status_pill import StatusPill
from widgets.theme import Status

log = logging.getLogger(__name__)

PAUSE_VERBS = ("sending.pause",)
"""Control verbs that pause all sending; the button is enabled when an engine offers one."""
RESUME_VERB = "sending.resume"
SENDING_CHECK_MS = 5000
"""How often the window asks whether sending is paused while the Queues page is not shown
(that page's own once-a-second listing tells it otherwise)."""
PAUSE_UNAVAILABLE = "Needs the queue control API: this engine offers no verb to pause sending yet."
ERROR_ALERT_RATIO = 0.05


class MessageArea(QFrame):
    """One line at the bottom of the window for operation results and failures.

    Failures stay until dismissed or replaced; other messages fade after ``timeout_ms``.

    Signals: none.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._status = Status.UNKNOWN
        self._icon = QLabel()
        self._text = QLabel()
        self._text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._text.setWordWrap(True)
        self._text.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self._close = QToolButton()
        self._close.setAutoRaise(True)
        self._close.setToolTip("Dismiss")
        self._close.clicked.connect(self.clear)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.clear)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 4, 6, 4)
        layout.addWidget(self._icon)
        layout.addWidget(self._text, 1)
        layout.addWidget(self._close)
        self.setVisible(False)

    def show_message(self, text: str, status: str = "failing", timeout_ms: int = 8000) -> None:
        """Show ``text``; failing/degraded messages stay, others hide after ``timeout_ms``."""
        self._status = Status.parse(status)
        palette = self.palette()
        size = self.fontMetrics().height()
        if status == "info":
            pixmap = theme.icon_pixmap("mdi6.information-outline", theme.text_color(palette), size)
        else:
            pixmap = theme.status_icon(self._status, palette).pixmap(size, size)
        self._icon.setPixmap(pixmap)
        self._close.setIcon(qta.icon("mdi6.close", color=theme.text_color(palette)))
        self._text.setText(text)
        self.setVisible(True)
        if self._status in (Status.FAILING, Status.DEGRADED):
            self._timer.stop()
        else:
            self._timer.start(timeout_ms)

    def text(self) -> str:
        """The message shown ("" when hidden)."""
        return self._text.text() if self.isVisible() else ""

    def clear(self) -> None:
        self._timer.stop()
        self.setVisible(False)


class Rule(QWidget):
    """A one-pixel hairline in the theme's border colour (follows palette changes).

    Signals: none.
    """

    def __init__(self, orientation: Qt.Orientation, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        if orientation == Qt.Orientation.Horizontal:
            self.setFixedHeight(1)
            self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        else:
            self.setFixedWidth(1)
            self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Expanding)

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), theme.border_color(self.palette()))
        painter.end()


class TopBar(QFrame):
    """What the console is connected to, a health pill per part, and "Pause all sending".

    Signals:
        pause_requested(): the operator pressed "Pause all sending" (it is enabled).
    """

    pause_requested = Signal()

    PARTS = ("nats", "nodes", "database", "relays")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("TopBar")
        self._logo = QLabel()
        self._target = QLabel("Not connected")
        self._target.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.connection_button = QToolButton()
        self.connection_button.setAutoRaise(True)
        self.connection_button.setToolTip("Switch connection: the local stack or a saved profile")
        self.connection_button.setAccessibleName("Switch connection")
        self.connection_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.connection_menu = QMenu(self.connection_button)
        self.connection_button.setMenu(self.connection_menu)
        self.pills: dict[str, StatusPill] = {
            "nats": StatusPill(Status.UNKNOWN, "NATS"),
            "nodes": StatusPill(Status.UNKNOWN, "Engine"),
            "database": StatusPill(Status.UNKNOWN, "Database"),
            "relays": StatusPill(Status.UNKNOWN, "Relays"),
        }
        # Who is signed in, and the role the engines check on every request (docs/access.md).
        self._person_icon = QLabel()
        self.identity = QLabel("Not signed in")
        self.identity.setObjectName("Identity")
        self.pause_button = QPushButton("Pause all sending")
        self.pause_button.setProperty("destructive", True)
        self.pause_button.setEnabled(False)
        self.pause_button.setToolTip(PAUSE_UNAVAILABLE)
        self.pause_button.clicked.connect(self.pause_requested)
        # A disabled button shows no tooltip on hover in some styles: wrap it so the reason
        # ("needs the queue control API") is always readable.
        self._pause_holder = QWidget()
        holder_layout = QHBoxLayout(self._pause_holder)
        holder_layout.setContentsMargins(0, 0, 0, 0)
        holder_layout.addWidget(self.pause_button)
        self._pause_holder.setToolTip(PAUSE_UNAVAILABLE)

        layout = QHBoxLayout(self)
        layout.setContentsMargins(12, 8, 12, 8)
        layout.setSpacing(8)
        layout.addWidget(self._logo)
        layout.addWidget(self._target)
        layout.addWidget(self.connection_button)
        layout.addSpacing(12)
        for pill in self.pills.values():
            layout.addWidget(pill)
        layout.addStretch(1)
        layout.addWidget(self._person_icon)
        layout.addWidget(self.identity)
        layout.addSpacing(12)
        layout.addWidget(self._pause_holder)
        self._restyle()

    def set_target(self, title: str, detail: str = "") -> None:
        """What the console is connected to: "Local stack" (detail: the NATS URL)."""
        self._target.setText(
            f"<b>{title}</b>" + (f"&nbsp;&nbsp;<span>{detail}</span>" if detail else "")
        )
        self._target.setToolTip(detail or title)

    def target_text(self) -> str:
        return self._target.text()

    def set_identity(self, user: str, role: str) -> None:
        """Show the signed-in ``user`` and its ``role`` ("": no engine has said yet)."""
        self.identity.setText(f"<b>{user}</b>&nbsp;·&nbsp;{role or 'role unknown'}")
        self.identity.setToolTip(
            f"Signed in to NATS as {user}. The engines check the {role} role on every "
            "request and record your name in the audit log."
            if role
            else f"Signed in to NATS as {user}; no engine has confirmed the role yet."
        )

    def set_pause_available(self, available: bool, reason: str = "") -> None:
        self.pause_button.setEnabled(available)
        tip = (
            "Pause every send on every node (asks first and shows what it will stop)"
            if available
            else reason or PAUSE_UNAVAILABLE
        )
        self.pause_button.setToolTip(tip)
        self._pause_holder.setToolTip(tip)

    def set_sending_paused(self, paused_by: str | None) -> None:
        """Offer "Resume sending" while sending is paused (``paused_by``: who, why, since)."""
        paused = paused_by is not None
        self.pause_button.setText("Resume sending" if paused else "Pause all sending")
        self.pause_button.setProperty("destructive", not paused)
        style = self.pause_button.style()
        style.unpolish(self.pause_button)
        style.polish(self.pause_button)
        if self.pause_button.isEnabled():
            tip = (
                f"Sending is paused: {paused_by}. Resume it (asks first)"
                if paused
                else "Pause every send on every node (asks first and shows what it will stop)"
            )
            self.pause_button.setToolTip(tip)
            self._pause_holder.setToolTip(tip)

    def _restyle(self) -> None:
        palette = self.palette()
        size = round(self.fontMetrics().height() * 1.4)
        self._logo.setPixmap(
            theme.icon_pixmap("mdi6.email-fast-outline", theme.text_color(palette), size)
        )
        self._target.setFont(theme.scaled_font(self.font(), 1.05))
        ink = theme.text_color(palette)
        self.connection_button.setIcon(theme.icon("mdi6.swap-horizontal", ink))
        self._person_icon.setPixmap(
            theme.icon_pixmap("mdi6.account-circle-outline", ink, round(size * 0.8))
        )

    def changeEvent(self, event: Any) -> None:
        if event.type() in (event.Type.PaletteChange, event.Type.ApplicationPaletteChange):
            self._restyle()
        super().changeEvent(event)


class CommandPalette(QDialog):
    """Ctrl+K: type a few letters of a page or action, Enter runs it. Opened with ``open()``.

    Signals:
        chosen(str): the key of the command the operator picked.
    """

    chosen = Signal(str)

    def __init__(self, commands: list[tuple[str, str, str]], parent: QWidget | None = None) -> None:
        """``commands``: (key, words shown, qtawesome icon)."""
        super().__init__(parent)
        self.setWindowTitle("Go to")
        self.setModal(True)
        self._filter = QLineEdit()
        self._filter.setPlaceholderText("Type a page or action, Enter to go")
        self._filter.setClearButtonEnabled(True)
        self._list = QListWidget()
        colour = theme.text_color(self.palette())
        for key, words, icon in commands:
            item = QListWidgetItem(theme.icon(icon, colour), words)
            item.setData(Qt.ItemDataRole.UserRole, key)
            self._list.addItem(item)
        self._filter.textChanged.connect(self._apply_filter)
        self._filter.returnPressed.connect(self._choose_current)
        self._list.itemActivated.connect(lambda _item: self._choose_current())
        layout = QVBoxLayout(self)
        layout.addWidget(self._filter)
        layout.addWidget(self._list)
        layout.setSizeConstraint(QLayout.SizeConstraint.SetNoConstraint)
        self.resize(self.fontMetrics().averageCharWidth() * 60, self.fontMetrics().height() * 22)
        self._apply_filter("")

    def _apply_filter(self, text: str) -> None:
        words = text.lower().split()
        first = None
        for row in range(self._list.count()):
            item = self._list.item(row)
            hidden = not all(w in item.text().lower() for w in words)
            item.setHidden(hidden)
            if not hidden and first is None:
                first = item
        if first is not None:
            self._list.setCurrentItem(first)
        else:
            self._list.setCurrentRow(-1)

    def _choose_current(self) -> None:
        item = self._list.currentItem()
        if item is not None and not item.isHidden():
            self.chosen.emit(str(item.data(Qt.ItemDataRole.UserRole)))
            self.accept()

    def exec(self) -> int:
        """Refused: open it with ``open()`` (a nested loop in a qasync slot deadlocks)."""
        raise RuntimeError("CommandPalette must be opened with open(), not exec()")


class MainWindow(QMainWindow):
    """The console window. ``client`` is the one NATS bridge; pages get it in their factory.

    Signals:
        close_requested(): the operator closed the window; the app shuts down in order
            (the window itself only hides).
        page_changed(str): the key of the page now shown.
    """

    close_requested = Signal()
    page_changed = Signal(str)
    connection_requested = Signal(object)

    def __init__(
        self,
        client: EngineClient,
        *,
        target: str = "Local stack",
        target_detail: str = "",
        profiles: ProfileStore | None = None,
        data_dir: Path | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.client = client
        self.profiles = profiles
        """The saved connection profiles (None: the user's default file, read when needed)."""
        self.data_dir = data_dir
        self.connected_profile: str | None = LOCAL_KEY if target == LOCAL_TITLE else None
        """The profile connected now (``LOCAL_KEY``: the local stack; None: a bare URL)."""
        self._connections: ConnectionDialog | None = None
        self.setWindowTitle("Campaign Console")
        self.setWindowIcon(qta.icon("mdi6.email-fast-outline", color="#2563eb"))
        self._pages: dict[str, QWidget] = {}
        self._page_specs = {spec.key: spec for spec in page_registry.pages()}
        self._dismissed_alert = ""
        self._pause_verb: str | None = None
        self._verbs_known = False
        self._pause_dialog: ConfirmImpactDialog | None = None
        self._resume_verb: str | None = None
        self.sending_control: dict[str, Any] | None = None
        """The control pausing all sending (``queues.list``), None while sending."""
        self._sending_op: Operation[Any] | None = None
        self._pause_op: Operation[Any] | None = None
        self._current_key: str | None = None

        self.top_bar = TopBar()
        self.top_bar.set_target(target, target_detail)
        self.top_bar.pause_requested.connect(self._ask_pause)
        if "nodes" in self._page_specs:  # the engine pill opens the per-node view
            self.top_bar.pills["nodes"].clicked.connect(lambda: self.show_page("nodes"))
            self.top_bar.pills["nodes"].setToolTip("Engine nodes: click for each node's state")
        if client.role:
            self.top_bar.set_identity(client.actor, client.role)
        client.identity_changed.connect(self.top_bar.set_identity)
        self.top_bar.connection_menu.aboutToShow.connect(self._fill_connection_menu)
        self.banner = AlertBanner()
        self.banner.dismissed.connect(self._on_alert_dismissed)
        self.banner.action_triggered.connect(self._on_alert_action)
        self.rail = NavRail()
        self.stack = QStackedWidget()
        self.messages = MessageArea()

        for spec in self._page_specs.values():
            self.rail.add_page(spec.key, spec.label, spec.icon, spec.shortcut)
            holder = QWidget()
            holder_layout = QVBoxLayout(holder)
            holder_layout.setContentsMargins(0, 0, 0, 0)
            holder.setObjectName(f"page-{spec.key}")
            self.stack.addWidget(holder)
        self.rail.page_selected.connect(self._show_page)

        body = QHBoxLayout()
        body.setContentsMargins(0, 0, 0, 0)
        body.setSpacing(0)
        body.addWidget(self.rail)
        body.addWidget(Rule(Qt.Orientation.Vertical))
        content = QVBoxLayout()
        content.setContentsMargins(8, 6, 8, 4)
        content.setSpacing(6)
        content.addWidget(self.banner)
        content.addWidget(self.stack, 1)
        content.addWidget(self.messages)
        body.addLayout(content, 1)

        top_rule = Rule(Qt.Orientation.Horizontal)

        central = QWidget()
        outer = QVBoxLayout(central)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(0)
        outer.addWidget(self.top_bar)
        outer.addWidget(top_rule)
        outer.addLayout(body, 1)
        self.setCentralWidget(central)
        self.notifier = AlertNotifier(client, central)
        self._alert_pages: dict[str, tuple[str, str]] = {}
        """Banner key -> (the page its button opens, the route the alert is about)."""
        # Offscreen and some platforms warn when a shown window's minimum size changes later
        # (a page built on first visit); the window's size is the user's anyway.
        for layout in (self.layout(), outer):
            if layout is not None:
                layout.setSizeConstraint(QLayout.SizeConstraint.SetNoConstraint)

        close = QShortcut(QKeySequence(QKeySequence.StandardKey.Quit), self)
        close.activated.connect(self.close)
        connections = QShortcut(QKeySequence("Ctrl+Shift+O"), self)
        connections.activated.connect(self.open_connections)
        palette_shortcut = QShortcut(QKeySequence("Ctrl+K"), self)
        palette_shortcut.activated.connect(self.open_palette)
        self._palette: CommandPalette | None = None

        self._health_timer = QTimer(self)
        self._health_timer.setInterval(1000)
        self._health_timer.timeout.connect(self.refresh_health)
        self._health_timer.start()
        client.connection_changed.connect(self._on_connection_changed)
        client.nodes_changed.connect(lambda _nodes: self.refresh_health())
        client.alerts_changed.connect(self.refresh_health)
        self._sending_timer = QTimer(self)
        self._sending_timer.setInterval(SENDING_CHECK_MS)
        self._sending_timer.timeout.connect(self.check_sending)
        if client.state == CONNECTED:  # connected before the window existed
            QTimer.singleShot(0, self.probe_verbs)

        self.resize(QSize(1440, 900))
        self.rail.set_current("live")

    # ---------------------------------------------------------------- pages

    def page_keys(self) -> list[str]:
        """The rail's page keys, in order."""
        return self.rail.keys()

    def current_page(self) -> str | None:
        return self.rail.current()

    def page(self, key: str) -> QWidget | None:
        """The page widget of ``key`` if it has been built."""
        return self._pages.get(key)

    def show_page(self, key: str) -> QWidget:
        """Switch to page ``key`` (building it on first visit) and return its widget."""
        self.rail.set_current(key)
        return self._pages[key]

    def _show_page(self, key: str) -> None:
        spec = self._page_specs[key]
        index = list(self._page_specs).index(key)
        previous_key = self._current_key
        if key not in self._pages:
            self._pages[key] = self._build_page(spec)
            holder = self.stack.widget(index)
            layout = holder.layout() if holder is not None else None
            assert layout is not None
            layout.addWidget(self._pages[key])
        self.stack.setCurrentIndex(index)
        self._current_key = key
        if previous_key is not None and previous_key != key:
            _call_hook(self._pages.get(previous_key), "page_hidden")
        _call_hook(self._pages[key], "page_shown")
        self.page_changed.emit(key)

    def _build_page(self, spec: page_registry.PageSpec) -> QWidget:
        if spec.factory is None:
            empty = EmptyState(
                spec.icon,
                f"The {spec.label} page is not built yet",
                detail=f"It will show {spec.coming}" if spec.coming else "",
            )
            empty.setObjectName(f"placeholder-{spec.key}")
            return empty
        try:
            page = spec.build(self.client)
        except Exception as exc:  # a broken page must not take the window down
            log.exception("building page %s failed", spec.key)
            self.show_message(f"The {spec.label} page could not be opened: {describe(exc)}")
            return EmptyState(
                "mdi6.alert-circle-outline",
                f"The {spec.label} page failed to open",
                detail=str(exc),
            )
        signal = getattr(page, "workflow_activated", None)
        if signal is not None:
            signal.connect(self.open_workflow)
        nodes = getattr(page, "node_activated", None)
        if nodes is not None:
            nodes.connect(self.open_node)
        controls = getattr(page, "controls_changed", None)
        if controls is not None:
            controls.connect(self._take_controls)
        return page

    def open_palette(self) -> CommandPalette:
        """The command palette (Ctrl+K): every page, and "Pause all sending" when available."""
        commands = [
            (f"page:{spec.key}", f"Go to {spec.label}", spec.icon)
            for spec in self._page_specs.values()
        ]
        commands.append(("page:settings", "Alert rules\u2026", "mdi6.bell-cog-outline"))
        commands.append(("connections", "Switch connection\u2026", "mdi6.swap-horizontal"))
        if self._pause_verb is not None and self.sending_control is None:
            commands.append(("pause", "Pause all sending\u2026", "mdi6.pause-octagon-outline"))
        elif self._pause_verb is not None:
            commands.append(("pause", "Resume sending\u2026", "mdi6.play-circle-outline"))
        dialog = CommandPalette(commands, self)
        dialog.chosen.connect(self._run_command)
        dialog.finished.connect(dialog.deleteLater)
        self._palette = dialog
        dialog.open()
        return dialog

    def _run_command(self, key: str) -> None:
        if key.startswith("page:"):
            self.show_page(key.removeprefix("page:"))
        elif key == "pause":
            self._ask_pause()
        elif key == "connections":
            self.open_connections()

    def open_workflow(self, name: str) -> None:
        """Show workflow ``name`` on the Workflows page (or say the page is not built yet)."""
        page = self.show_page("workflows")
        if hasattr(page, "show_item"):
            page.show_item(name)
        else:
            self.show_message(
                f"Workflow \u201c{name}\u201d: the Workflows page is not built yet.", "info"
            )

    def open_node(self, node: str) -> None:
        """Show the Live page for ``node`` alone (``"all"``: every node together)."""
        page = self.show_page("live")
        show_node = getattr(page, "show_node", None)
        if callable(show_node):
            show_node(node)

    # ---------------------------------------------------------------- messages

    def show_message(self, text: str, status: str = "failing") -> None:
        """Show ``text`` in the message area (operation results and failures land here)."""
        self.messages.show_message(text, status)

    def show_progress(self, text: str) -> None:
        """Startup progress ("Starting NATS…"), shown in the message area."""
        self.messages.show_message(text, "info", timeout_ms=4000)

    # ---------------------------------------------------------------- switching connection

    def profile_store(self) -> ProfileStore:
        if self.profiles is None:
            self.profiles = ProfileStore()
        return self.profiles

    def _fill_connection_menu(self) -> None:
        menu = self.top_bar.connection_menu
        menu.clear()
        ink = theme.text_color(self.palette())
        local = menu.addAction(theme.icon("mdi6.laptop", ink), LOCAL_TITLE)
        local.setCheckable(True)
        local.setChecked(self.connected_profile == LOCAL_KEY)
        local.triggered.connect(lambda: self.connection_requested.emit(Target.local()))
        try:
            names = self.profile_store().names()
        except ConsoleError as exc:
            names = []
            self.show_message(describe(exc))
        for name in names:
            action = menu.addAction(theme.icon("mdi6.server-network", ink), name)
            action.setCheckable(True)
            action.setChecked(self.connected_profile == name)
            action.triggered.connect(lambda _checked=False, n=name: self.connect_profile(n))
        menu.addSeparator()
        manage = menu.addAction(theme.icon("mdi6.cog-outline", ink), "Manage connections\u2026")
        manage.setShortcut(QKeySequence("Ctrl+Shift+O"))
        manage.triggered.connect(self.open_connections)

    def connect_profile(self, name: str) -> Target | None:
        """Ask to connect to the saved profile ``name`` (its secret read from the keyring)."""
        try:
            profile = self.profile_store().get(name)
            secret = read_secret(profile.name) if profile.needs_secret else ""
            target = Target.of_profile(profile, secret)
        except ConsoleError as exc:
            self.show_message(describe(exc))
            return None
        self.connection_requested.emit(target)
        return target

    def open_connections(self) -> ConnectionDialog:
        """The connection chooser (Ctrl+Shift+O): local stack or profiles; add, edit, test."""
        dialog = ConnectionDialog(
            self.profile_store(),
            current=self.connected_profile,
            data_dir=self.data_dir,
            parent=self,
        )
        dialog.connect_requested.connect(self.connection_requested)
        dialog.finished.connect(dialog.deleteLater)
        self._connections = dialog
        dialog.open()
        return dialog

    def forget_engines(self, target: object = None) -> None:
        """Drop what the pages show of the old engines (the console is switching connection).

        Built pages are thrown away and the current one is built anew on the new connection:
        a page never mixes two clusters' queues, audit rows or charts.
        """
        title = getattr(target, "title", "")
        if title:
            self.top_bar.set_target(title, "connecting\u2026")
            self.connected_profile = getattr(target, "profile", "") or (
                LOCAL_KEY if getattr(target, "is_local", False) else None
            )
        for key, page in list(self._pages.items()):
            _call_hook(page, "page_hidden")
            page.setParent(None)
            page.deleteLater()
            del self._pages[key]
        self._verbs_known = False
        self._pause_verb = self._resume_verb = None
        self.sending_control = None
        self._sending_timer.stop()
        self.top_bar.set_pause_available(False)
        self.top_bar.set_sending_paused(None)
        self._alert_pages.clear()
        self._dismissed_alert = ""
        self.banner.clear()
        current, self._current_key = self._current_key, None
        if current is not None:
            self._show_page(current)
        self.refresh_health()

    # ---------------------------------------------------------------- connection & health

    def set_target(self, title: str, detail: str = "") -> None:
        self.top_bar.set_target(title, detail)

    def _on_connection_changed(self, state: str) -> None:
        if state == CONNECTED and not self._verbs_known:
            self.probe_verbs()
        self.refresh_health()

    def probe_verbs(self) -> Operation[Any]:
        """Ask an engine (``ping``) which verbs it serves, to enable "Pause all sending"."""

        def got(result: Any) -> None:
            verbs = result.get("verbs") if isinstance(result, dict) else None
            self._verbs_known = True
            found = [v for v in PAUSE_VERBS if isinstance(verbs, list) and v in verbs]
            self._pause_verb = found[0] if found else None
            offered = verbs if isinstance(verbs, list) else []
            self._resume_verb = RESUME_VERB if RESUME_VERB in offered else None
            self.top_bar.set_pause_available(self._pause_verb is not None)
            if "queues.list" in offered:
                self._sending_timer.start()
                self.check_sending()

        def failed(exc: BaseException) -> None:
            log.info("ping failed: %s", describe(exc))
            self.top_bar.set_pause_available(False, f"{PAUSE_UNAVAILABLE} ({describe(exc)})")

        return (
            Operation(self, lambda: self.client.request("ping", timeout=3), label="ping")
            .success(got)
            .failure(failed)
            .run()
        )

    def refresh_health(self) -> None:
        """Recompute the health pills and the alert banner from the client and its model."""
        client = self.client
        model = client.model
        pills = self.top_bar.pills
        state = client.state
        nodes = client.nodes()
        fresh = client.fresh_nodes()
        healths = [model.health(n) for n in fresh]

        nats_status = {
            CONNECTED: Status.HEALTHY,
            RECONNECTING: Status.DEGRADED,
            CONNECTING: Status.UNKNOWN,
        }.get(state, Status.FAILING)
        if nats_status == Status.HEALTHY and any(
            h.get("nats") not in (None, "healthy") for h in healths
        ):
            nats_status = Status.DEGRADED
        pills["nats"].set_status(nats_status, "NATS")

        if not nodes:
            pills["nodes"].set_status(Status.UNKNOWN, "Engine")
        else:
            status = (
                Status.HEALTHY
                if len(fresh) == len(nodes)
                else Status.FAILING
                if not fresh
                else Status.DEGRADED
            )
            label = "Engine" if len(nodes) == 1 else f"Engines {len(fresh)}/{len(nodes)}"
            pills["nodes"].set_status(status, label)

        databases = {h.get("database") for h in healths}
        store, store_why = _worst_check(healths, "store")
        if not healths:
            pills["database"].set_status(Status.UNKNOWN, "Database")
        elif None in databases or "" in databases:
            pills["database"].set_status(Status.FAILING, "Database")
        else:
            kinds = ", ".join(sorted(str(d) for d in databases))
            pills["database"].set_status(store, f"Database ({kinds})")
        pills["database"].setToolTip(store_why or "The engines' store, as each node finds it")

        relays, relays_label = self._relay_health(healths)
        routes, routes_why = _worst_check(healths, "routes")
        pills["relays"].set_status(max(relays, routes, key=_RANK.__getitem__), relays_label)
        pills["relays"].setToolTip(routes_why or "Replies from the relays over the last 10 s")
        self._refresh_alert(state, nodes, fresh)

    def _relay_health(self, healths: list[dict[str, Any]]) -> tuple[Status, str]:
        model = self.client.model
        label = "Inbox (local)" if healths and all(h.get("inbox") for h in healths) else "Relays"
        if not healths:
            return Status.UNKNOWN, label
        errors = model.latest(Metric.ERROR_RATIO)
        deferred = model.latest(Metric.DEFERRED_RATIO)
        if math.isnan(errors):
            return Status.HEALTHY, label  # nothing attempted lately: nothing wrong seen
        if errors >= 0.5:
            return Status.FAILING, label
        if errors >= ERROR_ALERT_RATIO or (not math.isnan(deferred) and deferred >= 0.2):
            return Status.DEGRADED, label
        return Status.HEALTHY, label

    def _refresh_alert(self, state: str, nodes: list[str], fresh: list[str]) -> None:
        key, text, status, action, tooltip = "", "", Status.FAILING, "", ""
        url = self.client.url
        if state == RECONNECTING:
            key, text = "nats", f"Lost the connection to NATS at {url}; reconnecting\u2026"
        elif nodes and not fresh:
            age = self.client.seconds_since()
            key = "stale-all"
            text = f"No metrics from any engine for {_seconds(age)}: is the engine running?"
        elif nodes and len(fresh) < len(nodes):
            stale = [n for n in nodes if n not in fresh]
            key, status = "stale-" + ",".join(stale), Status.DEGRADED
            age = self.client.seconds_since(stale[0])
            text = f"No metrics from {', '.join(stale)} for {_seconds(age)}."
        else:
            alerts = self.client.active_alerts()
            top = most_urgent(alerts)
            if top is not None:
                key, status = f"alert:{top.get('id')}", severity(top)
                text, tooltip = banner_words(alerts)
                action, page = ACTIONS.get(str(top.get("rule")), ("", ""))
                route = (top.get("labels") or {}).get("route")
                self._alert_pages[key] = (page, str(route) if route else "")
        if not key:
            self._dismissed_alert = ""
            self.banner.clear()
            self.banner.setToolTip("")
            return
        # Stale alerts change wording every second; dismissal is by kind, not by text.
        if key == self._dismissed_alert:
            return
        self.banner.show_alert(text, status, action=action, key=key)
        self.banner.setToolTip(tooltip)

    def _on_alert_dismissed(self, key: str) -> None:
        self._dismissed_alert = key

    def _on_alert_action(self, key: str) -> None:
        """The banner's button: open the page for the alert, with its route selected."""
        page, route = self._alert_pages.get(key, ("", ""))
        if not page:
            return
        widget = self.show_page(page)
        show_route = getattr(widget, "show_route", None)
        if route and callable(show_route):
            show_route(route)

    # ---------------------------------------------------------------- pause all sending

    def check_sending(self) -> Operation[Any] | None:
        """Ask one node whether sending is paused (skipped while the Queues page lists)."""
        if self._current_key == "queues" and self._pages.get("queues") is not None:
            return None
        if self.client.state != CONNECTED:
            return None
        if self._sending_op is not None and not self._sending_op.done():
            return None

        def failed(exc: BaseException) -> None:
            log.info("queues.list failed: %s", describe(exc))

        self._sending_op = (
            Operation(self, lambda: self.client.request_one("queues.list"), label="queues.list")
            .success(lambda r: self._take_controls(r.get("controls") or []))
            .failure(failed)
            .run()
        )
        return self._sending_op

    def _take_controls(self, controls: list[dict[str, Any]]) -> None:
        control = next((c for c in controls if c.get("kind") == "all"), None)
        self.sending_control = control
        if control is None:
            self.top_bar.set_sending_paused(None)
            return
        words = f"by {control.get('actor') or 'unknown'}"
        if control.get("reason"):
            words += f" ({control['reason']})"
        self.top_bar.set_sending_paused(words)

    def _ask_pause(self) -> Operation[Any] | None:
        """Preview pausing (or, while paused, resuming) all sending on one node, then confirm."""
        if self._pause_verb is None:
            self.show_message(PAUSE_UNAVAILABLE, "degraded")
            return None
        resume = self.sending_control is not None
        verb = (self._resume_verb or RESUME_VERB) if resume else self._pause_verb
        title = "Resume sending" if resume else "Pause all sending"
        self._pause_op = (
            Operation(
                self,
                lambda: self.client.request_one(verb, {"preview": True}),
                label=title,
            )
            .success(lambda preview: self._confirm_pause(verb, title, resume, preview))
            .run()
        )
        return self._pause_op

    def _confirm_pause(self, verb: str, title: str, resume: bool, preview: Any) -> None:
        preview = preview if isinstance(preview, dict) else {}
        nodes = self.client.fresh_nodes()
        rate = self.client.model.latest(Metric.EMAILS_OUT)
        details = [
            f"{q['workflow']} on {q['route']}: {format_count(q['count'])}"
            for q in (preview.get("queues") or [])[:5]
        ]
        if resume:
            details.append("Queued intents go out again on their schedule; nothing is resent.")
        else:
            if preview.get("in_flight"):
                details.append(f"{format_count(preview['in_flight'])} in flight finish normally.")
            details.append(f"Engine nodes affected: {', '.join(nodes) or 'every node'}")
            if not math.isnan(rate):
                details.append(f"About {format_count(rate)} emails a second stop going out.")
            details.append("Events keep being processed; new sends queue up until you resume.")
        details.append(f"Recorded in the audit log as \u201c{self.client.actor}\u201d.")
        dialog = ConfirmImpactDialog(
            title,
            str(preview.get("summary") or title),
            confirm_text=title,
            details=details,
            ask_reason=True,
            destructive=not resume,
            parent=self,
        )
        dialog.accepted_with.connect(lambda reason: self._pause(verb, title, resume, reason))
        dialog.finished.connect(dialog.deleteLater)
        self._pause_dialog = dialog
        dialog.open()

    def _pause(self, verb: str, title: str, resume: bool, reason: str) -> None:
        args = {"reason": reason} if reason else {}

        def done(result: Any) -> None:
            summary = result.get("summary") if isinstance(result, dict) else None
            control = result.get("control") if isinstance(result, dict) else None
            self._take_controls([] if resume or not isinstance(control, dict) else [control])
            self.show_message(str(summary or title), "healthy" if resume else "paused")

        self._pause_op = (
            Operation(self, lambda: self.client.request_one(verb, args), label=title)
            .success(done)
            .run()
        )

    # ---------------------------------------------------------------- closing

    def stop_timers(self) -> None:
        """Stop every timer of the window and its pages (first step of shutdown)."""
        self._health_timer.stop()
        self._sending_timer.stop()
        self.notifier.hide()
        for page in self._pages.values():
            if hasattr(page, "page_hidden"):
                page.page_hidden()

    def closeEvent(self, event: QCloseEvent) -> None:
        self.close_requested.emit()
        super().closeEvent(event)


def _call_hook(page: QWidget | None, hook: str) -> None:
    method = getattr(page, hook, None)
    if callable(method):
        method()


_RANK = {
    Status.UNKNOWN: 0,
    Status.HEALTHY: 1,
    Status.PAUSED: 1,
    Status.DRAINING: 1,
    Status.DEGRADED: 2,
    Status.FAILING: 3,
}


def _worst_check(healths: list[dict[str, Any]], check: str) -> tuple[Status, str]:
    """The worst of the nodes' ``check`` (healthy when none reports it) and why, per node."""
    worst = Status.HEALTHY
    why = []
    for health in healths:
        if check not in health:
            continue
        status = Status.parse(str(health.get(check)))
        if _RANK[status] > _RANK[worst]:
            worst = status
        details = health.get("details")
        words = details.get(check) if isinstance(details, dict) else None
        if words:
            why.append(f"{health.get('node') or 'a node'}: {words}")
    return worst, "; ".join(why)


def _seconds(value: float) -> str:
    if math.isinf(value):
        return "a while"
    return f"{round(value)} s" if value < 120 else f"{round(value / 60)} min"
