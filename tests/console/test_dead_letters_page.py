"""The Dead letters page against a real engine: malformed events listed, discarded, retried."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson

from console.main_window import MainWindow
from console.pages.dead_letters import DeadLettersPage, pretty_payload
from console.stack import StackConnection
from tests.console.conftest import connect_as_engine, run, save_screenshot, wait_until
from widgets.confirm import ConfirmImpactDialog

NOT_JSON = "payload: not valid JSON"


async def publish_raw(engine: StackConnection, *bodies: bytes) -> None:
    """Publish ``bodies`` straight to the events stream, as a broken producer would."""
    nc = await connect_as_engine(engine)
    try:
        js = nc.jetstream()
        for body in bodies:
            await js.publish("events.track", body, headers={"Nats-Msg-Id": uuid.uuid4().hex})
    finally:
        await nc.close()


def dead_letters_page(window: MainWindow) -> DeadLettersPage:
    page = window.show_page("dead_letters")
    assert isinstance(page, DeadLettersPage)
    return page


async def statuses(page: DeadLettersPage) -> dict[str, str]:
    """Every dead letter's status, as the engine has it."""
    out: dict[str, str] = {}
    for status in ("open", "retried", "discarded"):
        rows: list[dict[str, Any]] = await page.client.request(
            "dead_letters.list", {"status": status}
        )
        out.update({row["id"]: row["status"] for row in rows})
    return out


async def confirm(page: DeadLettersPage, dialog: ConfirmImpactDialog | None) -> None:
    assert dialog is not None and dialog.isVisible() and dialog.isModal()
    dialog.confirm_button().click()
    await wait_until(lambda: page._action_op is not None and page._action_op.done(), timeout=10)


def test_a_malformed_event_is_listed_then_discarded(
    qloop: asyncio.AbstractEventLoop, console: MainWindow, engine: StackConnection
) -> None:
    page = dead_letters_page(console)

    async def scenario() -> None:
        await wait_until(lambda: page.freshness.text() != "no data yet", timeout=10)
        if not page.table.rows:
            assert page.states.currentWidget() is page.empty
            save_screenshot(console, "dead_letters-empty")
        before = {row["id"] for row in page.table.rows}

        await publish_raw(engine, b"{not json")
        # Listed by the 5 s refresh, with its reason.
        await wait_until(lambda: len(page.table.rows) > len(before), timeout=20, interval=0.2)
        [row] = [r for r in page.table.rows if r["id"] not in before]
        assert row["reason"].startswith(NOT_JSON)
        assert row["subject"] == "events.track"
        index = page.table.rows.index(row)
        assert page.table.model().index(index, 1).data().startswith(NOT_JSON)

        page.table.select_ids([row["id"]])
        assert page.payload.toPlainText() == "{not json"
        assert page.reason.text().startswith(NOT_JSON)
        assert page.discard_button.isEnabled()

        dialog = page.ask_discard()
        assert dialog is not None
        assert dialog.impact() == "Discard 1 dead letter: it is never processed."
        await confirm(page, dialog)
        assert console.messages.text() == "1 dead letter discarded."
        await wait_until(lambda: row["id"] not in {r["id"] for r in page.table.rows}, timeout=10)
        assert (await statuses(page))[row["id"]] == "discarded"

        page.set_status("discarded")
        await wait_until(lambda: row["id"] in {r["id"] for r in page.table.rows}, timeout=10)
        page.table.select_ids([row["id"]])
        assert not page.retry_button.isEnabled() and not page.discard_button.isEnabled()
        page.set_status("open")

    run(qloop, scenario(), timeout=60)


def test_retry_publishes_the_selected_dead_letters_again(
    qloop: asyncio.AbstractEventLoop, console: MainWindow, engine: StackConnection
) -> None:
    page = dead_letters_page(console)

    async def scenario() -> None:
        await wait_until(lambda: page.freshness.text() != "no data yet", timeout=10)
        before = {row["id"] for row in page.table.rows}
        await publish_raw(engine, b"{not json", b"{not json either", b"[1, 2")
        await wait_until(lambda: len(page.table.rows) >= len(before) + 3, timeout=20)
        new = [r["id"] for r in page.table.rows if r["id"] not in before]
        assert len(new) == 3

        page.table.select_ids(new)
        assert page.retry_button.text() == "Retry 3\u2026"
        dialog = page.ask_retry()
        assert dialog is not None
        assert dialog.impact() == ("Retry 3 dead letters: they are published to the stream again.")
        dialog.cancel_button().click()  # cancelling changes nothing
        assert page._action_op is None
        assert all(s == "open" for i, s in (await statuses(page)).items() if i in new)

        await confirm(page, page.ask_retry())
        assert console.messages.text() == "3 dead letters retried."
        found = await statuses(page)
        assert [found[i] for i in new] == ["retried"] * 3
        # Still malformed, so the engine sets each aside again as a new dead letter.
        await wait_until(
            lambda: (
                len([r for r in page.table.rows if r["id"] not in before]) == 3
                and not set(new) & {r["id"] for r in page.table.rows}
            ),
            timeout=20,
            interval=0.2,
        )

        page.set_status("retried")
        await wait_until(lambda: set(new) <= {r["id"] for r in page.table.rows}, timeout=10)
        page.set_status("open")

    run(qloop, scenario(), timeout=60)


def test_dead_letters_screenshot(
    qloop: asyncio.AbstractEventLoop, console: MainWindow, engine: StackConnection
) -> None:
    page = dead_letters_page(console)
    event = {
        "type": "track",
        "event": "Order Completed",
        "properties": {"order_id": "o-1042", "total": 129.9, "currency": "EUR"},
        "messageId": uuid.uuid4().hex,
    }

    async def scenario() -> None:
        await publish_raw(engine, orjson.dumps(event))
        await wait_until(
            lambda: any(r["reason"].startswith("userId") for r in page.table.rows), timeout=20
        )
        row = next(r for r in page.table.rows if r["reason"].startswith("userId"))
        page.table.select_ids([row["id"]])
        assert '"order_id": "o-1042"' in page.payload.toPlainText()
        assert page.payload.toPlainText().startswith('{\n  "type": "track"')
        await asyncio.sleep(0.2)
        save_screenshot(console, "dead_letters")
        dialog = page.ask_retry()
        assert dialog is not None
        await asyncio.sleep(0.2)
        save_screenshot(dialog, "dead_letters-retry-dialog")
        dialog.reject()

    run(qloop, scenario(), timeout=60)


def test_payloads_are_pretty_printed() -> None:
    assert pretty_payload({"payload": '{"a":1}'}) == '{\n  "a": 1\n}'
    assert pretty_payload({"payload": "{not json"}) == "{not json"
    assert pretty_payload({"payload_b64": "AAEC"}) == "(binary, 3 bytes, base64)\nAAEC"
