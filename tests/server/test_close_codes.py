"""Close codes are ``trio_c10k.CloseReason`` members wherever the code is a known one (the
server's own closes, a peer's close, ``ConnectionClosed.code``), over real sockets; an
application's code (3000-4999) stays a plain int, and ``close(code=...)`` takes ints."""

from __future__ import annotations

import logging
import struct
import uuid
from typing import Any

import pytest
import trio
import trio.testing
import wsproto.frame_protocol
from wsproto.connection import Connection

import trio_c10k
from tests import views
from tests.helpers import RawWebSocket, StartServer, client_close_code, frame, next_close, raw_server, url
from trio_c10k import CloseReason, ConnectionClosed, WebSocketConfig
from trio_c10k.client import open_websocket


def test_the_public_enum_is_the_one_wsprotos_events_carry() -> None:
    # A peer's code arrives as a member of wsproto's enum: the public name is that enum, so
    # ``ws.close_code is CloseReason.NORMAL_CLOSURE`` holds without any conversion.
    assert trio_c10k.CloseReason is wsproto.frame_protocol.CloseReason
    assert "CloseReason" in trio_c10k.__all__
    # An IntEnum: comparing with the number keeps working, and str() and format() print the
    # number (``ConnectionClosed`` messages show 1009, not MESSAGE_TOO_BIG).
    code = CloseReason.MESSAGE_TOO_BIG
    assert code == 1009
    assert (str(code), f"{code}") == ("1009", "1009")
    assert str(ConnectionClosed(code, "too big")) == "WebSocket closed with code 1009: too big"


@pytest.mark.parametrize(
    ("config", "data", "code"),
    [
        pytest.param({}, frame(8, struct.pack("!H", 1000)), CloseReason.NORMAL_CLOSURE, id="peer-1000"),
        pytest.param({}, frame(8, struct.pack("!H", 1001)), CloseReason.GOING_AWAY, id="peer-1001"),
        # A close frame without a code is 1005 for the side that gets it (RFC 6455 section 7.1.5).
        pytest.param({}, frame(8, b""), CloseReason.NO_STATUS_RCVD, id="peer-no-code"),
        pytest.param({}, frame(1, b"x", rsv=4), CloseReason.PROTOCOL_ERROR, id="reserved-bit"),
        pytest.param({}, frame(1, b"\xff"), CloseReason.INVALID_FRAME_PAYLOAD_DATA, id="invalid-utf8"),
        pytest.param(
            {"max_message_size": 100}, frame(1, b"x" * 101), CloseReason.MESSAGE_TOO_BIG, id="too-big"
        ),
        pytest.param(
            {"ping_interval": 0.05, "ping_timeout": 0.1}, b"", CloseReason.INTERNAL_ERROR, id="ping-timeout"
        ),
    ],
)
async def test_every_close_the_server_makes_carries_the_name(
    start_server: StartServer,
    caplog: pytest.LogCaptureFixture,
    config: dict[str, Any],
    data: bytes,
    code: CloseReason,
) -> None:
    # Raw bytes in; the close frame the client gets, and the handler's ``close_code`` and
    # ``ConnectionClosed.code`` (a write after the end), the named member itself; the log
    # line of a close the server decided shows the number.
    caplog.set_level(logging.INFO, logger="trio_c10k.websocket")
    server = await start_server(websocket=WebSocketConfig(**config))
    key = uuid.uuid4().hex
    raw = await RawWebSocket.open(server, f"/t/ws/watch/{key}/")
    await raw.stream.send_all(data)
    assert (await next_close(raw)).code == code
    await trio.to_thread.run_sync(views.WS_EVENTS[key]["done"].wait, 10)
    events = views.WS_EVENTS[key]
    assert events["close_code"] is code
    assert events["write_error"].code is code
    logged = [r.getMessage() for r in caplog.records if r.name == "trio_c10k.websocket"]
    if code in (CloseReason.NORMAL_CLOSURE, CloseReason.GOING_AWAY, CloseReason.NO_STATUS_RCVD):
        assert logged == []  # the peer closed: nothing to say
    else:
        [line] = logged
        assert f"closing with {int(code)}" in line, line


@pytest.mark.parametrize(
    ("code", "seen"),
    [
        pytest.param(1000, CloseReason.NORMAL_CLOSURE, id="known-code-named"),
        pytest.param(4001, 4001, id="application-code-int"),
    ],
)
async def test_a_peers_close_code_reaches_the_handler(
    start_server: StartServer, code: int, seen: int
) -> None:
    # Our client closes with a plain int; the handler's ``close_code`` and the
    # ``ConnectionClosed`` of its next write carry the member, or the int for a code of its own.
    server = await start_server()
    key = uuid.uuid4().hex
    async with open_websocket(url(server, f"/t/ws/watch/{key}/")) as ws:
        await ws.close(code, "bye")
        assert (ws.close_code, type(ws.close_code)) == (seen, type(seen))  # the server's echo
    await trio.to_thread.run_sync(views.WS_EVENTS[key]["done"].wait, 10)
    events = views.WS_EVENTS[key]
    assert (events["close_code"], type(events["close_code"])) == (seen, type(seen))
    error = events["write_error"]
    assert isinstance(error, ConnectionClosed)
    assert (error.code, type(error.code), error.reason) == (seen, type(seen), "bye")


@pytest.mark.parametrize(
    ("code", "seen"),
    [
        pytest.param(1000, CloseReason.NORMAL_CLOSURE, id="known-code-named"),
        pytest.param(4000, 4000, id="application-code-int"),
    ],
)
async def test_writing_while_closing_raises_with_the_code_sent_by_name(code: int, seen: int) -> None:
    # ``close(code=...)`` takes an int; until the peer answers, a write raises with that code,
    # a member when it is a known one.
    answered = trio.Event()
    codes: list[int] = []

    async def slow_answer(stream: trio.SocketStream, connection: Connection) -> None:
        codes.append(await client_close_code(stream, connection))
        await answered.wait()

    async with (
        raw_server(b"", slow_answer) as address,
        open_websocket(address) as ws,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(ws.close, code)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(ConnectionClosed) as info:
            ws.write_message("too late")
        assert (info.value.code, type(info.value.code)) == (seen, type(seen))
        answered.set()
    assert codes == [code]  # on the wire, the number
