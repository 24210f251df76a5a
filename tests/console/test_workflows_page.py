"""The Workflows page against a real engine: the list, the graph of every starter (branches side
by side, labelled outcomes), live counts on the boxes, editing a step in the side form (the
text follows, problems appear on the box and in the list), the text view round-tripping, save
as a new version that is not live, enable and disable with a confirmation. Screenshots."""

from __future__ import annotations

import asyncio
import time
import tomllib
import uuid
from typing import Any

import pytest
from pytestqt.qtbot import QtBot

from console.client import EngineClient
from console.main_window import MainWindow
from console.pages.workflow_graph import END_NODE, EXIT_NODE, TRIGGER, build_graph
from console.pages.workflows import WorkflowsPage
from console.stack import StackConnection
from engine.decide.workflow import load_workflow_file
from engine.decide.workflow_toml import to_toml
from engine.library import default_templates_dir
from tests.console.conftest import run, save_screenshot, wait_until
from tests.console.test_segments_page import track
from widgets.confirm import ConfirmImpactDialog
from widgets.flow_graph import FlowGraphView

pytestmark = pytest.mark.qt_log_ignore(r"^This plugin does not support")

BRANCHY: dict[str, Any] = {
    "id": "vip-thanks",
    "name": "VIP thanks",
    "category": "marketing",
    "trigger": {"event": "Order Completed"},
    "steps": [
        {
            "id": "big-spender",
            "type": "branch",
            "condition": {"property": "total", "op": "gte", "value": 250},
            "then": "vip",
            "else": "thanks",
        },
        {"id": "vip", "type": "send", "template": "order-confirmation", "next": "exit"},
        {"id": "thanks", "type": "send", "template": "shipping-update"},
    ],
}


def test_the_graph_puts_branches_side_by_side_with_labelled_outcomes(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop
) -> None:
    view = FlowGraphView()
    qtbot.addWidget(view)
    nodes, edges = build_graph(BRANCHY)
    view.set_graph(nodes, edges)
    assert [view.layer_of(k) for k in (TRIGGER, "big-spender", "vip", "thanks")] == [0, 1, 2, 2]
    assert view.column_of("vip") < view.column_of("thanks")
    labels = {(e.source, e.target): e.label for e in edges}
    assert labels[("big-spender", "vip")] == "then"
    assert labels[("big-spender", "thanks")] == "else"
    assert labels[("vip", EXIT_NODE)] == "" and ("thanks", END_NODE) in labels
    # A wait-until's outcomes, and a loop back up, on the abandoned-cart starter plus a loop.
    cart = load_workflow_file(default_templates_dir() / "workflows/abandoned-cart.toml")
    nodes, edges = build_graph(cart.to_definition())
    assert {e.label for e in edges if e.source == "wait-for-order"} == {"event", "timeout"}
    looped = {
        **BRANCHY,
        "steps": [*BRANCHY["steps"][:2], {**BRANCHY["steps"][2], "next": "big-spender"}],
    }
    view.set_graph(*build_graph(looped))
    assert view.layer_of("thanks") > view.layer_of("big-spender")


def test_every_starter_draws_every_step(qtbot: QtBot, qloop: asyncio.AbstractEventLoop) -> None:
    view = FlowGraphView()
    qtbot.addWidget(view)
    for file in sorted((default_templates_dir() / "workflows").glob("*.toml")):
        definition = load_workflow_file(file).to_definition()
        view.set_graph(*build_graph(definition))
        for step in definition["steps"]:
            assert view.node(step["id"]) is not None, (file.name, step["id"])


async def quiet(page: WorkflowsPage) -> None:
    await asyncio.sleep(0.1)
    await wait_until(lambda: not page.busy(), timeout=30)


async def confirm(page: WorkflowsPage) -> None:
    await wait_until(lambda: page._dialog is not None and page._dialog.isVisible())
    dialog = page._dialog
    assert isinstance(dialog, ConfirmImpactDialog)
    dialog.accepted_with.emit("")
    dialog.accept()


def test_edit_validate_save_enable_disable_with_live_counts_screenshots(
    qloop: asyncio.AbstractEventLoop, console: MainWindow, engine: StackConnection
) -> None:
    tag = uuid.uuid4().hex[:6]

    async def scenario() -> None:
        client: EngineClient = console.client
        await track(engine, f"wf-{tag}", "Order Completed", order_id=f"o-{tag}", total=12)
        page = console.show_page("workflows")
        assert isinstance(page, WorkflowsPage)
        await quiet(page)
        assert page.table.topLevelItemCount() >= 10
        page.show_item("order-confirmation")
        await wait_until(lambda: page.loaded is not None and page.counts is not None, timeout=20)
        await quiet(page)
        assert page.loaded is not None and page.loaded["id"] == "order-confirmation"

        # Live counts reach the box (the order above was confirmed).
        async def counted() -> bool:
            page.load_counts()
            await quiet(page)
            node = page.graph.node("confirm")
            return node is not None and "sent" in node.counts and not node.counts.startswith("0")

        deadline = time.monotonic() + 90  # a loaded machine: the mail may take a while
        while not await counted():
            assert time.monotonic() < deadline, "counts did not reach the graph"
            await asyncio.sleep(0.5)
        assert "enrolled" in (page.graph.node(TRIGGER).counts or "")  # type: ignore[union-attr]
        save_screenshot(console, "workflows")

        # Edit the send step in the side form: a template that does not exist is a problem
        # named on the box and in the list; the text follows.
        page.graph.select("confirm")
        assert page.form.step is not None and page.form.step["id"] == "confirm"
        box = page.form.fields["template"]
        box.setCurrentText("no-such-template")  # type: ignore[attr-defined]
        page.form._edited("template")
        assert 'template = "no-such-template"' in page.text.toPlainText()
        page.validate()
        await quiet(page)
        node = page.graph.node("confirm")
        assert node is not None and "no-such-template" in node.problem
        assert page.problem_list.count() == 1
        assert "step confirm: template 'no-such-template' does not exist" in (
            page.problem_list.item(0).text()
        )
        save_screenshot(console, "workflows-problem")

        # The text view: a mistake keeps the last good draft; a good edit redraws the graph.
        good = page.current_draft()
        page.text.setPlainText("id = ")
        page.text_to_graph()
        assert page.text_error is not None and page.current_draft() == good
        definition = {**good, "name": f"Order confirmation {tag}"}
        definition["steps"] = [{**good["steps"][0], "template": "order-confirmation"}]
        page.text.setPlainText(to_toml(definition))
        page.text_to_graph()
        await quiet(page)
        assert page.current_draft() == tomllib.loads(to_toml(definition))
        assert page.problems == [] and page.graph.node("confirm").problem == ""  # type: ignore[union-attr]
        assert "Unsaved changes" in page.dirty.text()

        # Save: a new version, not live.
        before = page.loaded["latest"]
        page.save()
        await wait_until(lambda: page.loaded["version"] == before + 1, timeout=20)  # type: ignore[index]
        await quiet(page)
        assert page.loaded["live_version"] != page.loaded["version"]  # type: ignore[index]
        assert page.enable_button.isEnabled() and not page.disable_button.isEnabled()
        assert "is not live" in page.state.text()

        # Enable it (confirmed), then disable it (confirmed).
        page.ask_enable()
        await confirm(page)
        await wait_until(
            lambda: (
                page.loaded is not None and page.loaded["live_version"] == page.loaded["version"]
            ),
            timeout=20,
        )
        await quiet(page)
        versions = await client.request_one(
            "workflows.versions", {"workflow": "order-confirmation"}
        )
        assert versions["live_version"] == before + 1
        assert page.disable_button.isEnabled()
        page.ask_disable()
        await confirm(page)
        await wait_until(
            lambda: page.loaded is not None and page.loaded["live_version"] is None, timeout=20
        )
        await quiet(page)
        assert "no version is live" in page.state.text()
        # Put the starter back live for the other tests of the module.
        await client.request_one(
            "workflows.enable", {"workflow": "order-confirmation", "version": 1}
        )

    run(qloop, scenario(), timeout=180)


def test_a_branching_workflow_screenshot(
    qloop: asyncio.AbstractEventLoop, console: MainWindow
) -> None:
    async def scenario() -> None:
        page = console.show_page("workflows")
        assert isinstance(page, WorkflowsPage)
        await quiet(page)
        page.show_item("abandoned-cart")
        await wait_until(lambda: page.loaded is not None and page.counts is not None, timeout=20)
        await quiet(page)
        assert page.graph.node("wait-for-order") is not None
        page.graph.select("wait-for-order")
        save_screenshot(console, "workflows-wait")
        page.set_draft(BRANCHY | {"id": "abandoned-cart"}, [])
        page.validate()
        await quiet(page)
        page.graph.select("big-spender")
        save_screenshot(console, "workflows-branch")
        page.tabs.setCurrentIndex(1)
        save_screenshot(console, "workflows-text")

    run(qloop, scenario(), timeout=120)
