"""A WebSocket peer that sends hostile shapes: every message is bounded in bytes, the inbox too,
and a flood of tiny frames gets its share of the event loop, not all of it (issue 12, rows 3-5, 8).

Raw frames in from a raw socket client, close code and server state out; the deflate bound is
also tested synchronously on wsproto alone.
"""

from __future__ import annotations

import tracemalloc
import zlib

import pytest
import trio
import trio.lowlevel
import trio.testing
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Pong, TextMessage

from tests.helpers import RawWebSocket, StartServer, connect, frame, next_close, port_of
from trio_c10k import Server, WebSocketConfig
from trio_c10k._handshake import accept_deflate
from trio_c10k._protocol import FRAGMENT_COST, FRAMES_PER_STEP
from trio_c10k._websocket import WebSocket
from trio_c10k.client import _handshake

LIMIT = 1000  # max_message_size of the servers here


def deflated(data: bytes) -> bytes:
    """``data`` compressed as one permessage-deflate message (RFC 7692 section 7.2.1)."""
    compressor = zlib.compressobj(wbits=-15)
    return (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


#: 16 MiB of zeros in about 16 KB
BOMB = deflated(bytes(16 * 1024 * 1024))


# -- inflation stops at the limit (row 3) -------------------------------------------------


def test_a_deflate_bomb_is_inflated_no_further_than_the_limit() -> None:
    accepted = accept_deflate("permessage-deflate", max_size=LIMIT)
    assert accepted is not None
    extension, _ = accepted
    server = Connection(ConnectionType.SERVER, [extension])
    server.receive_data(frame(2, BOMB, rsv=4))
    (event,) = server.events()
    assert isinstance(event, CloseConnection)
    assert event.code == 1009
    # zlib stopped after LIMIT + 1 bytes, the rest of the input untouched: the work is bounded.
    assert extension._decompressor is not None
    assert len(extension._decompressor.unconsumed_tail) > len(BOMB) // 2


def test_inflation_is_counted_across_fragments_and_restarts_with_each_message() -> None:
    accepted = accept_deflate("permessage-deflate", max_size=LIMIT)
    assert accepted is not None
    server = Connection(ConnectionType.SERVER, [accepted[0]])
    compressor = zlib.compressobj(wbits=-15)
    first = compressor.compress(b"a" * 600) + compressor.flush(zlib.Z_SYNC_FLUSH)
    rest = (compressor.compress(b"b" * 400) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
    server.receive_data(frame(2, first, rsv=4, fin=False) + frame(0, rest))  # exactly LIMIT
    assert b"".join(event.data for event in server.events()) == b"a" * 600 + b"b" * 400
    server.receive_data(frame(2, deflated(b"c" * LIMIT), rsv=4))  # the next message has the whole limit again
    assert b"".join(event.data for event in server.events()) == b"c" * LIMIT
    server.receive_data(frame(2, deflated(b"d" * (LIMIT + 1)), rsv=4))
    (event,) = server.events()
    assert isinstance(event, CloseConnection)
    assert event.code == 1009


async def test_a_deflate_bomb_closes_with_1009_in_little_memory(start_server: StartServer) -> None:
    server = await start_server(websocket=WebSocketConfig(max_message_size=LIMIT, compression=True))
    stream = await connect(server)
    extensions = [("Sec-WebSocket-Extensions", "permessage-deflate")]
    connection, _, received = await _handshake(
        stream, f"127.0.0.1:{port_of(server)}", "/t/ws/echo/", (), None, extensions
    )
    connection.receive_data(received)
    raw = RawWebSocket(stream, connection)
    bomb = frame(1, BOMB, rsv=4)
    tracemalloc.start()
    try:
        await stream.send_all(bomb)
        close = await next_close(raw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (close.code, close.reason) == (1009, f"message larger than {LIMIT} bytes")
    assert peak < 1024 * 1024  # the bomb's 16 MiB never existed


# -- messages bounded in bytes, whatever their shape (row 4) ---------------------------------


@pytest.mark.parametrize(
    "frames",
    [
        pytest.param(
            [frame(2, b"x", fin=False), *[frame(0, b"", fin=False)] * (LIMIT // FRAGMENT_COST + 1)],
            id="empty-continuation-frames",
        ),
        pytest.param(
            [frame(2, b"ab", fin=False), *[frame(0, b"ab", fin=False)] * (LIMIT // FRAGMENT_COST + 1)],
            id="two-byte-fragments",
        ),
        pytest.param(
            # 400 characters, 1,200 bytes of UTF-8.
            [frame(1, ("€" * 200).encode(), fin=False), frame(0, ("€" * 200).encode())],
            id="multibyte-text-in-fragments",
        ),
    ],
)
async def test_messages_over_the_limit_in_bytes_close_with_1009(
    start_server: StartServer, frames: list[bytes]
) -> None:
    server = await start_server(websocket=WebSocketConfig(max_message_size=LIMIT))
    raw = await RawWebSocket.open(server, "/t/ws/echo/")
    # A ping after them: a server that let them through answers it instead of closing.
    await raw.stream.send_all(b"".join(frames) + frame(9, b"after"))
    event = await raw.next_event()
    assert isinstance(event, CloseConnection), event
    assert (event.code, event.reason) == (1009, f"message larger than {LIMIT} bytes")


async def test_each_continuation_frame_costs_its_payload_and_fragment_cost(start_server: StartServer) -> None:
    server = await start_server(websocket=WebSocketConfig(max_message_size=LIMIT))
    raw = await RawWebSocket.open(server, "/t/ws/echo/")
    at_limit = LIMIT - 500 - FRAGMENT_COST
    await raw.stream.send_all(frame(2, b"x" * 500, fin=False) + frame(0, b"x" * at_limit))
    data = b""
    while len(data) < 500 + at_limit:
        event = await raw.next_event()
        assert isinstance(event, BytesMessage), event
        data += event.data
    assert data == b"x" * (500 + at_limit)
    await raw.stream.send_all(frame(2, b"x" * 500, fin=False) + frame(0, b"x" * (at_limit + 1)))
    close = await next_close(raw)
    assert (close.code, close.reason) == (1009, f"message larger than {LIMIT} bytes")


# -- the inbox bounded in bytes (row 5) ---------------------------------------------------


async def server_side(server: Server) -> WebSocket:
    (ws,) = server.websockets
    return ws


async def test_a_handler_that_does_not_read_holds_about_max_message_size(start_server: StartServer) -> None:
    server = await start_server(websocket=WebSocketConfig(max_message_size=LIMIT))
    raw = await RawWebSocket.open(server, "/t/ws/deaf/")
    await raw.stream.send_all(b"".join(frame(2, bytes(300)) for _ in range(10)))
    await trio.testing.wait_all_tasks_blocked()  # the reader waits for room, the rest unread
    ws = await server_side(server)
    assert len(ws._inbox) == 4  # 4 x 300 bytes: the fourth took it over the limit
    assert ws._inboxed == 1200
    # Once the handler reads, the reader goes on.
    assert await ws.read_message() == bytes(300)
    await trio.testing.wait_all_tasks_blocked()
    assert (len(ws._inbox), ws._inboxed) == (4, 1200)


# -- fairness under floods (row 8) --------------------------------------------------------


class ReaderSteps(trio.abc.Instrument):
    """Counts the steps of the server's WebSocket reader tasks."""

    def __init__(self) -> None:
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name == "trio_c10k websocket reader":
            self.steps += 1


async def test_a_ping_flood_is_served_a_share_at_a_time(server: Server) -> None:
    raw = await RawWebSocket.open(server, "/t/ws/echo/")
    pings = 20 * FRAMES_PER_STEP
    instrument = ReaderSteps()
    trio.lowlevel.add_instrument(instrument)
    try:
        await raw.stream.send_all(b"".join(frame(9, b"%d" % i) for i in range(pings)) + frame(1, b"done"))
        pongs: list[bytes] = []
        while not isinstance(event := await raw.next_event(), TextMessage):
            assert isinstance(event, Pong), event
            pongs.append(event.payload)
    finally:
        trio.lowlevel.remove_instrument(instrument)
    assert event.data == "done"  # the connection is open and served
    # The reader let other tasks run after every FRAMES_PER_STEP frames (one step before: all)...
    assert instrument.steps >= pings // FRAMES_PER_STEP
    # ...and answered the pings of each step with one pong, the last one's (RFC 6455 5.5.3).
    assert pings // FRAMES_PER_STEP <= len(pongs) < pings
    assert pongs[-1] == b"%d" % (pings - 1)
    assert [int(payload) for payload in pongs] == sorted(int(payload) for payload in pongs)
