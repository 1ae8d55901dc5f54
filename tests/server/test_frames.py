"""WebSocket frames: ``trio_c10k._frames`` alone, then how a connection splits received bytes
into frames and writes its own, on both sides, over real sockets.

The reader decodes the common frame (a whole text or binary message in one frame) itself and
hands every other frame to wsproto whole (trio_c10k/_protocol.py, Rule 2). These tests send
bytes built by hand, so that frame boundaries fall where the test wants them: many frames in
one write, one frame over many writes, every length encoding, frames wsproto must refuse.
The server side is tested with a raw client against the echo handler; the client side with a
raw server written here.
"""

from __future__ import annotations

import base64
import os

import pytest
import trio
import trio.testing
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, Ping, Pong, TextMessage

from tests.helpers import (
    RawWebSocket,
    StartServer,
    client_close_code,
    connect,
    frame,
    next_close,
    raw_server,
    url,
)
from trio_c10k import ConnectionClosed, Server, WebSocketConfig
from trio_c10k._frames import MASKED, encode_frame, frame_header, unmask
from trio_c10k.client import open_websocket

# -- the frames alone ------------------------------------------------------------------------


def sample(size: int, kind: type) -> str | bytes:
    if kind is str:
        return "é" * (size // 2) + "a" * (size % 2)
    return bytes(range(256)) * (size // 256) + b"x" * (size % 256)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
@pytest.mark.parametrize("kind", [str, bytes])
def test_server_frames_are_wsprotos(size: int, kind: type) -> None:
    data = sample(size, kind)
    event = TextMessage(data=data) if isinstance(data, str) else BytesMessage(data=data)
    assert encode_frame(data) == Connection(ConnectionType.SERVER).send(event)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
@pytest.mark.parametrize("kind", [str, bytes])
def test_client_frames_are_masked_and_read_back_by_wsproto(size: int, kind: type) -> None:
    data = sample(size, kind)
    encoded = encode_frame(data, masked=True)
    assert encoded[1] & MASKED
    server = Connection(ConnectionType.SERVER)
    server.receive_data(encoded)
    (event,) = server.events()
    assert (event.data, event.message_finished) == (data, True)
    assert encode_frame(data, masked=True) != encoded or size == 0  # a new key each time


@pytest.mark.parametrize(
    ("data", "mask_bit", "expected"),
    [
        pytest.param(frame(1, b"hi", masked=False), 0, (0x81, 2, 4, True), id="client-reads-text"),
        pytest.param(frame(2, b"x" * 200), MASKED, (0x82, 8, 208, True), id="server-reads-2-byte-length"),
        pytest.param(frame(1, b"hi"), 0, (0x81, 6, 8, False), id="client-gets-a-masked-frame"),
        pytest.param(frame(1, b"hi", masked=False), MASKED, (0x81, 2, 4, False), id="server-gets-unmasked"),
        pytest.param(frame(1, b"hi", length_bytes=2), MASKED, (0x81, 8, 10, False), id="non-minimal"),
        pytest.param(frame(1, b"hi", fin=False), MASKED, (0x01, 6, 8, False), id="fragment"),
        pytest.param(frame(9, b"p"), MASKED, (0x89, 6, 7, False), id="ping"),
        pytest.param(frame(1, b"hi"), None, (0x81, 6, 8, False), id="extension-agreed"),
        pytest.param(frame(2, b"x" * 70000)[:14], MASKED, (0x82, 14, 70014, True), id="payload-not-here-yet"),
        pytest.param(b"\x81", MASKED, None, id="one-byte"),
        pytest.param(frame(2, b"x" * 70000)[:5], MASKED, None, id="length-cut"),
    ],
)
def test_frame_header(data: bytes, mask_bit: int | None, expected: tuple[int, int, int, bool] | None) -> None:
    assert frame_header(b"junk" + data, 4, mask_bit) == (
        None if expected is None else (expected[0], expected[1] + 4, expected[2] + 4, expected[3])
    )


def test_unmask_is_its_own_inverse() -> None:
    payload, key = os.urandom(1001), os.urandom(4)
    masked = unmask(payload, key)
    assert masked == bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    assert unmask(masked, key) == payload
    assert unmask(b"", key) == b""


# -- the server side ------------------------------------------------------------------------


async def test_many_frames_in_one_write_are_echoed_in_order(server: Server) -> None:
    raw = await RawWebSocket.open(server, "/t/ws/echo/")
    texts = [f"message {i}" for i in range(40)]  # more than the inbox holds at once
    await raw.stream.send_all(b"".join(frame(1, text.encode()) for text in texts))
    assert [(await raw.next_event()).data for _ in texts] == texts


async def test_a_frame_sent_one_byte_at_a_time(server: Server) -> None:
    raw = await RawWebSocket.open(server, "/t/ws/echo/")
    data = frame(1, "caf\u00e9 ".encode() * 40) + frame(2, b"\x00\xff")  # a 2-byte length, then binary
    for byte in data:
        await raw.stream.send_all(bytes([byte]))
        # The server runs in this trio run: once every task is blocked, its reader has taken
        # this byte and waits for the next one, so each byte is a read of its own.
        await trio.testing.wait_all_tasks_blocked()
    assert (await raw.next_event()).data == "caf\u00e9 " * 40
    assert (await raw.next_event()).data == b"\x00\xff"


async def test_frames_sent_with_the_handshake(server: Server) -> None:
    stream = await connect(server)
    key = base64.b64encode(os.urandom(16))
    await stream.send_all(
        b"GET /t/ws/echo/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: "
        + key
        + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
        + frame(1, b"early")
        + frame(2, b"bird")
    )
    received = b""
    with trio.fail_after(10):
        while b"\r\n\r\n" not in received:
            received += await stream.receive_some(65536)
    head, _, rest = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    raw = RawWebSocket(stream, Connection(ConnectionType.CLIENT))
    raw.ws.receive_data(rest)
    assert (await raw.next_event()).data == "early"
    assert (await raw.next_event()).data == b"bird"


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 300_000])
async def test_every_length_encoding_both_ways(server: Server, size: int) -> None:
    # Up to 65,535 bytes a frame is decoded whole by the reader; a longer one goes through
    # wsproto as it arrives. The client side reads the server's frames the same way.
    text = ("0123456789abcdef" * (size // 16 + 1))[:size]
    async with open_websocket(url(server, "/t/ws/echo/")) as ws:
        ws.write_message(text)
        ws.write_message(text.encode())
        assert await ws.read_message() == text
        assert await ws.read_message() == text.encode()


@pytest.mark.parametrize(
    ("data", "code"),
    [
        pytest.param(frame(1, b"hello", length_bytes=2), 1002, id="2-byte-length-for-5-bytes"),
        pytest.param(frame(2, b"x" * 200, length_bytes=8), 1002, id="8-byte-length-for-200-bytes"),
        pytest.param(
            frame(1, b"ok", fin=False) + frame(1, b"new message"),
            1002,
            id="text-frame-inside-a-fragmented-message",
        ),
        pytest.param(frame(1, b"\xed\xa0\x80"), 1007, id="utf8-surrogate"),
        pytest.param(frame(1, b"x" * 300 + b"\xc3"), 1007, id="utf8-cut-short-in-a-long-frame"),
        pytest.param(frame(9, b"p" * 126, length_bytes=2), 1002, id="ping-longer-than-125"),
    ],
)
async def test_frames_the_reader_must_refuse(server: Server, data: bytes, code: int) -> None:
    raw = await RawWebSocket.open(server, "/t/ws/echo/")
    await raw.stream.send_all(data)
    assert (await next_close(raw)).code == code


async def test_a_header_announcing_too_much_closes_at_once(start_server: StartServer) -> None:
    server = await start_server(websocket=WebSocketConfig(max_message_size=1000))
    raw = await RawWebSocket.open(server, "/t/ws/echo/")
    # The header of a 2,000-byte text frame, and 10 bytes of it: 1009 without waiting for more.
    await raw.stream.send_all(frame(1, b"x" * 2000)[:18])
    assert (await next_close(raw)).code == 1009


async def test_a_long_masked_8_byte_length_frame_one_chunk_at_a_time(server: Server) -> None:
    raw = await RawWebSocket.open(server, "/t/ws/echo/")
    payload = os.urandom(100_000)
    data = frame(2, payload)
    for start in range(0, len(data), 7000):
        await raw.stream.send_all(data[start : start + 7000])
    received = b""
    while len(received) < len(payload):
        event = await raw.next_event()
        received += event.data
    assert received == payload


def write_syscalls() -> int:
    """The write system calls this process made so far (Linux's per-process I/O accounting)."""
    with open("/proc/self/io") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("syscw:"))


async def test_frames_written_in_one_round_leave_in_one_write(server: Server) -> None:
    # The handler writes 200 messages without yielding: the first goes out at once, the
    # other 199 with the flush at the end of the round. One write each would be 200.
    raw = await RawWebSocket.open(server, "/t/ws/bursts/")
    before = write_syscalls()
    await raw.stream.send_all(frame(1, b"200"))
    received = [(await raw.next_event()).data for _ in range(200)]
    writes = write_syscalls() - before
    assert received == [f"burst {i}" for i in range(200)]
    assert writes < 20, f"{writes} writes for 200 frames"  # the margin: other threads' writes


# -- the client side ------------------------------------------------------------------------


async def test_client_reads_frames_that_came_with_the_101() -> None:
    third = frame(1, b"three", masked=False)
    after = frame(1, b"one", masked=False) + frame(2, b"two", masked=False) + third[:3]
    two_read = trio.Event()

    async def rest(stream: trio.SocketStream, _: Connection) -> None:
        await two_read.wait()  # the start of the third frame came with the 101: the rest, later
        await stream.send_all(third[3:])

    async with raw_server(after, rest) as address, open_websocket(address) as ws:
        assert await ws.read_message() == "one"
        assert await ws.read_message() == b"two"
        two_read.set()
        assert await ws.read_message() == "three"


async def test_client_answers_pings_without_being_read() -> None:
    payloads = [b"one", b"two", b"three"]
    pongs: list[bytes] = []
    answered = trio.Event()

    async def ping(stream: trio.SocketStream, connection: Connection) -> None:
        with trio.fail_after(10):
            for sent, payload in enumerate(payloads, 1):  # one at a time: a pong per ping
                await stream.send_all(connection.send(Ping(payload=payload)))
                while len(pongs) < sent:
                    connection.receive_data(await stream.receive_some(65536))
                    pongs.extend(event.payload for event in connection.events() if isinstance(event, Pong))
        answered.set()

    async with raw_server(b"", ping) as address, open_websocket(address):
        with trio.fail_after(10):
            await answered.wait()  # no read_message(): the client's reader answers by itself
    assert pongs == payloads


@pytest.mark.parametrize(
    ("data", "code"),
    [
        pytest.param(frame(1, b"masked"), 1002, id="masked-server-frame"),
        pytest.param(frame(1, b"\xff", masked=False), 1007, id="invalid-utf8"),
        pytest.param(frame(1, b"x" * 10, masked=False, length_bytes=2), 1002, id="non-minimal-length"),
    ],
)
async def test_client_refuses_bad_server_frames(data: bytes, code: int) -> None:
    codes: list[int] = []

    async def watch(stream: trio.SocketStream, connection: Connection) -> None:
        codes.append(await client_close_code(stream, connection))

    config = WebSocketConfig(close_timeout=0.5)
    async with raw_server(data, watch) as address, open_websocket(address, config=config) as ws:
        assert await ws.read_message() is None
        assert ws.close_code == code
    assert codes == [code]


async def test_client_frames_are_masked_and_valid() -> None:
    # wsproto on the server side refuses an unmasked client frame (a close event, not text).
    received: list[str] = []
    both = trio.Event()

    async def read(stream: trio.SocketStream, connection: Connection) -> None:
        parts = ""
        while len(received) < 2:
            connection.receive_data(await stream.receive_some(65536))
            for event in connection.events():
                assert isinstance(event, TextMessage), event
                parts += event.data
                if event.message_finished:
                    received.append(parts)
                    parts = ""
        both.set()

    async with raw_server(b"", read) as address, open_websocket(address) as ws:
        ws.write_message("first")
        ws.write_message("x" * 70_000)
        with trio.fail_after(10):
            await both.wait()
    assert received == ["first", "x" * 70_000]


async def test_writing_while_closing_raises_with_the_code_sent() -> None:
    # The server answers the close only after a while: meanwhile the client is closing.
    answered = trio.Event()

    async def slow_answer(stream: trio.SocketStream, connection: Connection) -> None:
        await client_close_code(stream, connection)
        await answered.wait()

    async with raw_server(b"", slow_answer) as address, open_websocket(address) as ws:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ws.close, 4001, "going")
            await trio.testing.wait_all_tasks_blocked()
            assert not ws.open
            assert not ws.closed
            with pytest.raises(ConnectionClosed) as info:
                ws.write_message("too late")
            assert (info.value.code, info.value.reason) == (4001, "going")
            answered.set()
        assert ws.close_code == 1000  # the answer raw_server sends
