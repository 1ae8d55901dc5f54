"""The sending half of an HTTP connection: response heads and bodies, streamed chunks, error
answers, each written to the socket with a deadline.

``ResponseWriter`` is the base class of ``_http_read.RequestReader`` (and so of
``_http.HTTPConnection``): it holds the socket and what is sent for the request at hand; the
subclasses read the requests and decide the answers. It never reads the socket, except to drop
what a client still sends after an error answer (``linger``).

Rule 1: heads and framing come from ``_http_framing`` (h11 only parses, in ``_http_read``).
Once a byte of a response head is handed to the socket (``head_sent``) no other answer is
written for that request: if writing fails, or the application's body breaks its framing, the
connection ends.
Rule 2: every write has a deadline for progress: a client that takes no byte for
``send_timeout`` is aborted (reset, so the kernel drops what it still held for it), and a
worker thread streaming to it gets ``_ClientGone``. A body is never copied to be sent: head and
body go out together through one ``writev``, and a file's bytes through ``sendfile``.
Rule 3: an error answer has a short plain-text reason, says ``Connection: close``, and is
logged once, at INFO unless the caller logged it already. The close lingers: our side is shut,
then what the client still sends is read and dropped (within ``LINGER_TIME`` and
``LINGER_BYTES``), so that a reset does not destroy the answer.
"""

from __future__ import annotations

import logging
import os
import time
from email.utils import formatdate
from http import HTTPStatus
from typing import Protocol

import trio

from ._config import Config
from ._counters import Counters
from ._http_framing import LAST_CHUNK, ResponseHead, chunk, response_head
from ._sockets import reset_on_close, writev_nowait
from ._threads import WorkerThreads
from ._tls_stream import TLSStream
from ._wsgi import AppResponse, FileBody, Headers

log = logging.getLogger("trio_c10k.http")

#: seconds, then bytes, read and thrown away after an error answer before the socket closes:
#: closing with unread input makes the kernel send RST, which can destroy the answer before
#: the client reads it (nginx's lingering close, with a shorter bound than its 30 s)
LINGER_TIME = 2.0
LINGER_BYTES = 4 * 1024 * 1024
#: bytes of a file read and encrypted at a time over TLS (no sendfile: the kernel does not encrypt)
FILE_CHUNK = 256 * 1024
#: bytes asked of the kernel per read while lingering
LINGER_READ_SIZE = 65536
_DISCONNECTS = (trio.BrokenResourceError, trio.ClosedResourceError)


class _ClientGone(Exception):
    """The peer went away while a streamed response was being written."""


_date = [0, b""]


def _http_date() -> bytes:
    """The Date header value (RFC 9110 section 6.6.1), formatted once per second."""
    now = int(time.time())
    if now != _date[0]:
        _date[:] = [now, formatdate(now, usegmt=True).encode("ascii")]
    return _date[1]  # type: ignore[return-value]  # list holds [int, bytes]


class SenderOwner(Protocol):
    """What the sending half needs of the server that accepted the connection (``_http.Owner``
    asks for more)."""

    @property
    def config(self) -> Config:
        """The limits and timeouts."""

    @property
    def workers(self) -> WorkerThreads:
        """The threads the application runs in."""

    @property
    def closing(self) -> bool:
        """True once shutdown began: no new request, ``Connection: close`` on answers."""

    @property
    def counters(self) -> Counters:
        """Where the answers count, by status class."""


def peer_label(address: object) -> str:
    """``host:port`` (``[host]:port`` for IPv6) as logs show a peer; "unix" for a Unix socket."""
    if isinstance(address, tuple):
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return "unix"


class ResponseWriter:
    """Writes the answers of one accepted socket (``RequestReader`` is the one subclass).

    Resource handling: the caller owns the stream and closes it; this object only writes it.
    """

    def __init__(self, stream: trio.SocketStream | TLSStream, server: SenderOwner, client: str) -> None:
        #: the accepted socket, or the TLS stream over it
        self.stream = stream
        #: the TLS state: what is written is encrypted with it first; None in plain text
        self.tls = stream.tls if isinstance(stream, TLSStream) else None
        #: the owner: config, worker threads, whether it is closing
        self.server = server
        #: the peer, as the logs show it
        self.client = client
        #: per request: a byte of the response head went to the socket (Rule 1)
        self.head_sent = False
        #: per request: the request is HEAD, so no body is sent
        self.is_head = False
        #: per request: the request is HTTP/1.1 (an error answer before one is parsed: 1.0)
        self.http_11 = False
        #: per request: the request lets the connection serve another
        self.persistent = False
        #: per request: the head of the answer, once built
        self.response: ResponseHead | None = None
        #: per request: body bytes the Content-Length of a streamed answer still expects
        self.body_left = 0
        #: per request: body bytes sent, for the access log
        self.sent_bytes = 0

    def _head(self, status: int, reason: bytes, headers: Headers) -> ResponseHead:
        """The head of this request's answer (``ValueError`` if the application's fields are
        not sendable: ``_http_framing`` Rule 2)."""
        self.response = response_head(
            status,
            reason,
            [*headers, (b"date", _http_date())],
            head_request=self.is_head,
            http_11=self.http_11,
            keep_alive=self.persistent and not self.server.closing,
        )
        return self.response

    async def _send_response(self, response: AppResponse) -> None:
        file = response.file
        try:
            head = self._head(response.status, response.reason, response.headers)
            if file is not None and not head.bodiless:  # its Content-Length is the file's
                self.head_sent = True
                await self._write(head.data)
                await self._send_file(file)
                return
            body = response.body
            if head.bodiless:
                body = b""
            elif head.length is not None and head.length != len(body):
                raise ValueError(f"a {len(body)}-byte body with Content-Length {head.length}")
            pieces: tuple[bytes, ...] = (head.data, body)
            if head.chunked:
                pieces = (head.data, *chunk(body), LAST_CHUNK) if body else (head.data, LAST_CHUNK)
            self.head_sent = True
            await self._write(*pieces)
            self.sent_bytes = len(body)
        finally:
            if file is not None:
                os.close(file.fd)

    async def _end_stream(self) -> None:
        """End a streamed body whose chunks went out (``_stream_chunk``)."""
        assert self.response is not None
        if self.response.chunked:
            await self._write(LAST_CHUNK)
        elif self.body_left:
            raise ValueError(f"the streamed body ended {self.body_left} bytes short of its Content-Length")

    async def _send_file(self, file: FileBody) -> None:
        """Send ``file`` with sendfile(2) from the event loop, within ``send_timeout`` per step
        (over TLS, read and encrypted a chunk at a time)."""
        if self.tls is not None:
            await self._send_file_tls(file)
            return
        sock = self.stream.socket.fileno()
        offset, end = file.offset, file.offset + file.length
        while offset < end:
            try:
                sent = os.sendfile(sock, file.fd, offset, end - offset)
            except BlockingIOError:
                await self._wait_writable(sock)
                continue
            except (BrokenPipeError, ConnectionResetError) as exc:
                raise trio.BrokenResourceError from exc
            if not sent:
                raise OSError(f"the file ended {end - offset} bytes short of its Content-Length")
            offset += sent
            self.sent_bytes += sent
            await trio.lowlevel.checkpoint()  # a fast reader does not keep the loop

    async def _send_file_tls(self, file: FileBody) -> None:
        offset, end = file.offset, file.offset + file.length
        while offset < end:
            chunk = os.pread(file.fd, min(FILE_CHUNK, end - offset), offset)
            if not chunk:
                raise OSError(f"the file ended {end - offset} bytes short of its Content-Length")
            await self._write(chunk)
            offset += len(chunk)
            self.sent_bytes += len(chunk)

    def _stream_from_thread(self, status: int, reason: bytes, headers: Headers, data: bytes) -> None:
        trio.from_thread.run(
            self._stream_chunk, status, reason, headers, data, trio_token=self.server.workers.token
        )

    async def _stream_chunk(self, status: int, reason: bytes, headers: Headers, data: bytes) -> None:
        """Write one chunk of a streamed body (called from the worker thread)."""
        try:
            pieces: list[bytes] = []
            head = self.response
            if head is None:
                head = self._head(status, reason, headers)
                self.body_left = head.length or 0
                self.head_sent = True
                pieces.append(head.data)
            if not head.bodiless:
                if head.length is not None:
                    if len(data) > self.body_left:
                        raise ValueError(f"the streamed body is longer than its Content-Length {head.length}")
                    self.body_left -= len(data)
                pieces += chunk(data) if head.chunked else (data,)
                self.sent_bytes += len(data)
            await self._write(*pieces)
        except _DISCONNECTS as exc:
            raise _ClientGone from exc

    async def _write(self, *pieces: bytes) -> None:
        """Send ``pieces`` in order with ``writev`` (no copy to join them; over TLS, the records
        carrying them)."""
        if self.tls is not None:
            pieces = (self.tls.encrypt(b"".join(pieces)),)
        fd = self.stream.socket.fileno()
        buffers: list[bytes | memoryview] = list(pieces)
        sent = 0
        try:
            while True:
                while buffers and sent >= len(buffers[0]):
                    sent -= len(buffers.pop(0))
                if not buffers:
                    return
                if sent:
                    buffers[0] = memoryview(buffers[0])[sent:]
                try:
                    sent = writev_nowait(fd, buffers)
                except BlockingIOError:
                    sent = 0
                    await self._wait_writable(fd)
        except OSError as exc:
            raise trio.BrokenResourceError from exc

    async def _wait_writable(self, fd: int) -> None:
        """Wait until the socket takes bytes again, at most ``send_timeout``."""
        with trio.move_on_after(self.server.config.send_timeout):
            await trio.lowlevel.wait_writable(fd)
            return
        raise self._stalled()

    def _stalled(self) -> _ClientGone:
        """Log a client that took nothing for ``send_timeout`` and make its close a reset."""
        timeout = self.server.config.send_timeout
        log.info("%s: client read nothing for %g s, connection aborted", self.client, timeout)
        reset_on_close(self.stream.socket)
        return _ClientGone(f"no progress sending for {timeout:g} s")

    async def _send_error(self, status: int, reason: str, *, logged: bool = False) -> None:
        """Answer ``status`` with ``reason`` as plain text, then let the connection close."""
        if not logged:
            log.info("%s: %d %s", self.client, status, reason)
        if self.head_sent:  # Rule 1: too late for another answer
            return
        self.server.counters.responses[status // 100] += 1
        body = b"" if self.is_head else (reason + "\n").encode()
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(body)),
            (b"date", _http_date()),
        ]
        head = response_head(
            status,
            HTTPStatus(status).phrase.encode(),
            headers,
            head_request=False,
            http_11=False,
            keep_alive=False,
        )
        self.head_sent = True
        try:
            await self._write(head.data, body)
            await linger(self.stream, LINGER_TIME, LINGER_BYTES)
        except _DISCONNECTS:
            log.debug("%s: could not send the %d answer", self.client, status)


async def linger(stream: trio.abc.HalfCloseableStream, seconds: float, max_bytes: int) -> None:
    """A lingering close, after an error answer (nginx ``lingering_close``): shut our side,
    then read and drop what the client still sends, for at most ``seconds`` and
    ``max_bytes``. Closing with unread input makes the kernel send a reset, which can destroy
    the answer before the client reads it. The caller closes the stream."""
    dropped = 0
    with trio.move_on_after(seconds):
        try:
            await stream.send_eof()
            while dropped <= max_bytes and (data := await stream.receive_some(LINGER_READ_SIZE)):
                dropped += len(data)
        except _DISCONNECTS:
            pass  # the client is gone: nothing left to protect
