"""A trio WebSocket client: the same ``WebSocket`` object as handlers get, in client mode.

Used by the project's tests and load commands; usable by anyone::

    async with open_websocket("ws://127.0.0.1:8000/test/echo/") as ws:
        ws.write_message("hello")
        print(await ws.read_message())

``wss://`` URLs connect over TLS: the handshake is ``_tls_stream.connect_tls``'s, the HTTP
upgrade goes through the ``TLSStream`` and the connection is a ``TLSWebSocket`` (each frame
encrypted as it is sent), as on the server's side. ``ws://`` connections take none of that.
"""

from __future__ import annotations

import base64
import os
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import h11
import trio
from wsproto.connection import Connection, ConnectionType
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import generate_accept_token

from ._config import WebSocketConfig
from ._exceptions import HandshakeRejected, lone_exception_unwrapped
from ._tls_stream import TLSStream, connect_tls
from ._websocket import TLSWebSocket, WebSocket
from ._ws_tasks import keep_alive

#: the port of a URL that names none (RFC 6455 section 3)
DEFAULT_PORTS = {"ws": 80, "wss": 443}


@asynccontextmanager
async def open_websocket(
    url: str,
    *,
    subprotocols: list[str] | tuple[str, ...] = (),
    origin: str | None = None,
    headers: list[tuple[str, str]] | tuple[tuple[str, str], ...] = (),
    config: WebSocketConfig | None = None,
    connect_timeout: float = 10,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[WebSocket]:
    """Connect to a ``ws://`` or ``wss://`` URL and yield the open ``WebSocket``.

    Args:
        url: ``ws://host[:port]/path[?query]``, or ``wss://`` for TLS.
        subprotocols: offered in ``Sec-WebSocket-Protocol``; ``ws.subprotocol`` is the one
            the server chose.
        origin: sent as ``Origin`` (browsers always send one; other clients need not).
        headers: more request headers (cookies, authorization).
        config: limits (message size, send queue, pings); ``WebSocketConfig()`` by default.
        connect_timeout: seconds for the TCP connection and the handshakes (TLS, then
            WebSocket) together.
        ssl_context: for ``wss://`` only: the client ``ssl.SSLContext`` (which CAs to trust,
            a client certificate); ``ssl.create_default_context()`` by default (the system's
            CAs). The certificate must name the URL's host, which is also sent as SNI.

    Raises:
        HandshakeRejected: the server answered with plain HTTP instead of 101.
        ssl.SSLError: the TLS handshake failed: ``ssl.SSLCertVerificationError`` (its
            ``verify_message`` says why) for a certificate the context does not trust or that
            does not name the host; another ``SSLError`` for a server that does not speak TLS
            or refused ours (a client certificate). Raised as the stdlib raises it, as the
            ``websockets`` client does: it is an ``OSError``, like a refused connection.
        OSError: the connection failed.
        trio.BrokenResourceError: the server closed the connection during the TLS handshake.
        trio.TooSlowError: the connection and handshakes took more than ``connect_timeout``.
        ValueError: the URL is neither ``ws://`` nor ``wss://``, or ``ssl_context`` was given
            with a ``ws://`` URL.

    Resource handling: leaving the block closes the connection with 1000 (1011 if the block
    raised), waiting up to ``config.close_timeout`` for the server's close frame.
    """
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"expected a ws://host/path or wss://host/path URL, not {url!r}")
    if ssl_context is not None and parts.scheme == "ws":
        raise ValueError(f"ssl_context is for wss:// URLs; {url!r} is not encrypted")
    port = parts.port or DEFAULT_PORTS[parts.scheme]
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    with trio.fail_after(connect_timeout):
        stream = await trio.open_tcp_stream(parts.hostname, port)
        try:
            plaintext: trio.SocketStream | TLSStream = stream
            if parts.scheme == "wss":
                context = ssl_context or ssl.create_default_context()
                plaintext = await connect_tls(stream, context, parts.hostname)
            connection, subprotocol, received = await _handshake(
                plaintext, parts.netloc, target, subprotocols, origin, headers
            )
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
    details: dict[str, Any] = {
        "subprotocol": subprotocol,
        "remote_address": (parts.hostname, port),
        "received": received,
    }
    config = config or WebSocketConfig()
    if isinstance(plaintext, TLSStream):
        ws: WebSocket = TLSWebSocket(plaintext.tls, stream, connection, config, **details)
    else:
        ws = WebSocket(stream, connection, config, **details)
    try:
        # A lone exception from the block comes out as itself, not in an ExceptionGroup.
        with lone_exception_unwrapped():
            async with trio.open_nursery() as nursery:
                ws._start(nursery)
                nursery.start_soon(keep_alive, (ws,), ws._config)
                try:
                    yield ws
                except Exception:
                    await ws._finish(CloseReason.INTERNAL_ERROR, "client error")
                    raise
                await ws._finish(CloseReason.NORMAL_CLOSURE)
                nursery.cancel_scope.cancel()  # the reader, and a writer whose peer is stuck
    finally:
        ws._mark_closed(CloseReason.ABNORMAL_CLOSURE, "")  # no write may reach the closed descriptor
        await trio.aclose_forcefully(stream)


async def _handshake(
    stream: trio.SocketStream | TLSStream,
    host: str,
    target: str,
    subprotocols: list[str] | tuple[str, ...],
    origin: str | None,
    extra: list[tuple[str, str]] | tuple[tuple[str, str], ...],
) -> tuple[Connection, str | None, bytes]:
    """Send the opening handshake, check the answer; the wsproto connection, the chosen
    subprotocol and the bytes that came after the 101."""
    key = base64.b64encode(os.urandom(16))
    headers = [
        ("Host", host),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key.decode("ascii")),
        ("Sec-WebSocket-Version", "13"),
        *extra,
    ]
    if subprotocols:
        headers.append(("Sec-WebSocket-Protocol", ", ".join(subprotocols)))
    if origin is not None:
        headers.append(("Origin", origin))
    http = h11.Connection(h11.CLIENT)
    await stream.send_all(
        http.send(h11.Request(method="GET", target=target, headers=headers)) + http.send(h11.EndOfMessage())
    )
    while True:
        event = http.next_event()
        if event is h11.NEED_DATA:
            http.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.InformationalResponse) and event.status_code == 101:
            break
        elif isinstance(event, h11.Response | h11.InformationalResponse):
            raise HandshakeRejected(event.status_code, list(event.headers), await _body(http, stream))
        else:
            raise HandshakeRejected(0, [], b"connection closed during the handshake")
    answer = dict(event.headers)
    if answer.get(b"sec-websocket-accept") != generate_accept_token(key):
        raise HandshakeRejected(101, list(event.headers), b"wrong Sec-WebSocket-Accept")
    subprotocol = answer.get(b"sec-websocket-protocol")
    chosen = subprotocol.decode("ascii") if subprotocol else None
    if chosen is not None and chosen not in subprotocols:
        raise HandshakeRejected(101, list(event.headers), b"server chose a subprotocol not offered")
    return Connection(ConnectionType.CLIENT), chosen, http.trailing_data[0]


async def _body(http: h11.Connection, stream: trio.SocketStream | TLSStream) -> bytes:
    body = bytearray()
    while True:
        event = http.next_event()
        if event is h11.NEED_DATA:
            http.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Data):
            body += event.data
        else:
            return bytes(body)
