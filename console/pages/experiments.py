"""The Experiments page: each experiment's arms with sends, conversions, rate ± interval, lift
over the holdout and the decision; below, conversions per workflow.

Polls ``experiments.results`` and ``conversions.summary`` every 5 s while visible. Selecting an
experiment shows its arms; "Promote…" gives the selected arm to every new contact outside the
holdout (``experiments.promote``, audited), after a confirmation stating the impact.
Rates are conversions per exposure; intervals are 95% Wilson intervals; the lift is the
difference from the holdout with its always-valid 95% sequence (docs/experiments.md).
Below the arms, their order value: revenue per exposed contact over the chosen window after
first exposure, the incremental revenue over the holdout (95% intervals) and the arms' mean
lifetime value now (engine/experiments/value.py).
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from console.client import EngineClient
from console.operations import Operation, show_message
from console.pages.audit import Cell, Freshness, RecordTable
from console.pages.polling import PollingPage
from widgets import theme
from widgets.confirm import ConfirmImpactDialog
from widgets.empty_state import EmptyState
from widgets.status_pill import StatusPill

REFRESH_MS = 5000
EXPERIMENT_COLUMNS = ("Experiment", "Workflow", "Arms", "Exposed", "Decision")
ARM_COLUMNS = (
    "Arm",
    "Exposed",
    "Sent",
    "Conversions",
    "Rate (95% CI)",
    "Lift vs holdout",
    "Rev./mail",
)
VALUE_COLUMNS = (
    "Arm",
    "Contacts",
    "Full window",
    "Revenue/contact (95% CI)",
    "Incremental vs holdout",
    "Mean CLV now",
)
VALUE_WINDOWS = (("7 days", "7d"), ("30 days", "30d"), ("90 days", "90d"))
DEFAULT_VALUE_WINDOW = "30d"
WORKFLOW_COLUMNS = (
    "Workflow",
    "Sent",
    "Converted",
    "Rate (95% CI)",
    "Revenue",
    "Rev./mail",
    "Send \u2192 conversion p50",
)
# Decision states in the console's status vocabulary (always with the word).
STATE_STATUS = {
    "collecting": "paused",
    "running": "draining",
    "decided": "healthy",
    "promoted": "healthy",
}
STATE_WORDS = {
    "collecting": "collecting data",
    "running": "no winner yet",
    "decided": "winner found",
    "promoted": "winner promoted",
}


def percent(value: float | None, digits: int = 1) -> str:
    return "\u2014" if value is None else f"{value * 100:.{digits}f}%"


def points(value: float) -> str:
    """A difference of rates in percentage points, signed."""
    return f"{value * 100:+.1f} pt"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "\u2014"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def window_words(seconds: float | None) -> str:
    """``value_window_s`` as people say it: 30 days, 12 hours."""
    if seconds is None:
        return "\u2014"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{n} {unit}{'' if n == 1 else 's'}"
    return duration(seconds)


def experiment_cells(row: dict[str, Any]) -> list[Cell]:
    arms = row.get("variants", [])
    exposed = sum(int(a.get("exposed", 0)) for a in arms)
    state = str(row.get("state", ""))
    word = STATE_WORDS.get(state, state)
    if row.get("winner"):
        word += f": {row['winner']}"
    return [
        Cell(str(row["id"]), str(row.get("detail", ""))),
        Cell(str(row.get("workflow_id", ""))),
        Cell(", ".join(str(a["variant"]) for a in arms)),
        Cell(f"{exposed:,}", numeric=True),
        Cell(word, str(row.get("detail", ""))),
    ]


def arm_cells(row: dict[str, Any]) -> list[Cell]:
    rate = f"{percent(row['rate'])}  ({percent(row['rate_low'])}\u2013{percent(row['rate_high'])})"
    if "lift" in row:
        lift = (
            f"{points(row['lift'])}  ({points(row['lift_low'])} \u2026 {points(row['lift_high'])})"
        )
        surely = row["lift_low"] > 0 or row["lift_high"] < 0
        tip = (
            "The interval excludes zero: the difference is real."
            if surely
            else ("The interval includes zero: no proven difference yet.")
        )
    elif row["variant"] == "holdout":
        lift, tip = "baseline", "Gets nothing: the rate without this mail."
    else:
        lift, tip = "\u2014", "No holdout in this experiment."
    return [
        Cell(str(row["variant"])),
        Cell(f"{row['exposed']:,}", numeric=True),
        Cell(f"{row['sends']:,}", numeric=True),
        Cell(f"{row['conversions']:,}", numeric=True),
        Cell(rate, "Conversions per exposure, 95% Wilson interval", numeric=True),
        Cell(lift, tip, numeric=True),
        Cell(f"{row.get('revenue_per_mail', 0.0):,.2f}", numeric=True),
    ]


def money(value: float, signed: bool = False) -> str:
    return f"{value:+,.2f}" if signed else f"{value:,.2f}"


def value_cells(row: dict[str, Any]) -> list[Cell]:
    """One arm's order value after exposure (``row["value"]`` of ``experiments.results``)."""
    value = row.get("value", {})
    per = (
        f"{money(value.get('revenue_per_contact', 0.0))}  "
        f"({money(value.get('revenue_per_contact_low', 0.0))}\u2013"
        f"{money(value.get('revenue_per_contact_high', 0.0))})"
    )
    if "incremental" in value:
        extra = (
            f"{money(value['incremental'], True)}  ({money(value['incremental_low'], True)}"
            f" \u2026 {money(value['incremental_high'], True)})"
        )
        surely = value["incremental_low"] > 0 or value["incremental_high"] < 0
        tip = (
            "Revenue per contact above the holdout's; the interval excludes zero."
            if surely
            else "Revenue per contact above the holdout's; the interval includes zero:"
            " no proven difference yet."
        )
    elif row["variant"] == "holdout":
        extra, tip = "baseline", "Gets nothing: what contacts spend without this mail."
    else:
        extra, tip = "\u2014", "Needs a holdout with at least two contacts."
    return [
        Cell(str(row["variant"])),
        Cell(f"{int(value.get('contacts', 0)):,}", "Contacts exposed (first exposure)",
             numeric=True),
        Cell(f"{int(value.get('matured', 0)):,}",
             "Contacts exposed at least the whole window ago", numeric=True),
        Cell(per, "Order revenue per exposed contact after exposure, 95% interval",
             numeric=True),
        Cell(extra, tip, numeric=True),
        Cell(money(float(value.get("clv_mean", 0.0))),
             "Mean lifetime value of the arm's contacts now (all their orders, before exposure"
             " too): similar in every arm, since arms are assigned at random", numeric=True),
    ]  # fmt: skip


def workflow_cells(row: dict[str, Any]) -> list[Cell]:
    rate = f"{percent(row['rate'])}  ({percent(row['rate_low'])}\u2013{percent(row['rate_high'])})"
    return [
        Cell(str(row["workflow_id"])),
        Cell(f"{row['sends']:,}", numeric=True),
        Cell(f"{row['converted_mails']:,}", "Mails followed by the goal", numeric=True),
        Cell(rate, "Converted mails per mail sent", numeric=True),
        Cell(f"{row['revenue']:,.2f}", numeric=True),
        Cell(f"{row['revenue_per_mail']:,.2f}", numeric=True),
        Cell(duration(row.get("send_to_conversion", {}).get("p50")), numeric=True),
    ]


class ExperimentsPage(PollingPage):
    """The Experiments page (see the module docstring). ``ExperimentsPage(client)``.

    Signals: none of its own.
    """

    refresh_ms = REFRESH_MS

    def __init__(self, client: EngineClient, parent: QWidget | None = None) -> None:
        super().__init__(client, parent)
        self.experiments: list[dict[str, Any]] = []
        self._summary_op: Operation[Any] | None = None
        self._action_op: Operation[Any] | None = None
        self.dialog: ConfirmImpactDialog | None = None

        title = QLabel("Experiments")
        title.setFont(theme.scaled_font(self.font(), 1.5, bold=True))
        self.count = QLabel("")
        self.freshness = Freshness(3 * REFRESH_MS / 1000)
        header = QHBoxLayout()
        header.addWidget(title)
        header.addStretch(1)
        header.addWidget(self.count)
        header.addSpacing(8)
        header.addWidget(self.freshness)

        self.table = RecordTable(
            EXPERIMENT_COLUMNS,
            experiment_cells,
            widths=(
                "",
                "abandoned-cart",
                "a, b, holdout",
                "999,999",
                "winner promoted: variant",
            ),
        )
        self.table.selection_changed.connect(self._on_selection)

        self.arm_title = QLabel("")
        self.arm_title.setFont(theme.scaled_font(self.font(), 1.2, bold=True))
        self.decision = StatusPill("unknown", "")
        self.rule = QLabel("")
        self.rule.setWordWrap(True)
        self.promote_button = QPushButton(
            theme.icon("mdi6.trophy-outline", theme.text_color(self.palette())), "Promote\u2026"
        )
        self.promote_button.clicked.connect(self.ask_promote)
        top = QHBoxLayout()
        top.addWidget(self.arm_title)
        top.addSpacing(8)
        top.addWidget(self.decision)
        top.addStretch(1)
        top.addWidget(self.promote_button)
        self.arms = RecordTable(
            ARM_COLUMNS,
            arm_cells,
            widths=("holdout-xx", "999,999", "999,999", "99,999", "99.9%  (99.9%\u201399.9%)",
                    "+99.9 pt  (+99.9 pt \u2026 +99.9 pt)", "9,999.99"),
        )  # fmt: skip
        self.arms.selection_changed.connect(lambda _ids: self._update_promote())
        value_title = QLabel("Order value after exposure")
        value_title.setFont(theme.scaled_font(self.font(), 1.1, bold=True))
        self.value_window = QComboBox()
        for label, window in VALUE_WINDOWS:
            self.value_window.addItem(f"first {label}", window)
        self.value_window.setCurrentIndex(self.value_window.findData(DEFAULT_VALUE_WINDOW))
        self.value_window.setToolTip("How long after a contact's first exposure orders count")
        self.value_window.currentIndexChanged.connect(lambda _i: self.refresh(force=True))
        value_top = QHBoxLayout()
        value_top.addWidget(value_title)
        value_top.addStretch(1)
        value_top.addWidget(self.value_window)
        self.value_note = QLabel("")
        self.value_note.setWordWrap(True)
        self.values = RecordTable(
            VALUE_COLUMNS,
            value_cells,
            widths=("holdout-xx", "99,999", "99,999", "999.99  (999.99\u2013999.99)",
                    "+99.99  (+99.99 \u2026 +99.99)", "9,999.99"),
        )  # fmt: skip
        detail = QWidget()
        column = QVBoxLayout(detail)
        column.setContentsMargins(0, 0, 0, 0)
        column.addLayout(top)
        column.addWidget(self.rule)
        column.addWidget(self.arms, 1)
        column.addLayout(value_top)
        column.addWidget(self.value_note)
        column.addWidget(self.values, 1)
        self.pick = EmptyState(
            "mdi6.flask-outline",
            "Select an experiment to see its arms",
            detail="Each arm shows its exposures, sends, conversions and rate with its interval,"
            " and its lift over the holdout.",
        )
        self.side = QStackedWidget()
        self.side.addWidget(self.pick)
        self.side.addWidget(detail)

        self.workflows = RecordTable(
            WORKFLOW_COLUMNS,
            workflow_cells,
            widths=("abandoned-cart", "999,999", "999,999", "99.9%  (99.9%\u201399.9%)",
                    "999,999.99", "9,999.99", "99.9 min"),
        )  # fmt: skip
        workflows_title = QLabel("Conversions by workflow")
        workflows_title.setFont(theme.scaled_font(self.font(), 1.2, bold=True))
        self.no_conversions = QLabel(
            "None yet: a conversion is a workflow's [goal] event (e.g. Order Completed) after"
            " one of its mails, within the goal's attribution window."
        )
        self.no_conversions.setWordWrap(True)
        lower = QWidget()
        lower_layout = QVBoxLayout(lower)
        lower_layout.setContentsMargins(0, 0, 0, 0)
        lower_layout.addWidget(workflows_title)
        lower_layout.addWidget(self.no_conversions)
        lower_layout.addWidget(self.workflows, 1)

        upper = QSplitter(Qt.Orientation.Horizontal)
        upper.addWidget(self.table)
        upper.addWidget(self.side)
        upper.setStretchFactor(0, 2)
        upper.setStretchFactor(1, 3)
        upper.setSizes([400, 600])  # 2:3 whatever the detail's wrapped notes ask for
        upper.setChildrenCollapsible(False)
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.addWidget(upper)
        self.splitter.addWidget(lower)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)

        self.empty = EmptyState(
            "mdi6.flask-empty-outline",
            "No experiments yet \u2014 add variants to a send step",
            detail="In a workflow file, give a send step variants (subject, template, sender)"
            " and a holdout, or a wait step variants with durations. Arms are assigned per"
            " contact; results and the decision appear here as contacts come through."
            " See docs/experiments.md.",
        )
        self.states = QStackedWidget()
        self.states.addWidget(self.empty)
        self.states.addWidget(self.splitter)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 0)
        layout.setSpacing(8)
        layout.addLayout(header)
        layout.addWidget(self.states, 1)
        self._on_selection([])

    def on_shown(self) -> None:
        self.freshness.start()

    def on_hidden(self) -> None:
        self.freshness.stop()

    # ---------------------------------------------------------------- data

    def request_list(self) -> Operation[Any]:
        """Ask for the experiments' results, and the conversion summary beside them."""
        self._summary_op = (
            Operation(self, lambda: self.client.request("conversions.summary"), label="Conversions")
            .success(self.set_summary)
            .run()
        )
        return (
            Operation(
                self,
                lambda: self.client.request("experiments.results", self.results_args()),
                label="Experiments",
            )
            .success(lambda result: self.set_results(result.get("experiments", [])))
            .run()
        )

    def results_args(self) -> dict[str, Any]:
        return {"value_window": str(self.value_window.currentData())}

    def set_results(self, experiments: list[dict[str, Any]]) -> None:
        """Show ``experiments.results``' experiments."""
        self.freshness.mark()
        self.experiments = [{**e, "id": e["id"]} for e in experiments]
        n = len(self.experiments)
        self.count.setText(f"{n:,} experiment{'' if n == 1 else 's'}")
        self.states.setCurrentWidget(self.splitter if self.experiments else self.empty)
        self.table.set_rows(self.experiments)
        if self.experiments and not self.table.selected_ids():
            self.table.select_ids([self.experiments[0]["id"]])
        self._on_selection(self.table.selected_ids())

    def set_summary(self, summary: dict[str, Any]) -> None:
        """Show ``conversions.summary``'s per-workflow rows."""
        rows = [{**w, "id": w["workflow_id"]} for w in summary.get("workflows", [])]
        self.workflows.set_rows(rows)
        self.no_conversions.setVisible(not rows)

    def selected_experiment(self) -> dict[str, Any] | None:
        ids = self.table.selected_ids()
        return next((e for e in self.experiments if ids and e["id"] == ids[0]), None)

    def _on_selection(self, _ids: list[str]) -> None:
        exp = self.selected_experiment()
        if exp is None:
            self.side.setCurrentWidget(self.pick)
            self._update_promote()
            return
        self.side.setCurrentIndex(1)
        holdout = float(exp.get("holdout_percent", 0))
        extra = f" \u00b7 holdout {holdout:g}%" if holdout else ""
        auto = " \u00b7 promotes automatically" if exp.get("auto_promote") else ""
        self.arm_title.setText(f"{exp['id']}{extra}{auto}")
        state = str(exp.get("state", ""))
        word = STATE_WORDS.get(state, state)
        self.decision.set_status(STATE_STATUS.get(state, "unknown"), word)
        self.decision.updateGeometry()
        alpha = float(exp.get("alpha", 0.05))
        self.rule.setText(
            f"{exp.get('detail', '')}. Always-valid test at {percent(alpha, 0)} false-positive"
            " level: safe to watch continuously."
        )
        arms = [{**a, "id": a["variant"]} for a in exp.get("variants", [])]
        self.arms.set_rows(arms)
        self.values.set_rows(arms)
        window = window_words(exp.get("value_window_s"))
        self.value_note.setText(
            f"Orders of each exposed contact in the {window} after its first exposure (mailed or"
            " not), from the activity kept. Intervals: 95%, for reading, not for deciding;"
            " means still grow while contacts lack the full window."
        )
        self._update_promote()

    def _update_promote(self) -> None:
        exp = self.selected_experiment()
        arm = self.arms.selected_ids()
        ok = exp is not None and bool(arm) and arm[0] != "holdout"
        self.promote_button.setEnabled(ok)
        self.promote_button.setToolTip(
            "Give the selected arm to every new contact outside the holdout"
            if ok
            else "Select an arm (not the holdout) to promote it"
        )

    # ---------------------------------------------------------------- promote

    def ask_promote(self) -> ConfirmImpactDialog | None:
        """Confirm, then promote the selected arm of the selected experiment."""
        exp = self.selected_experiment()
        arm = self.arms.selected_ids()
        if exp is None or not arm or arm[0] == "holdout":
            return None
        variant = arm[0]
        dialog = ConfirmImpactDialog(
            "Promote an arm",
            f"Promote {variant} in {exp['id']}: every new contact outside the holdout gets it.",
            confirm_text=f"Promote {variant}",
            details=[
                f"Decision so far: {STATE_WORDS.get(str(exp.get('state')), exp.get('state'))}.",
                "Contacts already mailed keep what they got; the holdout still gets nothing.",
                "The promotion is recorded in the audit log under your name.",
            ],
            parent=self,
        )
        dialog.accepted_with.connect(lambda _reason: self._promote(exp["id"], variant))
        dialog.finished.connect(dialog.deleteLater)
        dialog.finished.connect(lambda _code: setattr(self, "dialog", None))
        self.dialog = dialog
        dialog.open()
        return dialog

    def _promote(self, experiment: str, variant: str) -> None:
        def succeeded(_result: Any) -> None:
            show_message(self, f"{variant} promoted in {experiment}.", "healthy")
            self.refresh(force=True)

        args = {"experiment": experiment, "variant": variant}
        self._action_op = (
            Operation(
                self,
                lambda: self.client.request("experiments.promote", args),
                label="Promote",
            )
            .success(succeeded)
            .run()
        )
