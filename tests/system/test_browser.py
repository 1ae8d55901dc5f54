"""A real browser on the echo page: headless Chromium, driven by Playwright, against a real server.

Playwright's sync API runs its own asyncio loop, which cannot share a thread with trio: the
server runs in a thread of its own (``trio_c10k.testing``'s ``c10k_live_server`` fixture), and
the test itself is a plain sync test driving the browser.

Chromium comes from Debian (``apt-get install chromium``), Playwright from PyPI (the ``test``
extra); ``nox -s tests`` installs both. Without them the test fails and says what to install.

``SAVE_SCREENSHOTS=1 python3 -m pytest tests/system/test_browser.py`` also saves the final page as
``docs/echo.png``; otherwise the test writes no file in the repository.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.helpers import open_page, require_browser
from trio_c10k.testing import LiveServer

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "echo.png"
MESSAGES = ["one", "two", "Café"]


@dataclass
class Visit:
    """What the browser saw on the echo page."""

    #: the text of each paragraph in ``#log``, in order
    log: list[str]
    #: the socket's close event: code, reason, wasClean
    close: dict[str, Any]
    #: uncaught page errors, and console messages of type "error" with their source URL
    errors: list[str]
    #: the URL of the page's socket
    socket_url: str
    #: whether the browser held the page for a secure context (https:// with a trusted certificate)
    secure: bool


def chat_on_echo_page(url: str, screenshot: Path | None, args: Iterable[str] = ()) -> Visit:
    """Open the echo page, say each of MESSAGES, wait until the socket is closed (blocking);
    ``args`` go to Chromium."""
    from playwright.sync_api import expect

    with open_page(args) as (page, errors):
        page.goto(url)
        log = page.locator("#log p")
        expect(log).to_have_text(["Hello!"])
        # The page's script keeps its socket in a top-level `const ws`; record how it closes.
        page.evaluate(
            """() => ws.addEventListener("close", (event) => {
                window.closeEvent = {code: event.code, reason: event.reason, wasClean: event.wasClean};
            })"""
        )
        message_box = page.get_by_label("Message")
        send = page.get_by_role("button", name="Send")
        for n, message in enumerate(MESSAGES, start=1):
            message_box.press_sequentially(message)
            send.click()
            expect(log.nth(n)).to_have_text(f"{n}. {message}")
            expect(message_box).to_have_value("")
        expect(log.last).to_have_text("Connection closed.")

        if screenshot is not None:
            page.screenshot(path=screenshot)
        socket_url, secure = page.evaluate("[ws.url, window.isSecureContext]")
        return Visit(log.all_text_contents(), page.evaluate("window.closeEvent"), errors, socket_url, secure)


def test_echo_page_in_chromium(c10k_live_server: LiveServer) -> None:
    require_browser()
    screenshot = SCREENSHOT if os.environ.get("SAVE_SCREENSHOTS") == "1" else None
    visit = chat_on_echo_page(f"{c10k_live_server.url}/test/", screenshot)
    assert visit.log == ["Hello!", "1. one", "2. two", "3. Café", "Goodbye!", "Connection closed."]
    # The handler returned, so the server closed with 1000 and the browser answered the close.
    assert visit.close == {"code": 1000, "reason": "", "wasClean": True}
    # The example site has no favicon: Django's 404 for it is the only error the page may log.
    assert [error for error in visit.errors if not error.endswith("/favicon.ico)")] == []
