"""The Settings page. For now one section: the engines' alert rules, changed live.

Each rule (``alerts.rules``) is one row: on/off, the threshold it fires above (seconds, or a
percentage for the error rate; the on/off gauges have none), how long it must hold before firing
and how long the value must stay back below the resolve line before the alert resolves. "Apply"
sends ``alerts.set_rule`` for each changed rule to every engine node reporting (audited with the
operator's name); the rows then show what the engines answered.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from console.client import CONNECTED, EngineClient
from console.errors import describe
from console.operations import Operation, show_message
from widgets import theme
from widgets.empty_state import EmptyState

log = logging.getLogger(__name__)

MAX_SECONDS = 86_400.0
CHANGED = "Changed, not applied yet"


@dataclass
class RuleRow:
    """The editors of one rule."""

    rule: dict[str, Any]
    enabled: QCheckBox
    threshold: QDoubleSpinBox | None
    for_seconds: QDoubleSpinBox
    clear_seconds: QDoubleSpinBox

    def values(self) -> dict[str, Any]:
        """What the row says now, in the engine's units."""
        out: dict[str, Any] = {
            "enabled": self.enabled.isChecked(),
            "for_seconds": self.for_seconds.value(),
            "clear_seconds": self.clear_seconds.value(),
        }
        if self.threshold is not None:
            value = self.threshold.value()
            out["threshold"] = value / 100.0 if self.rule["unit"] == "ratio" else value
        return out

    def changes(self) -> dict[str, Any]:
        """The fields that differ from what the engine said."""
        return {k: v for k, v in self.values().items() if not _same(v, self.rule.get(k))}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    try:
        return abs(float(a) - float(b)) < 1e-9
    except (TypeError, ValueError):
        return False


def intro_text(hysteresis: float) -> str:
    return (
        "The engines check these rules about once a second, whether or not a console is"
        " open. An alert fires once its value stays above the threshold for the hold time,"
        f" and resolves once the value stays at least {hysteresis:.0%} below the threshold"
        " for the resolve time. Firing and resolving are recorded in the Audit page; so are"
        " changes made here, with your name."
    )


def _seconds_box(tooltip: str) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setRange(0.0, MAX_SECONDS)
    box.setDecimals(0)
    box.setSuffix(" s")
    box.setToolTip(tooltip)
    box.setAlignment(Qt.AlignmentFlag.AlignRight)
    return box


class SettingsPage(QWidget):
    """The Settings page (see the module docstring). Built with ``SettingsPage(client)``.

    Signals: none of its own.
    """

    def __init__(self, client: EngineClient, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.client = client
        self.rows: dict[str, RuleRow] = {}
        self._load_op: Operation[Any] | None = None
        self._apply_op: Operation[Any] | None = None
        self._applied = ""

        title = QLabel("Settings")
        title.setFont(theme.scaled_font(self.font(), 1.5, bold=True))
        header = QHBoxLayout()
        header.addWidget(title)
        header.addStretch(1)

        section = QLabel("Alert rules")
        section.setFont(theme.scaled_font(self.font(), 1.2, bold=True))
        self.intro = intro = QLabel(intro_text(0.2))
        intro.setWordWrap(True)
        self.grid = QGridLayout()
        self.grid.setHorizontalSpacing(16)
        self.grid.setVerticalSpacing(8)
        self.apply_button = QPushButton("Apply changes")
        self.apply_button.setStyleSheet(theme.primary_button_qss(self.palette()))
        self.apply_button.setEnabled(False)
        self.apply_button.clicked.connect(self.apply)
        self.revert_button = QPushButton("Revert")
        self.revert_button.setEnabled(False)
        self.revert_button.clicked.connect(self.load)
        self.status = QLabel("")
        buttons = QHBoxLayout()
        buttons.addWidget(self.status, 1)
        buttons.addWidget(self.revert_button)
        buttons.addWidget(self.apply_button)

        form = QWidget()
        column = QVBoxLayout(form)
        column.setContentsMargins(4, 4, 4, 4)
        column.setSpacing(10)
        column.addWidget(section)
        column.addWidget(intro)
        column.addLayout(self.grid)
        column.addLayout(buttons)
        column.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setWidget(form)
        form.setMaximumWidth(self.fontMetrics().averageCharWidth() * 130)

        self.waiting = EmptyState(
            "mdi6.lan-pending",
            "Waiting for an engine\u2026",
            detail="Alert rules live in the engines; they appear once the console is connected.",
        )
        self.states = QStackedWidget()
        self.states.addWidget(self.waiting)
        self.states.addWidget(scroll)
        self._form = scroll

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 0)
        layout.setSpacing(8)
        layout.addLayout(header)
        layout.addWidget(self.states, 1)
        client.connection_changed.connect(self._on_connection_changed)

    # ---------------------------------------------------------------- page hooks

    def page_shown(self) -> None:
        if not self.rows:
            self.load()

    def page_hidden(self) -> None:
        pass

    def _on_connection_changed(self, state: str) -> None:
        if state == CONNECTED and not self.rows:
            self.load()

    # ---------------------------------------------------------------- data

    def load(self) -> Operation[Any] | None:
        """Ask an engine for its rules (any node: they start from the same settings)."""
        if self.client.state != CONNECTED:
            return None
        if self._load_op is not None and not self._load_op.done():
            return self._load_op
        self._load_op = (
            Operation(self, lambda: self.client.request("alerts.rules"), label="Alert rules")
            .success(self.set_rules)
            .failure(self._load_failed)
            .run()
        )
        return self._load_op

    def _load_failed(self, exc: BaseException) -> None:
        self.waiting.set_sentence(f"The alert rules could not be read: {describe(exc)}")

    def set_rules(self, result: Any) -> None:
        """Show ``alerts.rules``'s answer as editable rows."""
        rules = result.get("rules") if isinstance(result, dict) else None
        if not isinstance(rules, list):
            return
        while self.grid.count():
            item = self.grid.takeAt(0)
            widget = item.widget() if item is not None else None
            if widget is not None:
                widget.deleteLater()
        self.rows.clear()
        for column, heading in enumerate(
            ("Rule", "On", "Fires above", "Held for", "Resolves after")
        ):
            label = QLabel(f"<b>{heading}</b>")
            self.grid.addWidget(label, 0, column)
        for index, rule in enumerate(rules, start=1):
            self._add_row(index, rule)
        self.grid.setColumnStretch(0, 1)
        for rule in rules:
            threshold, resolve_at = rule.get("threshold"), rule.get("resolve_at")
            if not rule.get("threshold_fixed") and threshold and resolve_at is not None:
                self.intro.setText(intro_text(1.0 - float(resolve_at) / float(threshold)))
                break
        self.states.setCurrentWidget(self._form)
        self._update_buttons()
        if self._applied:
            self.status.setText(self._applied)  # what the engines now hold
            self._applied = ""

    def _add_row(self, index: int, rule: dict[str, Any]) -> None:
        name = str(rule["rule"])
        label = QLabel(str(rule.get("title") or name))
        label.setToolTip(f"Rule {name}; severity {rule.get('severity')}")
        enabled = QCheckBox()
        enabled.setChecked(bool(rule.get("enabled")))
        enabled.setToolTip(f"Check {name}")
        enabled.setAccessibleName(f"{name} on")
        threshold: QDoubleSpinBox | None = None
        if rule.get("threshold_fixed"):
            holder: QWidget = QLabel("when the gauge reads 1")
        else:
            threshold = QDoubleSpinBox()
            threshold.setAlignment(Qt.AlignmentFlag.AlignRight)
            threshold.setAccessibleName(f"{name} threshold")
            if rule.get("unit") == "ratio":
                threshold.setRange(0.1, 100.0)
                threshold.setDecimals(1)
                threshold.setSuffix(" %")
                threshold.setValue(float(rule["threshold"]) * 100.0)
            else:
                threshold.setRange(0.001, MAX_SECONDS)
                threshold.setDecimals(3)
                threshold.setSuffix(" s")
                threshold.setValue(float(rule["threshold"]))
            holder = threshold
        for_seconds = _seconds_box("How long the value must stay above before the alert fires")
        for_seconds.setValue(float(rule.get("for_seconds") or 0.0))
        for_seconds.setAccessibleName(f"{name} held for")
        clear_seconds = _seconds_box("How long the value must stay low before it resolves")
        clear_seconds.setValue(float(rule.get("clear_seconds") or 0.0))
        clear_seconds.setAccessibleName(f"{name} resolves after")
        row = RuleRow(rule, enabled, threshold, for_seconds, clear_seconds)
        self.rows[name] = row
        for column, widget in enumerate((label, enabled, holder, for_seconds, clear_seconds)):
            self.grid.addWidget(widget, index, column)
        enabled.toggled.connect(self._update_buttons)
        for box in (threshold, for_seconds, clear_seconds):
            if box is not None:
                box.valueChanged.connect(self._update_buttons)

    def changes(self) -> dict[str, dict[str, Any]]:
        """Per rule, the fields the operator changed."""
        return {name: c for name, row in self.rows.items() if (c := row.changes())}

    def _update_buttons(self, *_args: object) -> None:
        busy = self._apply_op is not None and not self._apply_op.done()
        dirty = bool(self.changes())
        self.apply_button.setEnabled(dirty and not busy)
        self.revert_button.setEnabled(dirty and not busy)
        if dirty:
            self.status.setText(CHANGED)
        elif self.status.text() == CHANGED:
            self.status.setText("")

    def apply(self) -> Operation[Any] | None:
        """Send every changed rule to every engine node reporting."""
        changes = self.changes()
        if not changes:
            return None
        nodes = self.client.fresh_nodes()

        async def send() -> list[str]:
            problems: list[str] = []
            for name, fields in changes.items():
                args = {"rule": name, **fields}
                if nodes:
                    answers = await self.client.request_each("alerts.set_rule", args, nodes=nodes)
                    problems += [
                        f"{node}: {describe(a)}"
                        for node, a in answers.items()
                        if isinstance(a, BaseException)
                    ]
                else:
                    await self.client.request("alerts.set_rule", args)
            return problems

        def done(problems: list[str]) -> None:
            if problems:
                show_message(self, "Some alert rules were not applied: " + "; ".join(problems))
            else:
                names = ", ".join(changes)
                self._applied = f"Applied: {names}"
                show_message(self, f"Alert rules applied: {names}.", "healthy")
            self.load()

        self._apply_op = Operation(self, send, label="Apply alert rules").success(done).run()
        self._apply_op.signals.finished.connect(self._update_buttons)
        self._update_buttons()
        return self._apply_op
