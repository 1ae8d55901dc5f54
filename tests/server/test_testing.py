"""trio_c10k.testing, used as a site's own tests would use it: no other server or socket here."""

from __future__ import annotations

import json
import threading

import httpx
import pytest
import trio
from django.contrib.auth.models import User

from trio_c10k import HandshakeRejected, WebSocketConfig, database_sync_to_thread
from trio_c10k.testing import LiveServer, live_server_in_thread, open_live_server

#: seconds each test is given
TEST_TIMEOUT = 10


def user_named(username: str) -> User:
    return User.objects.get_or_create(username=username)[0]


async def test_a_handler_sees_the_user_logged_in() -> None:
    alice = await database_sync_to_thread(user_named)("alice")
    with trio.fail_after(TEST_TIMEOUT):
        async with open_live_server() as site, site.websocket("/t/ws/info/7/", user=alice) as ws:
            info = json.loads(await ws.read_message())
    assert info["user"] == "alice"
    assert info["number"] == 7


async def test_without_a_user_the_handler_sees_an_anonymous_one() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with open_live_server() as site, site.websocket("/t/ws/info/8/") as ws:
            info = json.loads(await ws.read_message())
    assert info["user"] is None
    assert info["user_type"] == "AnonymousUser"


async def test_the_session_cookie_joins_the_cookies_given() -> None:
    bob = await database_sync_to_thread(user_named)("bob")
    with trio.fail_after(TEST_TIMEOUT):
        async with open_live_server() as site:
            # A plain view answers the handshake with its own response: the body is the
            # environ it saw, Cookie header included.
            with pytest.raises(HandshakeRejected) as rejected:
                async with site.websocket(
                    "/t/environ/", user=bob, headers=[("Cookie", "sessionid=stale; flavour=vanilla")]
                ):
                    pass
    flavour, session = json.loads(rejected.value.body)["HTTP_COOKIE"].split("; ")
    assert flavour == "flavour=vanilla"
    assert session.startswith("sessionid=")
    assert session != "sessionid=stale"


async def test_config_overrides_apply_and_the_server_stops_with_the_block() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with open_live_server(threads=1, websocket=WebSocketConfig(max_message_size=1000)) as site:
            assert site.server.config.threads == 1
            port = site.server.addresses[0][1]
            assert (site.url, site.ws_url) == (f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}")
            async with site.websocket("/t/ws/info/9/") as ws:
                assert json.loads(await ws.read_message())["number"] == 9
                assert await ws.read_message() == "handlers may keep attributes on ws"
                ws.write_message("x" * 1001)
                assert await ws.read_message() is None
                assert ws.close_code == 1009  # "message too big": the server's WebSocket limits
        with pytest.raises(OSError, match="connect"):  # refused: nothing listens on the port
            async with site.websocket("/t/ws/info/9/"):
                pass


async def test_an_exception_from_the_blocks_comes_out_as_itself() -> None:
    with trio.fail_after(TEST_TIMEOUT), pytest.raises(LookupError, match="raised by the test"):
        async with open_live_server() as site, site.websocket("/t/ws/info/10/"):
            raise LookupError("raised by the test")


def test_live_server_in_thread_serves_sync_code() -> None:
    with live_server_in_thread(threads=2) as site:
        assert site.server.config.threads == 2
        response = httpx.get(f"{site.url}/t/hello/", timeout=TEST_TIMEOUT)
        assert (response.status_code, response.text) == (200, "Hello, world!\n")
    assert "trio_c10k live server" not in [thread.name for thread in threading.enumerate()]  # joined
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{site.url}/t/hello/", timeout=TEST_TIMEOUT)


def test_c10k_live_server_fixture_with_a_user_logged_in(c10k_live_server: LiveServer) -> None:
    cookie = c10k_live_server.login_sync(user_named("fixture-grace"))
    url = f"{c10k_live_server.url}/t/whoami/"
    response = httpx.get(url, headers={"Cookie": cookie}, timeout=TEST_TIMEOUT)
    assert response.status_code == 200
    assert "You are fixture-grace." in " ".join(response.text.split())
