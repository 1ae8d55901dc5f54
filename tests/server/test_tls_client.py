"""The package's client over ``wss://``, and ``trio_c10k.testing``'s live server with ``tls=True``.

Every server here is ``open_live_server(tls=True)`` (or ``live_server_in_thread``): a real TLS
socket on 127.0.0.1 with the process's throwaway certificate; the clients trust it through the
``LiveServer``'s ``ssl_context`` or ``ca_cert_path``, or do not.
"""

from __future__ import annotations

import json
import ssl
import sys
import urllib.request
import uuid

import httpx
import pytest
import trio

from tests import views
from trio_c10k import HandshakeRejected
from trio_c10k.client import open_websocket
from trio_c10k.testing import _throwaway_certificate, live_server_in_thread, open_live_server

#: seconds each test is given
TEST_TIMEOUT = 10
#: larger than a TLS record (16 KiB) and than a read (64 KiB): many records, many reads
LARGE = 900_000


async def test_wss_echo_text_binary_and_large() -> None:
    messages: list[str | bytes] = [
        "héllo",
        b"\x00\xff" * 10,
        "é" * (LARGE // 2),
        bytes(range(256)) * (LARGE // 256),
    ]
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            open_live_server(tls=True) as site,
            open_websocket(f"{site.ws_url}/t/ws/echo/", ssl_context=site.ssl_context) as ws,
        ):
            for message in messages:  # one at a time: each answer is the message's own
                ws.write_message(message)
                assert await ws.read_message() == message
            for message in messages:  # all at once: the queues hold ciphertext, in order
                ws.write_message(message)
            assert [await ws.read_message() for _ in messages] == messages
    assert ws.close_code == 1000


async def test_the_client_closes_and_both_sides_see_its_code() -> None:
    key = uuid.uuid4().hex
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            open_live_server(tls=True) as site,
            open_websocket(f"{site.ws_url}/t/ws/watch/{key}/", ssl_context=site.ssl_context) as ws,
        ):
            ws.write_message("first")
            await ws.close(4000, "custom")
            assert ws.close_code == 4000  # the server's close frame echoed it
            assert await trio.to_thread.run_sync(views.WS_EVENTS[key]["done"].wait, TEST_TIMEOUT)
    events = views.WS_EVENTS[key]
    assert events["messages"] == ["first"]
    assert events["close_code"] == 4000


async def test_the_server_closes_and_the_client_reads_the_end() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            open_live_server(tls=True) as site,
            open_websocket(f"{site.ws_url}/t/ws/return/", ssl_context=site.ssl_context) as ws,
        ):
            assert await ws.read_message() == "bye"
            assert await ws.read_message() is None  # the handler returned: 1000
            assert ws.close_code == 1000


async def test_a_certificate_the_client_does_not_trust_is_a_clear_error() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with open_live_server(tls=True) as site:
            # The default context trusts the system's CAs, not the throwaway one.
            with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed") as raised:
                async with open_websocket(f"{site.ws_url}/t/ws/echo/"):
                    pass
            assert raised.value.verify_message == "unable to get local issuer certificate"
            # The server is unaffected: a client that trusts it is served.
            async with site.websocket("/t/ws/return/") as ws:
                assert await ws.read_message() == "bye"


async def test_wss_to_a_plain_server_and_ws_to_a_tls_one_fail_clearly() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with open_live_server() as plain, open_live_server(tls=True) as secure:
            # The plain server reads the ClientHello as a bad request and answers in plain text,
            # which is no TLS record (OpenSSL 3.0 says WRONG_VERSION_NUMBER).
            with pytest.raises(ssl.SSLError) as refused:
                async with open_websocket(
                    f"wss{plain.ws_url[2:]}/t/ws/echo/", ssl_context=secure.ssl_context
                ):
                    pass
            assert not isinstance(refused.value, ssl.SSLCertVerificationError)
            with pytest.raises(HandshakeRejected) as rejected:
                async with open_websocket(f"ws{secure.ws_url[3:]}/t/ws/echo/"):
                    pass
    assert rejected.value.status == 400
    assert rejected.value.body == b"This port speaks HTTPS: use an https:// URL.\n"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ws://127.0.0.1:9/", "ssl_context is for wss:// URLs"),
        ("https://127.0.0.1:9/", "expected a ws://host/path or wss://host/path URL"),
    ],
)
async def test_urls_the_client_refuses_before_connecting(url: str, message: str) -> None:
    # Port 9 (discard): nothing listens there, and nothing is tried.
    with pytest.raises(ValueError, match=message):
        async with open_websocket(url, ssl_context=ssl.create_default_context()):
            pass


async def test_open_live_server_with_tls_serves_https_and_wss() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with open_live_server(tls=True) as site:
            port = site.server.addresses[0][1]
            assert (site.url, site.ws_url) == (f"https://127.0.0.1:{port}", f"wss://127.0.0.1:{port}")
            async with site.websocket("/t/ws/info/5/") as ws:
                info = json.loads(await ws.read_message())
            assert (info["number"], info["scheme"]) == (5, "https")  # ws.request knows
            async with httpx.AsyncClient(verify=site.ssl_context) as client:
                response = await client.get(f"{site.url}/t/environ/", timeout=TEST_TIMEOUT)
    assert response.status_code == 200
    assert response.json()["wsgi.url_scheme"] == "https"


def test_live_server_in_thread_hands_out_the_ca_file() -> None:
    # What a program other than Python's would be given: the CA as a PEM file.
    with live_server_in_thread(tls=True) as site:
        assert site.url.startswith("https://127.0.0.1:")
        assert site.ca_cert_path is not None
        context = ssl.create_default_context(cafile=site.ca_cert_path)
        with urllib.request.urlopen(f"{site.url}/t/hello/", context=context, timeout=TEST_TIMEOUT) as answer:
            assert (answer.status, answer.read()) == (200, b"Hello, world!\n")
    assert site.spki_hash is not None
    assert len(site.spki_hash) == 44  # base64 of a SHA-256


def test_without_trustme_tls_is_a_clear_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _throwaway_certificate.cache_clear()  # made again by the next test that asks
    monkeypatch.setitem(sys.modules, "trustme", None)  # as if not installed
    with (
        pytest.raises(ImportError, match=r"tls=True needs the trustme package: pip install"),
        live_server_in_thread(tls=True),
    ):
        pass
    with live_server_in_thread() as site:  # plain servers do not need it
        assert site.ssl_context is None
