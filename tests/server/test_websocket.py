"""WebSocket handlers over real sockets: handshake, API, lifecycle, limits, RFC 6455 behaviour.

Clients: the package's own (``trio_c10k.client``), a raw wsproto client for byte-level
protocol errors, and the ``websockets`` library's client (in a worker thread), which we
did not write.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import struct
import uuid
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing
from django.test import Client as DjangoClient
from django.test import override_settings
from websockets.sync.client import connect as websockets_connect
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from tests import views
from tests.helpers import (
    Client,
    RawWebSocket,
    StartServer,
    frame,
    header,
    login,
    port_of,
    read_until_closed,
    url,
)
from trio_c10k import CloseReason, ConnectionClosed, HandshakeRejected, Server, WebSocketConfig, _ws_tasks
from trio_c10k._protocol import INCOMING_QUEUE
from trio_c10k.client import open_websocket


def upgrade_headers(**overrides: str) -> list[tuple[str, str]]:
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
        **overrides,
    }
    return [(k, v) for k, v in headers.items() if v]


# -- handshake ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status", "reason"),
    [
        pytest.param({"Upgrade": "", "Connection": ""}, 426, b"only speaks WebSocket", id="plain-http"),
        pytest.param({"Connection": "keep-alive"}, 400, b"Connection: Upgrade", id="no-connection-upgrade"),
        pytest.param({"Sec-WebSocket-Key": "c2hvcnQ="}, 400, b"16 bytes", id="short-key"),
        pytest.param({"Sec-WebSocket-Key": "not base64!"}, 400, b"16 bytes", id="bad-key"),
        pytest.param({"Sec-WebSocket-Version": "8"}, 426, b"Sec-WebSocket-Version", id="old-version"),
    ],
)
async def test_bad_handshakes_get_plain_http_answers(
    server: Server, headers: dict[str, str], status: int, reason: bytes
) -> None:
    client = await Client.open(server)
    response, body = await client.get("/t/ws/echo/", headers=upgrade_headers(**headers))
    assert response.status_code == status
    assert reason in body
    if status == 426 and "Sec-WebSocket-Version" in headers:
        assert header(response, b"sec-websocket-version") == b"13"


def test_post_upgrade_gets_400() -> None:
    # Django's test client skips the CSRF check, so the request reaches the view.
    response = DjangoClient().post("/t/ws/echo/", headers=dict(upgrade_headers()))
    assert response.status_code == 400
    assert b"must use GET" in response.content


def test_under_a_server_that_cannot_upgrade_the_view_answers_500() -> None:
    response = DjangoClient().get("/t/ws/echo/", headers=dict(upgrade_headers()))
    assert response.status_code == 500
    assert b"needs the trio_c10k server" in response.content


async def test_rejection_reaches_our_client_as_an_exception(server: Server) -> None:
    with pytest.raises(HandshakeRejected) as info:
        async with open_websocket(url(server, "/no/such/socket/")):
            pass
    assert info.value.status == 404


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (None, True),  # not a browser
        ("http://127.0.0.1:{port}", True),  # the request's own scheme, host and port
        ("http://127.0.0.1:{other}", False),  # another port of the same host
        ("http://127.0.0.1", False),
        ("https://127.0.0.1:{port}", False),  # the page was https, the socket is not
        ("http://localhost:{port}", False),  # in ALLOWED_HOSTS, but another site
        ("https://evil.example", False),
        ("null", False),
    ],
)
async def test_origin_check(
    server: Server, origin: str | None, allowed: bool, caplog: pytest.LogCaptureFixture
) -> None:
    origin = origin and origin.format(port=port_of(server), other=port_of(server) % 65535 + 1)
    await check_origin(server, origin, allowed)
    if not allowed:
        assert any("foreign origin" in r.getMessage() for r in caplog.records)


async def check_origin(
    server: Server, origin: str | None, allowed: bool, headers: list[tuple[str, str]] | None = None
) -> None:
    """The socket ``/t/ws/hello/`` opens from ``origin``, or is refused with 403 and a reason."""
    if allowed:
        async with open_websocket(url(server, "/t/ws/hello/"), origin=origin, headers=headers or ()) as ws:
            assert await ws.read_message() == "Hello!"
    else:
        with pytest.raises(HandshakeRejected) as info:
            async with open_websocket(url(server, "/t/ws/hello/"), origin=origin, headers=headers or ()):
                pass
        assert info.value.status == 403
        assert b"not allowed" in info.value.body


async def test_origin_check_can_be_turned_off(server: Server) -> None:
    with override_settings(TRIO_C10K_CHECK_ORIGIN=False):
        async with open_websocket(url(server, "/t/ws/hello/"), origin="https://evil.example") as ws:
            assert await ws.read_message() == "Hello!"


@override_settings(CSRF_TRUSTED_ORIGINS=["https://*.example.org", "http://localhost:8000"])
@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://app.example.org", True),
        ("http://app.example.org", False),
        ("http://localhost:8000", True),
        ("http://localhost:8001", False),
    ],
)
async def test_origin_in_csrf_trusted_origins_is_allowed(server: Server, origin: str, allowed: bool) -> None:
    await check_origin(server, origin, allowed)


@pytest.mark.parametrize(("proto", "allowed"), [("https", True), ("http", False)])
async def test_origin_scheme_behind_a_tls_proxy(start_server: StartServer, proto: str, allowed: bool) -> None:
    # TLS ends at the proxy: X-Forwarded-Proto (with --proxy-headers) makes the request
    # https, as the page that opened the socket was.
    server = await start_server(proxy_headers=True)
    origin = f"https://127.0.0.1:{port_of(server)}"
    await check_origin(server, origin, allowed, [("X-Forwarded-Proto", proto)])


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [(["chat.v1", "chat.v2"], "chat.v2"), (["chat.v1"], "chat.v1"), (["other"], None), ([], None)],
)
async def test_subprotocol_negotiation(server: Server, offered: list[str], chosen: str | None) -> None:
    async with open_websocket(url(server, "/t/ws/subprotocol/"), subprotocols=offered) as ws:
        assert ws.subprotocol == chosen
        assert await ws.read_message() == str(chosen)


# -- the API ------------------------------------------------------------------------------


async def test_hello_exchange(server: Server) -> None:
    async with open_websocket(url(server, "/t/ws/hello/")) as ws:
        assert await ws.read_message() == "Hello!"
        for n, text in enumerate(["one", "two", "Café"], 1):
            ws.write_message(text)
            assert await ws.read_message() == f"{n}. {text}"
        assert await ws.read_message() == "Goodbye!"
        assert await ws.read_message() is None
        assert ws.close_code == 1000
        assert ws.closed
        assert not ws.open


async def test_echo_text_binary_and_opcodes(server: Server) -> None:
    async with open_websocket(url(server, "/t/ws/echo/")) as ws:
        ws.write_message("text")
        assert await ws.read_message() == "text"
        ws.write_message(b"\x00\xff")
        assert await ws.read_message() == b"\x00\xff"
        ws.write_message("as bytes", opcode=2)
        assert await ws.read_message() == b"as bytes"
        ws.write_message("é".encode(), opcode=1)
        assert await ws.read_message() == "é"
        await ws.send_message("awaited")
        assert await ws.read_message() == "awaited"
        with pytest.raises(ValueError, match="opcode"):
            ws.write_message("x", opcode=9)
        big = os.urandom(200_000)
        ws.write_message(big)
        assert await ws.read_message() == big


async def test_request_user_session_and_url_arguments(server: Server) -> None:
    cookies = await login(server, "ada")
    async with open_websocket(url(server, "/t/ws/info/42/?q=x"), headers=[("Cookie", cookies)]) as ws:
        info = json.loads(await ws.read_message())
        assert await ws.read_message() == "handlers may keep attributes on ws"
    assert info["number"] == 42
    assert info["path"] == "/t/ws/info/42/"
    assert info["user"] == "ada"
    assert info["session"] == "teal"
    assert info["remote_address"][0] == "127.0.0.1"
    # What the request keeps for the life of the connection (README, "ws.request").
    assert info["user_type"] == "User"  # the user itself, not the lazy wrapper
    assert (info["scheme"], info["query"], info["url_name"]) == ("http", "x", "ws-info")
    assert info["host"].startswith("127.0.0.1:")
    assert {"REMOTE_ADDR", "PATH_INFO", "QUERY_STRING", "HTTP_COOKIE", "HTTP_HOST"} <= set(info["meta"])
    assert "wsgi.url_scheme" in info["meta"]
    dropped = {"HTTP_SEC_WEBSOCKET_KEY", "HTTP_UPGRADE", "HTTP_CONNECTION", "wsgi.input", "wsgi.errors"}
    assert not dropped & set(info["meta"])
    assert not {"_stream", "_messages", "auser"} & set(info["attributes"])


@pytest.mark.parametrize(
    ("allow_ips", "client"),
    [
        (("127.0.0.1",), "203.0.113.9"),  # a trusted proxy: the client it names
        (("10.0.0.0/8",), None),  # an untrusted peer: itself
    ],
)
async def test_behind_a_proxy_the_websocket_shows_the_client(
    start_server: StartServer,
    caplog: pytest.LogCaptureFixture,
    allow_ips: tuple[str, ...],
    client: str | None,
) -> None:
    caplog.set_level(logging.INFO)
    server = await start_server(
        proxy_headers=True, forwarded_allow_ips=allow_ips, websocket=WebSocketConfig(max_message_size=1000)
    )
    headers = [("X-Forwarded-For", "198.51.100.1, 203.0.113.9")]
    async with open_websocket(url(server, "/t/ws/info/7/"), headers=headers) as ws:
        info = json.loads(await ws.read_message())
        assert await ws.read_message() == "handlers may keep attributes on ws"
        port = ws._stream.socket.getsockname()[1]
        ws.write_message("x" * 1001)  # a WebSocket log line: closing with 1009
        assert await ws.read_message() is None
    expected = [client, None] if client else ["127.0.0.1", port]
    assert info["remote_address"] == expected
    shown = client or f"127.0.0.1:{port}"
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith(f'{client or "127.0.0.1"} - "GET /t/ws/info/7/ HTTP/1.1" 101') for m in messages)
    assert any(m.startswith(f"{shown}: closing with 1009") for m in messages)


async def test_write_message_from_a_django_view_in_a_worker_thread(server: Server) -> None:
    async with (
        open_websocket(url(server, "/t/ws/room/")) as a,
        open_websocket(url(server, "/t/ws/room/")) as b,
    ):
        assert await a.read_message() == "joined"
        assert await b.read_message() == "joined"
        client = await Client.open(server)
        response, body = await client.get("/t/ws/broadcast/?message=hi+all")
        assert (response.status_code, body) == (200, b"2")
        assert await a.read_message() == "hi all"
        assert await b.read_message() == "hi all"


# -- lifecycle ----------------------------------------------------------------------------


async def test_handler_return_closes_with_1000(server: Server) -> None:
    async with open_websocket(url(server, "/t/ws/return/")) as ws:
        assert await ws.read_message() == "bye"
        assert await ws.read_message() is None
        assert ws.close_code == 1000


async def test_handler_exception_closes_with_1011_and_is_logged(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_websocket(url(server, "/t/ws/raise/")) as ws:
        assert await ws.read_message() == "about to fail"
        assert await ws.read_message() is None
        assert ws.close_code == 1011
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.name == "trio_c10k.websocket"
    assert record.exc_info is not None
    assert "handler failed" in str(record.exc_info[1])
    async with open_websocket(url(server, "/t/ws/hello/")) as ws:  # the server is unaffected
        assert await ws.read_message() == "Hello!"


async def test_client_close_code_is_seen_by_the_handler(server: Server) -> None:
    key = uuid.uuid4().hex
    async with open_websocket(url(server, f"/t/ws/watch/{key}/")) as ws:
        ws.write_message("first")
        await ws.close(4000, "custom")
        assert ws.close_code == 4000  # echoed by the server
    await trio.to_thread.run_sync(views.WS_EVENTS[key]["done"].wait, 5)
    events = views.WS_EVENTS[key]
    assert events["messages"] == ["first"]
    assert events["close_code"] == 4000
    assert isinstance(events["write_error"], ConnectionClosed)
    assert events["write_error"].code == 4000


async def test_peer_vanishing_ends_every_task(server: Server) -> None:
    key = uuid.uuid4().hex
    raw = await RawWebSocket.open(server, f"/t/ws/watch/{key}/")
    await raw.send(TextMessage(data="hello"))
    await trio.testing.wait_all_tasks_blocked()
    assert server.statistics().websockets == 1
    await raw.stream.aclose()  # no close frame
    await trio.to_thread.run_sync(views.WS_EVENTS[key]["done"].wait, 5)
    assert views.WS_EVENTS[key]["messages"] == ["hello"]
    assert views.WS_EVENTS[key]["close_code"] == 1006
    await trio.testing.wait_all_tasks_blocked()
    assert server.websockets == set()
    assert server.statistics().connections == 0


async def test_writing_after_close_raises(server: Server) -> None:
    async with open_websocket(url(server, "/t/ws/return/")) as ws:
        assert await ws.read_message() == "bye"
        assert await ws.read_message() is None
        with pytest.raises(ConnectionClosed) as info:
            ws.write_message("x")
        assert info.value.code == 1000


async def test_graceful_shutdown_closes_websockets_with_1001(server: Server) -> None:
    async with open_websocket(url(server, "/t/ws/echo/")) as ws:
        ws.write_message("still here")
        assert await ws.read_message() == "still here"
        server.shutdown()
        assert await ws.read_message() is None
        assert ws.close_code == 1001


# -- limits -------------------------------------------------------------------------------


async def test_message_over_max_size_closes_with_1009(start_server: StartServer) -> None:
    server = await start_server(websocket=WebSocketConfig(max_message_size=1000))
    async with open_websocket(url(server, "/t/ws/echo/")) as ws:
        ws.write_message("x" * 1000)
        assert await ws.read_message() == "x" * 1000
        ws.write_message("x" * 1001)
        assert await ws.read_message() is None
        assert ws.close_code == 1009


async def test_slow_consumer_is_closed_and_others_get_everything(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_server(websocket=WebSocketConfig(send_queue_size=256 * 1024, close_timeout=1))
    key = uuid.uuid4().hex
    slow = await RawWebSocket.open(server, f"/t/ws/flood/{key}/")  # never reads
    async with open_websocket(url(server, "/t/ws/echo/")) as fast:
        await trio.to_thread.run_sync(views.WS_EVENTS[key]["done"].wait, 10)
        assert views.WS_EVENTS[key]["close_code"] is CloseReason.POLICY_VIOLATION  # ConnectionClosed.code
        for i in range(100):
            fast.write_message(f"message {i}")
        for i in range(100):
            assert await fast.read_message() == f"message {i}"
    assert any("send queue over" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    await trio.testing.wait_all_tasks_blocked()
    assert server.websockets == set()
    await slow.stream.aclose()


async def test_close_handshake_times_out(start_server: StartServer) -> None:
    server = await start_server(websocket=WebSocketConfig(close_timeout=0.3))
    raw = await RawWebSocket.open(server, "/t/ws/return/")
    assert (await raw.next_event()).data == "bye"
    close = await raw.next_event()
    assert isinstance(close, CloseConnection)
    assert close.code == 1000
    # We never answer the close frame: the server disconnects after close_timeout.
    assert await read_until_closed(raw.stream) == b""


async def test_keepalive_ping_timeout_closes_with_1011(start_server: StartServer) -> None:
    server = await start_server(websocket=WebSocketConfig(ping_interval=0.1, ping_timeout=0.2))
    raw = await RawWebSocket.open(server, "/t/ws/echo/")
    ping = await raw.next_event()
    assert isinstance(ping, Ping)  # not answered
    close = await raw.next_event()
    assert isinstance(close, CloseConnection)
    assert close.code == 1011


async def test_keepalive_answered_keeps_the_connection(start_server: StartServer) -> None:
    server = await start_server(websocket=WebSocketConfig(ping_interval=0.05, ping_timeout=0.2))
    raw = await RawWebSocket.open(server, "/t/ws/echo/")
    # The server pings again only once the last ping was answered (else it closes with 1011
    # after ping_timeout): each ping after the first shows the pong before it was counted.
    for _ in range(5):
        ping = await raw.next_event()
        assert isinstance(ping, Ping), ping
        await raw.send(ping.response())
    await raw.send(TextMessage(data="alive"))
    echo = await raw.next_event()
    assert isinstance(echo, TextMessage)
    assert echo.data == "alive"


async def test_keepalive_paced_pings_reach_every_connection(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Steps of 4 connections and 2 pings at most: the pings of 30 connections, all due at
    # once, go out over many steps. Every silent connection gets its ping, then 1011; every
    # one that answers gets ping after ping and stays open.
    monkeypatch.setattr(_ws_tasks, "LOOKS_PER_STEP", 4)
    monkeypatch.setattr(_ws_tasks, "PINGS_PER_STEP", 2)
    server = await start_server(websocket=WebSocketConfig(ping_interval=0.2, ping_timeout=2))
    raws = [await RawWebSocket.open(server, "/t/ws/echo/") for _ in range(30)]

    async def stay_silent(raw: RawWebSocket) -> None:
        ping = await raw.next_event()
        assert isinstance(ping, Ping)
        assert ping.payload == b"keepalive"
        close = await raw.next_event()
        assert isinstance(close, CloseConnection)
        assert close.code == 1011

    async def answer(raw: RawWebSocket) -> None:
        for _ in range(3):
            ping = await raw.next_event()
            assert isinstance(ping, Ping)
            await raw.send(ping.response())
        await raw.send(TextMessage(data="alive"))
        while isinstance(event := await raw.next_event(), Ping):
            await raw.send(event.response())
        assert isinstance(event, TextMessage)
        assert event.data == "alive"

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for i, raw in enumerate(raws):
                nursery.start_soon(stay_silent if i % 2 else answer, raw)


# -- RFC 6455 behaviour -------------------------------------------------------------------


async def test_fragmented_message_with_ping_between_fragments(server: Server) -> None:
    raw = await RawWebSocket.open(server, "/t/ws/echo/")
    await raw.send(TextMessage(data="frag", message_finished=False))
    await raw.send(Ping(payload=b"between"))
    pong = await raw.next_event()
    assert isinstance(pong, Pong)
    assert pong.payload == b"between"
    await raw.send(TextMessage(data="mented", message_finished=False))
    await raw.send(TextMessage(data="!", message_finished=True))
    echo = await raw.next_event()
    assert (echo.data, echo.message_finished) == ("fragmented!", True)


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        pytest.param([frame(1, b"\xff\xfe")], 1007, id="invalid-utf8"),
        pytest.param([frame(1, b"ok \xe2\x82", fin=False)], None, id="utf8-split-ok-so-far"),
        pytest.param(
            [frame(1, b"caf\xc3", fin=False), frame(0, b"\x28", fin=False)],
            1007,
            id="invalid-utf8-across-fragments-before-the-end",
        ),
        pytest.param([frame(1, b"x", rsv=4)], 1002, id="reserved-bit"),
        pytest.param([frame(3, b"x")], 1002, id="unknown-opcode"),
        pytest.param([frame(8, struct.pack("!H", 999))], 1002, id="invalid-close-code"),
        pytest.param([frame(8, struct.pack("!H", 1005))], 1002, id="reserved-close-code-1005"),
        pytest.param([b"\x81\x05hello"], 1002, id="unmasked-client-frame"),
    ],
)
async def test_protocol_errors_close_with_the_rfc_code(
    server: Server, frames: list[bytes], code: int | None
) -> None:
    raw = await RawWebSocket.open(server, "/t/ws/echo/")
    await raw.stream.send_all(b"".join(frames))
    if code is None:
        # A valid prefix of a message: nothing happens yet; a ping still works.
        await raw.stream.send_all(frame(9, b"p"))
        assert isinstance(await raw.next_event(), Pong)
        return
    close = await raw.next_event()
    assert isinstance(close, CloseConnection)
    assert close.code == code


async def test_valid_close_codes_are_echoed(server: Server) -> None:
    for code in (1000, 1001, 3000, 4999):
        raw = await RawWebSocket.open(server, "/t/ws/echo/")
        await raw.send(CloseConnection(code=code, reason="bye"))
        answer = await raw.next_event()
        assert isinstance(answer, CloseConnection)
        assert answer.code == code
        assert await read_until_closed(raw.stream) == b""


async def test_binary_frames_and_pings_from_raw_client(server: Server) -> None:
    raw = await RawWebSocket.open(server, "/t/ws/echo/")
    await raw.send(BytesMessage(data=b"\x01\x02"))
    assert (await raw.next_event()).data == b"\x01\x02"


# -- a client we did not write --------------------------------------------------------------


async def test_websockets_library_client(server: Server) -> None:
    port = port_of(server)

    def talk() -> tuple[list[Any], str | None, int | None]:
        received: list[Any] = []
        with websockets_connect(f"ws://127.0.0.1:{port}/t/ws/hello/", open_timeout=5) as ws:
            received.append(ws.recv(timeout=5))
            for text in ["one", "two", "Café"]:
                ws.send(text)
                received.append(ws.recv(timeout=5))
            received.append(ws.recv(timeout=5))
            try:
                ws.recv(timeout=5)
            except Exception as exc:  # ConnectionClosedOK
                received.append(type(exc).__name__)
            return received, ws.subprotocol, ws.close_code

    with trio.fail_after(20):
        received, subprotocol, code = await trio.to_thread.run_sync(talk)
    assert received == ["Hello!", "1. one", "2. two", "3. Café", "Goodbye!", "ConnectionClosedOK"]
    assert subprotocol is None
    assert code == 1000


async def test_websockets_library_client_subprotocol_and_binary(server: Server) -> None:
    port = port_of(server)

    def talk() -> tuple[Any, Any, Any]:
        with websockets_connect(
            f"ws://127.0.0.1:{port}/t/ws/subprotocol/", subprotocols=["chat.v1", "chat.v2"], open_timeout=5
        ) as ws:
            chosen = ws.recv(timeout=5)
        with websockets_connect(f"ws://127.0.0.1:{port}/t/ws/echo/", open_timeout=5) as ws:
            ws.send(b"\x00binary")
            echoed = ws.recv(timeout=5)
            ws.ping(b"p").wait(timeout=5)
        return chosen, ws.subprotocol, echoed

    with trio.fail_after(20):
        chosen, subprotocol, echoed = await trio.to_thread.run_sync(talk)
    assert chosen == "chat.v2"
    assert subprotocol is None
    assert echoed == b"\x00binary"


@pytest.mark.parametrize("compression", [True, False])
async def test_permessage_deflate_with_the_websockets_client(
    start_server: StartServer, compression: bool
) -> None:
    server = await start_server(websocket=WebSocketConfig(compression=compression))
    port = port_of(server)
    text = "compressible " * 1000

    def talk() -> tuple[Any, Any]:
        # The websockets client offers permessage-deflate by default.
        with websockets_connect(f"ws://127.0.0.1:{port}/t/ws/echo/", open_timeout=5) as ws:
            ws.send(text)
            return ws.recv(timeout=5), ws.response.headers.get("Sec-WebSocket-Extensions")

    with trio.fail_after(20):
        echoed, extensions = await trio.to_thread.run_sync(talk)
    assert echoed == text
    if compression:
        assert extensions is not None
        assert extensions.startswith("permessage-deflate")
    else:
        assert extensions is None


async def test_broadcast_with_one_slow_member(start_server: StartServer) -> None:
    """The server streams to a room; one member never reads. It is closed (1008) with its
    queue within the bound; the others receive every message, in order."""
    bound = 256 * 1024
    server = await start_server(websocket=WebSocketConfig(send_queue_size=bound, close_timeout=1))
    slow = await RawWebSocket.open(server, "/t/ws/room/")  # reads nothing after the handshake
    payload = b"y" * 65536
    received: list[bytes] = []
    async with open_websocket(url(server, "/t/ws/room/")) as fast:
        assert await fast.read_message() == "joined"
        await trio.testing.wait_all_tasks_blocked()
        members = list(views.ROOM)
        assert len(members) == 2

        async def read_all() -> None:
            for _ in range(100):
                received.append(await fast.read_message())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all)
            for i in range(100):
                for member in members:
                    if member.open:
                        member.write_message(payload[:-4] + i.to_bytes(4, "big"))
                    # Never more than the bound and the frame just added is held for the slow
                    # member (plus the batch the writer task is sending).
                    assert member._queued <= bound + len(payload) + 10  # a 10-byte header
                await trio.lowlevel.checkpoint()
    assert [int.from_bytes(m[-4:], "big") for m in received] == list(range(100))
    slow_member = next(m for m in members if m.close_code != 1000)
    assert slow_member.close_code == 1008
    await slow.stream.aclose()


# -- database access from handlers --------------------------------------------------------


async def test_database_sync_to_thread_runs_the_orm_in_a_worker_thread(server: Server) -> None:
    prefix = f"db{uuid.uuid4().hex[:8]}"
    async with open_websocket(url(server, f"/t/ws/db/{prefix}/")) as ws:
        ws.write_message("count")
        first = json.loads(await ws.read_message())
        await login(server, f"{prefix}-lin")  # creates the user, in another request
        ws.write_message("count")
        second = json.loads(await ws.read_message())
    assert (first["count"], second["count"]) == (0, 1)  # a real query, each time
    assert first["thread"].startswith("trio_c10k worker")  # the server's threads, as views
    with trio.fail_after(5):
        await trio.to_thread.run_sync(views.WS_EVENTS[prefix]["done"].wait)
    assert views.WS_EVENTS[prefix]["error"] == "raised in the worker thread"  # raised in the handler


async def test_database_sync_to_thread_outside_a_server_uses_trio_threads() -> None:
    count, thread = await views.user_count_and_thread("nobody-has-this-prefix")
    assert count == 0
    assert not thread.startswith("trio_c10k worker")


async def test_close_does_not_wait_for_room_in_a_full_inbox(server: Server) -> None:
    """A side that closes without reading what it was sent still sees the peer's close frame."""
    async with open_websocket(url(server, "/t/ws/burst/40/")) as ws:
        with trio.fail_after(5):
            while len(ws._inbox) < INCOMING_QUEUE:  # until the reader waits for room
                await ws._wait()  # woken by each message the reader delivers
        with trio.fail_after(2):  # well under close_timeout (10 s)
            await ws.close()
        assert ws.close_code == 1000


async def test_an_exception_from_the_client_block_comes_out_as_itself(server: Server) -> None:
    with pytest.raises(LookupError, match="from the block"):  # not inside an ExceptionGroup
        async with open_websocket(url(server, "/t/ws/echo/")):
            raise LookupError("from the block")
