"""The Workflows page: every workflow, and the chosen one drawn as a graph with live counts.

Layout (UI.md): the list of workflows on the left (name, live version, trigger); on the right
the chosen version drawn on a canvas (trigger at the top, steps flowing down, branches side
by side, ends at the bottom; arrows labelled with the outcome that takes them), the properties
of the selected box and the problems beside it, and a text tab with the same draft as TOML.

- The graph and the text are two views of one draft: an edit in the side form redraws the graph
  and rewrites the text; an edit of the text (a short pause after typing) redraws the graph, or
  says where the TOML is wrong and keeps the last good draft.
- A short pause after any edit the engine checks the draft (``workflows.validate``): every
  problem is listed in words and shown on its box.
- Every few seconds while the page is shown, the counts of the version shown
  (``workflows.step_counts``) are written on the boxes: entered, waiting, sent, exited,
  converted.
- Save stores a new version (``workflows.save``) without changing which version is live.
  Enable and Disable act on the version shown, after a confirmation that says what changes
  (enrollments already running keep the version they started on).

``current_draft()`` returns the definition being edited (for the dry run dialog).
"""

from __future__ import annotations

import copy
import html
import tomllib
from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTabWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from console.client import EngineClient
from console.errors import describe
from console.operations import show_message
from console.pages.dry_run import DryRunDialog
from console.pages.requests import KeyedRequests
from console.pages.workflow_form import StepForm
from console.pages.workflow_graph import TRIGGER, build_graph, steps_of
from engine.decide.workflow_toml import to_toml
from widgets import theme
from widgets.confirm import ConfirmImpactDialog
from widgets.empty_state import EmptyState
from widgets.flow_graph import FlowGraphView
from widgets.format import format_count
from widgets.theme import Status

VALIDATE_DELAY_MS = 400
TEXT_DELAY_MS = 450
COUNTS_MS = 3000
ID_ROLE = Qt.ItemDataRole.UserRole


class WorkflowsPage(QWidget):
    """The workflow editor (see the module docstring). Built with ``WorkflowsPage(client)``.

    Signals: none of its own.
    """

    def __init__(self, client: EngineClient, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.client = client
        self.requests = KeyedRequests(self, client)
        self.workflows: list[dict[str, Any]] = []
        self.loaded: dict[str, Any] | None = None  # the workflows.get reply shown
        self.draft: dict[str, Any] = {}
        self.problems: list[dict[str, Any]] = []
        self.counts: dict[str, Any] | None = None
        self.templates: list[str] = []
        self.text_error: str | None = None
        self._wanted: str | None = None  # show_item before the list arrived
        self._writing = False
        self._dialog: ConfirmImpactDialog | None = None

        # -- master: the list -------------------------------------------------------------------
        title = QLabel("Workflows")
        title.setFont(theme.scaled_font(self.font(), 1.5, bold=True))
        self.table = QTreeWidget()
        self.table.setHeaderLabels(["Workflow", "Live", "Trigger"])
        self.table.setRootIsDecorated(False)
        self.table.setAlternatingRowColors(True)
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.table.itemSelectionChanged.connect(self._picked)
        master = QWidget()
        master_layout = QVBoxLayout(master)
        master_layout.setContentsMargins(0, 0, 0, 0)
        master_layout.addWidget(title)
        master_layout.addWidget(self.table, 1)

        # -- detail header ----------------------------------------------------------------------
        self.name = QLabel("")
        self.name.setFont(theme.scaled_font(self.font(), 1.25, bold=True))
        self.state = QLabel("")
        self.versions = QComboBox()
        self.versions.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.versions.activated.connect(self._version_chosen)
        self.enable_button = QPushButton("Enable this version\u2026")
        self.enable_button.clicked.connect(self.ask_enable)
        self.disable_button = QPushButton("Disable\u2026")
        self.disable_button.setStyleSheet(theme.destructive_button_qss(self.palette()))
        self.disable_button.clicked.connect(self.ask_disable)
        self.save_button = QPushButton("Save as new version")
        self.save_button.setShortcut("Ctrl+S")
        self.save_button.setStyleSheet(theme.primary_button_qss(self.palette()))
        self.save_button.setToolTip("Store the draft as a new version; the live version stays")
        self.save_button.clicked.connect(self.save)
        self.dry_run_button = QPushButton("Dry run\u2026")
        self.dry_run_button.setToolTip(
            "Replay the recorded events against the draft, sending nothing: how many emails,"
            " to whom, when, per domain, and where caps bind"
        )
        self.dry_run_button.clicked.connect(self.open_dry_run)
        self.dry_run: DryRunDialog | None = None
        self.dirty = QLabel("")
        header = QHBoxLayout()
        header.setSpacing(8)
        header.addWidget(self.name)
        header.addWidget(self.state)
        header.addStretch(1)
        header.addWidget(QLabel("Version"))
        header.addWidget(self.versions)
        header.addWidget(self.enable_button)
        header.addWidget(self.disable_button)
        header.addWidget(self.dry_run_button)
        header.addWidget(self.save_button)

        # -- the graph tab: canvas | properties and problems ------------------------------------
        self.graph = FlowGraphView()
        self.graph.node_selected.connect(self._node_selected)
        self.form = StepForm()
        self.form.step_changed.connect(self._step_edited)
        self.form.trigger_changed.connect(self._trigger_edited)
        self.problem_list = QListWidget()
        self.problem_list.setWordWrap(True)
        self.problem_list.itemClicked.connect(self._problem_clicked)
        self.problem_note = QLabel("")
        self.problem_note.setWordWrap(True)
        side = QWidget()
        side_layout = QVBoxLayout(side)
        side_layout.setContentsMargins(0, 0, 0, 0)
        side_layout.addWidget(self.form, 3)
        side_layout.addWidget(QLabel("<b>Problems</b>"))
        side_layout.addWidget(self.problem_note)
        side_layout.addWidget(self.problem_list, 2)
        graph_tab = QSplitter(Qt.Orientation.Horizontal)
        graph_tab.addWidget(self.graph)
        graph_tab.addWidget(side)
        graph_tab.setChildrenCollapsible(False)
        chars = self.fontMetrics().averageCharWidth()
        side.setMinimumWidth(chars * 36)
        side.setMaximumWidth(chars * 60)
        self.graph.setMinimumWidth(chars * 40)
        graph_tab.setSizes([chars * 120, chars * 44])

        # -- the text tab ------------------------------------------------------------------------
        self.text = QPlainTextEdit()
        font = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
        font.setPointSizeF(max(font.pointSizeF(), self.font().pointSizeF()))
        self.text.setFont(font)
        self.text.textChanged.connect(self._text_edited)
        self.text_state = QLabel("")
        self.text_state.setWordWrap(True)
        text_tab = QWidget()
        text_layout = QVBoxLayout(text_tab)
        text_layout.setContentsMargins(0, 0, 0, 0)
        text_layout.addWidget(self.text, 1)
        text_layout.addWidget(self.text_state)

        self.tabs = QTabWidget()
        self.tabs.addTab(graph_tab, "Graph")
        self.tabs.addTab(text_tab, "Text (TOML)")
        self.detail = QWidget()
        detail_layout = QVBoxLayout(self.detail)
        detail_layout.setContentsMargins(0, 0, 0, 0)
        detail_layout.addLayout(header)
        detail_layout.addWidget(self.dirty)
        detail_layout.addWidget(self.tabs, 1)
        self.pick = EmptyState(
            "mdi6.sitemap-outline",
            "Choose a workflow to see it as a graph",
            detail="Its steps, where each outcome goes, and live counts on every step.",
        )
        self.right = QStackedWidget()
        self.right.addWidget(self.pick)
        self.right.addWidget(self.detail)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(master)
        splitter.addWidget(self.right)
        splitter.setChildrenCollapsible(False)
        master.setMinimumWidth(chars * 34)
        splitter.setSizes([chars * 48, chars * 152])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 12, 16, 12)
        layout.addWidget(splitter, 1)

        self._validate_delay = QTimer(self)
        self._validate_delay.setSingleShot(True)
        self._validate_delay.setInterval(VALIDATE_DELAY_MS)
        self._validate_delay.timeout.connect(self.validate)
        self._text_delay = QTimer(self)
        self._text_delay.setSingleShot(True)
        self._text_delay.setInterval(TEXT_DELAY_MS)
        self._text_delay.timeout.connect(self.text_to_graph)
        self._counts_timer = QTimer(self)
        self._counts_timer.setInterval(COUNTS_MS)
        self._counts_timer.timeout.connect(self.load_counts)
        self._show_buttons()

    # ---------------------------------------------------------------- page hooks

    def page_shown(self) -> None:
        self.load_list()
        self.requests.ask("templates", "templates.list", {}, self._show_templates)
        self._counts_timer.start()
        self.load_counts()

    def page_hidden(self) -> None:
        self._counts_timer.stop()

    def show_item(self, item: str) -> None:
        """Open the workflow with this id (or name)."""
        self._wanted = item
        self._select_wanted()

    def busy(self) -> bool:
        """Whether anything is pending (tests wait for quiet)."""
        return (
            self.requests.busy() or self._validate_delay.isActive() or self._text_delay.isActive()
        )

    def current_draft(self) -> dict[str, Any]:
        """The workflow definition being edited (a copy)."""
        return copy.deepcopy(self.draft)

    def open_dry_run(self) -> DryRunDialog | None:
        """Open the dry run of the draft as it stands (a window of its own, not modal)."""
        if self.loaded is None:
            return None
        if self.dry_run is not None:
            self.dry_run.close()
            self.dry_run.deleteLater()
        self.dry_run = DryRunDialog(self.client, "workflow", self.current_draft(), self)
        self.dry_run.show()
        return self.dry_run

    # ---------------------------------------------------------------- the list

    def load_list(self) -> None:
        self.requests.ask("list", "workflows.list", {}, self._show_list, self._failed("list"))

    def _show_list(self, reply: dict[str, Any]) -> None:
        self.workflows = sorted(reply.get("workflows", []), key=lambda w: w["name"].lower())
        chosen = self.loaded["id"] if self.loaded else None
        self.table.blockSignals(True)
        self.table.clear()
        muted = theme.secondary_text_color(self.palette())
        for wf in self.workflows:
            live = wf.get("live_version")
            row = QTreeWidgetItem(
                [wf["name"], f"v{live}" if live else "off", wf.get("trigger", "")]
            )
            row.setData(0, ID_ROLE, wf["id"])
            tip = f"{wf['id']} \u00b7 {wf['category']} \u00b7 {wf['versions']} versions"
            row.setToolTip(0, tip)
            row.setToolTip(2, wf.get("trigger", ""))
            if not live:
                row.setForeground(1, muted)
            self.table.addTopLevelItem(row)
            if wf["id"] == chosen:
                row.setSelected(True)
        # Name and version fit their text; the trigger takes the rest of the pane and elides
        # (its tooltip has it whole) rather than pushing a horizontal scroll bar in.
        for column in range(2):
            self.table.resizeColumnToContents(column)
        self.table.blockSignals(False)
        self._select_wanted()

    def _select_wanted(self) -> None:
        if not self._wanted:
            return
        for i in range(self.table.topLevelItemCount()):
            row = self.table.topLevelItem(i)
            wid = str(row.data(0, ID_ROLE))
            if self._wanted in (wid, row.text(0)):
                self._wanted = None
                self.table.setCurrentItem(row)
                return

    def _picked(self) -> None:
        rows = self.table.selectedItems()
        if rows:
            self.open_workflow(str(rows[0].data(0, ID_ROLE)))

    def open_workflow(self, wid: str, version: int | None = None) -> None:
        """Load ``wid`` (the live version, else the newest; or ``version``)."""
        args: dict[str, Any] = {"workflow": wid}
        if version is not None:
            args["version"] = version
        self.requests.ask("get", "workflows.get", args, self._show_workflow, self._failed("get"))

    def _show_workflow(self, reply: dict[str, Any]) -> None:
        self.loaded = reply
        self.counts = None
        self.right.setCurrentWidget(self.detail)
        self.name.setText(html.escape(reply["name"]))
        self.versions.blockSignals(True)
        self.versions.clear()
        for v in reply["versions"]:
            live = " \u2014 live" if v["version"] == reply["live_version"] else ""
            self.versions.addItem(f"v{v['version']}{live}", v["version"])
        self.versions.setCurrentIndex(max(0, self.versions.findData(reply["version"])))
        self.versions.blockSignals(False)
        self.set_draft(dict(reply["definition"]), reply.get("problems", []))
        self._show_buttons()
        self.load_counts()

    def _version_chosen(self, index: int) -> None:
        if self.loaded is not None:
            self.open_workflow(self.loaded["id"], int(self.versions.itemData(index)))

    def _show_templates(self, reply: dict[str, Any]) -> None:
        self.templates = sorted(t["id"] for t in reply.get("templates", []))

    # ---------------------------------------------------------------- the draft

    def set_draft(self, definition: dict[str, Any], problems: list[dict[str, Any]]) -> None:
        """Show ``definition`` in the graph and the text (no validation asked)."""
        self.draft = definition
        self.problems = problems
        self.write_text()
        self.redraw()
        self._show_problems()
        self._show_dirty()

    def redraw(self) -> None:
        nodes, edges = build_graph(self.draft, self.problems, self.counts)
        self.graph.set_graph(nodes, edges)
        self._node_selected(self.graph.selected_key())

    def write_text(self) -> None:
        self._writing = True
        try:
            self.text.setPlainText(to_toml(self.draft))
        finally:
            self._writing = False
        self.text_error = None
        self.text_state.setText("The text and the graph show the same draft.")

    def _changed(self) -> None:
        """The draft was edited in the form: redraw, rewrite the text, validate soon."""
        self.write_text()
        self.redraw()
        self._show_dirty()
        self._validate_delay.start()

    def _step_edited(self, step: dict[str, Any]) -> None:
        steps = [step if s.get("id") == step["id"] else s for s in self.draft.get("steps", [])]
        self.draft = {**self.draft, "steps": steps}
        self._changed()

    def _trigger_edited(self, trigger: dict[str, Any]) -> None:
        self.draft = {**self.draft, "trigger": trigger}
        self._changed()

    def _text_edited(self) -> None:
        if not self._writing:
            self._text_delay.start()

    def text_to_graph(self) -> None:
        """Read the TOML; draw it, or say where it is wrong and keep the last good draft."""
        self._text_delay.stop()
        try:
            data = tomllib.loads(self.text.toPlainText())
        except tomllib.TOMLDecodeError as exc:
            self.text_error = str(exc)
            colour = theme.status_color(Status.FAILING, self.palette())
            self.text_state.setText(
                f"<span style='color:{colour.name()}'>\u2716 Not valid TOML: "
                f"{html.escape(str(exc))} \u2014 the graph shows the last good draft.</span>"
            )
            return
        self.text_error = None
        self.text_state.setText("The text and the graph show the same draft.")
        self.draft = {k: v for k, v in data.items() if k not in ("version", "enabled")}
        self.redraw()
        self._show_dirty()
        self._validate_delay.start()

    def _show_dirty(self) -> None:
        saved = self.loaded["definition"] if self.loaded else None
        changed = saved is not None and self.draft != saved
        self.dirty.setText(
            "\u25cf Unsaved changes: Save as new version keeps them (the live version stays)."
            if changed
            else ""
        )
        self._show_buttons()

    # ---------------------------------------------------------------- validation

    def validate(self) -> None:
        self._validate_delay.stop()
        self.requests.ask(
            "validate",
            "workflows.validate",
            {"definition": self.draft},
            self._show_validation,
            self._failed("validate"),
        )

    def _show_validation(self, reply: dict[str, Any]) -> None:
        if reply.get("definition") != self.draft:
            return  # an older draft's answer; the newer one is on its way
        self.problems = list(reply.get("problems", []))
        self.redraw()
        self._show_problems()

    def _show_problems(self) -> None:
        self.problem_list.clear()
        for p in self.problems:
            where = f"step {p['step']}: " if p.get("step") else ""
            item = QListWidgetItem(f"\u26a0 {where}{p['problem']}")
            item.setToolTip(f"{where}{p['problem']}")
            item.setData(ID_ROLE, p.get("step") or TRIGGER)
            self.problem_list.addItem(item)
        if self.problems:
            n = len(self.problems)
            self.problem_note.setText(f"{n} problem{'s' if n > 1 else ''}: fix before saving.")
        else:
            self.problem_note.setText("No problems found.")

    def _problem_clicked(self, item: QListWidgetItem) -> None:
        self.graph.select(str(item.data(ID_ROLE)))

    # ---------------------------------------------------------------- the side form

    def _node_selected(self, key: str) -> None:
        said = [p["problem"] for p in self.problems if (p.get("step") or TRIGGER) == key and key]
        if key == TRIGGER:
            trigger = self.draft.get("trigger")
            self.form.set_trigger(trigger if isinstance(trigger, dict) else {}, said)
            return
        step = next((s for s in steps_of(self.draft) if s["id"] == key), None)
        if step is None:
            self.form.clear()
            return
        ids = [s["id"] for s in steps_of(self.draft)]
        self.form.set_step(step, ids, self.templates, said)

    # ---------------------------------------------------------------- counts

    def load_counts(self) -> None:
        if self.loaded is None:
            return
        args = {"workflow": self.loaded["id"], "version": self.loaded["version"]}
        self.requests.ask("counts", "workflows.step_counts", args, self._show_counts)

    def _show_counts(self, reply: dict[str, Any]) -> None:
        loaded = self.loaded
        if loaded is None or (reply["workflow"], reply["version"]) != (
            loaded["id"],
            loaded["version"],
        ):
            return
        first = self.counts is None
        self.counts = reply
        if first:
            self.redraw()
            return
        nodes, _ = build_graph(self.draft, self.problems, self.counts)
        for node in nodes:
            self.graph.set_counts(node.key, node.counts)

    # ---------------------------------------------------------------- save, enable, disable

    def _show_buttons(self) -> None:
        loaded = self.loaded
        has = loaded is not None
        live = loaded is not None and loaded["version"] == loaded["live_version"]
        self.enable_button.setEnabled(has and not live)
        self.disable_button.setEnabled(live)
        self.save_button.setEnabled(has)
        self.dry_run_button.setEnabled(has)
        if loaded is None:
            self.state.setText("")
            return
        status = Status.HEALTHY if live else Status.PAUSED
        colour = theme.status_color(status, self.palette())
        if live:
            words = f"v{loaded['version']} is live"
        elif loaded["live_version"]:
            words = f"v{loaded['version']} is not live (v{loaded['live_version']} is)"
        else:
            words = "off: no version is live"
        self.state.setText(f"<span style='color:{colour.name()}'>\u25cf {words}</span>")

    def save(self) -> None:
        if self.loaded is None:
            return
        if self.text_error:
            show_message(self, "Fix the text first: it is not valid TOML.")
            return
        args = {"definition": self.draft, "base_version": self.loaded["latest"]}

        def saved(reply: dict[str, Any]) -> None:
            if not reply.get("changed"):
                show_message(self, "Nothing to save: the draft is the newest version.", "info")
                return
            show_message(
                self,
                f"Saved {reply['workflow']} v{reply['version']} (not live: enable it when ready).",
                "healthy",
            )
            self.load_list()
            self.open_workflow(reply["workflow"], reply["version"])

        self.requests.ask("save", "workflows.save", args, saved, self._failed("save", "Not saved"))

    def ask_enable(self) -> None:
        loaded = self.loaded
        if loaded is None:
            return
        wid, version, live = loaded["id"], loaded["version"], loaded["live_version"]
        running = self._running()
        instead = f" instead of v{live}" if live else ""
        details = [
            f"New enrollments start on v{version}{instead}.",
            "Enrollments already running keep the version they started on"
            + (f" ({running} on this version now)." if running is not None else "."),
        ]
        if self.draft != loaded["definition"]:
            details.append("Your unsaved edits are not part of it: save them first.")
        self._confirm(
            f"Enable {loaded['name']} v{version}",
            f"Make v{version} of \u201c{loaded['name']}\u201d the live version?",
            "Enable v" + str(version),
            details,
            "workflows.enable",
            {"workflow": wid, "version": version},
            destructive=False,
        )

    def ask_disable(self) -> None:
        loaded = self.loaded
        if loaded is None:
            return
        version = loaded["version"]
        self._confirm(
            f"Disable {loaded['name']}",
            f"Stop \u201c{loaded['name']}\u201d from starting new enrollments?",
            f"Disable v{version}",
            [
                f"v{version} stops being live; no version of the workflow starts enrollments.",
                "Enrollments already running go on to their end on their version.",
            ],
            "workflows.disable",
            {"workflow": loaded["id"], "version": version},
            destructive=True,
        )

    def _running(self) -> str | None:
        totals = (self.counts or {}).get("enrollments")
        if not totals:
            return None
        return format_count(totals.get("active", 0) + totals.get("waiting", 0))

    def _confirm(
        self,
        title: str,
        impact: str,
        button: str,
        details: list[str],
        verb: str,
        args: dict[str, Any],
        *,
        destructive: bool,
    ) -> None:
        dialog = ConfirmImpactDialog(
            title, impact, confirm_text=button, details=details, destructive=destructive,
            parent=self,
        )  # fmt: skip
        dialog.accepted_with.connect(lambda _reason: self._act(verb, args))
        dialog.finished.connect(dialog.deleteLater)
        self._dialog = dialog
        dialog.open()

    def _act(self, verb: str, args: dict[str, Any]) -> None:
        def done(reply: dict[str, Any]) -> None:
            what = "enabled" if verb.endswith("enable") else "disabled"
            show_message(self, f"{reply['workflow']} v{reply['version']} {what}.", "healthy")
            self.load_list()
            self.open_workflow(reply["workflow"], reply["version"])

        self.requests.ask(verb, verb, args, done, self._failed(verb, "Not changed"))

    def _failed(self, what: str, prefix: str = "") -> Any:
        def failed(exc: BaseException) -> None:
            text = describe(exc)
            show_message(self, f"{prefix}: {text}" if prefix else f"Workflows ({what}): {text}")

        return failed
