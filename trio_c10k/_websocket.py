"""One WebSocket connection: wsproto frames over a trio stream, for server and client alike.

Rule 1: one reader task turns bytes into whole messages, bounded by ``max_message_size``
(1009 beyond it) in bytes whatever their shape: UTF-8 bytes for text, each continuation frame
costing ``FRAGMENT_COST`` more, inflation stopped at the limit (``_deflate``). It hands them
over through a small inbox (``INCOMING_QUEUE`` messages, ``max_message_size`` bytes): when the
handler does not read, the reader stops reading and TCP pushes back on the peer. It hands
wsproto at most ``FRAMES_PER_STEP`` frames before letting other tasks run, so a peer
flooding tiny frames gets its turn like any other connection, not the event loop.
The reader splits the bytes into frames itself. The common frame (``_frames``: a whole text
or binary message in one frame, masked as the side requires, no extension agreed) it
decodes itself;
every other frame (control frames, fragments, anything malformed, any frame when an
extension was agreed, a long frame still arriving) goes to wsproto whole, from its first
byte to its last, so wsproto never holds a partial frame when the reader takes over again.
wsproto keeps the protocol state and enforces RFC 6455 (1002, 1007 closes) on those frames.
Rule 2: writes never wait. The first frame a connection gets in a scheduling round goes
straight to the socket with a non-blocking write (a broadcast to thousands of idle sockets
then wakes no task); the frames it gets later in the same round are queued, and one task per
trio run (``_Flusher``) writes each connection's queue in one write once the round is over.
A connection that got several frames in one of its last ``COALESCING_ROUNDS`` flushed
rounds is *coalescing*: its first frame waits for the flush too, so a busy connection (a
pipelining client, a cell hearing from its eight neighbours, a watch page hearing from every
cell) costs one write per round, not one per frame. Whatever the kernel does not take stays
queued for the connection's writer task, and from then on every frame goes through the
queue, so order holds.
Rule 3: the queue is bounded (``send_queue_size`` bytes): a frame is refused only when what
is already queued, the backlog the peer left unread, exceeds the bound, so one large
message always goes in whole. A peer that cannot keep up is closed with 1008 and logged; it
never slows anyone else.
Rule 3a: a close frame never lands inside another frame. When a backlog is dropped, the rest
of a frame already partly written stays, and the close frame follows it; when the socket is
closed with bytes still unsent, it is reset (SO_LINGER 0), so the peer never takes what
follows a truncated frame for its end.
Rule 4: an idle connection has one task (its reader) beside the handler; the writer task
exists only while the kernel does not take what is queued, and one ``keep_alive`` task
pings every connection of a server that falls silent.
The reader and writer run in a nursery the caller owns (the server's connection nursery), not one of their
own; they end by themselves once the connection is closed and its socket with it.
Every wait (a message, room in the inbox or the send queue, the close) parks in ``_wait``
and looks again when woken.
Rule 5: after the connection closed (close handshake, protocol error, lost peer),
``read_message()`` returns the messages already received, then None, and writing raises
``ConnectionClosed``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import struct
from collections.abc import Awaitable, Callable, Collection
from threading import get_ident
from typing import Any, TypeVar

import outcome
import trio
from wsproto.connection import Connection, ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.frame_protocol import CloseReason

from ._config import WebSocketConfig
from ._deflate import BoundedDeflate
from ._exceptions import ConnectionClosed
from ._frames import COMMON_BINARY, MASKED, encode_frame, frame_header, unmask

T = TypeVar("T")

log = logging.getLogger("trio_c10k.websocket")

#: bytes asked of the kernel per read
RECEIVE_SIZE = 65536
#: whole messages received but not yet read by the handler (then TCP back-pressure); their
#: size is bounded too, by ``max_message_size`` (see ``_receive``)
INCOMING_QUEUE = 16
#: bytes a continuation frame counts for beyond its payload, towards ``max_message_size``: a
#: fragment kept until the message is whole costs a str or bytes object and a list slot
#: (about 60 bytes), and parsing it costs more than its bytes, even empty (RFC 6455 section
#: 5.4 sets no limit on the number of fragments; 1.5 million empty ones would grow memory)
FRAGMENT_COST = 64
#: frames handed to wsproto (control frames, fragments, compressed frames) in one step of the
#: reader before it lets other tasks run: a peer sending tiny frames as fast as it can (a ping
#: flood: 10,000 per 64 KiB read, ~10 us each) gets a fraction of a millisecond per turn, not
#: 100 ms. As many as the inbox holds messages; measured against 64 under a ping flood, it
#: halved another connection's echo time, and each checkpoint also lets the worker threads
#: take the GIL sooner.
FRAMES_PER_STEP = 16
#: rounds a connection keeps coalescing after one in which it got several frames
COALESCING_ROUNDS = 8
#: RFC 6455 opcodes (section 5.2) that ``write_message(opcode=...)`` accepts
TEXT, BINARY = 1, 2
_ABNORMAL = CloseReason.ABNORMAL_CLOSURE  # RFC 6455 section 7.1.5: closed without a close frame (never sent)
#: SO_LINGER on, 0 seconds: close() then resets the connection instead of sending the rest
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)


def reset_on_close(sock: trio.socket.SocketType) -> None:
    """Make closing ``sock`` a reset: the kernel drops what it still holds for the peer (as
    nginx's ``reset_timedout_connection``), and a peer never takes a truncated frame or
    response for a normal end. Does nothing once the socket is closed."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)


def _read_nowait(fd: int) -> bytes | None:
    """What the socket has (b"" at its end, or once reset by the peer), None if nothing yet.

    A function of its own, not inlined in the reader: the traceback of the BlockingIOError
    then holds this short-lived frame, not the reader coroutine's, which would otherwise keep
    a frame object (200 bytes) for the life of every connection.
    """
    try:
        return os.read(fd, RECEIVE_SIZE)
    except BlockingIOError:
        return None
    except OSError:
        return b""


def in_loop_thread(loop_thread: int) -> bool:
    """Whether the caller runs in the thread ``loop_thread`` (a ``threading.get_ident()``): that
    of the trio run a connection lives in, the only one that may touch the connection.

    The one test of it, for ``WebSocket`` and the fan-out. Not ``trio.lowlevel.in_trio_run()``:
    a trio run of its own in another thread is in a run, but not in the connection's.
    """
    return get_ident() == loop_thread


def call_in_loop(token: trio.lowlevel.TrioToken, fn: Callable[..., T], *args: Any) -> T:
    """Call ``fn(*args)`` in ``token``'s event loop from another thread, and return (or raise)
    what it does; the calling thread waits meanwhile.

    Raises:
        trio.RunFinishedError: that loop is over.
    """
    if not trio.lowlevel.in_trio_run():  # a worker thread (a Django view), any plain thread
        return trio.from_thread.run_sync(fn, *args, trio_token=token)
    # A thread running a trio loop of its own: ``trio.from_thread`` refuses it (it cannot tell
    # it from the loop's own thread, where waiting would never end); it waits the same way.
    done: queue.SimpleQueue[outcome.Outcome[T]] = queue.SimpleQueue()
    token.run_sync_soon(lambda: done.put(outcome.capture(fn, *args)))
    return done.get().unwrap()


def _named(code: int) -> int:
    """``code`` as its ``CloseReason`` member, as wsproto gives a peer's code; an application's
    code (3000-4999) has none and stays an int."""
    try:
        return CloseReason(code)
    except ValueError:
        return code


class WebSocket:
    """A WebSocket connection, as a handler receives it: ``async def handler(ws, ...)``.

    Read with ``await ws.read_message()`` (or ``async for message in ws``); write with
    ``ws.write_message(data)``, which never blocks and may be called from any trio task or
    from a worker thread running Django, or ``await ws.send_message(data)``, which waits for
    room in the send queue.

    Handlers may keep their own attributes on it (``ws.room = "lobby"``).

    The fan-out (``_fanout``) uses these names, and no other private one: ``_token`` and
    ``_loop_thread`` (its loop, for ``in_loop_thread`` and ``call_in_loop``); ``_groups`` (the
    member sets it is in); for ``broadcast``'s loop, ``_is_closed`` and ``_close_sent`` (``not
    open``, inlined), ``_plain`` (it takes the frame ``encode_frame(data)`` built once for every
    member) and ``_send_frame(frame)``; for ``send_message``, ``_queued`` (bytes in the send
    queue) and ``_wait_for_room(since)``.
    """

    # Slots: at 10,000 connections a per-object attribute dictionary costs 10 MB. The
    # ``__dict__`` slot is there for attributes handlers add; it is created on first use.
    __slots__ = (
        "__dict__",
        "__weakref__",
        "_close_sent",
        "_coalescing",
        "_config",
        "_fd",
        "_flush_due",
        "_flusher",
        "_groups",
        "_heard",
        "_inbox",
        "_inbox_closed",
        "_inboxed",
        "_is_closed",
        "_loop_thread",
        "_mask_bit",
        "_nursery",
        "_owed",
        "_parts",
        "_ping",
        "_pinged_at",
        "_plain",
        "_queue",
        "_queued",
        "_size",
        "_stream",
        "_stuck",
        "_tired",
        "_token",
        "_unparsed",
        "_waiters",
        "_writer_running",
        "_writing",
        "_ws",
        "close_code",
        "close_reason",
        "remote_address",
        "request",
        "subprotocol",
    )

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
        received: bytes = b"",
    ) -> None:
        #: the Django ``HttpRequest`` of the handshake (None on the client side)
        self.request = request
        #: the subprotocol agreed in the handshake, or None
        self.subprotocol = subprotocol
        #: the peer's address: ``(host, port)`` for TCP; ``(host, None)`` for the client a
        #: trusted proxy named in ``X-Forwarded-For`` (``--proxy-headers``)
        self.remote_address = remote_address
        #: the close code once the connection closed: a ``CloseReason`` member (an ``int``), or
        #: the plain int of an application's code; ``ABNORMAL_CLOSURE`` (1006): no close frame
        self.close_code: int | None = None
        #: the close reason once the connection closed
        self.close_reason: str | None = None
        # Server side without extensions: data frames are built here, not by wsproto (same
        # bytes, a third of the cost), and one frame serves every member of a broadcast.
        self._plain = not connection.client and not extensions
        # Without extensions the reader decodes the common frame itself: the mask bit such a
        # frame has (a client masks, a server does not). None: every frame goes to wsproto.
        self._mask_bit = None if extensions else 0 if connection.client else MASKED
        for extension in extensions or ():
            if isinstance(extension, BoundedDeflate):  # inflates a message this far at most
                extension.max_size = config.max_message_size
        # Bytes received after the handshake and not yet split into frames (``received``: what
        # came with the handshake), and how many bytes of the frame wsproto is parsing it has
        # not had yet.
        self._unparsed = received
        self._owed = 0
        self._stream = stream
        self._fd = stream.socket.fileno()
        self._ws = connection
        self._config = config
        self._token = trio.lowlevel.current_trio_token()
        self._loop_thread = get_ident()
        # Whole messages the handler has not read yet; closed once the connection is.
        # A list, not a deque: it holds at most INCOMING_QUEUE, and an empty deque is 600 bytes.
        self._inbox: list[str | bytes] = []
        self._inbox_closed = False
        # Their total length (characters for text): the reader stops at max_message_size.
        self._inboxed = 0
        # The tasks waiting for a change of state (see ``_wait``).
        self._waiters: list[trio.lowlevel.Task] = []
        # When the peer was last heard from, and when an unanswered keep-alive ping left.
        self._heard = trio.current_time()
        self._pinged_at: float | None = None
        # Fragments of the message being received (None while there are none: most
        # messages come in one frame), and its size so far: the payload of the frames that
        # wsproto parses, as their headers announce it, plus FRAGMENT_COST per continuation.
        self._parts: list[Any] | None = None
        self._size = 0
        # Set when the reader's step handed FRAMES_PER_STEP frames to wsproto: others first.
        self._tired = False
        # The last ping of the reader's step, answered once the step is done (one pong per step).
        self._ping: Ping | None = None
        # Frames waiting for the flusher or the writer task, their total size, and whether
        # the writer is writing.
        self._queue: list[bytes] = []
        self._queued = 0
        self._writing = False
        # Set once a frame went out this scheduling round: the next wait for the flusher.
        self._flush_due = False
        # Set while the connection gets several frames per round: then the first waits too.
        self._coalescing = 0
        self._flusher = _flusher()
        # Set when the peer stopped reading: the last writes are not waited for.
        self._stuck = False
        # The writer task runs only while frames wait: an idle connection costs no task.
        self._writer_running = False
        # Set once the connection is closed (close_code says how); the close frame sent, once
        # one went out (after it, no data frame may: RFC 6455 section 5.5.1).
        self._is_closed = False
        self._close_sent: CloseConnection | None = None
        # The member sets of the fan-out groups it belongs to (None until it joins one): as it
        # closes, it calls each one's ``discard(self)`` (a set of the fan-out's own that forgets
        # its group once empty).
        self._groups: list[set[WebSocket]] | None = None
        self._nursery: trio.Nursery | None = None

    # -- the public API -------------------------------------------------------------------

    @property
    def open(self) -> bool:
        """True until a close frame was sent or received, or the connection was lost."""
        return not (self._is_closed or self._close_sent)

    @property
    def closed(self) -> bool:
        """True once the connection is closed (``close_code`` says how)."""
        return self._is_closed

    async def read_message(self) -> str | bytes | None:
        """The next message: ``str`` for text, ``bytes`` for binary; None once closed.

        Messages received before the close are still returned first. Cancellation leaves
        the connection as it was (no message is lost). A message that is already here is
        returned without yielding to other tasks (a cancellation point, not a schedule
        point): a burst is at most ``INCOMING_QUEUE`` messages, or ``max_message_size`` bytes
        and one message, long.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        inbox = self._inbox
        while not inbox:
            if self._inbox_closed:
                return None
            await self._wait()
        message = inbox.pop(0)
        self._inboxed -= len(message)
        if self._waiters:  # the reader may wait for room in the inbox
            self._wake()
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

        Callable from any trio task of this server, and from any other thread (a Django view's
        worker thread, another trio run's): there it hands the message to the event loop and
        returns once it is queued.
        A peer whose send queue overflows is closed with 1008 (see ``send_queue_size``).
        """
        if not in_loop_thread(self._loop_thread):
            call_in_loop(self._token, self.write_message, data, opcode)
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
        elif self._mask_bit == 0:
            self._send_frame(encode_frame(data, masked=True))
        else:
            event = TextMessage(data=data) if isinstance(data, str) else BytesMessage(data=data)
            self._send_frame(self._ws.send(event))

    async def send_message(self, data: str | bytes) -> None:
        """Send a message, first waiting while the send queue is over half full.

        For producers that can wait (back-pressure instead of the 1008 close).

        Raises:
            ConnectionClosed: the connection is closing or closed.
        """
        while self._queued > self._config.send_queue_size // 2 and not self._is_closed:
            await self._wait()
        self.write_message(data)

    def ping(self, payload: bytes = b"") -> None:
        """Send a ping (the peer answers with a pong); never blocks. Callable from a worker
        thread too, as ``write_message``.

        Raises:
            ConnectionClosed: the connection is closing or closed.
        """
        if not in_loop_thread(self._loop_thread):
            call_in_loop(self._token, self.ping, payload)
            return
        self._check_open()
        self._send_frame(self._ws.send(Ping(payload=payload)))

    async def close(self, code: int = CloseReason.NORMAL_CLOSURE, reason: str = "") -> None:
        """Close the connection: send a close frame, wait for the peer's (``close_timeout``).

        Returns once the connection is closed; a peer that does not answer in time is
        disconnected. Closing a closed connection does nothing.

        Args:
            code: a ``CloseReason`` member or any int RFC 6455 allows (4000-4999 for your own).
            reason: a short text for the peer.
        """
        if self.open:
            self._send_close(CloseConnection(code=_named(code), reason=reason))
        with trio.move_on_after(self._config.close_timeout):
            await self.wait_closed()
        if not self._is_closed:
            log.info("%s: no close frame within %g s; disconnecting", self._peer, self._config.close_timeout)
            self._mark_closed(_ABNORMAL, "close handshake timed out")

    def going_away(self) -> None:
        """Start closing with 1001 (server shutting down): the handler reads None next."""
        if self.open:
            self._send_close(CloseConnection(code=CloseReason.GOING_AWAY, reason="server shutting down"))
            self._close_inbox()

    async def wait_closed(self) -> None:
        """Wait until the connection is closed, whoever closes it."""
        while not self._is_closed:
            await self._wait()

    # -- tasks --------------------------------------------------------------------------

    def _start(self, nursery: trio.Nursery) -> None:
        """Start the reader task in ``nursery``; the writer task will run there too."""
        self._nursery = nursery
        nursery.start_soon(self._reader, name="trio_c10k websocket reader")

    async def _finish(self, code: int, reason: str = "") -> None:
        """Close with ``code`` and let the last frames go out; the caller then closes the
        socket, which ends the reader task."""
        try:
            await self.close(code, reason)
            with trio.move_on_after(0 if self._stuck else self._config.close_timeout):
                while self._queue or self._writing:
                    await self._wait()
        finally:
            if self._queue or self._writing:  # a frame may be half written: reset, never truncate
                reset_on_close(self._stream.socket)

    async def _reader(self) -> None:
        # A plain non-blocking read on the file descriptor, then ``wait_readable`` if there is
        # nothing yet: an idle reader is one task parked in epoll, with no stream machinery
        # and no cancel scope around it.
        fd = self._fd
        waited = False  # whether the last read came after a wait (a checkpoint already)
        drained = False  # whether the last read took less than it asked: nothing more yet
        try:
            while True:
                # What is not split yet first: the bytes that came with the handshake may hold
                # whole frames.
                if self._unparsed:
                    self._unparsed = self._receive(self._unparsed)
                # Checked after every wait too: once closed, the socket may be gone and its
                # number reused by another connection.
                if self._is_closed or self._ws.state is ConnectionState.CLOSED:
                    break
                if (
                    len(self._inbox) >= INCOMING_QUEUE or self._inboxed >= self._config.max_message_size
                ) and not (self._inbox_closed or self._close_sent):
                    await self._wait()  # for room in the inbox
                    continue
                if self._tired:  # more frames are here, but this step did its share: others first
                    self._tired = False
                    await trio.lowlevel.checkpoint()
                    continue
                data = None if drained else _read_nowait(fd)
                if data is None:
                    await trio.lowlevel.wait_readable(fd)
                    waited, drained = True, False
                    continue
                if not waited:  # a second read in a row: a peer that always has data must not starve others
                    await trio.lowlevel.checkpoint()
                waited, drained = False, len(data) < RECEIVE_SIZE
                self._heard, self._pinged_at = trio.current_time(), None
                if data:
                    self._unparsed = self._unparsed + data if self._unparsed else data
                else:  # the end of the stream (or a reset): wsproto reports 1006
                    self._to_wsproto(None)
        except trio.ClosedResourceError:
            pass  # the socket was closed under us: the connection is over
        except Exception:  # a task boundary in someone else's nursery: never let it escape
            log.exception("%s: unexpected error reading a WebSocket", self._peer)
            self._fail(CloseReason.INTERNAL_ERROR, "internal error")
        finally:
            self._mark_closed(_ABNORMAL, "")

    def _receive(self, data: bytes) -> bytes:
        """Handle the frames at the start of ``data``; return the bytes left for later: the
        start of a frame, or frames waiting for room in the inbox.

        A common frame (see the module's Rule 1) that is here whole becomes a message here;
        any other frame goes to wsproto, whole, as its bytes arrive (``_owed``), at most
        FRAMES_PER_STEP of them per call (then ``_tired``). Stops while the inbox holds
        INCOMING_QUEUE messages or ``max_message_size`` bytes.
        """
        inbox, mask_bit, at, end = self._inbox, self._mask_bit, 0, len(data)
        limit, frames = self._config.max_message_size, FRAMES_PER_STEP
        while at < end and not self._is_closed:
            if (len(inbox) >= INCOMING_QUEUE or self._inboxed >= limit) and not (
                self._inbox_closed or self._close_sent
            ):
                break
            if self._owed:  # the rest of the frame wsproto is parsing
                take = min(self._owed, end - at)
                self._owed -= take
                at += take
                self._to_wsproto(data[at - take : at])
                continue
            header = frame_header(data, at, mask_bit)
            if header is None:
                break
            first, start, stop, common = header
            if common and self._parts is None:
                if stop - start > limit:
                    self._protocol_error(CloseReason.MESSAGE_TOO_BIG, f"message larger than {limit} bytes")
                    break
                if stop <= end:
                    payload = data[start:stop]
                    if mask_bit:
                        payload = unmask(payload, data[start - 4 : start])
                    at = stop
                    if first == COMMON_BINARY:
                        self._deliver(payload)
                        continue
                    try:
                        self._deliver(payload.decode("utf-8"))
                    except UnicodeDecodeError:
                        self._protocol_error(
                            CloseReason.INVALID_FRAME_PAYLOAD_DATA, "invalid UTF-8 in a text message"
                        )
                        break
                    continue
                if stop - at <= RECEIVE_SIZE:
                    break  # a short frame: wait for the rest of it
            if not frames:
                self._tired = True
                break
            frames -= 1
            opcode = first & 0x0F
            if opcode < 3:  # a data frame: its payload counts as announced, UTF-8 bytes for text
                self._size += stop - start if opcode else stop - start + FRAGMENT_COST
                if self._size > limit:
                    self._protocol_error(CloseReason.MESSAGE_TOO_BIG, f"message larger than {limit} bytes")
                    break
            self._owed = stop - at  # wsproto gets this frame (a long one as it arrives)
        if self._ping is not None:
            # One pong for the pings of this step, the last one's: RFC 6455 section 5.5.3 allows
            # it, and a ping flood then costs one pong per FRAMES_PER_STEP pings, not one each.
            ping, self._ping = self._ping, None
            if self._ws.state is ConnectionState.OPEN:
                self._send_frame(self._ws.send(ping.response()))
        return data[at:] if at else data

    def _deliver(self, message: str | bytes) -> None:
        """A whole message received: into the inbox, unless the connection is closing."""
        # Once our close frame is out, the peer's is what matters (RFC 6455 section 1.4: data
        # after a close may be dropped).
        if not (self._inbox_closed or self._close_sent):
            self._inbox.append(message)
            self._inboxed += len(message)
            if self._waiters:
                self._wake()

    def _to_wsproto(self, data: bytes | None) -> None:
        """Bytes of a frame for wsproto to parse (None: the stream ended); handle its events."""
        self._ws.receive_data(data)
        for event in self._ws.events():
            self._handle(event)

    def _keep_alive(self, now: float) -> None:
        """One tick of ``keep_alive``: a ping after ``ping_interval`` seconds of silence from
        the peer; 1011 if nothing at all (pong or other) arrived ``ping_timeout`` after it."""
        interval, timeout = self._config.ping_interval, self._config.ping_timeout
        if not self.open or interval is None:
            return
        if self._pinged_at is None:
            if now - self._heard >= interval:
                self.ping(b"keepalive")
                self._pinged_at = now
        elif now - self._pinged_at >= timeout:
            log.info("%s: no answer to a ping within %g s; closing with 1011", self._peer, timeout)
            self._fail(CloseReason.INTERNAL_ERROR, "keepalive ping timeout")

    def _handle(self, event: object) -> None:
        if isinstance(event, TextMessage | BytesMessage):
            if self._is_closed:
                return
            data = event.data  # its size was counted from the frame's header (``_receive``)
            if not event.message_finished:
                if self._parts is None:
                    self._parts = []
                self._parts.append(data)
            else:
                if self._parts is not None:  # the last fragment of a fragmented message
                    self._parts.append(data)
                    data = ("" if isinstance(event, TextMessage) else b"").join(self._parts)
                self._parts, self._size = None, 0
                self._deliver(data if isinstance(data, str) else bytes(data))
        elif isinstance(event, Ping):
            self._ping = event  # answered at the end of the step (``_receive``)
        elif isinstance(event, CloseConnection):
            self._on_close(event)

    def _on_close(self, event: CloseConnection) -> None:
        state = self._ws.state
        if state is ConnectionState.REMOTE_CLOSING:  # the peer closes: answer, then done
            self._send_close(event.response())
            self._mark_closed(event.code, event.reason or "")
        elif state is ConnectionState.CLOSED:  # the answer to our close
            self._mark_closed(event.code, event.reason or "")
        elif event.code == CloseReason.MESSAGE_TOO_BIG:  # from BoundedDeflate: inflating past the limit
            self._protocol_error(
                CloseReason.MESSAGE_TOO_BIG, f"message larger than {self._config.max_message_size} bytes"
            )
        else:  # wsproto found a protocol error (1002, 1007, ...): it is ours to send
            self._protocol_error(event.code, event.reason or "")

    def _protocol_error(self, code: int, reason: str) -> None:
        """The peer broke the protocol or a limit: say so in the log, close with ``code``."""
        log.info("%s: closing with %d: %s", self._peer, code, reason)
        self._fail(code, reason)

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
                    self._wake()
        finally:
            self._writer_running = False

    # -- helpers ------------------------------------------------------------------------

    @property
    def _peer(self) -> str:
        address = self.remote_address
        if not isinstance(address, tuple):
            return "websocket"
        host, port = address[0], address[1]
        if port is None:  # behind a proxy, the client's port is not known
            return str(host)
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def _check_open(self) -> None:
        if self._is_closed:
            raise ConnectionClosed(self.close_code or _ABNORMAL, self.close_reason or "")
        if self._close_sent is not None:  # closing: the code and reason this side sent
            raise ConnectionClosed(self._close_sent.code, self._close_sent.reason or "")

    def _send_frame(self, frame: bytes) -> None:
        # Straight to the socket when it is the first frame of this round, nothing waits
        # before it and the connection is not coalescing (``_queued`` rather than the list
        # itself: a broadcast then reads only this object, for each of its members).
        kernel_full = False
        if not (self._flush_due or self._queued or self._writer_running or self._coalescing):
            try:
                sent = os.write(self._fd, frame)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._mark_closed(_ABNORMAL, "")
                return
            if sent == len(frame):
                self._flush_due = True
                self._flusher.add(self)
                return
            frame, kernel_full = frame[sent:], True
        # The backlog the peer left unread is what is bounded, not this frame (Rule 3).
        if self._queued > self._config.send_queue_size:
            self._drop(f"send queue over {self._config.send_queue_size} bytes (the peer reads too slowly)")
            return
        self._queue.append(frame)
        self._queued += len(frame)
        if kernel_full:
            self._start_writer()
        elif not (self._flush_due or self._writer_running):
            self._flush_due = True
            self._flusher.add(self)

    def _flush(self) -> None:
        """Write the frames queued this round in one write (the flusher calls this)."""
        self._flush_due = False
        queue = self._queue
        # A connection that got several frames this round (a busy cell, a watch page) is
        # likely to next round too: its first frame then waits for the flush as well, for one
        # write per round. One that got a single frame goes back to writing it at once.
        if len(queue) >= (2 if self._coalescing else 1):
            self._coalescing = COALESCING_ROUNDS
        elif self._coalescing:
            self._coalescing -= 1
        if not queue or self._writer_running:
            return
        data = queue[0] if len(queue) == 1 else b"".join(queue)
        queue.clear()
        queued, self._queued = self._queued, 0
        try:
            # The descriptor as the socket has it now: -1 once closed, never another
            # connection's reused number.
            sent = os.write(self._stream.socket.fileno(), data)
        except BlockingIOError:
            sent = 0
        except OSError:
            sent = len(data)  # lost with the connection
            self._mark_closed(_ABNORMAL, "")
        if sent < len(data):
            queue.append(data[sent:])
            self._queued = len(data) - sent
            self._start_writer()
        elif self._waiters and (not self.open or queued > self._config.send_queue_size // 2):
            self._wake()  # ``_finish`` or ``send_message`` waits for the queue to drain

    async def _wait_for_room(self, since: float) -> bool:
        """Wait while the send queue is over half full (``send_message()`` of the fan-out); a
        peer still over it ``send_timeout`` seconds after ``since`` does not read: it is
        closed with 1008. Returns whether it waited (then it was a checkpoint)."""
        half = self._config.send_queue_size // 2
        if not (self._queued > half and self.open):
            return False
        with trio.move_on_at(since + self._config.send_timeout):
            while self._queued > half and self.open:
                await self._wait()  # woken as its queue drains, or as it closes
        if self._queued > half and self.open:
            self._drop(f"send queue still over {half} bytes after {self._config.send_timeout:g} s")
        return True

    def _start_writer(self) -> None:
        if not self._writer_running and self._nursery is not None:
            self._writer_running = True
            self._nursery.start_soon(self._writer, name="trio_c10k websocket writer")

    async def _wait(self) -> None:
        """Park until the connection's state changes (a message, room, the close); the caller
        looks again. The parked tasks are kept in a plain list, not a ``ParkingLot``: an idle
        connection always has its handler parked, and a lot's ordered dict costs 500 bytes."""
        task = trio.lowlevel.current_task()
        self._waiters.append(task)

        def abort(_: object) -> trio.lowlevel.Abort:
            self._waiters.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def _wake(self) -> None:
        """Wake every task parked in ``_wait``."""
        waiters, self._waiters = self._waiters, []
        for task in waiters:
            trio.lowlevel.reschedule(task)

    def _drop(self, why: str) -> None:
        """Close with 1008 a peer that does not read what it is sent (``why`` goes to the log).

        Its backlog is dropped, but for the rest of a frame already partly written that the
        writer task has not taken yet: the close frame goes after it, and after the frames
        the writer task is sending (Rule 3a).
        """
        log.warning("%s: %s; closing with 1008", self._peer, why)
        queue = self._queue
        partial = self._writer_running and not self._writing and queue
        if partial:
            del queue[1:]
            self._queued = len(queue[0])
        else:
            queue.clear()
            self._queued = 0
        # A peer reading the rest of a frame gets it and the close frame (``_finish`` waits up
        # to ``close_timeout``); otherwise nothing is waited for, and unsent bytes mean a reset.
        self._stuck = not partial
        self._fail(CloseReason.POLICY_VIOLATION, "send queue full: the client reads too slowly")

    def _fail(self, code: int, reason: str) -> None:
        """Close because of an error: send the close frame, do not wait for an answer."""
        if self._ws.state is ConnectionState.OPEN:
            self._close_sent = CloseConnection(code=code, reason=reason)
            frame = self._ws.send(self._close_sent)
            if self._queued <= self._config.send_queue_size:
                self._send_frame(frame)
            else:  # a full queue, which a writer or the flusher will write: the close frame goes after it
                self._queue.append(frame)
                self._queued += len(frame)
        self._mark_closed(code, reason)

    def _send_close(self, event: CloseConnection) -> None:
        self._close_sent = event
        self._send_frame(self._ws.send(event))
        self._wake()  # a reader waiting for room in the inbox goes on to the peer's close

    def _mark_closed(self, code: int, reason: str) -> None:
        if self._is_closed:
            return
        self.close_code, self.close_reason = code, reason
        self._is_closed = True
        self._close_inbox()
        if self._groups is not None:
            for members in self._groups:
                members.discard(self)
            self._groups = None

    def _close_inbox(self) -> None:
        self._inbox_closed = True
        self._wake()


class _Flusher:
    """The connections that got a frame this scheduling round, for one trio run.

    One task writes, once the round is over, what each of them queued after its first
    frame: one write per connection per round, however many frames it got.
    """

    __slots__ = ("_pending", "_task")

    def __init__(self) -> None:
        self._pending: list[WebSocket] = []
        self._task: trio.lowlevel.Task | None = None  # the flusher's task, while it is parked

    def add(self, ws: WebSocket) -> None:
        """Flush ``ws`` after this round."""
        self._pending.append(ws)
        if self._task is not None:
            task, self._task = self._task, None
            trio.lowlevel.reschedule(task)

    async def run(self) -> None:
        while True:
            if not self._pending:
                self._task = trio.lowlevel.current_task()
                await trio.lowlevel.wait_task_rescheduled(self._abort)
            pending, self._pending = self._pending, []
            for ws in pending:
                try:
                    ws._flush()
                except Exception:  # a system task: an exception here would end the whole run
                    log.exception("%s: unexpected error writing a WebSocket", ws._peer)
                    ws._mark_closed(_ABNORMAL, "")

    def _abort(self, _: object) -> trio.lowlevel.Abort:
        self._task = None
        return trio.lowlevel.Abort.SUCCEEDED


_FLUSHER: trio.lowlevel.RunVar[_Flusher] = trio.lowlevel.RunVar("trio_c10k_flusher")


def _flusher() -> _Flusher:
    """This trio run's flusher, started on first use (a system task: it serves every
    connection of the run, whichever nursery holds them, and ends with the run)."""
    try:
        return _FLUSHER.get()
    except LookupError:
        flusher = _Flusher()
        _FLUSHER.set(flusher)
        trio.lowlevel.spawn_system_task(flusher.run, name="trio_c10k websocket flusher")
        return flusher


async def keep_alive(websockets: Collection[WebSocket], config: WebSocketConfig) -> None:
    """Keep ``websockets`` alive with pings (``ping_interval``, ``ping_timeout``); runs until
    cancelled.

    One task for every connection instead of a timer per connection: it looks at each
    connection a few times per interval (a ping goes out between ``ping_interval`` and a
    quarter more after the peer fell silent). ``websockets`` may change meanwhile. Returns at
    once if pings are off (``ping_interval=None``).
    """
    if config.ping_interval is None:
        return
    tick = min(config.ping_interval, config.ping_timeout) / 4
    while True:
        await trio.sleep(tick)
        now = trio.current_time()
        heard_since = now - config.ping_interval
        for ws in list(websockets):
            if ws._pinged_at is not None or ws._heard <= heard_since:
                ws._keep_alive(now)


async def serve_websocket(
    ws: WebSocket,
    nursery: trio.Nursery,
    handler: Callable[..., Awaitable[None]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> None:
    """Run ``handler(ws, *args, **kwargs)`` in this task, the connection's tasks in ``nursery``.

    The handler returning (or raising ``ConnectionClosed``, as a write after the peer closed
    does) closes with 1000; raising anything else logs the traceback and closes with 1011.
    The caller closes the stream afterwards, which ends the connection's tasks.
    """
    ws._start(nursery)
    try:
        await handler(ws, *args, **kwargs)
    except ConnectionClosed:
        # Writing after the peer closed is how most handlers learn of it: a normal end.
        log.debug("%s: handler ended on a closed connection", ws._peer)
        code, reason = CloseReason.NORMAL_CLOSURE, ""
    except Exception:
        log.exception("WebSocket handler %s failed", getattr(handler, "__qualname__", handler))
        code, reason = CloseReason.INTERNAL_ERROR, "internal error"
    else:
        code, reason = CloseReason.NORMAL_CLOSURE, ""
    try:
        await ws._finish(code, reason)
    finally:
        # Closed for good before the caller closes the socket, even if the close handshake
        # was cancelled: nothing may write to its descriptor number once another connection
        # can have it.
        ws._mark_closed(_ABNORMAL, "")
