"""The Templates page against a real engine: the preview as a real contact is the mail the
capture inbox receives, lint marks lines as you type, a save is live at once, versions diff."""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import time
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import orjson
import pytest
from PySide6.QtCore import QEventLoop, QTimer, QUrl
from PySide6.QtGui import QTextCursor
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from console import pages
from console.client import EngineClient
from console.main_window import MainWindow
from console.pages import inbox
from console.pages.template_panels import SAMPLE_EVENT, VersionsDialog
from console.pages.templates import TemplatesPage
from console.stack import StackConnection
from engine.ingest.validate import format_time
from tests.console.conftest import (
    close_console,
    connect_as_engine,
    open_console,
    run,
    save_screenshot,
    wait_until,
)

os.environ.setdefault("QTWEBENGINE_CHROMIUM_FLAGS", "--no-sandbox --disable-gpu")

pytestmark = pytest.mark.qt_log_ignore(
    r"^QRhiGles2: Failed to create",
    r"^Failed to create RHI for backend",
    r"^GPUInfo not initialized",
    r"^Unable to detect GPU vendor",
    r"^This plugin does not support",
    # The preview loads nothing remote (the inbox view's policy): product images are refused.
    r"^Refused to load the image 'https://",
)


def spin(ms: int) -> None:
    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


@pytest.fixture(scope="module")
def webengine(qapp: QApplication) -> Iterator[None]:
    """Start QtWebEngine once for the module (its zygotes live as long as the application)."""
    if inbox.WEBENGINE_ERROR:
        yield
        return
    from PySide6.QtWebEngineWidgets import QWebEngineView

    view = QWebEngineView()
    view.resize(200, 100)
    view.show()
    view.setHtml("<p>warm up</p>", QUrl("about:blank"))
    deadline = time.monotonic() + 20
    while view.page().isLoading() and time.monotonic() < deadline:
        spin(50)
    view.close()
    view.deleteLater()
    spin(200)
    yield


@pytest.fixture
def console(
    qloop: asyncio.AbstractEventLoop, engine: StackConnection, webengine: None
) -> Iterator[MainWindow]:
    pages.register_builtin_pages()
    window = run(qloop, open_console(EngineClient(), engine))
    try:
        yield window
    finally:
        run(qloop, close_console(window, settle=0.3))


async def sign_up(engine: StackConnection, user: str, address: str, first: str) -> str:
    now = format_time(time.time())
    event: dict[str, Any] = {
        "type": "track",
        "event": "Signed Up",
        "userId": user,
        "properties": {"method": "email", "source": "checkout"},
        "context": {"traits": {"email": address, "first_name": first, "last_name": "Hopper"}},
        "messageId": uuid.uuid4().hex,
        "timestamp": now,
        "receivedAt": now,
    }
    nc = await connect_as_engine(engine)
    try:
        await nc.jetstream().publish(
            "events.track", orjson.dumps(event), headers={"Nats-Msg-Id": event["messageId"]}
        )
    finally:
        await nc.close()
    return str(event["messageId"])


async def inbox_raw(window: MainWindow, address: str, count: int = 1) -> list[bytes]:
    """The raw mails to ``address`` in the capture inbox, oldest first."""
    found: list[dict[str, Any]] = []

    async def listed() -> bool:
        nonlocal found
        entries = await window.client.request("inbox.list", {"limit": 200, "search": address})
        found = [e for e in entries if address in e["rcpt_tos"]]
        return len(found) >= count

    deadline = time.monotonic() + 30
    while not await listed():
        assert time.monotonic() < deadline, f"no mail to {address}"
        await asyncio.sleep(0.2)
    found.sort(key=lambda e: e["received_at"])
    out = []
    for entry in found:
        shown = await window.client.request("inbox.show", {"id": entry["id"]})
        out.append(shown["raw"].encode("utf-8"))
    return out


def html_part(raw: bytes) -> str:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    part = message.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")


def subject_of(raw: bytes) -> str:
    return str(email.message_from_bytes(raw, policy=email.policy.default)["Subject"])


async def quiet(page: TemplatesPage) -> None:
    await asyncio.sleep(0.6)  # past the draft delay
    await wait_until(lambda: not page.busy() and not page._draft_delay.isActive(), timeout=20)


def test_edit_preview_as_a_contact_lint_save_and_versions(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop, console: MainWindow, engine: StackConnection
) -> None:
    page = console.show_page("templates")
    assert isinstance(page, TemplatesPage)
    address = f"grace-{uuid.uuid4().hex[:6]}@example.com"
    user = f"u-{uuid.uuid4().hex[:6]}"

    async def scenario() -> None:
        # The first template opens with sample data.
        await wait_until(lambda: page.last_preview is not None, timeout=30)
        assert page.last_preview is not None and page.last_preview["target"]["sample"] is True
        assert page.states.currentWidget() is page.splitter
        welcome = page.chooser.findData("welcome-1")
        assert welcome >= 0
        page.chooser.setCurrentIndex(welcome)
        page._chooser_activated(welcome)
        await wait_until(
            lambda: page.template is not None and page.template["id"] == "welcome-1", timeout=10
        )
        await quiet(page)

        # A real contact signs up and gets the welcome mail.
        event_id = await sign_up(engine, user, address, "Grace")
        [sent] = await inbox_raw(console, address)

        # Search them by name, pick them: the preview is that very mail.
        page.side.search.setText("grace")
        await wait_until(lambda: page.side.results.count() > 0, timeout=10)
        page.choose_contact(user)
        await wait_until(
            lambda: (
                page.last_preview is not None and page.last_preview["target"]["contact"] == user
            ),
            timeout=15,
        )
        await quiet(page)
        preview = page.last_preview
        assert preview is not None and preview["target"]["event_id"] == event_id
        assert preview["html"] == html_part(sent)
        assert page.preview.html_view.html() == preview["html"]
        assert "Grace" in page.preview.about.text()
        headers = {
            page.preview.headers.item(r, 0).text() for r in range(page.preview.headers.rowCount())
        }
        assert {"From", "To", "Subject", "List-Unsubscribe"} <= headers
        assert page.side.events.count() >= 3  # latest, the sign-up, sample
        assert page.last_lint is not None and page.last_lint["findings"] == []
        save_screenshot(console, "templates")

        # Mobile width.
        page.preview.mobile.click()
        await asyncio.sleep(0.5)
        assert page.preview.html_view.width() == 375
        save_screenshot(page.preview, "templates-mobile-preview")
        page.preview.desktop.click()

        # A typo in the body: lint finds it on its line, as you type.
        found = page.body.document().find("</mj-text>")
        assert not found.isNull()
        line = found.blockNumber() + 1
        cursor = QTextCursor(found)
        cursor.setPosition(found.selectionStart())
        page.body.setTextCursor(cursor)
        page.body.insertPlainText("{{ contcat.first_name }}")
        assert page.dirty and page.save_button.isEnabled()
        await quiet(page)
        lint = page.last_lint
        assert lint is not None and lint["draft"] is True
        finding = next(f for f in lint["findings"] if f["code"] == "undefined")
        assert finding["line"] == line
        assert page.body.markers[line][0] == "error"
        items = [page.side.findings.item(i).text() for i in range(page.side.findings.count())]
        assert any(f"body line {line}: " in t and "did you mean" in t for t in items)
        page.side.finding_activated.emit("body", 5)
        assert page.body.textCursor().blockNumber() == 4
        save_screenshot(console, "templates-lint")
        page.body.undo()

        # Sample event data for the same contact.
        page.side.events.setCurrentIndex(page.side.events.findData(SAMPLE_EVENT))
        await quiet(page)
        assert page.last_preview is not None and page.last_preview["target"]["sample"] is True

        # Save a new subject: the next sign-up gets it, no restart.
        page.subject.setText("Welcome aboard, {{ contact.first_name }}!")
        page._edited()
        await quiet(page)
        page.save()
        await wait_until(
            lambda: page.template is not None and page.template["version"] == 2 and not page.dirty,
            timeout=15,
        )
        assert "Saved welcome-1 v2" in console.messages.text()
        second = f"bea-{uuid.uuid4().hex[:6]}@example.com"
        await sign_up(engine, f"u-{uuid.uuid4().hex[:6]}", second, "Bea")
        [mail] = await inbox_raw(console, second)
        assert subject_of(mail) == "Welcome aboard, Bea!"

        # Versions and the diff.
        page.open_versions()
        dialog = page._versions
        assert isinstance(dialog, VersionsDialog)
        await wait_until(lambda: "Welcome aboard" in dialog.diff.toPlainText(), timeout=10)
        assert dialog.versions.count() == 2
        save_screenshot(dialog, "templates-versions")
        dialog.reject()

    run(qloop, scenario(), timeout=120)


def test_the_route_picker_saves_the_route_with_the_version_screenshot(
    qloop: asyncio.AbstractEventLoop, console: MainWindow
) -> None:
    page = console.show_page("templates")
    assert isinstance(page, TemplatesPage)

    async def scenario() -> None:
        await wait_until(lambda: page.template is not None and page.route_names, timeout=30)
        index = page.chooser.findData("feedback-request")
        page.chooser.setCurrentIndex(index)
        page._chooser_activated(index)
        await wait_until(
            lambda: page.template is not None and page.template["id"] == "feedback-request",
            timeout=10,
        )
        await quiet(page)
        assert page.route.currentData() is None  # the starter names no route
        assert page.route_names == ["default"]
        page.route.setCurrentIndex(page.route.findData("default"))
        page.route.activated.emit(page.route.currentIndex())
        assert page.dirty and page.draft()["route"] == "default"
        await quiet(page)
        save_screenshot(console, "templates-route")
        before = page.template["version"] if page.template else 0
        page.save()
        await wait_until(
            lambda: page.template is not None and page.template["version"] == before + 1,
            timeout=15,
        )
        stored = await console.client.request_one("templates.get", {"template": "feedback-request"})
        assert stored["route"] == "default" and stored["version"] == before + 1
        assert page.route.currentData() == "default"
        # Back to "the workflow's": the next version names no route.
        page.route.setCurrentIndex(0)
        page.route.activated.emit(0)
        await quiet(page)
        page.save()
        await wait_until(
            lambda: page.template is not None and page.template["version"] == before + 2,
            timeout=15,
        )
        stored = await console.client.request_one("templates.get", {"template": "feedback-request"})
        assert stored["route"] is None

    run(qloop, scenario(), timeout=120)
