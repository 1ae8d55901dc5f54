"""Headless Chromium on the echo page over ``https://``, its WebSocket over ``wss://``.

The server is ``trio_c10k.testing``'s live server with ``tls=True`` (a throwaway certificate
from a throwaway CA). Chromium reads no CA file; it is told to accept the certificate's
public key, by its SPKI hash, with ``--ignore-certificate-errors-spki-list``, and nothing
else: a certificate with another key still fails, so the page shows that Chromium received
the server's own certificate, over TLS, for the page and for its socket. Without the flag
the certificate is refused, which shows Chromium does check it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import open_page, require_browser
from trio_c10k.testing import LiveServer, live_server_in_thread

from .test_browser import chat_on_echo_page


@pytest.fixture
def tls_site() -> Iterator[LiveServer]:
    with live_server_in_thread(tls=True) as site:
        yield site


def test_echo_page_over_https_and_wss(tls_site: LiveServer) -> None:
    require_browser()
    assert tls_site.url.startswith("https://")
    trusted = [f"--ignore-certificate-errors-spki-list={tls_site.spki_hash}"]
    visit = chat_on_echo_page(f"{tls_site.url}/test/", None, trusted)
    assert visit.socket_url == f"{tls_site.ws_url}/test/ws/"  # wss://, built from location
    assert visit.secure  # https:// with the certificate accepted: a secure context
    assert visit.log == ["Hello!", "1. one", "2. two", "3. Café", "Goodbye!", "Connection closed."]
    # The handler returned: the server's close frame (1000) went over TLS, the browser answered.
    assert visit.close == {"code": 1000, "reason": "", "wasClean": True}
    assert [error for error in visit.errors if not error.endswith("/favicon.ico)")] == []


def test_without_the_spki_hash_chromium_refuses_the_certificate(tls_site: LiveServer) -> None:
    require_browser()
    from playwright.sync_api import Error

    with open_page() as (page, _), pytest.raises(Error, match="net::ERR_CERT_AUTHORITY_INVALID"):
        page.goto(f"{tls_site.url}/test/")
