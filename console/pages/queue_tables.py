"""The Queues page's tables: queues, their top domains, routes and controls, in words.

Rows are the engine's replies (``queues.list``, ``routes.list``) turned into plain fields; the
models are :class:`~widgets.sparkline_table.SparklineTableModel` with a status column drawn as
icon + word (never colour alone) and its who/why/since in the tooltip.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QSize, Qt
from PySide6.QtWidgets import QApplication, QHeaderView, QStyleOptionViewItem, QWidget

from widgets import theme
from widgets.format import format_count, format_duration, format_rate
from widgets.sparkline_table import (
    Column,
    PaddedDelegate,
    SparklineTableModel,
    SparklineTableView,
)
from widgets.theme import Status

STATE_ROLE = Qt.ItemDataRole.UserRole + 10
"""The status (a ``widgets.theme.Status``) of a row, on its status cell."""

QUEUE_STATES: dict[str, Status] = {
    "active": Status.HEALTHY,
    "paused": Status.PAUSED,
    "draining": Status.DRAINING,
    "drained": Status.DRAINING,
    "auto-paused": Status.PAUSED,
    "down": Status.FAILING,
}


def _age(seconds: Any) -> str:
    return "\u2014" if seconds is None else format_duration(float(seconds))


QUEUE_COLUMNS: tuple[Column, ...] = (
    Column("workflow", "Workflow", numeric=False),
    Column("route", "Route", numeric=False),
    Column("state", "State", numeric=False, tooltip="active, paused, draining or drained"),
    Column("depth", "Depth", format_count, tooltip="Pending intents (queued and deferred)"),
    Column("due", "Due", format_count, tooltip="Pending intents due now"),
    Column("deferred", "Deferred", format_count, tooltip="Waiting to retry after a 4xx"),
    Column("in_flight", "In flight", format_count, tooltip="Claimed or being sent"),
    Column("held", "Held", format_count, tooltip="Pending intents a pause or drain holds back"),
    Column("rate", "Rate", format_rate, tooltip="Sent per second over the last minute"),
    Column("oldest_age", "Oldest", _age, tooltip="Age of the oldest pending intent"),
    Column("why", "Why", numeric=False, tooltip="The control that sets the state"),
)

DOMAIN_COLUMNS: tuple[Column, ...] = (
    Column("domain", "Recipient domain", numeric=False),
    Column("state", "State", numeric=False),
    Column("depth", "Depth", format_count),
    Column("deferred", "Deferred", format_count),
)

ROUTE_COLUMNS: tuple[Column, ...] = (
    Column("name", "Route", numeric=False),
    Column("state", "State", numeric=False, tooltip="active, paused, auto-paused, down, draining"),
    Column("address", "Relay", numeric=False),
    Column("tls", "TLS", numeric=False),
    Column("limits", "Limits", numeric=False, tooltip="Route rate; per-domain defaults and rules"),
    Column("busy", "Sending", format_count, tooltip="Transactions in progress on this node"),
    Column("queued", "Waiting", format_count, tooltip="Jobs waiting for a connection"),
    Column("errors", "Errors", numeric=False, tooltip="Errors / attempts in the pause window"),
)

CONTROL_COLUMNS: tuple[Column, ...] = (
    Column("scope", "Scope", numeric=False),
    Column("state", "State", numeric=False),
    Column("actor", "By", numeric=False),
    Column("since_text", "Since", numeric=False),
    Column("remaining", "To finish", format_count, tooltip="What a drain still sends"),
    Column("reason", "Reason", numeric=False),
)


def local_time(ts: float) -> str:
    """``14:03:12`` today, else ``2026-11-27 14:03``, in local time."""
    when = datetime.fromtimestamp(ts)
    if when.date() == datetime.now().date():
        return when.strftime("%H:%M:%S")
    return when.strftime("%Y-%m-%d %H:%M")


def ago(seconds: float) -> str:
    """``12 s ago``, ``3 min 10 s ago``: whole seconds, an operator does not need more."""
    return f"{format_duration(float(max(0, round(seconds))))} ago"


def scope_words(kind: str, value: str) -> str:
    """``route relay-a``, ``all queues``."""
    return "all queues" if kind == "all" else f"{kind} {value}"


def control_words(control: Mapping[str, Any] | None, now: float, *, short: bool = False) -> str:
    """``route relay-a paused by ana 3 min ago: relay-a returns 421``; ``short`` drops the
    value (``route paused by ...``) where the row already names it."""
    if not control:
        return ""
    since = float(control.get("since") or now)
    kind = str(control.get("kind"))
    scope = kind if short and kind != "all" else scope_words(kind, str(control.get("value")))
    text = f"{scope} {control.get('state')} by {control.get('actor') or 'unknown'}"
    if not short:  # the table's row shows the time in its tooltip and the controls tab
        text += f" {ago(now - since)}"
    reason = str(control.get("reason") or "")
    return f"{text}: {reason}" if reason else text


def queue_key(workflow: str, route: str) -> str:
    return f"{workflow} \u2192 {route}"


def queue_rows(listing: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``queues.list`` queues as table rows (``key``, ``why``, ``state_tip`` added)."""
    now = float(listing.get("now") or 0.0)
    rows = []
    for q in listing.get("queues") or []:
        why = control_words(q.get("control"), now, short=True)
        control = q.get("control") or {}
        tip = str(q.get("state"))
        if control:
            since = local_time(float(control.get("since") or now))
            tip = f"{tip} since {since}: {control_words(control, now)}"
        rows.append(
            {
                **q,
                "key": queue_key(str(q["workflow"]), str(q["route"])),
                "why": why,
                "state_tip": tip,
            }
        )
    return rows


def domain_rows(queue: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [dict(d) for d in queue.get("domains") or []]


def control_rows(listing: Mapping[str, Any]) -> list[dict[str, Any]]:
    now = float(listing.get("now") or 0.0)
    rows = []
    for c in listing.get("controls") or []:
        since = float(c.get("since") or now)
        rows.append(
            {
                **c,
                "key": f"{c['kind']}:{c['value']}",
                "scope": scope_words(str(c["kind"]), str(c["value"])),
                "since_text": f"{local_time(since)} ({ago(now - since)})",
                "remaining": c.get("remaining"),
                "state_tip": control_words(c, now),
            }
        )
    return rows


def rate_words(rate: Mapping[str, Any] | None) -> str:
    """``10/s · 600/min`` (only the limits set), or ``no limit``."""
    rate = rate or {}
    parts = []
    if rate.get("per_second"):
        parts.append(f"{float(rate['per_second']):g}/s")
    if rate.get("per_minute"):
        parts.append(f"{int(rate['per_minute']):,}/min")
    if rate.get("per_hour"):
        parts.append(f"{int(rate['per_hour']):,}/h")
    return " \u00b7 ".join(parts) or "no limit"


def limits_words(limits: Mapping[str, Any] | None) -> str:
    """The route rate, then per-domain defaults and the number of domain rules."""
    if not limits:
        return "\u2014"
    text = rate_words(limits.get("rate"))
    domain = []
    if limits.get("domain_concurrency"):
        domain.append(f"{int(limits['domain_concurrency'])} at once")
    domain_rate = rate_words(limits.get("domain_rate"))
    if domain_rate != "no limit":
        domain.append(domain_rate)
    if domain:
        text += f"; per domain {' '.join(domain)}"
    rules = limits.get("domains") or {}
    if rules:
        text += f"; {len(rules)} domain rule{'s' if len(rules) != 1 else ''}"
    return text


def route_rows(
    routes: Sequence[Mapping[str, Any]], controls: Sequence[Mapping[str, Any]], now: float
) -> list[dict[str, Any]]:
    """``routes.list`` routes as rows; a route's state also shows its queue control."""
    by_route = {str(c["value"]): c for c in controls if c.get("kind") == "route"}
    rows = []
    for r in routes:
        name = str(r["name"])
        control = by_route.get(name)
        tip = ""
        if r.get("down"):
            state, tip = "down", str(r.get("down_reason") or "the relay does not answer")
        elif r.get("auto_paused"):
            state, tip = "auto-paused", str(r.get("paused_reason") or "")
        elif r.get("paused"):
            state, tip = "paused", str(r.get("paused_reason") or "")
        elif control is not None:
            state, tip = str(control.get("state")), control_words(control, now)
        else:
            state = "active"
        errors, attempts = r.get("errors"), r.get("attempts")
        rows.append(
            {
                **r,
                "name": name,
                "state": state,
                "state_tip": tip or state,
                "address": r.get("address") or "\u2014",
                "tls": r.get("tls") or ("\u2014" if "address" not in r else "none"),
                "limits": limits_words(r.get("limits")),
                "errors": f"{errors:,} / {attempts:,}"
                if isinstance(errors, int) and isinstance(attempts, int)
                else "\u2014",
            }
        )
    return rows


class StatusTableModel(SparklineTableModel):
    """A ``SparklineTableModel`` whose ``state`` column shows the status icon beside the word,
    with the row's ``state_tip`` (who, why, since) as its tooltip.

    Signals: the standard QAbstractItemModel ones.
    """

    def __init__(
        self,
        columns: Sequence[Column],
        *,
        key_field: str,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(columns, key_field=key_field, parent=parent)
        self._state_column = next((i for i, c in enumerate(columns) if c.field == "state"), -1)

    def data(
        self,
        index: QModelIndex | QPersistentModelIndex,
        role: int = Qt.ItemDataRole.DisplayRole,
    ) -> Any:
        if index.isValid() and index.column() == self._state_column:
            row = self._rows[self._keys[index.row()]]
            word = str(row.get("state") or "unknown")
            status = QUEUE_STATES.get(word, Status.UNKNOWN)
            if role == Qt.ItemDataRole.DecorationRole:
                return theme.status_icon(status, QApplication.palette())
            if role == Qt.ItemDataRole.ToolTipRole:
                return str(row.get("state_tip") or word)
            if role == STATE_ROLE:
                return status
        elif index.isValid() and role == Qt.ItemDataRole.ToolTipRole:
            text = super().data(index, Qt.ItemDataRole.DisplayRole)
            return text or None
        return super().data(index, role)

    def rows(self) -> list[dict[str, Any]]:
        """Copies of the rows in model order."""
        return [dict(self._rows[k]) for k in self._keys]


class WrappingDelegate(PaddedDelegate):
    """Cells whose text wraps: as tall as their lines plus the single-line row's margins.

    Signals: none of its own.
    """

    def __init__(self, view: SparklineTableView) -> None:
        super().__init__(view)
        self._view = view

    def sizeHint(
        self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex
    ) -> QSize:
        hint = super().sizeHint(option, index)
        margins = self._view.verticalHeader().defaultSectionSize()
        margins -= option.fontMetrics.lineSpacing()
        return QSize(hint.width(), hint.height() + max(0, margins))


WRAP_LINES = 3
"""Lines a wrapped cell may take before it is cut (the whole text is in its tooltip)."""


def make_table(
    columns: Sequence[Column],
    key_field: str,
    stretch: str,
    sort: tuple[str, bool] | None = None,
    *,
    wrap: bool = False,
) -> tuple[StatusTableModel, SparklineTableView]:
    """A sortable status table; the ``stretch`` column takes the spare width.

    ``wrap``: long text in the stretch column (a control's who and why) wraps onto up to
    ``WRAP_LINES`` lines and the row grows to fit, instead of being cut to "workflow paused
    by…"; rows with short text keep the usual height.
    """
    model = StatusTableModel(columns, key_field=key_field)
    view = SparklineTableView(model)
    header = view.horizontalHeader()
    fields = [c.field for c in columns]
    for i in range(len(columns)):
        header.setSectionResizeMode(i, QHeaderView.ResizeMode.ResizeToContents)
    header.setSectionResizeMode(fields.index(stretch), QHeaderView.ResizeMode.Stretch)
    if wrap:
        view.setWordWrap(True)
        view.setTextElideMode(Qt.TextElideMode.ElideRight)
        view.setItemDelegateForColumn(fields.index(stretch), WrappingDelegate(view))
        rows = view.verticalHeader()
        line = view.fontMetrics().lineSpacing()
        rows.setMinimumSectionSize(rows.defaultSectionSize())
        rows.setMaximumSectionSize(rows.defaultSectionSize() + (WRAP_LINES - 1) * line)
        rows.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    if sort is not None:
        field, descending = sort
        view.sortByColumn(
            fields.index(field),
            Qt.SortOrder.DescendingOrder if descending else Qt.SortOrder.AscendingOrder,
        )
    return model, view
