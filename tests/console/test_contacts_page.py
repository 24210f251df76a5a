"""The Contacts page against a real engine: after real events, the why-explorer shows the
profile, the decisions of the real enrollment in order with the relay's reply, the timeline,
and answers "why not" for the workflows the contact did not get. Screenshot, looked at."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import orjson
import pytest

from console.main_window import MainWindow
from console.pages.contacts import ID_ROLE, ContactsPage
from console.stack import StackConnection
from engine.ingest.validate import format_time
from tests.console.conftest import connect_as_engine, run, save_screenshot, wait_until

pytestmark = pytest.mark.qt_log_ignore(r"^This plugin does not support")


async def publish(engine: StackConnection, events: list[dict[str, Any]]) -> None:
    nc = await connect_as_engine(engine)
    try:
        js = nc.jetstream()
        for event in events:
            now = format_time(time.time())
            body = {"messageId": uuid.uuid4().hex, "timestamp": now, "receivedAt": now, **event}
            await js.publish(
                f"events.{body['type']}",
                orjson.dumps(body),
                headers={"Nats-Msg-Id": body["messageId"]},
            )
    finally:
        await nc.close()


async def quiet(page: ContactsPage) -> None:
    await asyncio.sleep(0.1)
    await wait_until(lambda: not page.busy(), timeout=20)


def test_the_why_explorer_shows_a_real_enrollments_decisions(
    qloop: asyncio.AbstractEventLoop, console: MainWindow, engine: StackConnection
) -> None:
    user = f"u-{uuid.uuid4().hex[:6]}"
    address = f"{user}@example.com"
    traits = {"email": address, "first_name": "Grace", "last_name": "Hopper", "plan": "pro"}

    async def scenario() -> None:
        await publish(
            engine,
            [
                {"type": "identify", "userId": user, "traits": traits},
                {
                    "type": "track",
                    "userId": user,
                    "event": "Product Viewed",
                    "properties": {"product_id": "sku-1", "price": 49},
                },
                {
                    "type": "track",
                    "userId": user,
                    "event": "Signed Up",
                    "properties": {"method": "email"},
                },
            ],
        )
        page = console.show_page("contacts")
        assert isinstance(page, ContactsPage)
        await quiet(page)

        # The welcome mail goes out (welcome-series: welcome-1 at once, then a 2-day wait).
        async def welcomed() -> bool:
            found = await console.client.request_one("contacts.enrollments", {"contact": user})
            stories = found["enrollments"]
            return bool(stories) and any(d["kind"] == "sent" for d in stories[0]["decisions"])

        deadline = time.monotonic() + 30
        while not await welcomed():
            assert time.monotonic() < deadline, "no welcome mail"
            await asyncio.sleep(0.2)

        page.search.setText("hopper")
        await quiet(page)
        ids = [page.results.item(i).data(ID_ROLE) for i in range(page.results.count())]
        assert user in ids
        page.open_contact(user)
        await quiet(page)

        assert page.profile is not None and page.profile["email"] == address
        assert "Grace Hopper" in page.profile_view.text()
        assert "subscribed to marketing" in page.profile_view.text()

        # The decision trace of the real enrollment, in order, with the relay's reply.
        [story] = [s for s in page.stories if s["workflow"] == "welcome-series"]
        kinds = [d["kind"] for d in story["decisions"]]
        # In time order: the relay accepted the mail just after the wait was set.
        assert kinds == ["entered", "intent", "waiting", "sent"]
        top = page.decisions.topLevelItem(0)
        assert top.isExpanded() and "Welcome" in top.text(1)
        rows = [(top.child(i).text(1), top.child(i).text(2)) for i in range(top.childCount())]
        assert rows[0][0] == "trigger matched" and "Signed Up" in rows[0][1]
        assert rows[1][0] == "email queued" and "welcome-1" in rows[1][1]
        assert rows[2][0] == "waiting" and "waiting 2d" in rows[2][1]
        assert rows[3][0] == "sent" and "the relay replied 250" in rows[3][1]

        timeline = [page.timeline.item(r, 2).text() for r in range(page.timeline.rowCount())]
        assert {"Product Viewed", "Signed Up", "welcome-1 (welcome-series)"} <= set(timeline)

        # Why not: got the welcome, never put a product in the cart, ordered nothing.
        answers = {a["workflow"]: a for a in page.answers}
        assert answers["welcome-series"]["got"] is True
        assert answers["abandoned-cart"]["reason"] == "no_trigger_event"
        assert "Nearest: `Product Viewed`" in answers["abandoned-cart"]["answer"]
        assert answers["browse-abandonment"]["reason"] == "trigger_conditions"
        row = next(
            r for r in range(page.why.rowCount()) if "abandoned-cart" in page.why.item(r, 0).text()
        )
        page.why.selectRow(row)
        assert "Why didn't Grace Hopper get Abandoned cart?" in page.answer.text()
        save_screenshot(console, "contacts")
        page.tabs.setCurrentIndex(3)
        await asyncio.sleep(0.1)
        save_screenshot(console, "contacts-why-not")
        page.tabs.setCurrentIndex(0)

        # An unknown contact is said in words.
        page.open_contact("nobody-here")
        await quiet(page)
        assert page.states.currentWidget() is page.problem
        assert "there is no contact 'nobody-here'" in page.problem.text()

    run(qloop, scenario(), timeout=120)
