"""The Audit page against a real engine: an operator's actions are listed, searched, filtered."""

from __future__ import annotations

import asyncio

from console.main_window import MainWindow
from console.pages.audit import AuditPage
from tests.console.conftest import run, save_screenshot, wait_until


def audit_page(window: MainWindow) -> AuditPage:
    page = window.show_page("audit")
    assert isinstance(page, AuditPage)
    return page


def test_an_operators_actions_are_listed_newest_first_and_searchable(
    qloop: asyncio.AbstractEventLoop, console: MainWindow
) -> None:
    page = audit_page(console)
    client = console.client
    me = client.actor  # the signed-in NATS user the audit log records (the stack's admin)

    async def scenario() -> None:
        await wait_until(lambda: page.freshness.text() != "no data yet", timeout=10)
        if not page.all_rows:
            assert page.states.currentWidget() is page.empty
        await client.request("demo.start", {"rate": 50})
        await client.request("demo.stop")

        # The page refreshes by itself (every 5 s while shown).
        await wait_until(lambda: "demo.stop" in page.visible_actions(), timeout=15, interval=0.2)
        assert page.states.currentWidget() is page.splitter
        actions = page.visible_actions()
        assert actions.index("demo.stop") < actions.index("demo.start")  # newest first
        top = page.table.rows[actions.index("demo.stop")]
        assert top["actor"] == me
        time_item = page.table.model().index(actions.index("demo.stop"), 0)
        assert "UTC" in str(time_item.data(3))  # ToolTipRole: the instant in UTC
        assert page.table.model().index(0, 1).data() == page.table.rows[0]["actor"]

        # The detail JSON of the selection, in the side panel.
        start_row = actions.index("demo.start")
        page.table.selectRow(start_row)
        assert '"rate": 50' in page.detail_text()
        assert page.detail_fields["Actor"].text() == me

        # Search goes to the engine.
        page.search.setText("demo.stop")
        await wait_until(lambda: set(page.visible_actions()) == {"demo.stop"}, timeout=10)
        page.search.clear()
        await wait_until(lambda: "demo.start" in page.visible_actions(), timeout=10)

        # Actor and action filters.
        assert page.actor_box.findData(me) > 0
        page.set_action("demo.start")
        assert set(page.visible_actions()) == {"demo.start"}
        page.set_action("")
        page.set_actor("nobody-at-all")  # not offered: shows everything
        assert "demo.stop" in page.visible_actions()
        page.set_actor(me)
        assert {r["actor"] for r in page.table.rows} == {me}

        page.set_actor("")
        page.table.select_ids([str(page.table.rows[start_row]["id"])])
        await asyncio.sleep(0.2)
        save_screenshot(console, "audit")

        page.search.setText("nothing-matches-this")
        await wait_until(lambda: page.states.currentWidget() is page.no_match, timeout=10)
        page.no_match.action_button().click()
        await wait_until(lambda: page.states.currentWidget() is page.splitter, timeout=10)

    run(qloop, scenario(), timeout=60)
