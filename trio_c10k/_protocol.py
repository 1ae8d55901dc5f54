"""The WebSocket protocol without I/O: bytes and time in; messages, frames to send and close
decisions out (RFC 6455, and RFC 7692 through wsproto). No trio, no socket.

``WebSocketProtocol`` is one connection's protocol state, server or client side: the public
API, the receiving half (frames parsed, messages reassembled within the limits and delivered to
the inbox, the peer's close received) and keep-alive, here, over its base class, the sending
half (``_protocol_send.FrameSender``: the bounded send queue, the close frame, the closed
state). Alone (tests, any runtime) it is fed with ``_receive_data(data, now)`` and
``_parse()``, read with ``_next_message()``, timed with ``_keep_alive(now)``, written to with
``write_message``, ``ping`` and ``_start_close``, and emptied with ``_data_to_send()``.
``_websocket.WebSocket`` subclasses it for the I/O and overrides its hooks (``_send_frame``,
``_wake``, ``_drop``, ``_from_other_thread``): nothing stands between a frame and the socket.

Rule 1: ``_parse`` turns bytes into whole messages, bounded by ``max_message_size`` (1009
beyond it) in bytes whatever their shape: UTF-8 bytes for text, each continuation frame costing
``FRAGMENT_COST`` more, inflation stopped at the limit (``_deflate``). Messages wait in an inbox
bounded in messages (``INCOMING_QUEUE``) and bytes (``max_message_size``); while it is full,
parsing stops and the bytes wait. A call hands wsproto at most ``FRAMES_PER_STEP`` frames, then
sets ``_tired``; the pings of one call get one pong, the last one's.
Rule 2: the common frame (``_frames``: a whole text or binary message in one frame, masked as
the side requires, no extension agreed) is decoded here; every other frame goes to wsproto
whole, from its first byte to its last (a long one as it arrives), so wsproto never holds part
of a frame when a common one comes next. wsproto keeps the protocol state and enforces RFC 6455
(1002, 1007) on its frames.
Rules 3 (the bounded send queue) and 4 (the close frame after the queue, then no data frame)
are the sending half's, in ``_protocol_send``.
Rule 5: keep-alive is decided from the time given: a ping once the peer has been silent for
``ping_interval``, 1011 if nothing at all arrived ``ping_timeout`` after it. Any bytes received
answer a ping; a server's ping is one prebuilt frame, and a pong is skipped by ``_parse``
without wsproto (it counts as one of the step's ``FRAMES_PER_STEP``).
Rule 6: after the close (handshake, protocol error, lost peer), the messages already received
are still handed out, then none; ``close_code`` says how it ended.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from threading import get_ident
from typing import Any

from wsproto.connection import Connection, ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.frame_protocol import CloseReason

from ._config import WebSocketConfig
from ._deflate import BoundedDeflate
from ._exceptions import ConnectionClosed
from ._frames import COMMON_BINARY, MASKED, encode_frame, frame_header, unmask
from ._protocol_send import FrameSender

log = logging.getLogger("trio_c10k.websocket")

#: bytes the I/O layer asks of the kernel per read; a frame longer than that goes to wsproto
#: as it arrives instead of waiting whole
RECEIVE_SIZE = 65536
#: whole messages received but not yet read by the handler (then TCP back-pressure); their
#: size is bounded too, by ``max_message_size``
INCOMING_QUEUE = 16
#: bytes a continuation frame counts for beyond its payload, towards ``max_message_size``: a
#: fragment kept until the message is whole costs a str or bytes object and a list slot
#: (about 60 bytes), and parsing it costs more than its bytes, even empty (RFC 6455 section
#: 5.4 sets no limit on the number of fragments; 1.5 million empty ones would grow memory)
FRAGMENT_COST = 64
#: frames handed to wsproto in one ``_parse`` before the I/O layer lets other tasks run: a ping
#: flood (10,000 per 64 KiB read, ~10 us each) gets a fraction of a millisecond per turn, not
#: 100 ms. Measured against 64 under a ping flood, 16 halved another connection's echo time.
FRAMES_PER_STEP = 16
#: RFC 6455 opcodes (section 5.2) that ``write_message(opcode=...)`` accepts
TEXT, BINARY = 1, 2
#: RFC 6455 section 7.1.5: closed without a close frame (never sent)
ABNORMAL = CloseReason.ABNORMAL_CLOSURE
#: the payload of a keep-alive ping, and the whole ping frame as a server sends it (unmasked)
KEEPALIVE = b"keepalive"
KEEPALIVE_PING = bytes((0x89, len(KEEPALIVE))) + KEEPALIVE
#: the first byte of a pong frame (FIN, opcode 10, no reserved bit); a pong needs no answer
PONG = 0x8A


def in_loop_thread(loop_thread: int) -> bool:
    """Whether the caller runs in the thread ``loop_thread`` (a ``threading.get_ident()``): the
    thread that owns a connection (its event loop's), the only one that may touch it.

    The one test of it, for the protocol, the WebSocket and the fan-out. Not
    ``trio.lowlevel.in_trio_run()``: a trio run of its own in another thread is in a run, but
    not in the connection's.
    """
    return get_ident() == loop_thread


class WebSocketProtocol(FrameSender):
    """One WebSocket connection's protocol state (see the module's rules); subclassed by
    ``WebSocket`` for the I/O."""

    __slots__ = (
        "_heard",
        "_inbox",
        "_inboxed",
        "_loop_thread",
        "_mask_bit",
        "_owed",
        "_parts",
        "_ping",
        "_pinged_at",
        "_plain",
        "_size",
        "_tired",
        "_unparsed",
    )

    def __init__(
        self,
        connection: Connection | None,
        config: WebSocketConfig,
        *,
        remote_address: Any = None,
        extensions: list[Any] | None = None,
        received: bytes = b"",
        now: float = 0.0,
    ) -> None:
        super().__init__(connection, config, remote_address)
        # Server side without extensions: data frames are built here, not by wsproto (same
        # bytes, a third of the cost), and one frame serves every member of a broadcast.
        client = connection is not None and connection.client
        self._plain = not client and not extensions
        # Without extensions common frames are decoded here: the mask bit such a frame has (a
        # client masks, a server does not). None: every frame goes to wsproto.
        self._mask_bit = None if extensions else 0 if client else MASKED
        for extension in extensions or ():
            if isinstance(extension, BoundedDeflate):  # inflates a message this far at most
                extension.max_size = config.max_message_size
        # Bytes received and not yet split into frames (``received``: what came with the
        # handshake), and how many bytes of the frame wsproto is parsing it has not had yet.
        self._unparsed = received
        self._owed = 0
        # The thread that owns the connection (see ``in_loop_thread``).
        self._loop_thread = get_ident()
        # Whole messages not handed out yet; closed once the connection is. A list, not a
        # deque: it holds at most INCOMING_QUEUE, and an empty deque is 600 bytes.
        self._inbox: list[str | bytes] = []
        # Their total length (characters for text): parsing stops at max_message_size.
        self._inboxed = 0
        # When the peer was last heard from, and when an unanswered keep-alive ping left.
        self._heard = now
        self._pinged_at: float | None = None
        # Fragments of the message being received (None while there are none: most
        # messages come in one frame), and its size so far: the payload of the frames that
        # wsproto parses, as their headers announce it, plus FRAGMENT_COST per continuation.
        self._parts: list[Any] | None = None
        self._size = 0
        # Set when a ``_parse`` handed FRAMES_PER_STEP frames to wsproto: others first.
        self._tired = False
        # The last ping of this ``_parse``, answered as it ends (one pong per call).
        self._ping: Ping | None = None

    # -- the public API -------------------------------------------------------------------

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
            self._from_other_thread(self.write_message, data, opcode)
            return
        self._check_open()
        if opcode == TEXT and not isinstance(data, str):
            data = bytes(data).decode("utf-8")
        elif opcode == BINARY and isinstance(data, str):
            data = data.encode("utf-8")
        elif opcode not in (None, TEXT, BINARY):
            raise ValueError(f"opcode must be 1 (text) or 2 (binary), not {opcode!r}")
        self._counters.messages_out += 1
        if self._plain:
            self._send_frame(encode_frame(data))
        elif self._mask_bit == 0:
            self._send_frame(encode_frame(data, masked=True))
        else:
            event = TextMessage(data=data) if isinstance(data, str) else BytesMessage(data=data)
            self._send_frame(self._wsproto().send(event))

    def ping(self, payload: bytes = b"") -> None:
        """Send a ping (the peer answers with a pong); never blocks. Callable from a worker
        thread too, as ``write_message``.

        Raises:
            ConnectionClosed: the connection is closing or closed.
        """
        if not in_loop_thread(self._loop_thread):
            self._from_other_thread(self.ping, payload)
            return
        self._check_open()
        self._send_frame(self._wsproto().send(Ping(payload=payload)))

    # -- bytes and time in ----------------------------------------------------------------

    def _receive_data(self, data: bytes, now: float) -> None:
        """The peer's next bytes, read at ``now`` (b"": the end of the stream, or a reset).
        They wait for ``_parse``; the end of the stream closes with 1006 at once."""
        self._heard, self._pinged_at = now, None
        if data:
            self._counters.bytes_in += len(data)
            self._unparsed = self._unparsed + data if self._unparsed else data
        else:
            self._to_wsproto(None)

    def _inbox_full(self) -> bool:
        """Whether parsing waits for the handler to take messages (Rule 1); never once the
        connection is closing, when what matters is the peer's close frame."""
        full = len(self._inbox) >= INCOMING_QUEUE or self._inboxed >= self._config.max_message_size
        return full and not (self._inbox_closed or self._close_sent)

    def _parse(self) -> None:
        """Handle the frames received, as far as the inbox has room and at most
        FRAMES_PER_STEP of them through wsproto (then ``_tired`` is set).

        A common frame (see the module's Rule 2) that is here whole becomes a message here;
        any other frame goes to wsproto, whole, as its bytes arrive (``_owed``).
        """
        data = self._unparsed
        inbox, mask_bit, at, end = self._inbox, self._mask_bit, 0, len(data)
        inboxed = len(inbox)  # the messages of this call are counted once, as it ends
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
            if first == PONG and stop <= end and mask_bit is not None:
                length = stop - start  # a whole pong, masked as the side requires, 7-bit length
                if length < 126 and data[at + 1] == mask_bit | length:
                    at = stop  # nothing to do: ``_receive_data`` heard it (Rule 5)
                    continue
            opcode = first & 0x0F
            if opcode < 3:  # a data frame: its payload counts as announced, UTF-8 bytes for text
                self._size += stop - start if opcode else stop - start + FRAGMENT_COST
                if self._size > limit:
                    self._protocol_error(CloseReason.MESSAGE_TOO_BIG, f"message larger than {limit} bytes")
                    break
            self._owed = stop - at  # wsproto gets this frame (a long one as it arrives)
        if self._ping is not None:
            # One pong for the pings of this call, the last one's: RFC 6455 section 5.5.3 allows
            # it, and a ping flood then costs one pong per FRAMES_PER_STEP pings, not one each.
            ping, self._ping = self._ping, None
            ws = self._wsproto()
            if ws.state is ConnectionState.OPEN:
                self._send_frame(ws.send(ping.response()))
        self._unparsed = data[at:] if at else data
        self._counters.messages_in += len(inbox) - inboxed

    def _keep_alive(self, now: float) -> bool:
        """Keep-alive at ``now``: a ping after ``ping_interval`` seconds of silence from the
        peer; 1011 if nothing at all (pong or other) arrived ``ping_timeout`` after it.
        Returns whether it sent something (the ping or the close)."""
        interval, timeout = self._config.ping_interval, self._config.ping_timeout
        if not self.open or interval is None:
            return False
        if self._pinged_at is None:
            if now - self._heard < interval:
                return False
            # A server's ping is always the same bytes; a client's is masked afresh.
            ws = self._ws
            self._send_frame(ws.send(Ping(KEEPALIVE)) if ws is not None and ws.client else KEEPALIVE_PING)
            self._pinged_at = now
            return True
        if now - self._pinged_at < timeout:
            return False
        log.info("%s: no answer to a ping within %g s; closing with 1011", self._peer, timeout)
        self._fail(CloseReason.INTERNAL_ERROR, "keepalive ping timeout")
        return True

    # -- messages out ---------------------------------------------------------------------

    def _next_message(self) -> str | bytes | None:
        """The oldest message received and not handed out yet, or None if there is none."""
        if not self._inbox:
            return None
        message = self._inbox.pop(0)
        self._inboxed -= len(message)
        if self._waiters:  # parsing may wait for room in the inbox
            self._wake()
        return message

    # -- hooks the I/O layer overrides ----------------------------------------------------

    def _from_other_thread(self, fn: Callable[..., None], *args: Any) -> None:
        """``fn(*args)`` was called from a thread that does not own the connection."""
        raise RuntimeError("a WebSocket is used only from the thread that owns it")

    # -- helpers ------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._is_closed:
            raise ConnectionClosed(self.close_code or ABNORMAL, self.close_reason or "")
        if self._close_sent is not None:  # closing: the code and reason this side sent
            raise ConnectionClosed(self._close_sent.code, self._close_sent.reason or "")

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
        ws = self._wsproto()
        ws.receive_data(data)
        for event in ws.events():
            self._handle(event)

    def _handle(self, event: object) -> None:
        if isinstance(event, TextMessage | BytesMessage):
            if self._is_closed:
                return
            data = event.data  # its size was counted from the frame's header (``_parse``)
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
            self._ping = event  # answered at the end of ``_parse``
        elif isinstance(event, CloseConnection):
            self._on_close(event)

    def _on_close(self, event: CloseConnection) -> None:
        state = self._wsproto().state
        if state is ConnectionState.REMOTE_CLOSING:  # the peer closes: answer, then done
            self._send_close(event.response())
            self._mark_closed(event.code, event.reason or "")
        elif state is ConnectionState.CLOSED:  # the answer to our close, or the stream's end
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
