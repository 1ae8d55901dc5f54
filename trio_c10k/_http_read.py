"""The reading half of an HTTP connection: request heads and bodies, within their limits.

``RequestReader`` is the base class of ``_http.HTTPConnection`` (and itself a
``_http_send.ResponseWriter``, for the error answers): it reads the request at hand; the
subclass answers it, then asks for the next.

Rule 1: one ``h11.Connection`` per request, as its parser only: requests are answered one
after another, so pipelined requests are answered in order; the bytes one request's parser
holds past its end (the next requests, the end of the stream) go to the next request's.
Rule 2: a request's body is read whole, within ``max_body_size`` and ``body_timeout`` (and in
a temporary file past ``SPOOL_SIZE``), before the application runs: the worker thread never
waits on the network, and chunked bodies get a CONTENT_LENGTH.
Rule 3: h11 is as lenient as the RFC allows; ``_http_rules`` is strict: a request head's raw
bytes pass ``check_head`` before they are parsed (by h11, or Rule 5), the parsed request
``check_request``, and a chunked body's raw bytes ``ChunkedBody``, as they are handed to h11.
Rule 4: a new connection's first request is usually in the socket's buffer by the time its
task runs (the client sent it right after connecting): it is read with a plain non-blocking
read, and when the head is whole it is served without a timer, a cancel scope or an epoll
registration. Only a head that is not all there waits, under ``keep_alive_timeout`` then
``header_timeout`` as before.
Rule 5: a plain head (``_http_head``: no body, no Expect, one Host) is read by ``plain_head``
instead of h11, once ``check_head`` passed it; the bytes after it are kept in ``rest`` and go
on as h11's would (Rule 1).
"""

from __future__ import annotations

import logging
import tempfile
from typing import IO, Protocol

import h11
import trio

from ._http_framing import persists
from ._http_head import Head, plain_head
from ._http_rules import ChunkedBody, check_head, check_request, head_end
from ._http_send import ResponseWriter, SenderOwner
from ._sockets import read_nowait
from ._tls_stream import TLSStream
from ._wsgi import empty_body

log = logging.getLogger("trio_c10k.http")

#: bytes asked of the kernel per read; large enough for a burst of pipelined requests
RECEIVE_SIZE = 65536
#: seconds a connection that has sent no request yet waits for one once shutdown began: a
#: client that connected before the signal sends its request right after the handshake, so
#: it arrives within a round trip (a second is Linux's initial retransmission timeout too)
SHUTDOWN_FIRST_REQUEST_WAIT = 1.0
#: request bodies larger than this go to a temporary file instead of memory: one read's worth,
#: so a form or a JSON body stays in memory while thousands of slow uploads cost 64 KiB each
#: (nginx's client_body_buffer_size is 8-16 KiB; below one read, most bodies would hit the disk)
SPOOL_SIZE = RECEIVE_SIZE


class ReaderOwner(SenderOwner, Protocol):
    """What reading requests needs of the server: what ``SenderOwner`` names (config, worker
    threads, ``closing``), and ``idle``, where the cancel scope of each wait for a next request
    goes, for the owner to cancel when it shuts down."""

    @property
    def idle(self) -> set[trio.CancelScope]:
        """The cancel scopes of connections waiting for their next request."""


class RequestReader(ResponseWriter):
    """Reads the requests of one accepted socket (``HTTPConnection`` is the one subclass).

    Resource handling: the caller owns the stream and closes it; this object only reads it
    (and writes error answers).
    """

    #: the owner: config, worker threads, idle scopes
    server: ReaderOwner

    def __init__(self, stream: trio.SocketStream | TLSStream, server: ReaderOwner, client: str) -> None:
        super().__init__(stream, server, client)
        #: the parser of the request at hand (Rule 1), made as its reading starts
        self.conn: h11.Connection
        #: no request was parsed on this connection yet
        self.first = True
        #: per request: the client expects "100 Continue" and has not had it
        self.continue_due = False
        #: per request: the framing check of a chunked body, None for other requests
        self.chunked: ChunkedBody | None = None
        #: per request: for a plain head (Rule 5), the bytes after it and whether the stream
        #: ended; None while h11 holds the request (before the first: nothing received)
        self.rest: tuple[bytes, bool] | None = (b"", False)

    def _trailing(self) -> tuple[bytes, bool]:
        """The bytes received past the request at hand, and whether the stream ended."""
        return self.conn.trailing_data if self.rest is None else self.rest

    def _whole_head(self, received: bytes | bytearray, end: int, ended: bool) -> tuple[bool, Head | None]:
        """Check the head that is the first ``end`` bytes of ``received`` (Rule 3): whether the
        request is chunked, and the request if the head is plain (Rule 5), the bytes after it
        kept in ``rest``."""
        head = bytes(received[:end])
        chunked = check_head(head)
        request = None if chunked else plain_head(head)
        if request is not None:
            self.rest = (bytes(received[end:]), ended)
        return chunked, request

    async def _read_request(self) -> Head | None:
        """The next request, or None when the connection should close quietly.

        Its head's raw bytes are checked (``check_head``) before it is parsed (Rule 5: by
        ``plain_head`` if plain, else by h11).
        """
        buffered, ended = self._trailing()  # what the last request's reading held past its end
        conn = self.conn = h11.Connection(
            h11.SERVER, max_incomplete_event_size=self.server.config.max_header_size
        )
        if buffered:
            conn.receive_data(buffered)
        if ended:
            conn.receive_data(b"")  # h11's end of the stream
        self.is_head = False  # an error answer before the request is parsed has a body
        self.head_sent, self.response, self.sent_bytes, self.http_11 = False, None, 0, False
        self.chunked = self.rest = None
        chunked: bool | None = None
        event: object = None
        if (end := head_end(buffered)) >= 0:
            chunked, event = self._whole_head(buffered, end, ended)
        if event is None:  # with nothing received yet, h11 is not asked
            event = conn.next_event() if buffered or ended else h11.NEED_DATA
        if event is h11.NEED_DATA:
            event, chunked = await self._wait_for_request(bytearray(buffered))
        if isinstance(event, h11.Request):
            event = Head.of(event)
        if isinstance(event, Head):
            self.is_head = event.method == b"HEAD"
            # h11 bounds a head that arrives in pieces; one that arrives whole in a single
            # read is measured here (the line, and each field as "name: value\r\n").
            fields = event.fields
            size = len(event.method) + len(event.target) + sum([len(n) + len(v) + 4 for n, v in fields])
            if size > self.server.config.max_header_size:
                raise h11.RemoteProtocolError("request head too large", error_status_hint=431)
            check_request(event)
            self.http_11 = event.http_version == b"1.1"
            self.persistent = persists(
                event.http_version, [v for n, v in fields if n.lower() == b"connection"]
            )
            self.continue_due = conn.they_are_waiting_for_100_continue
            if chunked:
                self.chunked = ChunkedBody(self.server.config.max_header_size)
                self.chunked.feed(conn.trailing_data[0])
            return event
        return None

    async def _wait_for_request(
        self, head: bytearray
    ) -> tuple[Head | h11.Request | h11.ConnectionClosed | None, bool | None]:
        """The next event, and ``check_head``'s answer once the head is whole.

        ``head`` holds the bytes of the head received so far; the bytes read are added to it.
        """
        conn, server, config = self.conn, self.server, self.server.config
        begun = fed = bool(head)  # fed: h11 was given bytes or the end of the stream
        chunked = None
        closing, idle_timeout = server.closing, config.keep_alive_timeout
        if closing and not begun:
            # Shutdown: a request that reached the socket already is answered (with
            # Connection: close); a keep-alive connection with nothing sent closes now; one
            # that has not sent its first request yet (just accepted) gets a moment for it.
            if isinstance(self.stream, TLSStream):
                data = self.stream.receive_nowait()
            else:
                data = read_nowait(self.stream.socket.fileno())
            if data:
                conn.receive_data(data)
                head += data
                begun = fed = True
            elif not self.first:
                return None, None
            idle_timeout = min(idle_timeout, SHUTDOWN_FIRST_REQUEST_WAIT)
        elif not begun and self.first and self.tls is None:
            # Rule 4: a new connection's first request is read without a wait if it is here.
            data = read_nowait(self.stream.socket.fileno())
            if data is not None:
                conn.receive_data(data)
                head += data
                begun, fed = bool(data), True
                if (end := head_end(head)) >= 0:  # whole: checked (Rule 3), then parsed
                    chunked, plain = self._whole_head(head, end, False)
                    if plain:
                        return plain, chunked
                    if (event := conn.next_event()) is not h11.NEED_DATA:
                        return event, chunked  # type: ignore[return-value]  # a Request
        # Idle until the first byte (keep-alive timeout; shutdown cancels it), then the
        # header timeout for the whole head, against slow-header (slowloris) clients.
        with trio.move_on_after(config.header_timeout if begun else idle_timeout) as scope:
            if not begun:
                server.idle.add(scope)
            try:
                event = conn.next_event() if fed else h11.NEED_DATA
                while event is h11.NEED_DATA:
                    data = await self.stream.receive_some(RECEIVE_SIZE)
                    if data and not begun:
                        begun = True
                        server.idle.discard(scope)
                        scope.deadline = trio.current_time() + config.header_timeout
                    conn.receive_data(data)
                    if chunked is None:
                        searched = max(0, len(head) - 2)
                        head += data
                        if (end := head_end(head, searched)) >= 0:
                            chunked, plain = self._whole_head(head, end, False)
                            if plain:
                                return plain, chunked
                    event = conn.next_event()
                if chunked is None and isinstance(event, h11.Request):  # whole before any wait
                    chunked = check_head(bytes(head[: head_end(head)]))
                return event, chunked  # type: ignore[return-value]  # Request or ConnectionClosed
            finally:
                server.idle.discard(scope)
        if begun:
            await self._send_error(408, f"Request headers not received within {config.header_timeout:g} s")
        elif server.closing and not closing:  # shutdown() ended the wait: what came is served
            return await self._wait_for_request(head)
        return None, None

    async def _read_body(self, request: Head) -> tuple[IO[bytes], int] | None:
        """The whole body and its length; None once an error answer was sent."""
        if self.rest is not None:  # a plain head: no body (Rule 5)
            return empty_body(), 0
        event = self.conn.next_event()
        if type(event) is h11.EndOfMessage:  # no body
            return empty_body(), 0
        limit = self.server.config.max_body_size
        for name, value in request.fields:
            if name.lower() == b"content-length" and int(value) > limit:
                await self._send_error(413, f"Request body larger than {limit} bytes")
                return None
        body = tempfile.SpooledTemporaryFile(max_size=SPOOL_SIZE)  # noqa: SIM115  # closed by the caller
        try:
            length = await self._receive_body(event, body)
        except BaseException:
            body.close()
            raise
        if length is None:
            body.close()
            return None
        body.seek(0)
        return body, length

    async def _receive_body(self, event: object, body: IO[bytes]) -> int | None:
        conn, config = self.conn, self.server.config
        length = 0
        # Each read has header_timeout (a stalled client), the whole body body_timeout (one
        # that trickles a byte now and then).
        deadline = trio.current_time() + config.body_timeout
        while type(event) is not h11.EndOfMessage:
            if event is h11.NEED_DATA:
                if self.continue_due:
                    self.continue_due = False
                    await self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
                with trio.move_on_at(min(deadline, trio.current_time() + config.header_timeout)) as scope:
                    data = await self.stream.receive_some(RECEIVE_SIZE)
                if scope.cancelled_caught:
                    if trio.current_time() >= deadline:
                        reason = f"Request body not received within {config.body_timeout:g} s"
                    else:
                        reason = f"Request body stalled for {config.header_timeout:g} s"
                    await self._send_error(408, reason)
                    return None
                if not data:
                    log.debug("%s: connection closed during the request body", self.client)
                    return None
                if self.chunked is not None:
                    self.chunked.feed(data)
                conn.receive_data(data)
            elif type(event) is h11.Data:
                length += len(event.data)
                if length > config.max_body_size:
                    await self._send_error(413, f"Request body larger than {config.max_body_size} bytes")
                    return None
                try:
                    body.write(event.data)
                except OSError as exc:  # the spool file: out of descriptors or disk space
                    log.error("%s: cannot store a request body: %s", self.client, exc)
                    await self._send_error(503, "The server cannot store the request body now", logged=True)
                    return None
            event = conn.next_event()
        return length
