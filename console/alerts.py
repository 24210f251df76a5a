"""Engine alerts in the console: the banner's words and the desktop notification.

The engine evaluates the rules (``engine/alerts.py``); the console only shows them. Active alerts
come with every metrics snapshot (``client.active_alerts()``), fired/resolved events as they
happen (``client.alert_event``). A fired alert becomes a desktop notification through the system
tray when there is one, else an in-window :class:`~widgets.toast.Toast`.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QApplication, QSystemTrayIcon, QWidget

from console.client import EngineClient
from widgets.theme import Status
from widgets.toast import Toast

log = logging.getLogger(__name__)

SEVERITY_ORDER = {Status.FAILING: 0, Status.DEGRADED: 1, Status.PAUSED: 2}
NOTIFY_MS = 10_000

# Where the banner's button takes the operator, per rule.
ACTIONS: dict[str, tuple[str, str]] = {
    "relay_down": ("Open Queues", "queues"),
    "route_paused": ("Open Queues", "queues"),
    "queue_age": ("Open Queues", "queues"),
    "error_rate": ("Open Queues", "queues"),
    "latency_p99": ("Alert rules", "settings"),
}


def severity(alert: dict[str, Any]) -> Status:
    """The alert's status word (failing, degraded, paused)."""
    return Status.parse(str(alert.get("severity") or "failing"))


def most_urgent(alerts: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The alert the banner shows: the most severe, then the oldest."""
    if not alerts:
        return None
    return min(
        alerts,
        key=lambda a: (SEVERITY_ORDER.get(severity(a), 3), float(a.get("since") or 0.0)),
    )


def ago(seconds: float) -> str:
    """ "40 s", "12 min", "3 h"."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{round(seconds)} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def describe_alert(
    alert: dict[str, Any], *, now: float | None = None, node: bool = False, age: bool = True
) -> str:
    """One line: the rule and its value, since when (local time and age), and where."""
    now = time.time() if now is None else now
    since = float(alert.get("since") or now)
    when = datetime.fromtimestamp(since).strftime("%H:%M:%S")
    message = str(alert.get("message") or alert.get("title") or alert.get("rule") or "alert")
    where = f" on {alert.get('node')}" if node and alert.get("node") else ""
    how_long = f" ({ago(now - since)})" if age else ""
    return f"{message}{where} \u2014 since {when}{how_long}"


def banner_words(alerts: list[dict[str, Any]], *, now: float | None = None) -> tuple[str, str]:
    """(text, tooltip) for the banner from every active alert."""
    top = most_urgent(alerts)
    if top is None:
        return "", ""
    nodes = {a.get("node") for a in alerts}
    text = describe_alert(top, now=now, node=len(nodes) > 1)
    others = len(alerts) - 1
    if others:
        text += f"  (+{others} more active alert{'s' if others != 1 else ''})"
    tooltip = "\n".join(describe_alert(a, now=now, node=True) for a in alerts)
    return text, tooltip


class AlertNotifier(QObject):
    """Turns fired alerts into desktop notifications (tray) or toasts (no tray).

    Signals:
        notified(str, str): a notification was shown; how ("tray" or "toast") and its text.
    """

    notified = Signal(str, str)

    def __init__(self, client: EngineClient, window: QWidget) -> None:
        super().__init__(window)
        self._window = window
        self._tray: QSystemTrayIcon | None = None
        self.toast = Toast(window)
        client.alert_event.connect(self._on_alert_event)

    def _on_alert_event(self, event: str, alert: dict[str, Any]) -> None:
        if event == "fired":
            self.notify(alert)

    def notify(self, alert: dict[str, Any]) -> str:
        """Show ``alert`` as a notification; returns how ("tray" or "toast")."""
        where = f" on {alert['node']}" if alert.get("node") else ""
        title = f"Alert fired{where}"
        text = describe_alert(alert, age=False)
        tray = self._tray_icon()
        if tray is not None:
            icon = (
                QSystemTrayIcon.MessageIcon.Critical
                if severity(alert) is Status.FAILING
                else QSystemTrayIcon.MessageIcon.Warning
            )
            tray.showMessage(f"Campaign Console \u2014 {title}", text, icon, NOTIFY_MS)
            how = "tray"
        else:
            self.toast.show_toast(title, text, severity(alert), NOTIFY_MS)
            how = "toast"
        self.notified.emit(how, text)
        return how

    def _tray_icon(self) -> QSystemTrayIcon | None:
        # Offscreen and many minimal desktops have no tray: asking Qt to show one there only
        # produces warnings, so the toast stands in.
        if not QSystemTrayIcon.isSystemTrayAvailable() or not QSystemTrayIcon.supportsMessages():
            return None
        if self._tray is None:
            app = QApplication.instance()
            icon = app.windowIcon() if isinstance(app, QApplication) else self._window.windowIcon()
            self._tray = QSystemTrayIcon(icon, self)
            self._tray.setToolTip("Campaign Console")
            self._tray.show()
        return self._tray

    def hide(self) -> None:
        """Remove the tray icon (shutdown)."""
        if self._tray is not None:
            self._tray.hide()
        self.toast.dismiss()
