"""The segment builder's visual rule tree: groups (all of / any of / not) over conditions, and
an editor for the selected node.

The tree holds the engine's own condition objects (engine/segments/model.py), and every
condition edited in the form is read with the engine's own parser, so the tree, the text form
and what the engine saves can never disagree: ``condition()`` gives the tree as one condition
(``format_condition`` of it is the text form) and ``set_condition`` draws any parsed condition.
A group left empty, or one with a single member, is refused (``SegmentInvalid``) or collapsed as
the text form would be.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import qtawesome as qta
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QCompleter,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QStackedWidget,
    QToolButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine.segments.model import (
    COMPARE_OPS,
    VALUE_OPS,
    AllOf,
    AnyOf,
    Condition,
    Consent,
    EventCount,
    InSegment,
    Not,
    OrderValue,
    SegmentInvalid,
    Subscription,
    TraitAge,
    TraitCompare,
    TraitExists,
)
from engine.segments.text import format_condition, format_duration, format_value, parse_condition
from widgets import theme

NODE_ROLE = Qt.ItemDataRole.UserRole
GROUPS = {"all": "All of (and)", "any": "Any of (or)", "not": "Not"}
KINDS = (
    ("trait", "Trait compares"),
    ("exists", "Trait exists / is missing"),
    ("age", "Date trait before / after"),
    ("events", "Event count in a window"),
    ("subscription", "Marketing subscription"),
    ("consent", "Consent"),
    ("segment", "In another segment"),
    ("value", "Order value (lifetime value, orders)"),
)
# The order measures (engine/segments/model.py VALUE_MEASURES) as the form offers them.
MEASURES = (
    ("clv", "lifetime value (clv)"),
    ("orders", "number of orders (orders)"),
    ("aov", "average order value (aov)"),
)
QUANTIFIERS = ("at least", "at most", "exactly", "none (no)")


def kind_of(condition: Condition) -> str:
    if isinstance(condition, TraitCompare):
        return "trait"
    if isinstance(condition, TraitExists):
        return "exists"
    if isinstance(condition, TraitAge):
        return "age"
    if isinstance(condition, EventCount):
        return "events"
    if isinstance(condition, Subscription):
        return "subscription"
    if isinstance(condition, Consent):
        return "consent"
    if isinstance(condition, InSegment):
        return "segment"
    if isinstance(condition, OrderValue):
        return "value"
    raise TypeError(f"not a segment atom: {condition!r}")


def _line(placeholder: str) -> QLineEdit:
    edit = QLineEdit()
    edit.setPlaceholderText(placeholder)
    return edit


def _combo(items: Iterable[str]) -> QComboBox:
    combo = QComboBox()
    combo.addItems(list(items))
    return combo


class ConditionEditor(QWidget):
    """The form of one condition or group. Reads the form back through the engine's parser.

    Signals:
        condition_edited(object): the form now holds this valid condition (an atom).
        group_edited(str): the selected group's kind changed (all, any, not).
    """

    condition_edited = Signal(object)
    group_edited = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._loading = False
        self.kind = QComboBox()
        for key, label in KINDS:
            self.kind.addItem(label, key)
        self.kind.currentIndexChanged.connect(self._kind_changed)
        self.group = QComboBox()
        for key, label in GROUPS.items():
            self.group.addItem(label, key)
        self.group.currentIndexChanged.connect(self._group_changed)

        # One form per kind; every field edit re-reads the condition.
        self.path = _line("plan, address.country")
        self.op = _combo(COMPARE_OPS)
        self.value = _line('"pro", 42, true, ["DE", "AT"]')
        self.exists_path = _line("email")
        self.exists = _combo(("exists", "is missing"))
        self.age_path = _line("signed_up_at")
        self.relation = _combo(("before", "after"))
        self.age = _line("30 days")
        self.event_name = _line("Order Completed")
        self.where = _line('product_id = "X", price > 10   (optional)')
        self.quantifier = _combo(QUANTIFIERS)
        self.count = QSpinBox()
        self.count.setRange(0, 1_000_000)
        self.count.setValue(1)
        self.window_text = _line("10 minutes, 1 hour, 30 days, 1h30m")
        self.subscribed = _combo(("subscribed to marketing", "unsubscribed from marketing"))
        self.purpose = _line("email_marketing")
        self.segment = QComboBox()
        self.segment.setEditable(True)
        self.measure = QComboBox()
        for key, label in MEASURES:
            self.measure.addItem(label, key)
        self.value_op = _combo(VALUE_OPS)
        self.amount = _line("200, 3, 49.90")

        self.forms = QStackedWidget()
        self._form_of: dict[str, QWidget] = {}
        for key, rows in (
            ("trait", [("Trait", self.path), ("Operator", self.op), ("Value", self.value)]),
            ("exists", [("Trait", self.exists_path), ("", self.exists)]),
            ("age", [("Trait", self.age_path), ("", self.relation), ("Ago", self.age)]),
            (
                "events",
                [
                    ("Event", self.event_name),
                    ("Where", self.where),
                    ("How often", self.quantifier),
                    ("Times", self.count),
                    ("In the last", self.window_text),
                ],
            ),
            ("subscription", [("", self.subscribed)]),
            ("consent", [("Purpose", self.purpose)]),
            ("segment", [("Segment", self.segment)]),
            ("value", [("Measure", self.measure), ("Operator", self.value_op),
                       ("Number", self.amount)]),
        ):  # fmt: skip
            page = QWidget()
            form = QFormLayout(page)
            form.setContentsMargins(0, 0, 0, 0)
            for label, field in rows:
                form.addRow(label, field)
            self.forms.addWidget(page)
            self._form_of[key] = page
        for edit in (self.path, self.value, self.exists_path, self.age_path, self.age,
                     self.event_name, self.where, self.window_text, self.purpose,
                     self.amount):  # fmt: skip
            edit.textEdited.connect(self._edited)
        for combo in (self.op, self.exists, self.relation, self.quantifier, self.subscribed,
                      self.measure, self.value_op):  # fmt: skip
            combo.currentIndexChanged.connect(self._edited)
        self.count.valueChanged.connect(self._edited)
        self.segment.currentTextChanged.connect(self._edited)

        self.problem = QLabel("")
        self.problem.setWordWrap(True)
        colour = theme.status_color(theme.Status.FAILING, self.palette()).name()
        self.problem.setStyleSheet(f"color: {colour}")

        self.leaf = QWidget()
        leaf_layout = QVBoxLayout(self.leaf)
        leaf_layout.setContentsMargins(0, 0, 0, 0)
        leaf_layout.addWidget(self.kind)
        leaf_layout.addWidget(self.forms)
        leaf_layout.addWidget(self.problem)
        self.group_page = QWidget()
        group_layout = QFormLayout(self.group_page)
        group_layout.setContentsMargins(0, 0, 0, 0)
        group_layout.addRow("Group", self.group)
        self.nothing = QLabel("Select a condition or group in the tree to edit it.")
        self.nothing.setWordWrap(True)
        self.pages = QStackedWidget()
        self.pages.addWidget(self.nothing)
        self.pages.addWidget(self.leaf)
        self.pages.addWidget(self.group_page)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.pages)

    # ---------------------------------------------------------------- completion

    def set_completions(self, traits: list[str], events: list[str], segments: list[str]) -> None:
        for edit in (self.path, self.exists_path, self.age_path):
            edit.setCompleter(QCompleter(traits, edit))
        self.event_name.setCompleter(QCompleter(events, self.event_name))
        current = self.segment.currentText()
        self.segment.blockSignals(True)
        self.segment.clear()
        self.segment.addItems(segments)
        self.segment.setEditText(current)
        self.segment.blockSignals(False)

    def set_properties(self, names: list[str]) -> None:
        """Property names seen on the chosen event (completion of the ``where`` field)."""
        completer = QCompleter(names, self.where)
        self.where.setCompleter(completer)

    # ---------------------------------------------------------------- showing a node

    def show_nothing(self) -> None:
        self.pages.setCurrentWidget(self.nothing)

    def show_group(self, kind: str) -> None:
        self._loading = True
        self.group.setCurrentIndex(max(0, self.group.findData(kind)))
        self._loading = False
        self.pages.setCurrentWidget(self.group_page)

    def show_condition(self, condition: Condition) -> None:
        """Fill the form from ``condition`` (an atom)."""
        self._loading = True
        try:
            key = kind_of(condition)
            self.kind.setCurrentIndex(self.kind.findData(key))
            self.forms.setCurrentWidget(self._form_of[key])
            if isinstance(condition, TraitCompare):
                self.path.setText(condition.path)
                self.op.setCurrentText(condition.op)
                self.value.setText(format_value(condition.value))
            elif isinstance(condition, TraitExists):
                self.exists_path.setText(condition.path)
                self.exists.setCurrentIndex(0 if condition.exists else 1)
            elif isinstance(condition, TraitAge):
                self.age_path.setText(condition.path)
                self.relation.setCurrentText(condition.relation)
                self.age.setText(format_duration(condition.seconds))
            elif isinstance(condition, EventCount):
                self.event_name.setText(condition.event)
                self.where.setText(
                    ", ".join(f"{f.path} {f.op} {format_value(f.value)}" for f in condition.where)
                )
                none = condition.quantifier == "exactly" and condition.count == 0
                self.quantifier.setCurrentText("none (no)" if none else condition.quantifier)
                self.count.setValue(condition.count)
                self.window_text.setText(format_duration(condition.within))
            elif isinstance(condition, Subscription):
                self.subscribed.setCurrentIndex(0 if condition.subscribed else 1)
            elif isinstance(condition, Consent):
                self.purpose.setText(condition.purpose)
            elif isinstance(condition, InSegment):
                self.segment.setEditText(condition.segment_id)
            elif isinstance(condition, OrderValue):
                self.measure.setCurrentIndex(self.measure.findData(condition.measure))
                self.value_op.setCurrentText(condition.op)
                self.amount.setText(format_value(condition.value))
            self.problem.setText("")
            self._sync_count()
        finally:
            self._loading = False
        self.pages.setCurrentWidget(self.leaf)

    # ---------------------------------------------------------------- reading the form

    def text(self) -> str:
        """The form as the text form of one condition."""
        key = self.kind.currentData()
        if key == "trait":
            return f"trait {self.path.text().strip()} {self.op.currentText()} {self.value.text()}"
        if key == "exists":
            return f"trait {self.exists_path.text().strip()} {self.exists.currentText()}"
        if key == "age":
            relation = self.relation.currentText()
            return f"trait {self.age_path.text().strip()} {relation} {self.age.text()} ago"
        if key == "events":
            where = f" where {self.where.text()}" if self.where.text().strip() else ""
            event = f"`{self.event_name.text().strip()}`{where}"
            window = f"in the last {self.window_text.text()}"
            quantifier = self.quantifier.currentText()
            if quantifier == "none (no)":
                return f"no {event} {window}"
            return f"{event} {quantifier} {self.count.value()} times {window}"
        if key == "subscription":
            return self.subscribed.currentText()
        if key == "consent":
            return f"consented to {self.purpose.text().strip()}"
        if key == "value":
            measure = self.measure.currentData()
            return f"{measure} {self.value_op.currentText()} {self.amount.text().strip()}"
        return f"in segment {self.segment.currentText().strip()}"

    def read(self) -> Condition:
        """The condition the form holds; ``SegmentInvalid`` naming the problem."""
        condition = parse_condition(self.text())
        if isinstance(condition, AllOf | AnyOf | Not):
            raise SegmentInvalid("one condition per row: add a group for more")
        return condition

    def _sync_count(self) -> None:
        self.count.setEnabled(self.quantifier.currentText() != "none (no)")

    def _kind_changed(self) -> None:
        self.forms.setCurrentWidget(self._form_of[str(self.kind.currentData())])
        self._edited()

    def _group_changed(self) -> None:
        if not self._loading:
            self.group_edited.emit(str(self.group.currentData()))

    def _edited(self) -> None:
        self._sync_count()
        if self._loading:
            return
        try:
            condition = self.read()
        except SegmentInvalid as exc:
            self.problem.setText(str(exc).split(": ", 1)[-1] if "col" in str(exc) else str(exc))
            return
        self.problem.setText("")
        self.condition_edited.emit(condition)


class RuleTree(QWidget):
    """The rule tree with its toolbar and editor (see the module docstring).

    Signals:
        changed(): the user changed the tree (not emitted by ``set_condition``).
    """

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.tree = QTreeWidget()
        self.tree.setHeaderHidden(True)
        self.tree.setExpandsOnDoubleClick(False)
        self.tree.currentItemChanged.connect(self._selected)
        self.editor = ConditionEditor()
        self.editor.condition_edited.connect(self._condition_edited)
        self.editor.group_edited.connect(self._group_edited)
        self.problem = QLabel("")
        self.problem.setWordWrap(True)
        colour = theme.status_color(theme.Status.FAILING, self.palette()).name()
        self.problem.setStyleSheet(f"color: {colour}")

        bar = QHBoxLayout()
        bar.setSpacing(4)
        self.buttons: dict[str, QToolButton] = {}
        for key, icon, text, tip in (
            ("condition", "mdi6.plus", "Condition", "Add a condition to the selected group"),
            ("and", "mdi6.set-all", "And group", "Add an 'all of' group"),
            ("or", "mdi6.set-center", "Or group", "Add an 'any of' group"),
            ("not", "mdi6.not-equal-variant", "Not", "Wrap the selection in 'not'"),
            ("delete", "mdi6.delete-outline", "", "Delete the selection"),
            ("up", "mdi6.arrow-up", "", "Move up"),
            ("down", "mdi6.arrow-down", "", "Move down"),
        ):
            button = QToolButton()
            button.setIcon(qta.icon(icon, color=theme.text_color(self.palette())))
            if text:
                button.setText(text)
                button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
            button.setToolTip(tip)
            button.clicked.connect(lambda _c=False, k=key: self.act(k))
            self.buttons[key] = button
            bar.addWidget(button)
        bar.addStretch(1)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(bar)
        layout.addWidget(self.tree, 3)
        layout.addWidget(self.problem)
        layout.addWidget(self.editor, 0)

    # ---------------------------------------------------------------- tree <-> condition

    def set_condition(self, condition: Condition | None) -> None:
        """Draw ``condition`` (None: empty). The top is always a group, as people think."""
        self.tree.clear()
        if condition is None:
            root = self._group_item("all")
        elif isinstance(condition, AllOf | AnyOf | Not):
            root = self._item(condition)
        else:
            root = self._group_item("all")
            root.addChild(self._item(condition))
        self.tree.addTopLevelItem(root)
        self.tree.expandAll()
        self.tree.setCurrentItem(root)
        self.problem.setText("")

    def condition(self) -> Condition:
        """The tree as one condition; ``SegmentInvalid`` names an empty group."""
        root = self.tree.topLevelItem(0)
        if root is None:
            raise SegmentInvalid("the rule tree is empty: add a condition")
        return self._read(root)

    def _read(self, item: QTreeWidgetItem) -> Condition:
        data = item.data(0, NODE_ROLE)
        if isinstance(data, Condition):
            return data
        parts = [self._read(item.child(i)) for i in range(item.childCount())]
        label = GROUPS[str(data)].lower()
        if not parts:
            raise SegmentInvalid(f"the group '{label}' is empty: add a condition to it")
        if data == "not":
            if len(parts) != 1:
                raise SegmentInvalid("a 'not' holds exactly one condition or group")
            return Not(parts[0])
        if len(parts) == 1:
            return parts[0]
        return AllOf(tuple(parts)) if data == "all" else AnyOf(tuple(parts))

    def _group_item(self, kind: str) -> QTreeWidgetItem:
        item = QTreeWidgetItem([GROUPS[kind]])
        item.setData(0, NODE_ROLE, kind)
        item.setIcon(0, qta.icon("mdi6.folder-outline", color=theme.text_color(self.palette())))
        font = item.font(0)
        font.setBold(True)
        item.setFont(0, font)
        return item

    def _atom_item(self, condition: Condition) -> QTreeWidgetItem:
        item = QTreeWidgetItem([format_condition(condition)])
        item.setData(0, NODE_ROLE, condition)
        item.setToolTip(0, format_condition(condition))
        return item

    def _item(self, condition: Condition) -> QTreeWidgetItem:
        if isinstance(condition, AllOf | AnyOf):
            item = self._group_item("all" if isinstance(condition, AllOf) else "any")
            for part in condition.parts:
                item.addChild(self._item(part))
            return item
        if isinstance(condition, Not):
            item = self._group_item("not")
            item.addChild(self._item(condition.inner))
            return item
        return self._atom_item(condition)

    # ---------------------------------------------------------------- editing

    def _selected(self, current: QTreeWidgetItem | None, _previous: Any = None) -> None:
        if current is None:
            self.editor.show_nothing()
            return
        data = current.data(0, NODE_ROLE)
        if isinstance(data, Condition):
            self.editor.show_condition(data)
        else:
            self.editor.show_group(str(data))
        is_root = current.parent() is None
        self.buttons["delete"].setEnabled(not is_root)
        self.buttons["up"].setEnabled(not is_root)
        self.buttons["down"].setEnabled(not is_root)

    def _condition_edited(self, condition: Condition) -> None:
        item = self.tree.currentItem()
        if item is None or not isinstance(item.data(0, NODE_ROLE), Condition):
            return
        item.setData(0, NODE_ROLE, condition)
        item.setText(0, format_condition(condition))
        item.setToolTip(0, format_condition(condition))
        self._changed()

    def _group_edited(self, kind: str) -> None:
        item = self.tree.currentItem()
        if item is None or isinstance(item.data(0, NODE_ROLE), Condition):
            return
        item.setData(0, NODE_ROLE, kind)
        item.setText(0, GROUPS[kind])
        self._changed()

    def _target_group(self) -> QTreeWidgetItem:
        item = self.tree.currentItem() or self.tree.topLevelItem(0)
        if item is None:
            item = self._group_item("all")
            self.tree.addTopLevelItem(item)
        if isinstance(item.data(0, NODE_ROLE), Condition):
            item = item.parent() or item
        return item

    def act(self, action: str) -> None:
        """A toolbar action: condition, and, or, not, delete, up, down."""
        current = self.tree.currentItem()
        if action in ("condition", "and", "or"):
            group = self._target_group()
            if action == "condition":
                new = self._atom_item(parse_condition('trait plan = "pro"'))
            else:
                new = self._group_item("all" if action == "and" else "any")
                new.addChild(self._atom_item(parse_condition('trait plan = "pro"')))
            group.addChild(new)
            group.setExpanded(True)
            new.setExpanded(True)
            self.tree.setCurrentItem(new.child(0) if new.childCount() else new)
        elif action == "not" and current is not None:
            wrapper = self._group_item("not")
            parent = current.parent()
            if parent is None:
                index = self.tree.indexOfTopLevelItem(current)
                self.tree.takeTopLevelItem(index)
                wrapper.addChild(current)
                self.tree.insertTopLevelItem(index, wrapper)
            else:
                index = parent.indexOfChild(current)
                parent.takeChild(index)
                wrapper.addChild(current)
                parent.insertChild(index, wrapper)
            self.tree.expandAll()
            self.tree.setCurrentItem(wrapper)
        elif action == "delete" and current is not None and current.parent() is not None:
            parent = current.parent()
            parent.takeChild(parent.indexOfChild(current))
            self.tree.setCurrentItem(parent)
        elif action in ("up", "down") and current is not None and current.parent() is not None:
            parent = current.parent()
            index = parent.indexOfChild(current)
            target = index - 1 if action == "up" else index + 1
            if not 0 <= target < parent.childCount():
                return
            parent.takeChild(index)
            parent.insertChild(target, current)
            current.setExpanded(True)
            self.tree.setCurrentItem(current)
        else:
            return
        self._changed()

    def _changed(self) -> None:
        try:
            self.condition()
        except SegmentInvalid as exc:
            self.problem.setText(str(exc))
        else:
            self.problem.setText("")
        self.changed.emit()
