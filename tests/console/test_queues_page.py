"""The Queues page against a real engine (two extra routes) over its real nats-server.

Intents are written into the engine's store not yet due (``next_attempt_at`` an hour ahead), so
they stay queued until a test moves them; each test uses its own workflow names.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from PySide6.QtCore import QRect, Qt
from PySide6.QtWidgets import QDialogButtonBox, QStyle
from pytestqt.qtbot import QtBot

from console import pages
from console.client import EngineClient
from console.main_window import MainWindow
from console.pages.queue_dialogs import RateDialog, RerouteDialog
from console.pages.queue_tables import QUEUE_COLUMNS, limits_words, route_rows
from console.pages.queues import QueuesPage, impact_details
from console.stack import StackConnection
from engine.store import Store, open_store, schema
from tests.console.conftest import (
    close_console,
    open_console,
    run,
    running_engine,
    save_screenshot,
    wait_until,
)
from widgets.confirm import ConfirmImpactDialog
from widgets.sparkline_table import CELL_PADDING

ACTOR = "admin"  # the local stack's generated user: the console signs in as it
ROUTES_TOML = """
[routes.relay-b]
url = "smtp://127.0.0.1:9"
tls = "none"

[routes.relay-c]
url = "smtp://127.0.0.1:9"
tls = "none"
"""
_seq = itertools.count(1)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("queues-engine")


@pytest.fixture(scope="module")
def engine(data_dir: Path) -> Iterator[StackConnection]:
    """The module's engine, with routes relay-b and relay-c besides the default one."""
    config = data_dir / "routes.toml"
    config.write_text(ROUTES_TOML)
    with running_engine(data_dir, "--config", str(config)) as connection:
        yield connection


@pytest.fixture(scope="module")
def store(engine: StackConnection, data_dir: Path) -> Iterator[Store]:
    """The engine's own SQLite store, to put intents in and read outcomes."""
    opened = open_store(f"sqlite:///{data_dir / 'engine.sqlite3'}", migrate=False)
    with opened.begin() as conn:
        conn.execute(
            schema.contacts.insert(),
            {
                "id": "c1",
                "email": "ada@example.com",
                "traits": {},
                "consent": {},
                "first_seen_at": 0.0,
                "last_seen_at": 0.0,
                "updated_at": 0.0,
            },
        )
    try:
        yield opened
    finally:
        opened.dispose()


@pytest.fixture
def console(qloop: asyncio.AbstractEventLoop, engine: StackConnection) -> Iterator[MainWindow]:
    """The console as the local stack's ``admin``, connected to the module's engine."""
    pages.register_builtin_pages()
    window = run(qloop, open_console(EngineClient(actor=ACTOR), engine))
    try:
        yield window
    finally:
        run(qloop, close_console(window))


def add_intents(
    store: Store,
    workflow: str,
    route: str,
    n: int,
    *,
    domain: str = "example.com",
    status: str = "queued",
) -> list[str]:
    """``n`` pending intents of ``workflow`` on ``route``, due in an hour."""
    now = time.time()
    ids = []
    with store.begin() as conn:
        for _ in range(n):
            k = next(_seq)
            intent_id = f"{int(now * 1000):012x}{k:020x}"
            ids.append(intent_id)
            conn.execute(
                schema.intents.insert(),
                {
                    "id": intent_id,
                    "dedup_key": f"dedup-{intent_id}",
                    "workflow_id": workflow,
                    "workflow_version": 1,
                    "step_id": "s1",
                    "contact_id": "c1",
                    "event_id": f"evt-{k}",
                    "template_id": "welcome-1",
                    "route": route,
                    "category": "transactional",
                    "to_addr": f"user{k}@{domain}",
                    "domain": domain,
                    "context": {"event": {"name": "Signed Up", "properties": {}}},
                    "status": status,
                    "attempts": 1 if status == "deferred" else 0,
                    "next_attempt_at": now + 3600,
                    "received_at": now - 1,
                    "decided_at": now - 1,
                },
            )
    return ids


def intents(store: Store, ids: list[str]) -> list[dict[str, Any]]:
    with store.begin() as conn:
        rows = conn.execute(sa.select(schema.intents).where(schema.intents.c.id.in_(ids)))
        return [dict(r._mapping) for r in rows]


def queues_page(window: MainWindow) -> QueuesPage:
    page = window.show_page("queues")
    assert isinstance(page, QueuesPage)
    return page


def queue_of(listing: dict[str, Any], workflow: str) -> dict[str, Any] | None:
    return next((q for q in listing["queues"] if q["workflow"] == workflow), None)


def page_queue(page: QueuesPage, workflow: str) -> dict[str, Any] | None:
    return next((r for r in page.queue_model.rows() if r["workflow"] == workflow), None)


async def confirm_dialog(page: QueuesPage) -> ConfirmImpactDialog:
    """The impact dialog the preview opened."""
    await wait_until(lambda: page.dialog is not None and page.dialog.isVisible(), timeout=10)
    assert page.dialog is not None and page.dialog.isModal()
    return page.dialog


async def confirm(page: QueuesPage, dialog: ConfirmImpactDialog, reason: str = "") -> None:
    if reason:
        dialog.reason_field().setText(reason)
    before = page.action_op
    dialog.confirm_button().click()
    await wait_until(lambda: page.action_op is not before and page.action_op is not None, timeout=5)
    await page.wait_idle()


async def audit_rows(client: EngineClient, action: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = await client.request_one("audit.list", {"search": action})
    return [r for r in rows if r["action"] == action]


def test_queues_are_listed_live_and_pause_resume_round_trip(
    qloop: asyncio.AbstractEventLoop, console: MainWindow, store: Store
) -> None:
    page = queues_page(console)
    add_intents(store, "welcome", "default", 3)
    add_intents(store, "welcome", "default", 1, domain="gmail.com")
    add_intents(store, "cart", "relay-b", 2, status="deferred")

    async def scenario() -> None:
        await wait_until(lambda: page_queue(page, "welcome") is not None, timeout=10)
        welcome = page_queue(page, "welcome")
        assert welcome is not None
        assert (welcome["route"], welcome["depth"], welcome["state"]) == ("default", 4, "active")
        cart = page_queue(page, "cart")
        assert cart is not None and (cart["deferred"], cart["due"]) == (2, 0)
        # Values in words and units, state as icon + word.
        row = page.queue_model.row_for_key("cart \u2192 relay-b")
        assert row is not None
        index = page.queue_model.index(row, 9)  # Oldest
        assert index.data().endswith(" s")
        assert page.queue_model.index(row, 8).data() == "0/s"
        assert page.queue_model.index(row, 2).data() == "active"
        assert page.queue_model.index(row, 2).data(1) is not None  # DecorationRole: icon
        assert {"default", "relay-b", "relay-c"} <= set(page.route_names)
        assert "relay-b" in {r["name"] for r in page.route_model.rows()}

        page.select_queue("welcome", "default")
        assert page.selected_route() == "default"  # the route table follows
        assert page.detail_title.text() == "welcome on route default"
        assert [r["domain"] for r in page.domain_model.rows()] == ["example.com", "gmail.com"]
        assert page.pause_button.isEnabled() and page.cancel_button.isEnabled()

        page.ask_pause("workflow", "welcome")
        dialog = await confirm_dialog(page)
        assert dialog.impact() == "Pause workflow welcome: 4 queued intents held"
        assert "welcome on default: 4" in dialog._details.text()
        listing = await page.client.request_one("queues.list")
        assert queue_of(listing, "welcome")["state"] == "active"  # type: ignore[index]
        await confirm(page, dialog, "template typo")
        assert page.result_line.text() == "Paused workflow welcome: 4 queued intents held"
        assert console.messages.text() == page.result_line.text()

        listing = await page.client.request_one("queues.list")
        paused = queue_of(listing, "welcome")
        assert paused is not None and paused["state"] == "paused"
        assert (paused["control"]["actor"], paused["control"]["reason"]) == (
            ACTOR,
            "template typo",
        )
        await wait_until(
            lambda: (page_queue(page, "welcome") or {}).get("state") == "paused", timeout=5
        )
        assert f"workflow paused by {ACTOR}" in page_queue(page, "welcome")["why"]  # type: ignore[index]
        assert "workflow:welcome" in {r["key"] for r in page.control_model.rows()}
        [entry, *_] = await audit_rows(page.client, "queues.pause")
        assert (entry["actor"], entry["target"], entry["count"]) == (ACTOR, "workflow=welcome", 4)

        page.ask_resume("workflow", "welcome")
        dialog = await confirm_dialog(page)
        assert dialog.impact() == "Resume workflow welcome: 4 queued intents released"
        await confirm(page, dialog)
        await wait_until(
            lambda: (page_queue(page, "welcome") or {}).get("state") == "active", timeout=5
        )
        listing = await page.client.request_one("queues.list")
        assert queue_of(listing, "welcome")["state"] == "active"  # type: ignore[index]

    run(qloop, scenario(), timeout=60)


def test_reroute_confirms_the_previewed_count(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop, console: MainWindow, store: Store
) -> None:
    page = queues_page(console)
    ids = add_intents(store, "promo", "default", 5)

    async def scenario() -> None:
        await wait_until(lambda: page_queue(page, "promo") is not None, timeout=10)
        page.select_queue("promo", "default")
        dialog = page.ask_reroute()
        assert isinstance(dialog, RerouteDialog) and dialog.isVisible()
        targets = [dialog.target.itemText(i) for i in range(dialog.target.count())]
        assert targets == ["relay-b", "relay-c"]  # known routes, not the one they are on
        dialog.target.setCurrentText("relay-b")
        dialog.workflow_button.setChecked(True)
        dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).click()
        impact = await confirm_dialog(page)
        assert (
            impact.impact() == "Reroute 5 queued intents from default to relay-b (workflow promo)"
        )
        assert all(r["route"] == "default" for r in intents(store, ids))  # asks first
        save_screenshot(impact, "queues-reroute-dialog")
        await confirm(page, impact, "default relay is slow")
        assert page.result_line.text().startswith("Rerouted 5 queued intents from default")
        assert all(r["route"] == "relay-b" for r in intents(store, ids))
        await wait_until(
            lambda: (page_queue(page, "promo") or {}).get("route") == "relay-b", timeout=5
        )
        [entry, *_] = await audit_rows(page.client, "queues.reroute")
        assert (entry["actor"], entry["count"]) == (ACTOR, 5)

    run(qloop, scenario(), timeout=60)


def test_an_error_is_shown_in_words_and_changes_nothing(
    qloop: asyncio.AbstractEventLoop, console: MainWindow, store: Store
) -> None:
    page = queues_page(console)
    ids = add_intents(store, "oops", "relay-c", 2)

    async def scenario() -> None:
        await wait_until(lambda: page_queue(page, "oops") is not None, timeout=10)
        page.ask(
            "queues.reroute",
            {"from_route": "relay-c", "to_route": "relay-c"},
            title="Reroute",
            confirm_text="Reroute",
        )
        await page.wait_idle()
        assert page.dialog is None  # no confirmation for a refused preview
        text = page.result_line.text()
        assert text.startswith("Reroute: 'queues.reroute' was refused")
        assert text.endswith("the intents are already on route relay-c")
        assert console.messages.text() == text
        assert all(r["route"] == "relay-c" for r in intents(store, ids))

    run(qloop, scenario(), timeout=60)


def test_retry_now_and_cancel_with_a_reason(
    qloop: asyncio.AbstractEventLoop, console: MainWindow, store: Store
) -> None:
    page = queues_page(console)
    deferred = add_intents(store, "winback", "default", 2, status="deferred")
    doomed = add_intents(store, "sunset", "default", 3)

    async def scenario() -> None:
        await wait_until(lambda: page_queue(page, "winback") is not None, timeout=10)
        page.select_queue("winback", "default")
        page.ask_retry_now()
        dialog = await confirm_dialog(page)
        assert dialog.impact() == ("Retry 2 deferred intents now (workflow winback, route default)")
        await confirm(page, dialog)
        # Due now, so the engine sends them through the default route (the capture inbox).
        await wait_until(
            lambda: {r["status"] for r in intents(store, deferred)} == {"sent"}, timeout=20
        )

        await wait_until(lambda: page_queue(page, "sunset") is not None, timeout=10)
        page.select_queue("sunset", "default")
        page.ask_cancel()
        dialog = await confirm_dialog(page)
        assert dialog.impact() == "Cancel 3 pending intents (workflow sunset, route default)"
        assert not dialog.confirm_button().isEnabled()  # a reason is required
        await confirm(page, dialog, "campaign withdrawn")
        rows = intents(store, doomed)
        assert {r["status"] for r in rows} == {"cancelled"}
        assert {r["reply"] for r in rows} == {f"cancelled by {ACTOR}: campaign withdrawn"}
        await wait_until(lambda: page_queue(page, "sunset") is None, timeout=5)
        [entry, *_] = await audit_rows(page.client, "queues.cancel")
        assert (entry["actor"], entry["count"]) == (ACTOR, 3)

    run(qloop, scenario(), timeout=60)


def test_rate_change_and_drain_reach_the_engine(
    qloop: asyncio.AbstractEventLoop, console: MainWindow, store: Store
) -> None:
    page = queues_page(console)
    add_intents(store, "digest", "relay-c", 2)

    async def scenario() -> None:
        await wait_until(lambda: page.route_model.row_for_key("relay-b") is not None, timeout=10)
        page.select_route("relay-b")
        dialog = page.ask_rate()
        assert isinstance(dialog, RateDialog)
        dialog.per_second.setValue(5)
        dialog.per_minute.setValue(120)
        dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).click()
        impact = await confirm_dialog(page)
        assert impact.impact() == "Set the limits of route relay-b on node local"
        assert "Route rate: no limit \u2192 5/s \u00b7 120/min" in impact._details.text()
        await confirm(page, impact)
        listed = await page.client.request_one("routes.list")
        relay_b = next(r for r in listed["routes"] if r["name"] == "relay-b")
        assert relay_b["limits"]["rate"]["per_second"] == 5
        assert relay_b["limits"]["rate"]["per_minute"] == 120
        await wait_until(
            lambda: any(
                r["name"] == "relay-b" and r["limits"].startswith("5/s \u00b7 120/min")
                for r in page.route_model.rows()
            ),
            timeout=5,
        )
        [entry, *_] = await audit_rows(page.client, "routes.set_rate")
        assert (entry["actor"], entry["target"]) == (ACTOR, "route relay-b")

        # Drain relay-c: its four queued intents (two from the error test) still go out (due
        # in an hour, so it stays "draining"); new ones would be held.
        await wait_until(lambda: page_queue(page, "digest") is not None, timeout=10)
        page.select_route("relay-c")
        page.ask_drain()
        impact = await confirm_dialog(page)
        assert impact.impact().startswith("Drain route relay-c: 4 queued intents and ")
        await confirm(page, impact, "retiring relay-c")
        await wait_until(
            lambda: (page_queue(page, "digest") or {}).get("state") == "draining", timeout=5
        )
        page.ask_resume("route", "relay-c")
        await confirm(page, await confirm_dialog(page))
        await wait_until(
            lambda: (page_queue(page, "digest") or {}).get("state") == "active", timeout=5
        )

    run(qloop, scenario(), timeout=60)


def test_pause_all_sending_goes_to_one_node_and_offers_resume(
    qloop: asyncio.AbstractEventLoop, console: MainWindow, engine: StackConnection
) -> None:
    button = console.top_bar.pause_button

    async def scenario() -> None:
        await wait_until(button.isEnabled, timeout=10)
        assert button.text() == "Pause all sending"
        button.click()
        await wait_until(lambda: console._pause_dialog is not None, timeout=10)
        dialog = console._pause_dialog
        assert dialog is not None and dialog.isVisible()
        assert dialog.impact().startswith("Pause all queues: ")
        listing = await console.client.request_one("queues.list")
        assert not [c for c in listing["controls"] if c["kind"] == "all"]  # asks first
        dialog.reason_field().setText("incident 42")
        dialog.confirm_button().click()
        await wait_until(lambda: button.text() == "Resume sending", timeout=10)
        assert console.client.control_node() == engine.node
        listing = await console.client.request_one("queues.list")
        [control] = [c for c in listing["controls"] if c["kind"] == "all"]
        assert (control["actor"], control["reason"]) == (ACTOR, "incident 42")
        assert console.messages.text().startswith("Paused all queues: ")
        [entry, *_] = await audit_rows(console.client, "sending.pause")
        assert entry["actor"] == ACTOR

        console._pause_dialog = None
        button.click()
        await wait_until(lambda: console._pause_dialog is not None, timeout=10)
        dialog = console._pause_dialog
        assert dialog is not None and dialog.impact().startswith("Resume all queues: ")
        dialog.confirm_button().click()
        await wait_until(lambda: button.text() == "Pause all sending", timeout=10)
        listing = await console.client.request_one("queues.list")
        assert not [c for c in listing["controls"] if c["kind"] == "all"]

    run(qloop, scenario(), timeout=60)


WHY = "copy fix: wrong sale date in the subject"


def page_row(page: QueuesPage, workflow: str) -> int:
    """The view row (after sorting) of ``workflow``'s queue."""
    key = next(r["key"] for r in page.queue_model.rows() if r["workflow"] == workflow)
    source = page.queue_table.source_model()
    row = source.row_for_key(key)
    assert row is not None
    return int(page.queue_table.model().mapFromSource(source.index(row, 0)).row())


def assert_readable(view: Any, row: int, words: str) -> None:
    """The "Why" cell of ``row`` holds ``words`` and is tall enough to show all of it."""
    column = [c.field for c in QUEUE_COLUMNS].index("why")
    index = view.model().index(row, column)
    text = str(index.data())
    assert text.endswith(words), text
    rect = view.visualRect(index)
    style_margin = view.style().pixelMetric(QStyle.PixelMetric.PM_FocusFrameHMargin) + 1
    room = QRect(0, 0, rect.width() - 2 * (CELL_PADDING + style_margin), 10_000)
    needed = view.fontMetrics().boundingRect(room, Qt.TextFlag.TextWordWrap, text)
    assert needed.height() <= rect.height(), (needed, rect)


def test_queues_screenshot(
    qloop: asyncio.AbstractEventLoop, console: MainWindow, store: Store
) -> None:
    page = queues_page(console)
    add_intents(store, "onboarding", "default", 12)
    add_intents(store, "onboarding", "default", 4, domain="gmail.com")
    add_intents(store, "newsletter", "relay-b", 40, domain="outlook.com")
    add_intents(store, "receipts", "relay-c", 7, status="deferred")

    async def scenario() -> None:
        await wait_until(lambda: page_queue(page, "newsletter") is not None, timeout=10)
        client = page.client
        await client.request_one("queues.pause", {"workflow": "newsletter", "reason": WHY})
        await client.request_one("routes.drain", {"route": "relay-c", "reason": "maintenance"})
        await wait_until(
            lambda: (page_queue(page, "receipts") or {}).get("state") == "draining", timeout=5
        )
        page.select_queue("onboarding", "default")
        page.select_domain("gmail.com")
        assert (
            page.target.text() == "Acting on workflow onboarding, route default, domain gmail.com"
        )
        await asyncio.sleep(1.2)
        assert_readable(page.queue_table, page_row(page, "newsletter"), WHY)
        save_screenshot(console, "queues")
        page.tabs.setCurrentIndex(1)
        await asyncio.sleep(0.2)
        save_screenshot(page, "queues-controls")
        page.tabs.setCurrentIndex(0)
        for args in ({"workflow": "newsletter"}, {"route": "relay-c"}):
            await client.request_one("queues.resume", args)

    run(qloop, scenario(), timeout=60)


def test_open_queues_from_the_alert_banner_selects_the_route(
    qloop: asyncio.AbstractEventLoop, console: MainWindow, store: Store
) -> None:
    """A route alert's "Open Queues" opens the page with that route and its biggest queue
    selected, also when the page is built by the click and its listing comes later."""
    add_intents(store, "banner-small", "relay-c", 2)
    add_intents(store, "banner-big", "relay-c", 9)
    add_intents(store, "banner-other", "default", 20)
    window = console
    assert window.current_page() == "live" and window.page("queues") is None

    def raise_alert(route: str) -> None:
        window.client.ingest(
            {
                "node": "alerting-node",
                "alerts": [
                    {
                        "id": f"a-{route}",
                        "rule": "route_paused",
                        "severity": "paused",
                        "labels": {"route": route},
                        "since": time.time(),
                        "node": "alerting-node",
                        "message": f"Route {route} is paused",
                    }
                ],
            }
        )
        window.refresh_health()
        assert window.banner.isVisible()
        assert window.banner.action_button().text() == "Open Queues"

    async def scenario() -> None:
        raise_alert("relay-c")
        window.banner.action_button().click()
        assert window.current_page() == "queues"
        page = window.page("queues")
        assert isinstance(page, QueuesPage)
        await wait_until(lambda: page.selected_queue() is not None, timeout=10)
        queue = page.selected_queue()
        assert queue is not None
        assert (queue["workflow"], queue["route"]) == ("banner-big", "relay-c")
        assert page.selected_route() == "relay-c"
        assert page.tabs.currentWidget() is page.route_table
        assert "route relay-c" in page.target.text()
        assert page.result_line.text() == "Showing route relay-c: the actions above apply to it."

        window.show_page("live")  # the page is built and listed now: selection at once
        raise_alert("default")
        window.banner.action_button().click()
        queue = page.selected_queue()
        assert queue is not None and (queue["workflow"], queue["route"]) == (
            "banner-other",
            "default",
        )

    run(qloop, scenario(), timeout=30)


def test_impact_details_and_limits_in_words() -> None:
    preview = {
        "queues": [{"workflow": f"w{i}", "route": "r", "count": 1000 + i} for i in range(8)],
        "in_flight": 3,
    }
    lines = impact_details(preview, "ana")
    assert lines[0] == "w0 on r: 1,000"
    assert lines[6] == "and 2,013 in 2 more queues"
    assert lines[7] == "3 in flight finish normally"
    assert lines[-1] == "Recorded in the audit log as \u201cana\u201d."
    limits = {
        "rate": {"per_second": 2.5, "per_minute": 0, "per_hour": 1000, "burst": 0},
        "domain_concurrency": 4,
        "domain_rate": {"per_second": 0, "per_minute": 0, "per_hour": 0, "burst": 0},
        "domains": {"gmail.com": {"concurrency": 2, "rate": None}},
    }
    assert limits_words(limits) == "2.5/s \u00b7 1,000/h; per domain 4 at once; 1 domain rule"
    [row] = route_rows([{"name": "relay-a", "down": True, "limits": limits}], [], 0.0)
    assert (row["state"], row["state_tip"]) == ("down", "the relay does not answer")
