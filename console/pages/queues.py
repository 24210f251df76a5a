"""The Queues page: every workflow x route queue, live, with pause, drain, reroute and friends.

``queues.list`` (with the top recipient domains of each queue) and ``routes.list`` are asked
about once a second while the page is visible, never while hidden, always of ONE node
(``EngineClient.request_one``): queue controls live in the store, so one node answers for all.

Every action first sends its verb with ``preview: true`` and shows the engine's own sentence
("Reroute 12,408 queued intents from relay-a to relay-b") and per-queue counts in a
``ConfirmImpactDialog``; only a confirmation sends it for real, with the operator's name as the
actor (the client's envelope) and the reason typed, so the audit log records both. The result
lands in the page's status line and the window's message area; failures in words
(``console.errors.describe``).

What an action applies to: the selected queue gives the workflow and the route (selecting a
queue selects its route in the route table; selecting another route there retargets the route
actions), and a recipient domain selected in the detail panel narrows pause, retry, cancel,
reroute and rate to that domain.
"""

from __future__ import annotations

import asyncio
from typing import Any

from PySide6.QtCore import QPoint, Qt, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QMenu,
    QSplitter,
    QStackedWidget,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from console.client import EngineClient
from console.errors import describe
from console.operations import Operation, show_message
from console.pages.audit import Freshness
from console.pages.polling import PollingPage
from console.pages.queue_dialogs import RateDialog, RerouteDialog
from console.pages.queue_tables import (
    CONTROL_COLUMNS,
    DOMAIN_COLUMNS,
    QUEUE_COLUMNS,
    ROUTE_COLUMNS,
    control_rows,
    control_words,
    domain_rows,
    make_table,
    queue_rows,
    rate_words,
    route_rows,
    scope_words,
)
from widgets import theme
from widgets.confirm import ConfirmImpactDialog
from widgets.empty_state import EmptyState
from widgets.format import format_count, format_duration, format_rate

REFRESH_MS = 1000
TOP_DOMAINS = 10
DETAIL_QUEUES = 6
PREVIEW_REASON = "(reason asked next)"
"""Stands in for a required reason in a preview (the engine refuses a cancel without one, even
a preview); the operator types the real one in the confirmation, and it is cut from the
preview's sentence."""
RESULT_STATUS = {
    "queues.pause": "paused",
    "sending.pause": "paused",
    "routes.drain": "draining",
}


def impact_details(result: dict[str, Any], actor: str) -> list[str]:
    """The lines under a preview's summary: per-queue counts and what else it touches."""
    lines: list[str] = []
    queues = result.get("queues") or []
    for q in queues[:DETAIL_QUEUES]:
        lines.append(f"{q['workflow']} on {q['route']}: {format_count(q['count'])}")
    if len(queues) > DETAIL_QUEUES:
        rest = sum(int(q["count"]) for q in queues[DETAIL_QUEUES:])
        lines.append(f"and {format_count(rest)} in {len(queues) - DETAIL_QUEUES} more queues")
    if result.get("in_flight"):
        lines.append(f"{format_count(result['in_flight'])} in flight finish normally")
    if result.get("still_held"):
        lines.append(f"{format_count(result['still_held'])} stay held by other controls")
    if "before" in result and "after" in result:
        lines.extend(_limit_changes(result["before"], result["after"]))
    lines.append(f"Recorded in the audit log as \u201c{actor}\u201d.")
    return lines


def _limit_changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    lines = []
    if before.get("rate") != after.get("rate"):
        lines.append(
            f"Route rate: {rate_words(before.get('rate'))} \u2192 {rate_words(after.get('rate'))}"
        )
    old_rules, new_rules = before.get("domains") or {}, after.get("domains") or {}
    for domain, rule in new_rules.items():
        old = old_rules.get(domain) or {}
        if old != rule:

            def words(r: dict[str, Any]) -> str:
                conc = r.get("concurrency")
                rate = rate_words(r.get("rate")) if r.get("rate") else "route default"
                return f"{rate}, {conc if conc else 'no limit'} at once" if r else "route default"

            lines.append(f"{domain}: {words(old)} \u2192 {words(rule)}")
    return lines or ["The limits stay as they are."]


class QueuesPage(PollingPage):
    """The Queues page (see the module docstring). ``QueuesPage(client)``.

    Signals:
        controls_changed(list): the active queue controls of the latest listing (the window
            offers "Resume sending" while a control of kind ``all`` exists).
    """

    controls_changed = Signal(list)
    refresh_ms = REFRESH_MS

    def __init__(self, client: EngineClient, parent: QWidget | None = None) -> None:
        super().__init__(client, parent)
        self.listing: dict[str, Any] = {}
        self.routes: list[dict[str, Any]] = []
        self.route_names: list[str] = []
        self.dialog: ConfirmImpactDialog | None = None
        self.param_dialog: RerouteDialog | RateDialog | None = None
        self.preview_op: Operation[Any] | None = None
        self.action_op: Operation[Any] | None = None
        self._answered = False
        self._wanted_route: str | None = None
        """A route to select once the listing arrives (``show_route`` before it came)."""

        title = QLabel("Queues")
        title.setFont(theme.scaled_font(self.font(), 1.5, bold=True))
        self.totals = QLabel("")
        self.totals.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.freshness = Freshness(3.0)
        header = QHBoxLayout()
        header.setSpacing(10)
        header.addWidget(title)
        header.addSpacing(8)
        header.addWidget(self.totals, 1)
        header.addWidget(self.freshness)

        ink = theme.text_color(self.palette())
        self.pause_button = self._tool("mdi6.pause-circle-outline", "Pause", ink)
        self.pause_menu = QMenu(self.pause_button)
        self.pause_button.setMenu(self.pause_menu)
        self.resume_button = self._tool("mdi6.play-circle-outline", "Resume", ink)
        self.resume_menu = QMenu(self.resume_button)
        self.resume_button.setMenu(self.resume_menu)
        self.drain_button = self._tool("mdi6.timer-sand", "Drain route\u2026", ink)
        self.drain_button.clicked.connect(self.ask_drain)
        self.reroute_button = self._tool("mdi6.call-split", "Reroute\u2026", ink)
        self.reroute_button.clicked.connect(self.ask_reroute)
        self.rate_button = self._tool("mdi6.speedometer", "Rate limit\u2026", ink)
        self.rate_button.clicked.connect(self.ask_rate)
        self.retry_button = self._tool("mdi6.replay", "Retry deferred now\u2026", ink)
        self.retry_button.clicked.connect(self.ask_retry_now)
        self.cancel_button = self._tool("mdi6.cancel", "Cancel intents\u2026", ink)
        self.cancel_button.clicked.connect(self.ask_cancel)
        for menu, fill in (
            (self.pause_menu, self._fill_pause),
            (self.resume_menu, self._fill_resume),
        ):
            menu.aboutToShow.connect(fill)
        self.target = QLabel("")
        self.target.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        toolbar = QHBoxLayout()
        toolbar.setSpacing(4)
        for button in self.action_buttons():
            toolbar.addWidget(button)
        toolbar.addSpacing(12)
        toolbar.addWidget(self.target, 1)

        self.queue_model, self.queue_table = make_table(
            QUEUE_COLUMNS, "key", stretch="why", sort=("depth", True), wrap=True
        )
        self.queue_table.selectionModel().selectionChanged.connect(self._on_queue_selected)
        self.queue_table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.queue_table.customContextMenuRequested.connect(self._context_menu)

        self.detail_title = QLabel("")
        self.detail_title.setFont(theme.scaled_font(self.font(), 1.1, bold=True))
        self.detail_title.setWordWrap(True)
        self.facts: dict[str, QLabel] = {}
        form = QFormLayout()
        for name in ("State", "Control", "Depth", "Rate", "Oldest"):
            label = QLabel("")
            label.setWordWrap(True)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.facts[name] = label
            form.addRow(f"{name}:", label)
        self.domain_model, self.domain_table = make_table(
            DOMAIN_COLUMNS, "domain", stretch="domain", sort=("depth", True)
        )
        self.domain_table.selectionModel().selectionChanged.connect(lambda *_: self._retarget())
        detail = QWidget()
        column = QVBoxLayout(detail)
        column.setContentsMargins(8, 0, 0, 0)
        column.addWidget(self.detail_title)
        column.addLayout(form)
        column.addWidget(QLabel(f"Top {TOP_DOMAINS} recipient domains (select one to act on it)"))
        column.addWidget(self.domain_table, 1)
        self.pick = EmptyState(
            "mdi6.tray-full",
            "Select a queue to see its recipient domains",
            detail="The actions above apply to the selected queue, its route, or a domain"
            " selected here.",
        )
        self.side = QStackedWidget()
        self.side.setMinimumWidth(self.fontMetrics().averageCharWidth() * 46)
        self.side.addWidget(self.pick)
        self.side.addWidget(detail)

        self.top = QSplitter(Qt.Orientation.Horizontal)
        self.top.addWidget(self.queue_table)
        self.top.addWidget(self.side)
        self.top.setStretchFactor(0, 3)
        self.top.setStretchFactor(1, 1)
        self.top.setChildrenCollapsible(False)
        self.top.setSizes([2600, 1000])  # proportions: the queue table gets most of the width

        self.route_model, self.route_table = make_table(ROUTE_COLUMNS, "name", stretch="limits")
        self.route_table.selectionModel().selectionChanged.connect(lambda *_: self._retarget())
        self.control_model, self.control_table = make_table(
            CONTROL_COLUMNS, "key", stretch="reason", wrap=True
        )
        self.tabs = QTabWidget()
        self.tabs.addTab(self.route_table, "Routes")
        self.tabs.addTab(self.control_table, "Active controls")

        self.split = QSplitter(Qt.Orientation.Vertical)
        self.split.addWidget(self.top)
        self.split.addWidget(self.tabs)
        self.split.setStretchFactor(0, 3)
        self.split.setStretchFactor(1, 2)
        self.split.setChildrenCollapsible(False)
        self.split.setSizes([3000, 1400])

        self.empty = EmptyState(
            "mdi6.tray-remove",
            "No queued email \u2014 every queue is empty",
            "Start demo traffic",
            detail="A queue is a workflow on a route. Queues appear here while they hold"
            " intents waiting to send, in flight, or sent in the last minute. Demo traffic"
            " makes a few.",
        )
        self.empty.action_triggered.connect(self.start_demo)
        self.queue_states = QStackedWidget()
        self.queue_states.addWidget(self.empty)
        self.queue_states.addWidget(self.split)

        self.result_line = QLabel("")
        self.result_line.setWordWrap(True)
        self.result_line.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 0)
        layout.setSpacing(8)
        layout.addLayout(header)
        layout.addLayout(toolbar)
        layout.addWidget(self.queue_states, 1)
        layout.addWidget(self.result_line)
        self._retarget()

    def _tool(self, icon: str, text: str, ink: Any) -> QToolButton:
        button = QToolButton()
        button.setIcon(theme.icon(icon, ink))
        button.setText(text)
        button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        return button

    def action_buttons(self) -> list[QToolButton]:
        return [
            self.pause_button,
            self.resume_button,
            self.drain_button,
            self.reroute_button,
            self.rate_button,
            self.retry_button,
            self.cancel_button,
        ]

    # ---------------------------------------------------------------- page hooks

    def on_shown(self) -> None:
        self.freshness.start()

    def on_hidden(self) -> None:
        self.freshness.stop()

    # ---------------------------------------------------------------- listing

    def request_list(self) -> Operation[Any]:
        """Ask one node for the queues and its routes (see ``PollingPage.refresh``)."""

        async def fetch() -> tuple[Any, Any]:
            listing = await self.client.request_one("queues.list", {"domains": TOP_DOMAINS})
            routes = await self.client.request_one("routes.list")
            return listing, routes

        return Operation(self, fetch, label="Queues").success(lambda r: self.show_listing(*r)).run()

    def show_listing(self, listing: dict[str, Any], routes: dict[str, Any]) -> None:
        """Show a ``queues.list`` reply and a ``routes.list`` reply."""
        self._answered = True
        self.freshness.mark()
        self.listing = listing
        self.routes = list(routes.get("routes") or []) if isinstance(routes, dict) else []
        now = float(listing.get("now") or 0.0)
        names = {str(r["name"]) for r in self.routes} | set(listing.get("routes") or [])
        self.route_names = sorted(names)
        rows = queue_rows(listing)
        self.queue_model.set_rows(rows)
        self.control_model.set_rows(control_rows(listing))
        self.route_model.set_rows(route_rows(self.routes, listing.get("controls") or [], now))
        self.tabs.setTabText(1, f"Active controls ({len(listing.get('controls') or [])})")
        self.queue_states.setCurrentWidget(self.split if rows else self.empty)
        self.totals.setText(self._totals_text(listing))
        self._show_detail()
        self._retarget()
        self.controls_changed.emit(list(listing.get("controls") or []))
        if self._wanted_route is not None:
            self.show_route(self._wanted_route)

    def _totals_text(self, listing: dict[str, Any]) -> str:
        t = listing.get("totals") or {}
        parts = [
            f"{format_count(t.get('depth', 0))} pending",
            f"{format_count(t.get('due', 0))} due",
            f"{format_count(t.get('deferred', 0))} deferred",
            f"{format_count(t.get('in_flight', 0))} in flight",
            f"{format_count(t.get('held', 0))} held",
            format_rate(t.get("rate", 0.0)),
        ]
        n = len(listing.get("queues") or [])
        return f"{n:,} queue{'s' if n != 1 else ''}: " + " \u00b7 ".join(parts)

    def sending_paused(self) -> dict[str, Any] | None:
        """The control that pauses all sending in the latest listing, or None."""
        return next((c for c in self.listing.get("controls") or [] if c.get("kind") == "all"), None)

    # ---------------------------------------------------------------- selection

    def selected_queue(self) -> dict[str, Any] | None:
        key = self.queue_table.selected_key()
        if key is None or self.queue_model.row_for_key(key) is None:
            return None
        return self.queue_model.row_values(key)

    def selected_domain(self) -> str | None:
        return self.domain_table.selected_key() if self.selected_queue() else None

    def selected_route(self) -> str | None:
        key = self.route_table.selected_key()
        if key is not None:
            return key
        queue = self.selected_queue()
        return str(queue["route"]) if queue else None

    def show_route(self, route: str) -> None:
        """Select ``route`` and its biggest queue (the alert banner's "Open Queues" does this).

        Before the first listing has arrived, the route is selected when it does.
        """
        if not self._answered:
            self._wanted_route = route
            return
        self._wanted_route = None
        self.tabs.setCurrentWidget(self.route_table)
        queues = [r for r in self.queue_model.rows() if str(r.get("route")) == route]
        if queues:
            biggest = max(queues, key=lambda r: int(r.get("depth") or 0))
            self.select_queue(str(biggest["workflow"]), route)
            self.queue_table.setFocus()
        elif self.route_model.row_for_key(route) is not None:
            self.queue_table.clearSelection()
            self.select_route(route)
            self.route_table.setFocus()
        else:
            self._say(f"Route {route} is not in the engine's listing (any more).", "degraded")
            return
        self.result_line.setText(f"Showing route {route}: the actions above apply to it.")

    def select_queue(self, workflow: str, route: str) -> None:
        """Select the queue ``workflow`` on ``route`` (as a click would)."""
        self._select(self.queue_table, f"{workflow} \u2192 {route}")

    def select_domain(self, domain: str) -> None:
        self._select(self.domain_table, domain)

    def select_route(self, route: str) -> None:
        self._select(self.route_table, route)

    @staticmethod
    def _select(view: Any, key: str) -> None:
        model = view.source_model()
        row = model.row_for_key(key)
        if row is None:
            raise LookupError(f"no row {key!r}")
        index = view.model().mapFromSource(model.index(row, 0))
        view.selectRow(index.row())

    def _on_queue_selected(self, *_args: object) -> None:
        queue = self.selected_queue()
        if queue is not None and self.route_model.row_for_key(str(queue["route"])) is not None:
            self.select_route(str(queue["route"]))
        self.domain_table.clearSelection()
        self._show_detail()
        self._retarget()

    def _show_detail(self) -> None:
        queue = self.selected_queue()
        if queue is None:
            self.side.setCurrentWidget(self.pick)
            self.domain_model.set_rows([])
            return
        now = float(self.listing.get("now") or 0.0)
        self.detail_title.setText(f"{queue['workflow']} on route {queue['route']}")
        self.facts["State"].setText(str(queue["state"]))
        self.facts["Control"].setText(control_words(queue.get("control"), now) or "none")
        self.facts["Depth"].setText(
            f"{format_count(queue['depth'])} pending ({format_count(queue['due'])} due,"
            f" {format_count(queue['deferred'])} deferred, {format_count(queue['held'])} held),"
            f" {format_count(queue['in_flight'])} in flight"
        )
        self.facts["Rate"].setText(
            f"{format_rate(queue['rate'])} ({format_count(queue['sent_last_minute'])} sent in"
            " the last minute)"
        )
        age = queue.get("oldest_age")
        self.facts["Oldest"].setText("\u2014" if age is None else format_duration(age))
        self.domain_model.set_rows(domain_rows(queue))
        self.side.setCurrentIndex(1)

    def _retarget(self) -> None:
        """Enable the actions that have a target and say what they apply to."""
        queue, route, domain = self.selected_queue(), self.selected_route(), self.selected_domain()
        controls = self.listing.get("controls") or []
        connected = self._answered
        self.pause_button.setEnabled(connected and (queue is not None or route is not None))
        self.resume_button.setEnabled(connected and bool(controls))
        for button in (self.drain_button, self.reroute_button, self.rate_button):
            button.setEnabled(connected and route is not None)
        for button in (self.retry_button, self.cancel_button):
            button.setEnabled(connected and queue is not None)
        parts = []
        if queue is not None:
            parts.append(f"workflow {queue['workflow']}")
        if route is not None:
            parts.append(f"route {route}")
        if domain is not None:
            parts.append(f"domain {domain}")
        self.target.setText(
            "Acting on " + ", ".join(parts) if parts else "Select a queue or a route to act on it"
        )

    def _context_menu(self, pos: QPoint) -> None:
        index = self.queue_table.indexAt(pos)
        if index.isValid():
            self.queue_table.selectRow(index.row())
        menu = QMenu(self)
        self._fill_pause(menu.addMenu("Pause"))
        self._fill_resume(menu.addMenu("Resume"))
        for button in self.action_buttons()[2:]:
            action = menu.addAction(button.icon(), button.text())
            action.setEnabled(button.isEnabled())
            action.triggered.connect(button.click)
        menu.popup(self.queue_table.viewport().mapToGlobal(pos))

    def _fill_pause(self, menu: QMenu | None = None) -> None:
        menu = self.pause_menu if menu is None else menu
        menu.clear()
        queue, route, domain = self.selected_queue(), self.selected_route(), self.selected_domain()
        targets = []
        if queue is not None:
            targets.append(("workflow", str(queue["workflow"])))
        if route is not None:
            targets.append(("route", route))
        if domain is not None:
            targets.append(("domain", domain))
        for kind, value in targets:
            action = QAction(f"Pause {scope_words(kind, value)}\u2026", menu)
            action.triggered.connect(lambda _=False, k=kind, v=value: self.ask_pause(k, v))
            menu.addAction(action)

    def _fill_resume(self, menu: QMenu | None = None) -> None:
        menu = self.resume_menu if menu is None else menu
        menu.clear()
        for c in self.listing.get("controls") or []:
            kind, value = str(c["kind"]), str(c["value"])
            action = QAction(
                f"Resume {scope_words(kind, value)} ({c['state']} by {c.get('actor')})\u2026",
                menu,
            )
            action.triggered.connect(lambda _=False, k=kind, v=value: self.ask_resume(k, v))
            menu.addAction(action)

    # ---------------------------------------------------------------- actions

    def ask_pause(self, kind: str, value: str) -> Operation[Any]:
        """Preview, confirm, then pause the workflow, route, domain (or ``all``)."""
        return self.ask(
            "queues.pause",
            _scope_args(kind, value),
            title=f"Pause {scope_words(kind, value)}",
            confirm_text="Pause",
        )

    def ask_resume(self, kind: str, value: str) -> Operation[Any]:
        """Preview, confirm, then lift the pause or drain of a scope."""
        return self.ask(
            "queues.resume",
            _scope_args(kind, value),
            title=f"Resume {scope_words(kind, value)}",
            confirm_text="Resume",
            destructive=False,
        )

    def ask_drain(self) -> Operation[Any] | None:
        """Preview, confirm, then drain the selected route."""
        route = self.selected_route()
        if route is None:
            return None
        return self.ask(
            "routes.drain", {"route": route}, title=f"Drain route {route}", confirm_text="Drain"
        )

    def ask_retry_now(self) -> Operation[Any] | None:
        """Preview, confirm, then make the selection's deferred intents due now."""
        args = self._queue_selection()
        if args is None:
            return None
        return self.ask(
            "queues.retry_now",
            args,
            title="Retry deferred intents now",
            confirm_text="Retry now",
            destructive=False,
        )

    def ask_cancel(self) -> Operation[Any] | None:
        """Preview, confirm with a required reason, then cancel the selection's intents."""
        args = self._queue_selection()
        if args is None:
            return None
        return self.ask(
            "queues.cancel",
            args,
            title="Cancel pending intents",
            confirm_text="Cancel these intents",
            reason_required=True,
        )

    def ask_reroute(self) -> RerouteDialog | None:
        """Ask where to (and which slice), then preview, confirm and reroute."""
        route = self.selected_route()
        if route is None:
            return None
        queue = self.selected_queue()
        workflow = str(queue["workflow"]) if queue and queue["route"] == route else None
        dialog = RerouteDialog(
            route, self.route_names, workflow=workflow, domain=self.selected_domain(), parent=self
        )
        dialog.chosen.connect(
            lambda args: self.ask(
                "queues.reroute",
                args,
                title=f"Reroute from {args['from_route']} to {args['to_route']}",
                confirm_text="Reroute",
            )
        )
        return self._open_param_dialog(dialog)

    def ask_rate(self) -> RateDialog | None:
        """Ask for the new limits, then preview, confirm and set them."""
        route = self.selected_route()
        if route is None:
            return None
        limits = next((r.get("limits") for r in self.routes if r.get("name") == route), None)
        dialog = RateDialog(route, limits, domain=self.selected_domain(), parent=self)
        dialog.chosen.connect(
            lambda args: self.ask(
                "routes.set_rate",
                args,
                title=f"Change the rate limit of route {route}",
                confirm_text="Set the limit",
                ask_reason=False,
                destructive=False,
            )
        )
        return self._open_param_dialog(dialog)

    def _open_param_dialog(self, dialog: Any) -> Any:
        dialog.finished.connect(dialog.deleteLater)
        dialog.finished.connect(lambda _code: setattr(self, "param_dialog", None))
        self.param_dialog = dialog
        dialog.open()
        return dialog

    def _queue_selection(self) -> dict[str, Any] | None:
        queue = self.selected_queue()
        if queue is None:
            return None
        args: dict[str, Any] = {"workflow": queue["workflow"], "route": queue["route"]}
        domain = self.selected_domain()
        if domain is not None:
            args["domain"] = domain
        return args

    def ask(
        self,
        verb: str,
        args: dict[str, Any],
        *,
        title: str,
        confirm_text: str,
        reason_required: bool = False,
        ask_reason: bool = True,
        destructive: bool = True,
    ) -> Operation[Any]:
        """Preview ``verb`` on one node, show its impact, and run it once confirmed."""

        preview_args = {**args, "preview": True}
        if reason_required:
            preview_args["reason"] = PREVIEW_REASON

        def previewed(result: dict[str, Any]) -> None:
            summary = str(result.get("summary") or title).removesuffix(f": {PREVIEW_REASON}")
            dialog = ConfirmImpactDialog(
                title,
                summary,
                confirm_text=confirm_text,
                details=impact_details(result, self.client.actor),
                reason_required=reason_required,
                ask_reason=ask_reason,
                destructive=destructive,
                parent=self,
            )
            dialog.accepted_with.connect(lambda reason: self._run(verb, args, reason, ask_reason))
            dialog.finished.connect(dialog.deleteLater)
            dialog.finished.connect(lambda _code: setattr(self, "dialog", None))
            self.dialog = dialog
            dialog.open()

        def failed(exc: BaseException) -> None:
            self._say(f"{title}: {describe(exc)}", "failing")

        self.preview_op = (
            Operation(
                self,
                lambda: self.client.request_one(verb, preview_args),
                label=title,
            )
            .success(previewed)
            .failure(failed)
            .run()
        )
        return self.preview_op

    def _run(self, verb: str, args: dict[str, Any], reason: str, ask_reason: bool) -> None:
        body = {**args, "reason": reason} if ask_reason and reason else dict(args)

        def done(result: dict[str, Any]) -> None:
            self._say(str(result.get("summary") or "Done."), RESULT_STATUS.get(verb, "healthy"))
            self.refresh(force=True)

        def failed(exc: BaseException) -> None:
            self._say(describe(exc), "failing")
            self.refresh(force=True)

        self.action_op = (
            Operation(self, lambda: self.client.request_one(verb, body), label=verb)
            .success(done)
            .failure(failed)
            .run()
        )

    def _say(self, text: str, status: str) -> None:
        """The result of an action: the page's status line and the window's message area."""
        self.result_line.setText(text)
        show_message(self, text, status)

    # ---------------------------------------------------------------- demo

    def start_demo(self) -> None:
        """Start demo traffic from the empty state, so queues appear."""
        self.empty.set_action("Starting demo traffic\u2026", enabled=False)

        def started(_result: Any) -> None:
            self.empty.set_action("Demo traffic running \u2014 queues appear soon", enabled=False)

        def failed(exc: BaseException) -> None:
            self.empty.set_action("Start demo traffic")
            self._say(f"Demo traffic: {describe(exc)}", "failing")

        Operation(
            self, lambda: self.client.request_one("demo.start", {"rate": 20}), label="Demo"
        ).success(started).failure(failed).run()

    async def wait_idle(self) -> None:
        """Wait for the preview and the action in flight (tests)."""
        for op in (self.preview_op, self.action_op):
            if op is not None and op.task is not None:
                await asyncio.wait([op.task])


def _scope_args(kind: str, value: str) -> dict[str, Any]:
    return {"all": True} if kind == "all" else {kind: value}
