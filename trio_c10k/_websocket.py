"""One WebSocket connection: wsproto frames over a trio stream, for server and client alike.

Rule 1: one reader task turns bytes into whole messages, bounded by ``max_message_size``
(1009 beyond it), and hands them over through a small inbox (``INCOMING_QUEUE``): when the
handler does not read, the reader stops reading and TCP pushes back on the peer.
Rule 2: writes never wait. A frame goes straight to the socket with a non-blocking write
when nothing is queued and no write is in flight (a broadcast to thousands of idle sockets
then wakes no task); whatever the kernel does not take is queued, and from then on every
frame goes through the queue, so order holds. One writer task drains the queue in one
``send_all`` per batch.
While the handler works through a burst of messages that arrived together (a pipelining
client), its writes are queued and leave in one write when the burst is over.
Rule 3: the queue is bounded (``send_queue_size`` bytes): a peer that cannot keep up is
closed with 1008 and logged; it never slows anyone else.
Rule 4: an idle connection has one task (its reader, which also keeps the connection
alive with pings) beside the handler; the writer task exists only while frames wait.
Rule 5: after the connection closed (close handshake, protocol error, lost peer),
``read_message()`` returns the messages already received, then None, and writing raises
``ConnectionClosed``.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from wsproto.connection import Connection, ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage

from ._config import WebSocketConfig
from ._exceptions import ConnectionClosed

log = logging.getLogger("trio_c10k.websocket")

#: bytes asked of the kernel per read
RECEIVE_SIZE = 65536
#: whole messages received but not yet read by the handler (then TCP back-pressure)
INCOMING_QUEUE = 16
#: RFC 6455 opcodes accepted by ``write_message(opcode=...)``, as the seed's API had them
TEXT, BINARY = 1, 2
_ABNORMAL = 1006  # RFC 6455 section 7.1.5: closed without a close frame (never sent on the wire)


def encode_frame(data: str | bytes) -> bytes:
    """An unmasked, unfragmented server frame (RFC 6455 section 5.2): text for str, binary for bytes."""
    if isinstance(data, str):
        payload, first = data.encode("utf-8"), 0x81
    else:
        payload, first = bytes(data), 0x82
    length = len(payload)
    if length < 126:
        return bytes((first, length)) + payload
    if length < 65536:
        return bytes((first, 126)) + length.to_bytes(2, "big") + payload
    return bytes((first, 127)) + length.to_bytes(8, "big") + payload


class WebSocket:
    """A WebSocket connection, as a handler receives it: ``async def handler(ws, ...)``.

    Read with ``await ws.read_message()`` (or ``async for message in ws``); write with
    ``ws.write_message(data)``, which never blocks and may be called from any trio task or
    from a worker thread running Django, or ``await ws.send_message(data)``, which waits for
    room in the send queue.
    """

    def __init__(
        self,
        stream: trio.SocketStream,
        connection: Connection,
        config: WebSocketConfig,
        *,
        request: Any = None,
        subprotocol: str | None = None,
        remote_address: Any = None,
        extensions: list[Any] | None = None,
    ) -> None:
        #: the Django ``HttpRequest`` of the handshake (None on the client side)
        self.request = request
        #: the subprotocol agreed in the handshake, or None
        self.subprotocol = subprotocol
        #: the peer's address: ``(host, port)`` for TCP
        self.remote_address = remote_address
        #: the close code once the connection closed (1006: closed without a close frame)
        self.close_code: int | None = None
        #: the close reason once the connection closed
        self.close_reason: str | None = None
        # Server side without extensions: data frames are built here, not by wsproto (same
        # bytes, a third of the cost); a client masks its frames, so it goes through wsproto.
        self._plain = not connection.client and not extensions
        self._stream = stream
        self._fd = stream.socket.fileno()
        self._ws = connection
        self._config = config
        self._token = trio.lowlevel.current_trio_token()
        self._loop_thread = threading.get_ident()
        # Whole messages the handler has not read yet; closed once the connection is.
        self._inbox: deque[str | bytes] = deque()
        self._inbox_closed = False
        self._message_ready = trio.lowlevel.ParkingLot()
        self._inbox_room = trio.lowlevel.ParkingLot()
        # True while the handler has more received messages to go through: writes wait.
        self._corked = False
        # Fragments of the message being received, and their total size.
        self._parts: list[Any] = []
        self._size = 0
        # Frames waiting for the writer task, their total size, and whether it is writing.
        self._queue: list[bytes] = []
        self._queued = 0
        self._writing = False
        # Set when the peer stopped reading: the last writes are not waited for.
        self._stuck = False
        # The writer task runs only while frames wait: an idle connection costs no task.
        self._writer_running = False
        self._room = trio.lowlevel.ParkingLot()
        self._closed = trio.Event()
        self._nursery: trio.Nursery | None = None

    # -- the public API -------------------------------------------------------------------

    @property
    def open(self) -> bool:
        """True until a close frame was sent or received, or the connection was lost."""
        return self._ws.state is ConnectionState.OPEN and not self._closed.is_set()

    @property
    def closed(self) -> bool:
        """True once the connection is closed (``close_code`` says how)."""
        return self._closed.is_set()

    async def read_message(self) -> str | bytes | None:
        """The next message: ``str`` for text, ``bytes`` for binary; None once closed.

        Messages received before the close are still returned first. Cancellation leaves
        the connection as it was (no message is lost). A message that is already here is
        returned without yielding to other tasks (a cancellation point, not a schedule
        point): a burst is at most ``INCOMING_QUEUE`` messages long.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        inbox = self._inbox
        while not inbox:
            self._corked = False
            if self._inbox_closed:
                return None
            await self._message_ready.park()
        message = inbox.popleft()
        self._corked = bool(inbox)
        if self._inbox_room:  # a task is parked there (ParkingLot's length)
            self._inbox_room.unpark()
        return message

    def __aiter__(self) -> WebSocket:
        return self

    async def __anext__(self) -> str | bytes:
        message = await self.read_message()
        if message is None:
            raise StopAsyncIteration
        return message

    def write_message(self, data: str | bytes, opcode: int | None = None) -> None:
        """Send a message; never blocks. ``str`` goes as text, ``bytes`` as binary.

        Args:
            data: the message.
            opcode: 1 (text) or 2 (binary) to force the type; text given as bytes must be
                UTF-8.

        Raises:
            ConnectionClosed: the connection is closing or closed.
            ValueError: a bad opcode, or bytes that are not UTF-8 sent as text.

        Callable from any trio task of this server, and from a worker thread (a Django view):
        there it hands the message to the event loop and returns once it is queued.
        A peer whose send queue overflows is closed with 1008 (see ``send_queue_size``).
        """
        if threading.get_ident() != self._loop_thread:
            trio.from_thread.run_sync(self.write_message, data, opcode, trio_token=self._token)
            return
        self._check_open()
        if opcode == TEXT and not isinstance(data, str):
            data = bytes(data).decode("utf-8")
        elif opcode == BINARY and isinstance(data, str):
            data = data.encode("utf-8")
        elif opcode not in (None, TEXT, BINARY):
            raise ValueError(f"opcode must be 1 (text) or 2 (binary), not {opcode!r}")
        if self._plain:
            self._send_frame(encode_frame(data))
        else:
            event = TextMessage(data=data) if isinstance(data, str) else BytesMessage(data=data)
            self._send_frame(self._ws.send(event))

    async def send_message(self, data: str | bytes) -> None:
        """Send a message, first waiting while the send queue is over half full.

        For producers that can wait (back-pressure instead of the 1008 close).

        Raises:
            ConnectionClosed: the connection is closing or closed.
        """
        while self._queued > self._config.send_queue_size // 2 and not self._closed.is_set():
            await self._room.park()
        self.write_message(data)

    def ping(self, payload: bytes = b"") -> None:
        """Send a ping (the peer answers with a pong); never blocks.

        Raises:
            ConnectionClosed: the connection is closing or closed.
        """
        self._check_open()
        self._send_frame(self._ws.send(Ping(payload=payload)))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection: send a close frame, wait for the peer's (``close_timeout``).

        Returns once the connection is closed; a peer that does not answer in time is
        disconnected. Closing a closed connection does nothing.
        """
        if self._ws.state is ConnectionState.OPEN and not self._closed.is_set():
            self._send_frame(self._ws.send(CloseConnection(code=code, reason=reason)))
        with trio.move_on_after(self._config.close_timeout):
            await self._closed.wait()
        if not self._closed.is_set():
            log.info("%s: no close frame within %g s; disconnecting", self._peer, self._config.close_timeout)
            self._mark_closed(_ABNORMAL, "close handshake timed out")

    def going_away(self) -> None:
        """Start closing with 1001 (server shutting down): the handler reads None next."""
        if self.open:
            self._send_frame(self._ws.send(CloseConnection(code=1001, reason="server shutting down")))
            self._close_inbox()

    async def wait_closed(self) -> None:
        """Wait until the connection is closed, whoever closes it."""
        await self._closed.wait()

    # -- tasks --------------------------------------------------------------------------

    def _start(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        nursery.start_soon(self._reader)

    async def _finish(self, code: int, reason: str = "") -> None:
        """Close with ``code``, let the last frames go out, then stop the tasks."""
        await self.close(code, reason)
        with trio.move_on_after(0 if self._stuck else self._config.close_timeout):
            while self._queue or self._writing:
                await self._room.park()
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()

    async def _reader(self) -> None:
        ws = self._ws
        interval, timeout = self._config.ping_interval, self._config.ping_timeout
        # Keep-alive without a task of its own: after ``interval`` seconds of silence from the
        # peer, a ping; if nothing at all (pong or other) arrives within ``timeout``, 1011.
        deadline = trio.current_time() + interval if interval else math.inf
        pinged = False
        try:
            while True:
                # Events first: the bytes that came with the handshake may hold whole frames.
                for event in ws.events():
                    await self._handle(event)
                if self._closed.is_set() or ws.state is ConnectionState.CLOSED:
                    break
                with trio.move_on_at(deadline) as scope:
                    data = await self._stream.receive_some(RECEIVE_SIZE)
                if scope.cancelled_caught:
                    if pinged or not self.open:
                        log.info(
                            "%s: no answer to a ping within %g s; closing with 1011", self._peer, timeout
                        )
                        self._fail(1011, "keepalive ping timeout")
                        break
                    self.ping(b"keepalive")
                    pinged, deadline = True, trio.current_time() + timeout
                    continue
                if interval:
                    pinged, deadline = False, trio.current_time() + interval
                ws.receive_data(data or None)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self._mark_closed(_ABNORMAL, "")

    async def _handle(self, event: object) -> None:
        if isinstance(event, TextMessage | BytesMessage):
            if self._closed.is_set():
                return
            self._parts.append(event.data)
            self._size += len(event.data)
            if self._size > self._config.max_message_size:
                self._fail(1009, f"message larger than {self._config.max_message_size} bytes")
            elif event.message_finished:
                empty = "" if isinstance(event, TextMessage) else b""
                message = self._parts[0] if len(self._parts) == 1 else empty.join(self._parts)
                self._parts, self._size = [], 0
                while len(self._inbox) >= INCOMING_QUEUE and not self._inbox_closed:
                    await self._inbox_room.park()
                if not self._inbox_closed:
                    self._inbox.append(message if isinstance(message, str) else bytes(message))
                    if self._message_ready:  # a task is parked there (ParkingLot's length)
                        self._message_ready.unpark()
        elif isinstance(event, Ping):
            if self._ws.state is ConnectionState.OPEN:
                self._send_frame(self._ws.send(event.response()))
        elif isinstance(event, CloseConnection):
            self._on_close(event)

    def _on_close(self, event: CloseConnection) -> None:
        state = self._ws.state
        if state is ConnectionState.REMOTE_CLOSING:  # the peer closes: answer, then done
            self._send_frame(self._ws.send(event.response()))
            self._mark_closed(event.code, event.reason or "")
        elif state is ConnectionState.CLOSED:  # the answer to our close
            self._mark_closed(event.code, event.reason or "")
        else:  # wsproto found a protocol error (1002, 1007, ...): it is ours to send
            log.info("%s: closing with %d: %s", self._peer, event.code, event.reason)
            self._fail(event.code, event.reason or "")

    async def _writer(self) -> None:
        try:
            while self._queue:
                data = b"".join(self._queue)
                self._queue.clear()
                self._queued = 0
                self._writing = True
                try:
                    await self._stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self._mark_closed(_ABNORMAL, "")
                    return
                finally:
                    self._writing = False
                    self._room.unpark_all()
        finally:
            self._writer_running = False

    # -- helpers ------------------------------------------------------------------------

    @property
    def _peer(self) -> str:
        address = self.remote_address
        return f"{address[0]}:{address[1]}" if isinstance(address, tuple) else "websocket"

    def _check_open(self) -> None:
        if not self.open:
            raise ConnectionClosed(self.close_code or _ABNORMAL, self.close_reason or "")

    def _send_frame(self, frame: bytes) -> None:
        if not self._queue and not self._writing and not self._corked:
            try:
                sent = os.write(self._fd, frame)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._mark_closed(_ABNORMAL, "")
                return
            if sent == len(frame):
                return
            frame = frame[sent:]
        if self._queued + len(frame) > self._config.send_queue_size:
            log.warning(
                "%s: send queue over %d bytes (the peer reads too slowly); closing with 1008",
                self._peer,
                self._config.send_queue_size,
            )
            self._queue.clear()
            self._queued = 0
            self._stuck = True
            self._fail(1008, "send queue full: the client reads too slowly")
            return
        self._queue.append(frame)
        self._queued += len(frame)
        if not self._writer_running and self._nursery is not None:
            self._writer_running = True
            self._nursery.start_soon(self._writer)

    def _fail(self, code: int, reason: str) -> None:
        """Close because of an error: send the close frame, do not wait for an answer."""
        if self._ws.state is ConnectionState.OPEN:
            frame = self._ws.send(CloseConnection(code=code, reason=reason))
            if self._queued + len(frame) <= self._config.send_queue_size:
                self._send_frame(frame)
        self._mark_closed(code, reason)

    def _mark_closed(self, code: int, reason: str) -> None:
        if self._closed.is_set():
            return
        self.close_code, self.close_reason = code, reason
        self._closed.set()
        self._close_inbox()
        self._room.unpark_all()

    def _close_inbox(self) -> None:
        self._inbox_closed = True
        self._message_ready.unpark_all()
        self._inbox_room.unpark_all()


async def serve_websocket(
    ws: WebSocket,
    handler: Callable[..., Awaitable[None]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> None:
    """Run ``handler(ws, *args, **kwargs)`` with the connection's tasks, then close.

    The handler returning (or raising ``ConnectionClosed``, as a write after the peer closed
    does) closes with 1000; raising anything else logs the traceback and closes with 1011.
    The caller closes the stream afterwards.
    """
    async with trio.open_nursery() as nursery:
        ws._start(nursery)
        try:
            await handler(ws, *args, **kwargs)
        except ConnectionClosed:
            # Writing after the peer closed is how most handlers learn of it: a normal end.
            log.debug("%s: handler ended on a closed connection", ws._peer)
            code, reason = 1000, ""
        except Exception:
            log.exception("WebSocket handler %s failed", getattr(handler, "__qualname__", handler))
            code, reason = 1011, "internal error"
        else:
            code, reason = 1000, ""
        await ws._finish(code, reason)
