"""TLS over a trio socket: the handshakes (server and client side), ``TLSStream``, the stream
the HTTP cycle and the client read and write plaintext through, and ``TLSWebSocket``.

Rule 1: the server's handshake is bounded by one deadline for the whole of it (the caller's
``header_timeout``); a client that stalls, fails the handshake or closes gets one INFO line,
never a traceback, and the connection is closed.
Rule 2: a connection whose first byte is not a TLS handshake record is not TLS: if it looks
like an HTTP request it gets a plain-text HTTP 400 saying the port speaks HTTPS (as nginx
answers) and ``PlainHTTP`` is raised, for the caller's lingering close.
Rule 3: ``TLSStream`` keeps the raw stream (``raw``) and the ``TLS`` object (``tls``) in sight:
the fast paths (``_http_send``'s ``writev``, the WebSocket's direct writes) encrypt with
``tls`` and write the ciphertext to ``raw``'s socket themselves, in the order encrypted.
Rule 4: ``TLSWebSocket`` encrypts each frame as it is sent and then treats the record as the
plain ``WebSocket`` treats a frame (direct write, one write per round, the writer task); a
backlog it cannot send is not dropped before a close frame, as in plain text, but the
connection is reset: TLS records carry implicit sequence numbers, and the peer could decrypt
nothing after a gap.
Rule 5: a connection that ends cleanly (HTTP or WebSocket) sends the close_notify alert before
the socket is closed (``TLSStream.close_notify_nowait``, and ``send_eof`` before a lingering
close), so a client reading to the end sees TLS end, not a truncation; one being reset after a
write cut short does not (the alert would follow a partial record).
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

import trio
from wsproto.frame_protocol import CloseReason

from ._sockets import read_nowait, reset_on_close, resets_on_close, write_nowait
from ._tls import HANDSHAKE_RECORD, TLS
from ._websocket import WebSocket

log = logging.getLogger("trio_c10k.tls")

#: bytes asked of the kernel per read
RECEIVE_SIZE = 65536
#: the answer to plain HTTP on a TLS port (nginx answers "400 The plain HTTP request was sent
#: to HTTPS port"); the first bytes of a request are letters of its method
NOT_TLS_BODY = b"This port speaks HTTPS: use an https:// URL.\n"
NOT_TLS = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(NOT_TLS_BODY), NOT_TLS_BODY)
)


class PlainHTTP(Exception):
    """A plain HTTP request came to a TLS port; it was answered with 400 (see Rule 2)."""


class TLSStream(trio.abc.HalfCloseableStream):
    """A trio stream of plaintext over a TLS connection (see the module's Rule 3)."""

    def __init__(self, raw: trio.SocketStream, tls: TLS, received: bytes = b"") -> None:
        #: the TCP stream the ciphertext goes through
        self.raw = raw
        #: the TLS state: ``tls.encrypt`` / ``tls.decrypt``
        self.tls = tls
        #: the socket (for addresses, options and its descriptor), as ``trio.SocketStream``'s
        self.socket = raw.socket
        # Plaintext that arrived with the end of the handshake, for the first receive_some.
        self._received = received

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """The next plaintext: every byte the records received complete, however many
        (``max_bytes`` is the size of the raw read), so none waits here when the connection
        turns into a WebSocket; b"" at the end of the stream.

        Raises:
            trio.BrokenResourceError: a record does not decrypt.
        """
        if self._received:
            data, self._received = self._received, b""
            return data
        while True:
            data = await self.raw.receive_some(max_bytes or RECEIVE_SIZE)
            if not data:
                return b""
            try:
                plain = self.tls.decrypt(data)
            except ssl.SSLError as exc:
                raise trio.BrokenResourceError(f"TLS: {exc.reason or exc}") from exc
            if plain is not None:
                return plain

    def receive_nowait(self) -> bytes | None:
        """The plaintext already received, without waiting: None if none, b"" at the end."""
        if self._received:
            data, self._received = self._received, b""
            return data
        received = read_nowait(self.socket.fileno())
        if not received:
            return received
        try:
            return self.tls.decrypt(received)
        except ssl.SSLError:
            return b""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt ``data`` and send it whole.

        Raises:
            trio.BrokenResourceError: the peer is gone.
        """
        await self.raw.send_all(self.tls.encrypt(bytes(data)))

    async def wait_send_all_might_not_block(self) -> None:
        await self.raw.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        """End TLS (the close_notify alert), then shut the sending side of the TCP connection."""
        await self.raw.send_all(self.tls.close_notify())
        await self.raw.send_eof()

    def close_notify_nowait(self) -> None:
        """Send the close_notify alert before the socket is closed (Rule 5), if the kernel takes
        it at once: a peer that reads nothing does not hold the close up. Nothing if the
        connection is to be reset; reset if the alert went out cut short."""
        if resets_on_close(self.socket):
            return
        alert = self.tls.close_notify()
        if not alert:  # sent before a lingering close already, or TLS is broken
            return
        try:
            sent = write_nowait(self.socket.fileno(), alert)
        except OSError:  # the peer is gone, or the kernel's buffer is full: closed without it
            return
        if sent < len(alert):
            reset_on_close(self.socket)

    async def aclose(self) -> None:
        await self.raw.aclose()


async def accept_tls(
    stream: trio.SocketStream, context: ssl.SSLContext, seconds: float, peer: str
) -> TLSStream | None:
    """The server's side of the TLS handshake on a new connection, within ``seconds``.

    Returns the ``TLSStream`` once the handshake is complete; None if it failed, stalled, or
    was not TLS (see the module's rules). The caller closes ``stream`` either way.

    Raises:
        PlainHTTP: the client spoke plain HTTP; it was answered, the caller lingers and closes.
    """
    tls = TLS(context, server_side=True)
    first = True
    with trio.move_on_after(seconds):
        try:
            while True:
                data = await stream.receive_some(RECEIVE_SIZE)
                if not data:
                    log.info("%s: closed during the TLS handshake", peer)
                    return None
                if first and data[0] != HANDSHAKE_RECORD:
                    await _not_tls(stream, data, peer)
                    return None
                first = False
                try:
                    done = tls.handshake(data)
                except ssl.SSLError as exc:
                    log.info("%s: TLS handshake failed: %s", peer, exc.reason or exc)
                    await stream.send_all(tls.data_to_send())  # the alert saying why
                    return None
                if out := tls.data_to_send():
                    await stream.send_all(out)
                if done:
                    return TLSStream(stream, tls, tls.decrypt(b"") or b"")
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError):
            log.info("%s: lost during the TLS handshake", peer)
            return None
    log.info("%s: no TLS handshake within %g s", peer, seconds)
    return None


async def connect_tls(stream: trio.SocketStream, context: ssl.SSLContext, server_hostname: str) -> TLSStream:
    """The client's side of the TLS handshake with ``server_hostname`` (checked against the
    server's certificate as ``context`` says).

    Raises:
        ssl.SSLError: the handshake failed (``ssl.SSLCertVerificationError`` for a certificate).
        trio.BrokenResourceError: the server closed the connection during the handshake.
    """
    tls = TLS(context, server_side=False, server_hostname=server_hostname)
    data = b""
    while not tls.handshake(data):
        await stream.send_all(tls.data_to_send())
        data = await stream.receive_some(RECEIVE_SIZE)
        if not data:
            raise trio.BrokenResourceError("the server closed the connection during the TLS handshake")
    if out := tls.data_to_send():
        await stream.send_all(out)
    return TLSStream(stream, tls, tls.decrypt(b"") or b"")


async def _not_tls(stream: trio.SocketStream, data: bytes, peer: str) -> None:
    if data[:1].isalpha():  # a request line's method: plain HTTP
        log.info("%s: plain HTTP on a TLS port; answered 400", peer)
        await stream.send_all(NOT_TLS)
        raise PlainHTTP
    else:
        log.info("%s: not a TLS handshake (first byte 0x%02x); closed", peer, data[0])


class TLSWebSocket(WebSocket):
    """A WebSocket over TLS, made as ``TLSWebSocket(tls, raw_stream, ...)``, the rest as for
    ``WebSocket``. Every frame is encrypted as it is sent, then goes as in plain text: straight
    to the socket, or queued as ciphertext for the flusher and the writer task, so records go
    out in the order they were made; a broadcast builds its frame once and encrypts it per
    member. Every read is decrypted."""

    __slots__ = ("_tls",)

    def __init__(self, tls: TLS, stream: trio.SocketStream, *args: Any, **kwargs: Any) -> None:
        super().__init__(stream, *args, **kwargs)
        # the TLS state the handshake left (``stream`` carries its ciphertext)
        self._tls = tls

    def _send_frame(self, frame: bytes) -> None:
        WebSocket._send_frame(self, self._tls.encrypt(frame))

    def _append(self, frame: bytes) -> None:
        WebSocket._append(self, self._tls.encrypt(frame))

    def _drop(self, why: str, keep_first: bool = False) -> None:
        # Over TLS the backlog cannot be dropped and a close frame sent after it: records carry
        # implicit sequence numbers, and the peer could not decrypt any record after a gap. The
        # connection is reset instead (the close code says why, here).
        log.warning("%s: %s; resetting the TLS connection", self._peer, why)
        self._queue.clear()
        self._queued = 0
        self._stuck = True
        reset_on_close(self._stream.socket)
        self._mark_closed(CloseReason.POLICY_VIOLATION, "send queue full: the client reads too slowly")

    def _read_nowait(self, fd: int) -> bytes | None:
        data = read_nowait(fd)
        if not data:
            return data
        try:
            return self._tls.decrypt(data)
        except ssl.SSLError as exc:
            log.info("%s: TLS record refused (%s); connection lost", self._peer, exc.reason or exc)
            return b""
