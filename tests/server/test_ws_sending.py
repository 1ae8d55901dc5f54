"""The send side of a WebSocket over real sockets: large messages, the close frame after a
half-written frame, and fan-out that loses nothing for the members that read.

The server runs in the test's own trio run: a test takes a connection's server-side
``WebSocket`` from its group (``/t/ws/group/NAME/`` joins one) and writes to it directly, as
another task of the site would.
"""

from __future__ import annotations

import socket
import struct
import uuid

import pytest
import trio
import trio.testing
from websockets.sync.client import connect as websockets_connect

from tests.helpers import StartServer, _opened, port_of
from trio_c10k import Config, ConfigError, Group, Server, WebSocket, WebSocketConfig, _fanout, send_message
from trio_c10k._cli import build_parser, config_from_args
from trio_c10k._frames import encode_frame
from trio_c10k.client import _handshake

#: the reason of the close frame sent to a peer that does not read
SLOW_REASON = "send queue full: the client reads too slowly"


def close_payload(code: int, reason: str) -> bytes:
    return struct.pack("!H", code) + reason.encode()


def parse_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The whole server frames (unmasked) at the start of ``data``, as (opcode, payload), and
    the bytes after them (the start of a frame cut short)."""
    frames, at = [], 0
    while at + 2 <= len(data):
        length, start = data[at + 1] & 0x7F, at + 2
        if length == 126:
            length, start = int.from_bytes(data[start : start + 2], "big"), start + 2
        elif length == 127:
            length, start = int.from_bytes(data[start : start + 8], "big"), start + 8
        if start + length > len(data):
            break
        frames.append((data[at] & 0x0F, data[start : start + length]))
        at = start + length
    return frames, data[at:]


async def join(
    server: Server, name: str, *, receive_buffer: int | None = None
) -> tuple[trio.SocketStream, WebSocket]:
    """A raw client in the group ``name`` (once it read "joined"), and its server-side
    WebSocket. The client reads only when the test does; ``receive_buffer`` shrinks its kernel
    buffer (set before connecting, as TCP needs)."""
    members = set(Group(name))
    sock = trio.socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    await sock.connect(("127.0.0.1", port_of(server)))
    stream = trio.SocketStream(sock)
    _opened.append(stream)
    path = f"/t/ws/group/{name}/"
    _, _, received = await _handshake(stream, f"127.0.0.1:{port_of(server)}", path, (), None, ())
    joined = encode_frame("joined")  # the handler says it once it made the socket a member
    with trio.fail_after(5):
        while len(received) < len(joined):
            received += await stream.receive_some(len(joined) - len(received))
    assert received == joined
    [ws] = set(Group(name)) - members
    return stream, ws


async def read_to_the_end(stream: trio.SocketStream) -> tuple[bytes, bool]:
    """Everything the server sends until the connection ends; and whether it ended with a reset."""
    data = bytearray()
    error = None
    with trio.fail_after(20):
        try:
            while chunk := await stream.receive_some(1 << 20):
                data += chunk
        except trio.BrokenResourceError as exc:
            error = exc.__cause__
    assert error is None or isinstance(error, ConnectionResetError)
    return bytes(data), error is not None


# -- one large message --------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [pytest.param(bytes(range(256)) * 12_000, id="3MB-binary"), pytest.param("é" * 1_000_000, id="2MB-text")],
)
async def test_a_message_larger_than_the_send_queue_goes_out_whole(
    start_server: StartServer, message: str | bytes
) -> None:
    """The `websockets` client, reading at full speed, gets its echo whole, byte-exact, with the
    default send queue (1 MiB): the bound applies to what a peer leaves unread."""
    server = await start_server(websocket=WebSocketConfig(max_message_size=8 * 1024 * 1024))
    port = port_of(server)

    def echo() -> tuple[str | bytes, str | bytes]:
        with websockets_connect(f"ws://127.0.0.1:{port}/t/ws/echo/", max_size=None, open_timeout=5) as ws:
            ws.send(message)
            first = ws.recv(timeout=10)
            ws.send("and after it")  # the connection is still open
            return first, ws.recv(timeout=10)

    with trio.fail_after(30):
        echoed, after = await trio.to_thread.run_sync(echo)
    assert echoed == message
    assert after == "and after it"


async def test_the_close_frame_follows_a_half_written_frame(start_server: StartServer) -> None:
    """A large frame the kernel took only part of, then a frame refused: the peer, reading,
    gets the whole large frame and then the 1008 close frame, never one inside the other."""
    server = await start_server(websocket=WebSocketConfig(send_queue_size=64 * 1024))
    name = f"g-{uuid.uuid4().hex[:12]}"
    stream, ws = await join(server, name)
    big = b"x" * (4 * 1024 * 1024)
    await trio.testing.wait_all_tasks_blocked()  # a new scheduling round: the frame goes straight out
    ws.write_message(big)
    left = ws._queued  # the kernel took part of it: the frame is half written (checked below)
    ws.write_message(b"refused")  # the backlog is over the bound: the peer is closed with 1008
    assert ws.close_code == 1008
    data, reset = await read_to_the_end(stream)
    assert parse_frames(data) == ([(2, big), (8, close_payload(1008, SLOW_REASON))], b"")
    assert not reset
    assert 64 * 1024 < left < len(big)


async def test_a_half_written_frame_given_up_on_is_reset_not_followed(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A peer that does not read: the server gives up with a frame half written. The peer sees
    a prefix of the frames and a reset; no close frame (or anything else) spliced in."""
    bound = 64 * 1024
    server = await start_server(websocket=WebSocketConfig(send_queue_size=bound, close_timeout=0.5))
    name = f"g-{uuid.uuid4().hex[:12]}"
    stream, ws = await join(server, name, receive_buffer=4096)
    big, more = b"x" * (4 * 1024 * 1024), b"y" * (2 * bound)
    await trio.testing.wait_all_tasks_blocked()  # a new scheduling round: the frame goes straight out
    ws.write_message(big)
    left = ws._queued  # the kernel took part of it: the frame is half written (checked below)
    await trio.testing.wait_all_tasks_blocked()  # the writer task is stuck sending the rest
    for _ in range(3):  # the third finds a backlog over the bound
        if ws.open:
            ws.write_message(more)
    assert ws.close_code == 1008
    await trio.testing.wait_all_tasks_blocked()  # the handler ended, the server closed the socket
    assert ws._stream.socket.fileno() == -1
    data, reset = await read_to_the_end(stream)
    sent = encode_frame(big) + encode_frame(more)
    assert len(data) < len(sent)
    assert data == sent[: len(data)]  # a prefix, nothing spliced into it
    assert reset
    assert 0 < left < len(big)
    assert any("send queue over" in r.getMessage() for r in caplog.records)


# -- fan-out ------------------------------------------------------------------------------


async def read_frames(stream: trio.SocketStream, count: int, into: list[bytes]) -> None:
    """Read as fast as possible until ``count`` data frames came."""
    buffer = b""
    while len(into) < count:
        buffer += await stream.receive_some(1 << 20)
        frames, buffer = parse_frames(buffer)
        into.extend(payload for _, payload in frames)


async def test_send_message_loses_nothing_for_readers_and_closes_the_stuck_one(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A burst far larger than the send queue, to a room of fast readers and one that never
    reads: the producer waits, the readers get everything, the stuck one is closed with 1008
    after ``send_timeout``, and no queue grows past half the bound and one frame."""
    bound, size, count, timeout = 64 * 1024, 16 * 1024, 1000, 0.5  # 16 MB: 250 times the queue
    server = await start_server(websocket=WebSocketConfig(send_queue_size=bound, send_timeout=timeout))
    name = f"g-{uuid.uuid4().hex[:12]}"
    fast = [await join(server, name) for _ in range(3)]
    _, stuck = await join(server, name, receive_buffer=4096)  # never reads
    received: list[list[bytes]] = [[] for _ in fast]
    largest = 0
    closed_after: list[float] = []

    async def watch_stuck(start: float) -> None:
        await stuck.wait_closed()
        closed_after.append(trio.current_time() - start)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for (stream, _), into in zip(fast, received, strict=True):
                nursery.start_soon(read_frames, stream, count, into)
            nursery.start_soon(watch_stuck, trio.current_time())
            for i in range(count):
                sent = await Group(name).send_message(i.to_bytes(4, "big") * (size // 4))
                assert sent == len(fast) + stuck.open
                largest = max(largest, *(ws._queued for _, ws in fast), stuck._queued)
    expected = [i.to_bytes(4, "big") * (size // 4) for i in range(count)]
    assert received == [expected] * len(fast)  # every message, in order
    assert stuck.close_code == 1008
    assert closed_after[0] >= timeout
    assert all(ws.open for _, ws in fast)
    assert largest <= bound // 2 + size + 8  # half the queue and one frame
    assert any("send queue still over" in r.getMessage() for r in caplog.records)


async def test_broadcast_still_drops_the_stuck_member_without_waiting(start_server: StartServer) -> None:
    """The same burst with the never-blocking ``broadcast``: the member that does not read is
    closed with 1008 at once, without the producer ever waiting."""
    bound, size = 64 * 1024, 16 * 1024
    server = await start_server(websocket=WebSocketConfig(send_queue_size=bound, send_timeout=60))
    name = f"g-{uuid.uuid4().hex[:12]}"
    _, stuck = await join(server, name, receive_buffer=4096)
    group = Group(name)
    i = 0
    with trio.fail_after(5):
        while stuck.open:
            group.broadcast(i.to_bytes(4, "big") * (size // 4))  # never blocks: not even awaited
            i += 1
            await trio.lowlevel.checkpoint()
    assert stuck.close_code == 1008
    assert stuck._queued <= bound + size + 8 + len(close_payload(1008, SLOW_REASON)) + 2


async def test_send_message_to_closed_or_no_sockets(start_server: StartServer) -> None:
    server = await start_server()
    name = f"g-{uuid.uuid4().hex[:12]}"
    assert await Group(name).send_message("to nobody") == 0
    stream, ws = await join(server, name)
    await stream.aclose()
    await ws.wait_closed()
    assert await send_message([ws], "to a closed one") == 0
    with pytest.raises(TypeError, match="str or bytes, not int"):
        await send_message([], 3)  # type: ignore[arg-type]  # on purpose


# -- the option ---------------------------------------------------------------------------


def test_send_timeout_option() -> None:
    assert WebSocketConfig().send_timeout == 10.0
    args = build_parser().parse_args(["app", "--ws-send-timeout", "2.5"])
    assert config_from_args(args).websocket.send_timeout == 2.5
    for bad in (0, -1):
        with pytest.raises(ConfigError, match="send_timeout"):
            Config(websocket=WebSocketConfig(send_timeout=bad))


class FakeBroker:
    """Records what would go to Redis."""

    def __init__(self) -> None:
        self.published: list[tuple[str, str | bytes]] = []

    def publish(self, group: str, data: str | bytes) -> None:
        self.published.append((group, data))


async def test_with_a_broker_send_message_publishes_once_after_the_local_members(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await start_server()
    name = f"g-{uuid.uuid4().hex[:12]}"
    stream, _ = await join(server, name)
    broker = FakeBroker()
    monkeypatch.setattr(_fanout, "_broker", broker)
    assert await Group(name).send_message("to every process") == 1
    assert broker.published == [(name, "to every process")]
    frames: list[bytes] = []
    await read_frames(stream, 1, frames)
    assert frames == [b"to every process"]
    assert await send_message(Group(name), "this process only") == 1
    assert broker.published == [(name, "to every process")]  # never through the broker
