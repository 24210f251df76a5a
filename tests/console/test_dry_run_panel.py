"""The dry-run panel against a real engine: a workflow draft and (from the Segments page's
"Dry run..." button) a segment draft replayed over events published to the engine's stream;
progress while it runs, totals, the per-hour bars, per-domain table and sample recipients as
the engine computed them; a bad draft shows the engine's reason. Screenshots."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import orjson
import pytest
from pytestqt.qtbot import QtBot

from console.main_window import MainWindow
from console.pages.dry_run import DryRunDialog, DryRunPanel
from console.pages.segments import SegmentsPage
from console.pages.workflows import WorkflowsPage
from console.stack import StackConnection
from engine.ingest.validate import format_time
from tests.console.conftest import connect_as_engine, run, save_screenshot, wait_until

pytestmark = pytest.mark.qt_log_ignore(r"^This plugin does not support")

DOMAINS = ("example.com", "example.com", "example.org", "example.net", "example.com")


def quiz_workflow(event: str) -> dict[str, Any]:
    return {
        "id": "quiz-follow-up",
        "name": "Quiz follow-up",
        "category": "transactional",
        "trigger": {"event": event, "where": [{"property": "score", "op": "gte", "value": 5}]},
        "steps": [{"id": "mail", "type": "send", "template": "re-engagement"}],
    }


async def publish(engine: StackConnection, tag: str, event: str) -> None:
    """Five quiz results (four of them 5 or more), as a shop would send them."""
    nc = await connect_as_engine(engine)
    try:
        js = nc.jetstream()
        for k, domain in enumerate(DOMAINS):
            now = format_time(time.time())
            body = {
                "type": "track",
                "userId": f"dry-{tag}-{k}",
                "event": event,
                "properties": {"score": 9 - 2 * k},
                "context": {"traits": {"email": f"dry-{tag}-{k}@{domain}"}},
                "messageId": uuid.uuid4().hex,
                "timestamp": now,
                "receivedAt": now,
            }
            await js.publish(
                "events.track", orjson.dumps(body), headers={"Nats-Msg-Id": body["messageId"]}
            )
    finally:
        await nc.close()


async def finished(panel: DryRunPanel) -> None:
    await wait_until(lambda: not panel.running() and not panel.busy(), timeout=60)


def test_dry_run_panel_and_segments_button_screenshot(
    qloop: asyncio.AbstractEventLoop, console: MainWindow, engine: StackConnection, qtbot: QtBot
) -> None:
    tag = uuid.uuid4().hex[:6]
    event = f"Quiz Finished {tag}"

    async def scenario() -> None:
        await publish(engine, tag, event)
        panel = DryRunPanel(console.client, "workflow", quiz_workflow(event))
        panel.resize(1200, 820)
        panel.show()
        assert "Nothing is sent" in panel.note.text()
        assert panel.pages.currentWidget() is panel.empty
        panel.set_window("1h")
        with qtbot.waitSignal(panel.finished, timeout=60_000) as blocker:
            panel.start()
            await wait_until(lambda: blocker.signal_triggered, timeout=60)
        job = blocker.args[0]
        assert job["state"] == "done", job
        await finished(panel)
        result = panel.result
        assert result is not None and result == job["result"]
        # Scores 9, 7, 5, 3, 1: three reach 5.
        assert result["emails"]["would_send"] == 3
        assert panel.tiles["would_send"].value.text() == "3"
        assert panel.tiles["recipients"].value.text() == "3"
        assert panel.domains.rowCount() == 2
        assert panel.domains.item(0, 0).text() == "example.com"
        assert panel.domains.item(0, 1).text() == "2"
        assert panel.sample.rowCount() == 3
        assert all(f"dry-{tag}-" in panel.sample.item(r, 1).text() for r in range(3))
        assert panel.bars.opts["height"] is not None and sum(panel.bars.opts["height"]) == 3
        assert "3 emails" in panel.note.text() and "Nothing was sent" in panel.note.text()
        assert panel.run_button.isEnabled() and not panel.cancel_button.isEnabled()
        save_screenshot(panel, "dry-run")

        # A bad draft: the engine's reason, and Run is offered again.
        broken = DryRunPanel(console.client, "workflow", {**quiz_workflow(event), "steps": []})
        broken.resize(1000, 400)
        broken.show()
        broken.start()
        await finished(broken)
        assert "a workflow needs at least one [[steps]]" in broken.note.text()
        assert broken.run_button.isEnabled() and broken.result is None
        save_screenshot(broken, "dry-run-error")
        broken.close()
        broken.deleteLater()
        panel.close()
        panel.deleteLater()

        # The Segments page opens the dialog with its draft.
        page = console.show_page("segments")
        assert isinstance(page, SegmentsPage)
        await wait_until(lambda: not page.busy(), timeout=30)
        page.set_text(f"`{event}` where score >= 5 at least once in the last 1 hour")
        page.text_to_tree()
        dialog = page.open_dry_run()
        assert isinstance(dialog, DryRunDialog) and dialog.isVisible()
        assert dialog.panel.result is None and "Nothing is sent" in dialog.panel.note.text()
        save_screenshot(dialog, "segments-dry-run-start")
        dialog.panel.set_window("1h")
        dialog.panel.start()
        await finished(dialog.panel)
        seg = dialog.panel.result
        assert seg is not None and seg["kind"] == "segment", dialog.panel.note.text()
        assert seg["contacts"]["entered"] == 3
        assert "3 contacts" in dialog.panel.note.text()
        assert dialog.panel.sample.rowCount() == 3
        dialog.panel.tabs.setCurrentWidget(dialog.panel.sample)
        save_screenshot(dialog, "segments-dry-run")
        dialog.close()
        await wait_until(lambda: not page.busy(), timeout=30)

        # The Workflows page opens it with the workflow being edited, unsaved edits included.
        flows = console.show_page("workflows")
        assert isinstance(flows, WorkflowsPage)
        await wait_until(lambda: not flows.busy(), timeout=30)
        flows.show_item("order-confirmation")
        await wait_until(lambda: flows.loaded is not None and not flows.busy(), timeout=30)
        assert flows.dry_run_button.isEnabled()
        flows.draft["trigger"] = {"event": event}
        draft = flows.current_draft()
        wf_dialog = flows.open_dry_run()
        assert isinstance(wf_dialog, DryRunDialog) and wf_dialog.isVisible()
        assert wf_dialog.panel.definition == draft
        wf_dialog.panel.set_window("1h")
        wf_dialog.panel.start()
        await finished(wf_dialog.panel)
        flow = wf_dialog.panel.result
        assert flow is not None, wf_dialog.panel.note.text()
        # Every quiz result triggers the edited draft: five contacts with an address.
        assert flow["emails"]["would_send"] == 5, flow
        wf_dialog.close()
        await wait_until(lambda: not flows.busy(), timeout=30)

    run(qloop, scenario(), timeout=180)
