"""The Queues page's questions before a preview: where to reroute, which rate to set.

Each dialog only gathers the arguments of one control verb (``queues.reroute``,
``routes.set_rate``); the page then asks the engine for a preview and shows the impact in a
``ConfirmImpactDialog`` before anything changes. Open them with ``open()`` (never ``exec()``
inside a qasync slot) and listen to ``chosen``.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from widgets import theme

MAX_RATE = 1_000_000


class RerouteDialog(QDialog):
    """Pick the target route and the slice (all of the route, one workflow or one domain).

    Signals:
        chosen(dict): the ``queues.reroute`` arguments (without ``preview``/``reason``).
    """

    chosen = Signal(dict)

    def __init__(
        self,
        from_route: str,
        routes: list[str],
        *,
        workflow: str | None = None,
        domain: str | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Reroute queued intents")
        self.setModal(True)
        self.from_route = from_route
        self._workflow = workflow
        self._domain = domain
        title = QLabel(f"Move pending intents off route {from_route}")
        title.setFont(theme.scaled_font(self.font(), 1.2, bold=True))
        self.target = QComboBox()
        for name in routes:
            if name != from_route:
                self.target.addItem(name)
        self.target.setToolTip("The route the intents go to (the routes this engine knows)")
        self.slices = QButtonGroup(self)
        self.all_button = QRadioButton(f"Every pending intent of route {from_route}")
        self.workflow_button = QRadioButton(f"Only workflow {workflow}")
        self.domain_button = QRadioButton(f"Only recipients at {domain}")
        for button in (self.all_button, self.workflow_button, self.domain_button):
            self.slices.addButton(button)
        self.workflow_button.setVisible(workflow is not None)
        self.domain_button.setVisible(domain is not None)
        (self.domain_button if domain else self.all_button).setChecked(True)
        note = QLabel(
            "In-flight intents finish on their route. Moved intents keep their Message-ID,"
            " attempts and due time. The next step shows how many will move."
        )
        note.setWordWrap(True)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        ok.setText("Preview\u2026")
        ok.setEnabled(self.target.count() > 0)
        if not self.target.count():
            ok.setToolTip("There is no other route to move them to")
        self.buttons.accepted.connect(self._choose)
        self.buttons.rejected.connect(self.reject)
        form = QFormLayout()
        form.addRow("To route:", self.target)
        layout = QVBoxLayout(self)
        layout.addWidget(title)
        layout.addLayout(form)
        layout.addWidget(QLabel("Which intents:"))
        for button in (self.all_button, self.workflow_button, self.domain_button):
            layout.addWidget(button)
        layout.addWidget(note)
        layout.addWidget(self.buttons)
        self.setMinimumWidth(self.fontMetrics().averageCharWidth() * 60)
        layout.activate()

    def arguments(self) -> dict[str, Any]:
        """The ``queues.reroute`` arguments chosen so far."""
        args: dict[str, Any] = {
            "from_route": self.from_route,
            "to_route": self.target.currentText(),
        }
        if self.workflow_button.isChecked() and self._workflow:
            args["workflow"] = self._workflow
        if self.domain_button.isChecked() and self._domain:
            args["domain"] = self._domain
        return args

    def _choose(self) -> None:
        if self.target.currentText():
            self.chosen.emit(self.arguments())
            self.accept()

    def exec(self) -> int:
        """Refused: open it with ``open()`` (a nested loop in a qasync slot deadlocks)."""
        raise RuntimeError("RerouteDialog must be opened with open(), not exec()")


class RateDialog(QDialog):
    """Set a route's rate (per second, minute, hour), or one recipient domain's rate and
    concurrency. 0 means no limit. Prefilled with the limits ``routes.list`` reported.

    Signals:
        chosen(dict): the ``routes.set_rate`` arguments (without ``preview``).
    """

    chosen = Signal(dict)

    def __init__(
        self,
        route: str,
        limits: dict[str, Any] | None,
        *,
        domain: str | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Change the rate limit")
        self.setModal(True)
        self.route = route
        self._limits = limits or {}
        title = QLabel(f"Rate limit of route {route}")
        title.setFont(theme.scaled_font(self.font(), 1.2, bold=True))
        self.scopes = QButtonGroup(self)
        self.route_button = QRadioButton("The whole route")
        self.domain_button = QRadioButton("One recipient domain:")
        self.scopes.addButton(self.route_button)
        self.scopes.addButton(self.domain_button)
        self.domain = QLineEdit(domain or "")
        self.domain.setPlaceholderText("e.g. gmail.com")
        self.per_second = QDoubleSpinBox()
        self.per_second.setDecimals(2)
        self.per_second.setRange(0, MAX_RATE)
        self.per_second.setSuffix(" /s")
        self.per_minute = QSpinBox()
        self.per_minute.setRange(0, MAX_RATE)
        self.per_minute.setSuffix(" /min")
        self.per_hour = QSpinBox()
        self.per_hour.setRange(0, MAX_RATE)
        self.per_hour.setSuffix(" /h")
        self.concurrency = QSpinBox()
        self.concurrency.setRange(0, 10_000)
        self.concurrency.setSuffix(" at once")
        for box in (self.per_second, self.per_minute, self.per_hour, self.concurrency):
            box.setSpecialValueText("no limit")
        (self.domain_button if domain else self.route_button).setChecked(True)
        self.route_button.toggled.connect(self._prefill)
        self.domain.textChanged.connect(self._prefill)
        form = QFormLayout()
        form.addRow(self.route_button)
        form.addRow(self.domain_button, self.domain)
        form.addRow("Per second:", self.per_second)
        form.addRow("Per minute:", self.per_minute)
        form.addRow("Per hour:", self.per_hour)
        form.addRow("Concurrent sends (domain):", self.concurrency)
        note = QLabel("0 means no limit. The change applies at once; the next step shows it.")
        note.setWordWrap(True)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Preview\u2026")
        self.buttons.accepted.connect(self._choose)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(title)
        layout.addLayout(form)
        layout.addWidget(note)
        layout.addWidget(self.buttons)
        self.setMinimumWidth(self.fontMetrics().averageCharWidth() * 56)
        self._prefill()
        layout.activate()

    def _domain_name(self) -> str:
        return self.domain.text().strip().lower() if self.domain_button.isChecked() else ""

    def _prefill(self) -> None:
        domain = self._domain_name()
        self.domain.setEnabled(self.domain_button.isChecked())
        self.concurrency.setEnabled(bool(domain))
        if domain:
            rule = (self._limits.get("domains") or {}).get(domain) or {}
            rate = rule.get("rate") or self._limits.get("domain_rate") or {}
            concurrency = rule.get("concurrency")
            if concurrency is None:
                concurrency = self._limits.get("domain_concurrency") or 0
            self.concurrency.setValue(int(concurrency))
        else:
            rate = self._limits.get("rate") or {}
        self.per_second.setValue(float(rate.get("per_second") or 0))
        self.per_minute.setValue(int(rate.get("per_minute") or 0))
        self.per_hour.setValue(int(rate.get("per_hour") or 0))

    def arguments(self) -> dict[str, Any]:
        """The ``routes.set_rate`` arguments chosen so far."""
        args: dict[str, Any] = {
            "route": self.route,
            "per_second": self.per_second.value(),
            "per_minute": self.per_minute.value(),
            "per_hour": self.per_hour.value(),
        }
        domain = self._domain_name()
        if domain:
            args["domain"] = domain
            args["concurrency"] = self.concurrency.value()
        return args

    def _choose(self) -> None:
        if self.domain_button.isChecked() and not self._domain_name():
            self.domain.setFocus()
            return
        self.chosen.emit(self.arguments())
        self.accept()

    def exec(self) -> int:
        """Refused: open it with ``open()`` (a nested loop in a qasync slot deadlocks)."""
        raise RuntimeError("RateDialog must be opened with open(), not exec()")
