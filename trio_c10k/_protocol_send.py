"""The sending half of the WebSocket protocol without I/O: frames out, the bounded send queue,
the close frame and how the connection ended. No trio, no socket.

``FrameSender`` is the base class of ``_protocol.WebSocketProtocol``: it holds what both halves
share (the wsproto connection, the limits, the counters, the closed state); the subclass adds
the public API, the bytes and time received and the messages handed out. Of the hooks
``_websocket.WebSocket`` overrides for the I/O, three are here (``_send_frame``, ``_wake``,
``_drop``): a frame goes from them to the socket with no object or call in between.

The protocol's rules are numbered across its two modules; Rules 1, 2, 5 and 6 are ``_protocol``'s.
Rule 3: frames to send go to ``_send_frame``, here into ``_queue``. The queue is bounded
(``send_queue_size`` bytes): a frame is refused only when the backlog already queued exceeds
the bound, so one large message always goes in whole; the peer is then closed with 1008.
Rule 4: the close frame goes after whatever is queued, never inside a frame; after it no data
frame goes out (RFC 6455 section 5.5.1), and writing raises ``ConnectionClosed``. Once closed,
the inbox is too: no message is taken in any more.
Rule 7: a server's connection without extensions makes its wsproto connection only when it
first needs one (``_wsproto()``): for a frame ``_parse`` leaves to wsproto (a fragment, a
control frame other than a pong), a ping with a payload, or the close. Its messages, pings and
pongs go without it, so an idle connection never has one (1.7 KB less each).
"""

from __future__ import annotations

import logging
from typing import Any

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import CloseConnection
from wsproto.frame_protocol import CloseReason

from ._config import WebSocketConfig
from ._counters import UNCOUNTED

log = logging.getLogger("trio_c10k.websocket")


def named(code: int) -> int:
    """``code`` as its ``CloseReason`` member, as wsproto gives a peer's code; an application's
    code (3000-4999) has none and stays an int."""
    try:
        return CloseReason(code)
    except ValueError:
        return code


class FrameSender:
    """The sending half of one WebSocket connection's protocol state (see the module's rules);
    subclassed by ``WebSocketProtocol``."""

    __slots__ = (
        "_close_sent",
        "_config",
        "_counters",
        "_inbox_closed",
        "_is_closed",
        "_queue",
        "_queued",
        "_waiters",
        "_ws",
        "close_code",
        "close_reason",
        "remote_address",
    )

    def __init__(self, connection: Connection | None, config: WebSocketConfig, remote_address: Any) -> None:
        #: the peer's address: ``(host, port)`` for TCP; ``(host, None)`` for the client a
        #: trusted proxy named in ``X-Forwarded-For`` (``--proxy-headers``)
        self.remote_address = remote_address
        #: the close code once the connection closed: a ``CloseReason`` member (an ``int``), or
        #: the plain int of an application's code; ``ABNORMAL_CLOSURE`` (1006): no close frame
        self.close_code: int | None = None
        #: the close reason once the connection closed
        self.close_reason: str | None = None
        # wsproto's connection; None until a server's without extensions needs it (Rule 7).
        self._ws = connection
        self._config = config
        # Where its messages count (``_counters``): the server's, set by the server.
        self._counters = UNCOUNTED
        # Whoever waits for the state to change (the I/O layer's parked tasks): ``_wake``.
        self._waiters: list[Any] = []
        # Frames not sent yet, and their total size.
        self._queue: list[bytes] = []
        self._queued = 0
        # Set once the connection is closed (close_code says how); the close frame sent, once
        # one went out (after it, no data frame may: RFC 6455 section 5.5.1); set once no
        # message is taken in any more (closed, or the server going away).
        self._is_closed = False
        self._close_sent: CloseConnection | None = None
        self._inbox_closed = False

    @property
    def open(self) -> bool:
        """True until a close frame was sent or received, or the connection was lost."""
        return not (self._is_closed or self._close_sent)

    @property
    def closed(self) -> bool:
        """True once the connection is closed (``close_code`` says how)."""
        return self._is_closed

    def _wsproto(self) -> Connection:
        """wsproto's connection, made now if there is none yet (Rule 7)."""
        ws = self._ws
        if ws is None:
            ws = self._ws = Connection(ConnectionType.SERVER)
        return ws

    # -- frames out -----------------------------------------------------------------------

    def _data_to_send(self) -> bytes:
        """The frames queued, in one piece; the queue is then empty."""
        data = b"".join(self._queue)
        self._queue.clear()
        self._queued = 0
        return data

    def _start_close(self, code: int, reason: str = "") -> None:
        """Start the close handshake with ``code`` (does nothing unless open)."""
        if self.open:
            self._send_close(CloseConnection(code=named(code), reason=reason))

    # -- hooks the I/O layer overrides ----------------------------------------------------

    def _send_frame(self, frame: bytes) -> None:
        """A frame to send: queued (Rule 3)."""
        self._enqueue(frame)

    def _append(self, frame: bytes) -> None:
        """Queue ``frame`` after the backlog, whatever its size (the close frame of ``_fail``)."""
        self._queue.append(frame)
        self._queued += len(frame)

    def _wake(self) -> None:
        """The state changed (a message, room, the close): whoever waits looks again."""
        self._waiters.clear()

    def _drop(self, why: str, keep_first: bool = False) -> None:
        """Close with 1008 a peer that does not read what it is sent (``why`` goes to the log).

        Its backlog is dropped, but for the first queued frame if ``keep_first`` (the rest of a
        frame partly written): the close frame then goes after it (Rule 4).
        """
        log.warning("%s: %s; closing with 1008", self._peer, why)
        queue = self._queue
        if keep_first and queue:
            del queue[1:]
            self._queued = len(queue[0])
        else:
            queue.clear()
            self._queued = 0
        self._fail(CloseReason.POLICY_VIOLATION, "send queue full: the client reads too slowly")

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

    def _enqueue(self, frame: bytes) -> bool:
        """Queue ``frame``, unless the backlog is over ``send_queue_size``: then the peer is
        dropped (1008) and False returned. The bound is on the backlog, not on this frame."""
        if self._queued > self._config.send_queue_size:
            self._counters.slow_closed += 1
            self._drop(f"send queue over {self._config.send_queue_size} bytes (the peer reads too slowly)")
            return False
        self._queue.append(frame)
        self._queued += len(frame)
        return True

    def _fail(self, code: int, reason: str) -> None:
        """Close because of an error: send the close frame, do not wait for an answer."""
        ws = self._wsproto()
        if ws.state is ConnectionState.OPEN:
            self._close_sent = CloseConnection(code=code, reason=reason)
            frame = ws.send(self._close_sent)
            if self._queued <= self._config.send_queue_size:
                self._send_frame(frame)
            else:  # a full queue, which will be written first: the close frame goes after it
                self._append(frame)
        self._mark_closed(code, reason)

    def _send_close(self, event: CloseConnection) -> None:
        self._close_sent = event
        self._send_frame(self._wsproto().send(event))
        self._wake()  # parsing waiting for room in the inbox goes on to the peer's close

    def _mark_closed(self, code: int, reason: str) -> None:
        if self._is_closed:
            return
        self.close_code, self.close_reason = code, reason
        self._is_closed = True
        self._close_inbox()

    def _close_inbox(self) -> None:
        self._inbox_closed = True
        self._wake()
