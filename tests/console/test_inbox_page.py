"""The Inbox page against a real engine: a delivered message is listed, read in its tabs."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from PySide6.QtCore import QEventLoop, Qt, QTimer, QUrl
from PySide6.QtWidgets import QApplication, QTextBrowser
from pytestqt.qtbot import QtBot

from console import pages
from console.client import EngineClient
from console.main_window import MainWindow
from console.pages import inbox
from console.pages.inbox import HtmlView, InboxPage, ParsedMessage, guarded_html
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

# QtWebEngine as root without a GPU (the Makefile sets the same for `make test`).
os.environ.setdefault("QTWEBENGINE_CHROMIUM_FLAGS", "--no-sandbox --disable-gpu")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

# What Chromium's compositor says on a headless machine with no OpenGL: it then draws in
# software. Every other Qt warning still fails the test.
pytestmark = pytest.mark.qt_log_ignore(
    r"^QRhiGles2: Failed to create",
    r"^Failed to create RHI for backend",
    r"^GPUInfo not initialized",
    r"^Unable to detect GPU vendor",
    r"^This plugin does not support propagateSizeHints",
)


def spin(ms: int) -> None:
    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


@pytest.fixture(scope="module")
def webengine(qapp: QApplication) -> Iterator[None]:
    """Start QtWebEngine once for the module.

    Its zygote processes live as long as the application (like the QApplication itself); starting
    them here, before any test, keeps them out of each test's leaked-process check. The renderer
    of a page still ends with its page, and a test leaving one behind still fails.
    """
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
    """The console window on the module's real engine, with QtWebEngine started."""
    pages.register_builtin_pages()
    window = run(qloop, open_console(EngineClient(), engine))
    try:
        yield window
    finally:
        run(qloop, close_console(window, settle=0.3))  # the page's renderer process ends


async def publish_order(engine: StackConnection, email: str) -> None:
    """An ``Order Completed`` for a new user with an email, published on the events stream
    (as ingest does), so the engine's order-confirmation workflow sends mail to ``email``."""
    now = format_time(time.time())
    event: dict[str, Any] = {
        "type": "track",
        "event": "Order Completed",
        "userId": f"u-{uuid.uuid4().hex[:8]}",
        "properties": {"order_id": f"o-{uuid.uuid4().hex[:8]}", "total": 42.5, "currency": "EUR"},
        "context": {"traits": {"email": email, "first_name": "Ada"}},
        "messageId": uuid.uuid4().hex,
        "timestamp": now,
        "receivedAt": now,
    }
    nc = await connect_as_engine(engine)
    try:
        js = nc.jetstream()
        await js.publish(
            "events.track", orjson.dumps(event), headers={"Nats-Msg-Id": event["messageId"]}
        )
    finally:
        await nc.close()


def inbox_page(window: MainWindow) -> InboxPage:
    page = window.show_page("inbox")
    assert isinstance(page, InboxPage)
    return page


def test_a_delivered_message_is_listed_and_read(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop, console: MainWindow, engine: StackConnection
) -> None:
    page = inbox_page(console)
    email = f"ada-{uuid.uuid4().hex[:6]}@example.com"

    async def scenario() -> None:
        # Nothing sent yet: the page teaches.
        await wait_until(lambda: page.freshness.text() != "no data yet", timeout=10)
        if not page.entries:
            assert page.states.currentWidget() is page.empty
            assert page.empty.sentence() == "No mail yet \u2014 start demo traffic"
            save_screenshot(console, "inbox-empty")

        await publish_order(engine, email)
        # The 2 s auto-refresh picks it up: no button pressed.
        await wait_until(
            lambda: any(email in e["rcpt_tos"] for e in page.entries), timeout=30, interval=0.2
        )
        assert page.states.currentWidget() is page.splitter
        row = next(i for i, e in enumerate(page.entries) if email in e["rcpt_tos"])
        ident = str(page.entries[row]["id"])
        assert page.model.item(row, 1).text() == email
        subject = str(page.entries[row]["subject"])
        assert subject and page.model.item(row, 2).text() == subject
        assert page.model.item(row, 3).text().endswith(("B", "KiB"))

        page.select(ident)
        await wait_until(lambda: page.message is not None, timeout=10)
        assert page.message is not None
        assert page.subject.text() == subject
        page.tabs.setCurrentWidget(page.headers_table)
        assert page.header_value("Subject") == subject
        assert email in page.header_value("To")
        assert "Thank you for your order, Ada" in page.text_view.toPlainText()
        assert page.message.text.strip() in page.text_view.toPlainText()
        assert page.raw_view.toPlainText() == page.message.raw.replace("\r\n", "\n")

        # The selection survives the auto-refresh.
        await asyncio.sleep(2.5)
        assert page.selected_id() == ident

        # The search goes to the engine; a search with no match says so.
        page.search.setText(email)
        await wait_until(lambda: [e["id"] for e in page.entries] == [ident], timeout=10)
        page.search.setText("no-such-message-anywhere")
        await wait_until(lambda: page.states.currentWidget() is page.no_match, timeout=10)
        qtbot.mouseClick(page.no_match.action_button(), Qt.MouseButton.LeftButton)
        await wait_until(lambda: page.states.currentWidget() is page.splitter, timeout=10)
        page.select(ident)
        await wait_until(lambda: page.selected_id() == ident, timeout=5)

        if page.message.html:
            page.tabs.setCurrentWidget(page.html_view)
            assert page.html_view.html() == page.message.html
            assert page.html_view.uses_webengine == (not inbox.WEBENGINE_ERROR)
        page.tabs.setCurrentWidget(page.text_view)
        await asyncio.sleep(0.3)
        save_screenshot(console, "inbox")

    run(qloop, scenario(), timeout=90)


def test_untrusted_html_gets_a_strict_policy_and_no_script(webengine: None) -> None:
    guarded = guarded_html("<html><head><title>t</title></head><body><img src=x></body></html>")
    assert "default-src 'none'" in guarded
    assert guarded.index("Content-Security-Policy") < guarded.index("<title>")
    assert "Content-Security-Policy" in guarded_html("<p>no head</p>")
    # The project installs QtWebEngine (PySide6-Addons): its absence is a failure, not a skip.
    assert not inbox.WEBENGINE_ERROR, inbox.WEBENGINE_ERROR
    from PySide6.QtWebEngineCore import QWebEngineSettings

    view = HtmlView()
    try:
        view.set_html("<p>hello</p>")
        assert view.uses_webengine
        settings = view.browser.page().settings()  # type: ignore[union-attr]
        attr = QWebEngineSettings.WebAttribute
        assert not settings.testAttribute(attr.JavascriptEnabled)
        assert not settings.testAttribute(attr.LocalContentCanAccessRemoteUrls)
        assert view.browser.page().url().toString() in ("about:blank", "")  # type: ignore[union-attr]
    finally:
        view.deleteLater()
        spin(300)


def test_without_qtwebengine_the_html_shows_in_a_text_browser_with_a_note(
    qtbot: QtBot, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inbox, "WEBENGINE_ERROR", "libQt6WebEngineCore.so.6: cannot open")
    view = HtmlView()
    qtbot.addWidget(view)
    view.set_html("<h1>Your order</h1>")
    assert isinstance(view.browser, QTextBrowser)
    assert "Your order" in view.browser.toPlainText()
    assert view.note.isVisibleTo(view)
    assert "QtWebEngine could not start" in view.note.text()


def test_the_message_is_parsed_with_the_stdlib_parser() -> None:
    raw = (
        "From: Shop <shop@example.com>\r\nTo: ada@example.com\r\n"
        "Subject: =?utf-8?q?Your_order_=E2=9C=93?=\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThanks, Ada\r\n"
        "--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Thanks, <b>Ada</b></p>\r\n"
        "--b--\r\n"
    )
    parsed = ParsedMessage(raw)
    assert parsed.subject == "Your order \u2713"
    assert parsed.text.strip() == "Thanks, Ada"
    assert parsed.html.strip() == "<p>Thanks, <b>Ada</b></p>"
    assert ("To", "ada@example.com") in parsed.headers
