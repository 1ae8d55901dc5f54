"""One HTTP/1.1 connection: requests read, answered through the WSGI bridge in order, with
keep-alive; an accepted upgrade handed back as a WebSocket.

``HTTPConnection`` decides the answers; its base classes read the requests
(``_http_read.RequestReader``: h11 parses, a plain head is read by hand) and write the answers
(``_http_send.ResponseWriter``: heads framed by ``_http_framing``, send deadlines, error
answers, lingering close).

Rule 1: requests are answered one after another (``_http_read`` Rule 1: pipelined requests in
order).
Rule 2: every error answer (400, 408, 413, 431, 500, 501, 505) closes the connection and is
logged once: client errors at INFO, application errors at ERROR (``_http_send``, Rule 3).
Rule 3: an accepted upgrade ends the HTTP cycle: the 101 is written, h11's state is dropped,
and the bytes received after the handshake go to the WebSocket.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import h11
import trio

from ._handshake import UPGRADE_SLOT, UpgradeSlot, server_connection, switching_protocols
from ._http_head import Head
from ._http_read import ReaderOwner, RequestReader
from ._http_send import _DISCONNECTS, _ClientGone, peer_label
from ._tls_stream import TLSStream, TLSWebSocket
from ._websocket import WebSocket
from ._wsgi import (
    Environ,
    apply_proxy_headers,
    build_environ,
    call_application,
    connection_environ,
    is_trusted,
)

log = logging.getLogger("trio_c10k.http")
access_log = logging.getLogger("trio_c10k.access")


class Owner(ReaderOwner, Protocol):
    """What a connection needs of the server that accepted it (``Server`` is one): what
    ``ReaderOwner`` names (config, worker threads, ``closing``, ``idle``), and the names below.

    This is all ``_http`` knows of the server: it never imports ``_server``. A connection
    reads these, counts its answers in ``requests``, and puts the cancel scope of each wait
    for a next request in ``idle``, for the owner to cancel when it shuts down; an accepted
    upgrade goes back to the owner as ``run()``'s result.
    """

    @property
    def app(self) -> Callable[..., Iterable[bytes]]:
        """The WSGI application."""

    #: requests answered so far
    requests: int


class HTTPConnection(RequestReader):
    """Serves the requests of one accepted socket until it closes.

    Resource handling: the caller owns the stream and closes it; this object only reads and
    writes it.
    """

    #: the owner: app, config, worker threads, idle scopes, counters
    server: Owner

    def __init__(
        self,
        stream: trio.SocketStream | TLSStream,
        server: Owner,
        client: tuple[str, int] | None,
        local: tuple[str, int] | None,
    ) -> None:
        """``client`` and ``local`` are the peer's and the local address and port (None for
        a Unix socket), as the accept loop knows them."""
        config = server.config
        super().__init__(stream, server, peer_label(client))
        #: the peer's (host, port), None for a Unix socket
        self.peer = client
        #: the environ keys shared by every request of this connection
        self.base_environ = connection_environ(client, local, "http" if self.tls is None else "https")
        #: whether X-Forwarded-* headers from this peer are believed
        self.trust_proxy = bool(
            config.proxy_headers and client and is_trusted(client[0], config.trusted_proxies)
        )
        #: set by an accepted upgrade: the WebSocket and the slot naming its handler
        self.upgrade: tuple[WebSocket, UpgradeSlot] | None = None

    async def run(self) -> tuple[WebSocket, UpgradeSlot] | None:
        """Answer requests until the peer closes, an error ends the connection, or it idles.

        Returns the WebSocket of an accepted upgrade and the slot naming its handler, for the
        caller to run once this object is gone: an idle WebSocket keeps nothing of the HTTP
        cycle but the request its handler uses.
        """
        try:
            while True:
                request = await self._read_request()
                if request is None or not await self._respond(request):
                    break
                self.first = False
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint
            if status == 431:
                reason = f"Request header fields too large (limit {self.server.config.max_header_size} bytes)"
            elif status == 400:
                reason = f"Bad request: {exc}"
            else:  # 501, 505: the text says what is not supported
                reason = str(exc)
            await self._send_error(status, reason)
        except (*_DISCONNECTS, _ClientGone):
            log.debug("%s: connection lost", self.client)
        return self.upgrade

    async def _respond(self, request: Head) -> bool:
        """Answer one request; True if the connection can serve another."""
        server = self.server
        started = time.perf_counter()
        read = await self._read_body(request)
        if read is None:
            return False
        body, length = read
        environ = build_environ(self.base_environ, request, body, length)
        if self.trust_proxy:
            apply_proxy_headers(environ, server.config.trusted_proxies)
        slot = None
        switched = False
        if "HTTP_UPGRADE" in environ:
            slot = environ[UPGRADE_SLOT] = UpgradeSlot(compression=server.config.websocket.compression)
        try:
            response = await call_application(server.app, environ, self._stream_from_thread, server.workers)
            if response.status == 101 and slot is not None and slot.accept is not None:
                # h11 is dropped from here on: the 101 is not its business (``_handshake`` Rule 3)
                handshake = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in slot.accept.headers]
                await self._write(switching_protocols(handshake + response.headers))
                switched = True
            elif response.streamed:
                await self._end_stream()
            else:
                await self._send_response(response)
        except (*_DISCONNECTS, _ClientGone):
            log.debug(
                "%s: client gone during %s %s",
                environ.get("REMOTE_ADDR", self.client),
                environ["REQUEST_METHOD"],
                environ["PATH_INFO"],
            )
            return False
        except Exception:
            log.exception("Error answering %s %s", environ["REQUEST_METHOD"], environ["PATH_INFO"])
            if not self.head_sent:
                await self._send_error(500, "Internal Server Error", logged=True)
            return False
        finally:
            body.close()
        server.requests += 1
        server.counters.responses[response.status // 100] += 1
        if slot is not None and response.status != 101:  # a handshake refused (403, 400, 426...)
            server.counters.refused[response.status] = server.counters.refused.get(response.status, 0) + 1
        if server.config.access_log:
            access_log.info(
                '%s - "%s %s HTTP/%s" %d %d %.1fms',
                environ.get("REMOTE_ADDR", self.client),
                environ["REQUEST_METHOD"],
                request.target.decode("latin-1"),
                request.http_version.decode("ascii"),
                response.status,
                self.sent_bytes,
                (time.perf_counter() - started) * 1000,
            )
        if switched:
            assert slot is not None
            environ.pop(UPGRADE_SLOT)
            self.upgrade = (self._websocket(slot, environ), slot)
            slot.request = slot.accept = None  # the WebSocket holds what is needed
            return False
        return self.response is not None and self.response.keep_alive and not server.closing

    def _websocket(self, slot: UpgradeSlot, environ: Environ) -> WebSocket:
        """The WebSocket of an accepted upgrade; h11's state is dropped (bytes it holds go on)."""
        assert slot.accept is not None
        received = self._trailing()[0]
        del self.conn
        remote_address: tuple[str, int | None] | None = self.peer
        if self.trust_proxy and "REMOTE_PORT" not in environ:  # the client X-Forwarded-For named
            remote_address = (environ["REMOTE_ADDR"], None)  # its port is not forwarded
        connection, config = server_connection(slot.accept), self.server.config.websocket
        details: dict[str, Any] = {
            "request": slot.request,
            "subprotocol": slot.accept.subprotocol,
            "remote_address": remote_address,
            "extensions": slot.accept.extensions,
            "received": received,
        }
        if isinstance(self.stream, TLSStream):
            return TLSWebSocket(self.stream.tls, self.stream.raw, connection, config, **details)
        return WebSocket(self.stream, connection, config, **details)
