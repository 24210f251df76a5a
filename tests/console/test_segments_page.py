"""The Segments page: the rule tree and the text form round-trip for every condition kind of
docs/segments.md (and the condition form reads back every atom it shows), tree edits rewrite
the text, text mistakes are shown at their place; against a real engine, the draft's live count
equals the saved segment's count after its build, with progress and history. Screenshots."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import orjson
import pytest
from PySide6.QtWidgets import QTreeWidgetItem
from pytestqt.qtbot import QtBot

from console.client import EngineClient
from console.main_window import MainWindow
from console.pages.segment_tree import NODE_ROLE, RuleTree
from console.pages.segments import SegmentsPage, position_of
from console.stack import StackConnection
from engine.ingest.validate import format_time
from engine.segments.model import Condition, SegmentInvalid, TraitCompare
from engine.segments.text import format_condition, parse_condition
from tests.console.conftest import connect_as_engine, run, save_screenshot, wait_until

pytestmark = pytest.mark.qt_log_ignore(r"^This plugin does not support")

# Every form of docs/segments.md's table, alone and combined.
EVERY_KIND = [
    'trait plan = "pro"',
    "trait visits != 3",
    "trait total < 10.5",
    "trait total > 0",
    "trait total <= 100",
    "trait total >= -2",
    'trait address.country in ["DE", "AT", "CH"]',
    'trait tags contains "vip"',
    "trait vip = true",
    "trait nickname = null",
    "trait email exists",
    "trait phone is missing",
    "trait signed_up_at before 30 days ago",
    "trait last_order_at after 2 weeks ago",
    "subscribed to marketing",
    "unsubscribed from marketing",
    "consented to location",
    "`Product Viewed` at least once in the last 10 minutes",
    '`Product Viewed` where product_id = "X", price > 5 at least 3 times in the last 1 hour',
    "`Order Completed` at most 2 times in the last 30 days",
    "`Page Viewed` exactly 4 times in the last 90 seconds",
    "no `Order Completed` in the last 10 minutes",
    "in segment churned",
    "clv > 200",
    "orders >= 3 and aov < 49.9",
    "not subscribed to marketing",
    'trait plan = "pro" and subscribed to marketing',
    '(trait country in ["DE", "AT", "CH"] or consented to location) and trait email exists',
    'not (trait plan = "pro" or trait plan = "team") and in segment churned',
    "(trait a = 1 and trait b = 2) and trait c = 3",
    '`Product Viewed` where product_id = "X" at least once in the last 10 minutes\n'
    "    and no `Order Completed` in the last 10 minutes",
]


def leaves(tree: RuleTree) -> list[QTreeWidgetItem]:
    out: list[QTreeWidgetItem] = []
    stack = [tree.tree.topLevelItem(i) for i in range(tree.tree.topLevelItemCount())]
    while stack:
        item = stack.pop()
        if isinstance(item.data(0, NODE_ROLE), Condition):
            out.append(item)
        stack.extend(item.child(i) for i in range(item.childCount()))
    return out


@pytest.fixture
def page(qtbot: QtBot, qloop: asyncio.AbstractEventLoop) -> SegmentsPage:
    widget = SegmentsPage(EngineClient())  # not connected: nothing is asked
    qtbot.addWidget(widget)
    widget.resize(1400, 900)
    widget.show()
    return widget


@pytest.mark.parametrize("source", EVERY_KIND)
def test_text_and_tree_round_trip_every_condition_kind(page: SegmentsPage, source: str) -> None:
    expected = parse_condition(source)
    page.set_text(source)
    page.text_to_tree()
    assert page.text_error is None
    assert page.rules.condition() == expected  # text -> tree
    page.rules.set_condition(expected)
    page.write_text(page.rules.condition())  # tree -> text: the canonical form
    assert page.text.toPlainText() == format_condition(expected)
    assert parse_condition(page.text.toPlainText()) == expected
    # The condition form shows every atom and reads it back unchanged.
    for item in leaves(page.rules):
        page.rules.tree.setCurrentItem(item)
        assert page.rules.editor.read() == item.data(0, NODE_ROLE)


def test_tree_edits_rewrite_the_text_and_text_mistakes_show_their_place(
    page: SegmentsPage,
) -> None:
    page.set_text('trait plan = "pro" and subscribed to marketing')
    page.text_to_tree()
    first = leaves(page.rules)
    plan = next(i for i in first if isinstance(i.data(0, NODE_ROLE), TraitCompare))
    page.rules.tree.setCurrentItem(plan)
    editor = page.rules.editor
    editor.value.setText('"team"')
    editor.value.textEdited.emit('"team"')
    assert page.text.toPlainText() == 'trait plan = "team" and subscribed to marketing'

    # Add an OR group, then wrap the subscription in NOT: the text follows each step.
    page.rules.tree.setCurrentItem(page.rules.tree.topLevelItem(0))
    page.rules.act("or")
    new = page.rules.tree.currentItem()
    assert new.data(0, NODE_ROLE) == parse_condition('trait plan = "pro"')
    editor.kind.setCurrentIndex(editor.kind.findData("events"))
    editor.event_name.setText("Order Completed")
    editor.window_text.setText("10 days")
    editor.event_name.textEdited.emit("Order Completed")
    # A one-member "or" group reads as its member, as the text form writes it.
    assert page.text.toPlainText() == (
        'trait plan = "team" and subscribed to marketing'
        " and `Order Completed` at least once in the last 10 days"
    )
    sub = next(
        i for i in leaves(page.rules) if format_condition(i.data(0, NODE_ROLE)).startswith("sub")
    )
    page.rules.tree.setCurrentItem(sub)
    page.rules.act("not")
    assert "and not subscribed to marketing and" in page.text.toPlainText()
    assert page.text_error is None

    # Switching a row's kind applies the form at once; a wrong field is refused in words and
    # the tree and the text keep the last good state.
    page.rules.tree.setCurrentItem(leaves(page.rules)[0])
    editor.kind.setCurrentIndex(editor.kind.findData("trait"))
    before = page.text.toPlainText()
    assert before.endswith('and trait plan = "pro"')
    editor.value.setText("lots")
    editor.value.textEdited.emit("lots")
    assert "expected a value" in editor.problem.text()
    assert page.text.toPlainText() == before

    # Deleting rows rewrites the text each time; an emptied group is named by the tree and
    # the text keeps its last good form.
    group = page.rules.tree.topLevelItem(0)
    for _ in range(group.childCount()):
        page.rules.tree.setCurrentItem(group.child(0))
        page.rules.act("delete")
    assert "is empty" in page.rules.problem.text()
    assert page.text.toPlainText() == 'trait plan = "pro"'  # the last row before the end

    # A mistake typed in the text is shown with its line and column, and marked there.
    bad = 'trait plan = "pro" and\n`Product Viewed` at least lots times in the last 1 hour'
    page.set_text(bad)
    page.text_to_tree()
    assert page.text_error == ("line 2, col 27: expected a number after 'least', found 'lots'")
    assert "line 2, col 27" in page.text_state.text()
    [mark] = page.text.extraSelections()
    assert mark.cursor.selectedText() == "l" and mark.cursor.selectionStart() == bad.index("lots")
    assert position_of(page.text_error, bad) == bad.index("lots")
    with pytest.raises(SegmentInvalid, match="is empty"):
        page.rules.condition()  # the tree kept its last (empty) state
    save_screenshot(page, "segments-builder-error")


def test_the_order_value_form_writes_clv_conditions_screenshot(page: SegmentsPage) -> None:
    page.set_text('trait plan = "pro"')
    page.text_to_tree()
    page.rules.tree.setCurrentItem(leaves(page.rules)[0])
    editor = page.rules.editor
    editor.kind.setCurrentIndex(editor.kind.findData("value"))
    # No number yet: refused in words, the text keeps the last good condition.
    assert "expected a number (clv compares with a number)" in editor.problem.text()
    assert page.text.toPlainText() == 'trait plan = "pro"'
    editor.value_op.setCurrentText(">=")
    editor.amount.setText("250")
    editor.amount.textEdited.emit("250")
    assert page.text.toPlainText() == "clv >= 250"
    editor.measure.setCurrentIndex(editor.measure.findData("orders"))
    assert page.text.toPlainText() == "orders >= 250"
    editor.amount.setText("many")
    editor.amount.textEdited.emit("many")
    assert "expected a number (orders compares with a number)" in editor.problem.text()
    assert page.text.toPlainText() == "orders >= 250"
    editor.amount.setText("3")
    editor.amount.textEdited.emit("3")
    assert page.text.toPlainText() == "orders >= 3"
    save_screenshot(page, "segments-builder-order-value")


async def track(engine: StackConnection, user: str, event: str, **props: Any) -> None:
    now = format_time(time.time())
    body = {
        "type": "track",
        "userId": user,
        "event": event,
        "properties": props,
        "context": {"traits": {"email": f"{user}@example.com", "plan": props.get("plan")}},
        "messageId": uuid.uuid4().hex,
        "timestamp": now,
        "receivedAt": now,
    }
    nc = await connect_as_engine(engine)
    try:
        await nc.jetstream().publish(
            "events.track", orjson.dumps(body), headers={"Nats-Msg-Id": body["messageId"]}
        )
    finally:
        await nc.close()


async def quiet(page: SegmentsPage) -> None:
    await asyncio.sleep(0.1)
    await wait_until(lambda: not page.busy(), timeout=30)


def test_a_draft_count_equals_the_saved_segments_count_after_its_build(
    qloop: asyncio.AbstractEventLoop, console: MainWindow, engine: StackConnection
) -> None:
    tag = uuid.uuid4().hex[:6]

    async def scenario() -> None:
        for k in range(9):
            plan = "pro" if k % 3 else "free"
            await track(console_engine, f"seg-{tag}-{k}", "Product Viewed", plan=plan, price=k)
        client = console.client

        async def stored() -> bool:
            found = await client.request_one("contacts.search", {"query": f"seg-{tag}"})
            return len(found["contacts"]) == 9

        await wait_until_async(stored)
        page = console.show_page("segments")
        assert isinstance(page, SegmentsPage)
        await quiet(page)
        text = (
            'trait plan = "pro" and `Product Viewed` where price >= 2'
            " at least once in the last 1 hour"
        )
        page.set_text(text)
        page.text_to_tree()
        page.count_draft()
        await quiet(page)
        draft = page.last_preview
        assert draft is not None and draft["complete"] is True
        expected = sum(1 for k in range(9) if k % 3 and k >= 2)
        assert draft["members"] >= expected  # other tests' contacts may match too
        assert page.count.text() == f"{draft['members']:,}"
        page.sid.setText(f"pro-viewers-{tag}")
        page.name.setText("Pro viewers")
        page.save()
        await wait_until(
            lambda: page.last_build is not None and page.last_build["state"] == "done",
            timeout=30,
        )
        await quiet(page)
        saved = await client.request_one("segments.count", {"segment": f"pro-viewers-{tag}"})
        assert saved["members"] == draft["members"]
        assert (
            page.history is not None and page.history["points"][-1]["members"] == saved["members"]
        )
        assert "Built v1" in page.build_note.text()
        assert page.sample.count() == min(10, draft["members"])
        save_screenshot(console, "segments")

    console_engine = engine

    async def wait_until_async(check: Any, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not await check():
            assert time.monotonic() < deadline, "contacts not stored in time"
            await asyncio.sleep(0.2)

    run(qloop, scenario(), timeout=120)
