"""The page registry: what the navigation rail shows and how each page is built.

Adding a page is one line in :func:`register_builtin_pages` below::

    register_page("inbox", "Inbox", "mdi6.inbox-arrow-down", "console.pages.inbox:InboxPage")

``factory`` is a callable ``factory(client) -> QWidget`` or a ``"module:attribute"`` string
(imported when the page is first opened, so a page's imports cost nothing until then). The
factory receives the :class:`~console.client.EngineClient`; ``client.model`` holds the live
metrics. A page is created the first time it is shown and lives as long as the window.

Slots declared in ``NAV`` keep their place, label, icon and shortcut (Ctrl+1..9, Ctrl+0);
until a factory is registered for one, the window shows an honest empty state saying what will
be there. Keys not in ``NAV`` are added before Settings.

Optional page hooks the window uses when present:
- ``page_shown()`` / ``page_hidden()``: the page became (in)visible (start/stop timers).
- ``show_item(item: str)``: open one thing (the Workflows page gets the workflow name when
  the Live page's workflow table is double-clicked).
- ``workflow_activated(str)`` signal: the window routes it to the Workflows page.
- ``node_activated(str)`` signal: the window shows the Live page for that node (``"all"``:
  every node), through the Live page's ``show_node``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from PySide6.QtWidgets import QWidget

if TYPE_CHECKING:
    from console.client import EngineClient

PageFactory: TypeAlias = "Callable[[EngineClient], QWidget] | str"


@dataclass(frozen=True)
class NavSlot:
    """A place in the rail, declared before its page exists."""

    key: str
    label: str
    icon: str
    shortcut: str
    coming: str  # what the page will show ("It will show …"), until it is built


NAV: tuple[NavSlot, ...] = (
    NavSlot(
        "live",
        "Live",
        "mdi6.pulse",
        "Ctrl+1",
        "throughput, latency, error and delivery rates as they happen.",
    ),
    NavSlot(
        "queues",
        "Queues",
        "mdi6.tray-full",
        "Ctrl+2",
        "every workflow \u00d7 route queue with its state, depth, rate, in-flight and oldest"
        " age; pause, drain and reroute with the impact shown first.",
    ),
    NavSlot(
        "workflows",
        "Workflows",
        "mdi6.sitemap-outline",
        "Ctrl+3",
        "each workflow as a graph, trigger at the top, with live counts on every step.",
    ),
    NavSlot(
        "segments",
        "Segments",
        "mdi6.account-group-outline",
        "Ctrl+4",
        "segment rules as a tree and as text, with the live member count and sample members.",
    ),
    NavSlot(
        "templates",
        "Templates",
        "mdi6.email-edit-outline",
        "Ctrl+5",
        "the template editor beside a live preview for any contact, with lint findings.",
    ),
    NavSlot(
        "contacts",
        "Contacts",
        "mdi6.card-account-details-outline",
        "Ctrl+6",
        "contact search, each profile with its event timeline, and why each email was sent.",
    ),
    NavSlot(
        "inbox",
        "Inbox",
        "mdi6.inbox-arrow-down-outline",
        "Ctrl+7",
        "the emails the local capture inbox received, rendered, with headers and source.",
    ),
    NavSlot(
        "audit",
        "Audit",
        "mdi6.clipboard-text-clock-outline",
        "Ctrl+8",
        "who did what and when: every change made through the console or the control API.",
    ),
    NavSlot(
        "dead_letters",
        "Dead letters",
        "mdi6.email-remove-outline",
        "Ctrl+0",
        "events that could not be processed, with the reason, to retry or discard.",
    ),
    NavSlot(
        "settings",
        "Settings",
        "mdi6.cog-outline",
        "Ctrl+9",
        "connections, relays, sending limits and the console's own preferences.",
    ),
)


@dataclass(frozen=True)
class PageSpec:
    """A page in the rail: where it goes and how it is made (``factory`` None: not built yet)."""

    key: str
    label: str
    icon: str
    shortcut: str | None
    factory: PageFactory | None
    coming: str = ""

    def build(self, client: EngineClient) -> QWidget:
        """Create the page widget."""
        if self.factory is None:
            raise LookupError(f"no page registered for {self.key!r}")
        factory = self.factory
        if isinstance(factory, str):
            module_name, _, attribute = factory.partition(":")
            factory = getattr(importlib.import_module(module_name), attribute)
        assert callable(factory)
        widget = factory(client)
        if not isinstance(widget, QWidget):
            raise TypeError(f"page factory for {self.key!r} returned {type(widget).__name__}")
        return widget


_registered: dict[str, PageSpec] = {}


def register_page(key: str, label: str, icon: str, factory: PageFactory) -> None:
    """Register (or replace) the page ``key``: rail ``label``, qtawesome ``icon``, ``factory``.

    ``factory(client) -> QWidget``, or ``"module:attribute"`` naming one. Keys of ``NAV`` keep
    their rail position and shortcut.
    """
    slot = next((s for s in NAV if s.key == key), None)
    _registered[key] = PageSpec(
        key=key,
        label=label,
        icon=icon,
        shortcut=slot.shortcut if slot else None,
        factory=factory,
        coming=slot.coming if slot else "",
    )


def register_builtin_pages() -> None:
    """The console's pages. One line per page."""
    register_page("live", "Live", "mdi6.pulse", "console.pages.live:LivePage")
    register_page("queues", "Queues", "mdi6.tray-full", "console.pages.queues:QueuesPage")
    register_page(
        "workflows",
        "Workflows",
        "mdi6.sitemap-outline",
        "console.pages.workflows:WorkflowsPage",
    )
    register_page(
        "templates",
        "Templates",
        "mdi6.email-edit-outline",
        "console.pages.templates:TemplatesPage",
    )
    register_page(
        "segments",
        "Segments",
        "mdi6.account-group-outline",
        "console.pages.segments:SegmentsPage",
    )
    register_page(
        "contacts",
        "Contacts",
        "mdi6.card-account-details-outline",
        "console.pages.contacts:ContactsPage",
    )
    register_page(
        "inbox", "Inbox", "mdi6.inbox-arrow-down-outline", "console.pages.inbox:InboxPage"
    )
    register_page(
        "audit", "Audit", "mdi6.clipboard-text-clock-outline", "console.pages.audit:AuditPage"
    )
    register_page(
        "dead_letters",
        "Dead letters",
        "mdi6.email-remove-outline",
        "console.pages.dead_letters:DeadLettersPage",
    )
    register_page(
        "experiments",
        "Experiments",
        "mdi6.flask-outline",
        "console.pages.experiments:ExperimentsPage",
    )
    register_page("nodes", "Nodes", "mdi6.server-network", "console.pages.nodes:NodesPage")
    register_page("settings", "Settings", "mdi6.cog-outline", "console.pages.settings:SettingsPage")


def pages() -> list[PageSpec]:
    """Every page in rail order: the NAV slots (built or not), then other registered pages
    before Settings."""
    out: list[PageSpec] = []
    for slot in NAV:
        spec = _registered.get(slot.key)
        out.append(
            spec or PageSpec(slot.key, slot.label, slot.icon, slot.shortcut, None, slot.coming)
        )
    extra = [spec for key, spec in _registered.items() if all(s.key != key for s in NAV)]
    settings_at = next(i for i, s in enumerate(out) if s.key == "settings")
    return out[:settings_at] + extra + out[settings_at:]
