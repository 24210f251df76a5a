"""The side form of the Workflows page: the properties of the selected box.

A step shows the fields its type takes (docs/workflows.md's table): a send's template and
route, a wait's duration, a wait-until's event and timeout, a branch's condition (as JSON, the
shape the TOML inline table has), an exit's reason, and where each outcome goes. The trigger
box shows its event names. Every finished edit emits the changed step (or trigger) as a new
dict; the page puts it in the draft, redraws and validates. Nothing here talks to the engine.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import orjson
from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QVBoxLayout,
    QWidget,
)

from console.pages.workflow_graph import STEP_KINDS, TARGET_KEYS
from widgets import theme
from widgets.theme import Status

FOLLOWING = "\u2193 the next step"
EXIT = "exit"


class StepForm(QWidget):
    """Edits one step or the trigger.

    Signals:
        step_changed(dict): the edited step (the whole step table).
        trigger_changed(dict): the edited ``[trigger]`` table.
    """

    step_changed = Signal(dict)
    trigger_changed = Signal(dict)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = QLabel("<b>Properties</b>")
        self.hint = QLabel("Select a box in the graph to see and edit its properties.")
        self.hint.setWordWrap(True)
        self.problem = QLabel("")
        self.problem.setWordWrap(True)
        colour = theme.status_color(Status.FAILING, self.palette())
        self.problem.setStyleSheet(f"color: {colour.name()}")
        self.body = QWidget()
        self.form = QFormLayout(self.body)
        self.form.setContentsMargins(0, 0, 0, 0)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addWidget(self.hint)
        layout.addWidget(self.body)
        layout.addWidget(self.problem)
        layout.addStretch(1)
        self.fields: dict[str, QWidget] = {}
        self.step: dict[str, Any] | None = None
        self.trigger: dict[str, Any] | None = None

    # ---------------------------------------------------------------- filling

    def clear(self) -> None:
        while self.form.rowCount():
            self.form.removeRow(0)
        self.fields = {}
        self.step = None
        self.trigger = None
        self.problem.setText("")
        self.hint.setVisible(True)

    def set_trigger(self, trigger: dict[str, Any], problems: Sequence[str] = ()) -> None:
        self.clear()
        self.trigger = copy.deepcopy(trigger)
        self.hint.setVisible(False)
        self.title.setText("<b>Trigger</b>")
        if "event" in trigger:
            events = trigger["event"]
            shown = ", ".join(events) if isinstance(events, list) else str(events)
            self._line("event", shown, "Event names, comma-separated", self._trigger_edited)
        else:
            kind = "segment_entered" if "segment_entered" in trigger else "catalog"
            self._row("Starts", QLabel(f"{kind} = {trigger.get(kind)!s}"))
            self._row("Edit this trigger in the text view.")
        if trigger.get("where"):
            where = QLabel(orjson.dumps(trigger["where"]).decode())
            where.setWordWrap(True)
            self._row("Where", where)
        self.problem.setText("\n".join(problems))

    def set_step(
        self,
        step: dict[str, Any],
        step_ids: Sequence[str],
        templates: Sequence[str],
        problems: Sequence[str] = (),
    ) -> None:
        self.clear()
        self.step = copy.deepcopy(step)
        self.hint.setVisible(False)
        kind = str(step.get("type"))
        self.title.setText(f"<b>{STEP_KINDS.get(kind, kind)}</b> \u00b7 {step['id']}")
        if kind == "send":
            box = QComboBox()
            box.setEditable(True)
            box.addItems(sorted(templates))
            box.setCurrentText(str(step.get("template", "")))
            box.activated.connect(lambda _i: self._edited("template"))
            line = box.lineEdit()
            if line is not None:
                line.editingFinished.connect(lambda: self._edited("template"))
            self._add("template", "Template", box)
            self._line("route", step.get("route", ""), "the template's route", self._edited)
        elif kind == "wait":
            self._line("duration", step.get("duration", ""), "e.g. 30m, 2d", self._edited)
        elif kind == "wait_until":
            self._line("event", step.get("event", ""), "e.g. Order Completed", self._edited)
            self._line("timeout", step.get("timeout", ""), "e.g. 1d", self._edited)
        elif kind == "branch":
            condition = step.get("condition")
            text = orjson.dumps(condition).decode() if condition is not None else ""
            self._line(
                "condition", text, '{"trait": "plan", "op": "eq", "value": "pro"}', self._edited
            )
        elif kind == "exit":
            self._line("reason", step.get("reason", ""), "exit step", self._edited)
        others = [s for s in step_ids if s != step["id"]]
        for key, label in TARGET_KEYS.get(kind, ()):
            box = QComboBox()
            box.addItem(FOLLOWING, None)
            box.addItem("exit (end the enrollment)", EXIT)
            for sid in others:
                box.addItem(sid, sid)
            current = step.get(key)
            if current is not None:
                index = box.findData(current)
                if index < 0:  # a target that does not exist: shown so it can be fixed
                    box.addItem(f"{current} (missing)", current)
                    index = box.count() - 1
                box.setCurrentIndex(index)
            box.activated.connect(lambda _i, k=key: self._edited(k))
            self._add(key, f"{label or 'next'} \u2192", box)
        self.problem.setText("\n".join(problems))

    def _add(self, key: str, label: str, widget: QWidget) -> None:
        widget.setObjectName(f"field-{key}")
        self.fields[key] = widget
        self._row(label, widget)

    def _row(self, label: str, widget: QWidget | None = None) -> None:
        # Shown at once: a layout shows new children only on the next turn of the event loop.
        shown = [QLabel(label), widget] if widget is not None else [QLabel(label)]
        if widget is None:
            shown[0].setWordWrap(True)
            self.form.addRow(shown[0])
        else:
            self.form.addRow(shown[0], widget)
        for w in shown:
            assert w is not None
            w.show()

    def _line(self, key: str, value: Any, placeholder: str, on_edit: Any) -> None:
        edit = QLineEdit(str(value))
        edit.setPlaceholderText(placeholder)
        edit.setCursorPosition(0)  # long values (a condition) read from their start
        edit.editingFinished.connect(lambda: on_edit(key))
        self._add(key, key.replace("_", " ").capitalize(), edit)

    # ---------------------------------------------------------------- reading back

    def _value(self, key: str) -> Any:
        widget = self.fields[key]
        if isinstance(widget, QComboBox):
            if widget.isEditable():
                return widget.currentText().strip()
            return widget.currentData()
        assert isinstance(widget, QLineEdit)
        return widget.text().strip()

    def _edited(self, key: str) -> None:
        if self.step is None or key not in self.fields:
            return
        value = self._value(key)
        step = dict(self.step)
        if key == "condition":
            try:
                value = orjson.loads(value) if value else None
            except orjson.JSONDecodeError as exc:
                self.problem.setText(f"The condition is not valid JSON: {exc}")
                return
        if value in (None, ""):
            step.pop(key, None)
        else:
            step[key] = value
        if step != self.step:
            self.step = step
            self.step_changed.emit(copy.deepcopy(step))

    def _trigger_edited(self, key: str) -> None:
        if self.trigger is None:
            return
        names = [n.strip() for n in self._value(key).split(",") if n.strip()]
        trigger = dict(self.trigger)
        trigger["event"] = names[0] if len(names) == 1 else names
        if trigger != self.trigger:
            self.trigger = trigger
            self.trigger_changed.emit(copy.deepcopy(trigger))
