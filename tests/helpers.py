"""Plain helpers shared by test files: raw-socket HTTP and WebSocket clients, hand-built frames,
a raw WebSocket server, and the CLI's help parser. Fixtures stay in conftest.py."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import h11
import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import CloseConnection
from wsproto.utilities import generate_accept_token

from trio_c10k import Server, database_sync_to_thread
from trio_c10k.client import _handshake

StartServer = Callable[..., Awaitable[Server]]


#: client sockets opened by ``connect()``, closed when the test's servers are torn down
_opened: list[trio.SocketStream] = []


def port_of(server: Server) -> int:
    return server.addresses[0][1]


async def connect(server: Server) -> trio.SocketStream:
    """A client TCP connection to ``server`` (closed after the test)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port_of(server))
    _opened.append(stream)
    return stream


async def read_until_closed(stream: trio.SocketStream) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = bytearray()
    with trio.fail_after(10):
        while chunk := await stream.receive_some(65536):
            data += chunk
    return bytes(data)


class Client:
    """A raw HTTP/1.1 client on one connection, parsing answers with h11 (client side)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, server: Server) -> Client:
        return cls(await connect(server))

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def request(
        self, method: str, target: str, headers: list[tuple[str, str]] | None = None, body: bytes = b""
    ) -> None:
        headers = [("Host", "127.0.0.1"), *(headers or [])]
        if body:
            headers.append(("Content-Length", str(len(body))))
        data = self.conn.send(h11.Request(method=method, target=target, headers=headers))
        if body:
            data += self.conn.send(h11.Data(data=body))
        data += self.conn.send(h11.EndOfMessage())
        await self.stream.send_all(data)

    async def next_event(self) -> Any:
        with trio.fail_after(10):
            while (event := self.conn.next_event()) is h11.NEED_DATA:
                self.conn.receive_data(await self.stream.receive_some(65536))
        return event

    async def response(self) -> tuple[h11.Response, bytes]:
        """The next whole response; the connection is ready for the next request after it."""
        response = await self.next_event()
        assert isinstance(response, h11.Response), response
        body = bytearray()
        while type(event := await self.next_event()) is h11.Data:
            body += event.data
        assert type(event) is h11.EndOfMessage, event
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        return response, bytes(body)

    async def get(
        self, target: str, headers: list[tuple[str, str]] | None = None
    ) -> tuple[h11.Response, bytes]:
        await self.request("GET", target, headers)
        return await self.response()

    async def aclose(self) -> None:
        await self.stream.aclose()


def header(response: h11.Response, name: bytes) -> bytes | None:
    for key, value in response.headers:
        if key == name:
            return value
    return None


async def login(server: Server, username: str) -> str:
    """Create ``username`` if needed, log in through the test site's view; the Cookie header."""
    from django.contrib.auth.models import User

    password = f"pw-{username}-123"

    def with_password() -> None:  # whoever made the user before (another test), this password
        user = User.objects.get_or_create(username=username)[0]
        user.set_password(password)
        user.save()

    await database_sync_to_thread(with_password)()  # the thread's connection closed after
    client = await Client.open(server)
    await client.request(
        "POST",
        "/t/login/",
        headers=[("Content-Type", "application/x-www-form-urlencoded")],
        body=f"username={username}&password={password}".encode(),
    )
    response, _ = await client.response()
    assert response.status_code == 200
    return "; ".join(v.decode().split(";")[0] for k, v in response.headers if k == b"set-cookie")


def url(server: Server, path: str) -> str:
    return f"ws://127.0.0.1:{port_of(server)}{path}"


class RawWebSocket:
    """A wsproto client over a raw stream: sends any bytes, reads events one by one."""

    def __init__(self, stream: trio.SocketStream, connection: Connection) -> None:
        self.stream, self.ws = stream, connection

    @classmethod
    async def open(cls, server: Server, path: str) -> RawWebSocket:
        stream = await connect(server)
        connection, _, received = await _handshake(stream, f"127.0.0.1:{port_of(server)}", path, (), None, ())
        connection.receive_data(received)
        return cls(stream, connection)

    async def send(self, event: Any) -> None:
        await self.stream.send_all(self.ws.send(event))

    async def next_event(self) -> Any:
        with trio.fail_after(10):
            while True:
                for event in self.ws.events():
                    return event
                data = await self.stream.receive_some(65536)
                self.ws.receive_data(data or None)
                if not data:
                    return None


def frame(
    opcode: int,
    payload: bytes,
    *,
    masked: bool = True,
    fin: bool = True,
    rsv: int = 0,
    length_bytes: int | None = None,
) -> bytes:
    """One frame built by hand, as any peer could send it, valid or not (wsproto refuses to
    build invalid ones): a client's unless ``masked`` is false; ``length_bytes`` (0, 2 or 8)
    forces the length encoding, minimal or not."""
    if length_bytes is None:
        length_bytes = 0 if len(payload) < 126 else 2 if len(payload) < 65536 else 8
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if masked else 0
    if length_bytes == 0:
        head += bytes([mask_bit | len(payload)])
    else:
        head += bytes([mask_bit | (126 if length_bytes == 2 else 127)])
        head += len(payload).to_bytes(length_bytes, "big")
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


async def next_close(raw: RawWebSocket) -> CloseConnection:
    while True:
        event = await raw.next_event()
        assert event is not None, "the connection ended without a close frame"
        if isinstance(event, CloseConnection):
            return event


Script = Callable[[trio.SocketStream, Connection], Awaitable[None]]


@asynccontextmanager
async def raw_server(after_101: bytes, script: Script | None = None) -> AsyncIterator[str]:
    """A server that answers the handshake, sends ``after_101`` in the same write, runs
    ``script(stream, wsproto_connection)``, then answers the client's close; yields its
    ``ws://`` URL."""

    async def handle(stream: trio.SocketStream) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            request += await stream.receive_some(4096)
        key = next(
            line.split(b":", 1)[1].strip()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = generate_accept_token(key)
        await stream.send_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n" + after_101
        )
        connection = Connection(ConnectionType.SERVER)
        if script is not None:
            await script(stream, connection)
        if connection.state is not ConnectionState.REMOTE_CLOSING:
            await client_close_code(stream, connection)
        await stream.send_all(connection.send(CloseConnection(code=1000)))  # the close handshake's answer
        await read_until_closed(stream)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        yield f"ws://127.0.0.1:{port}/"
        nursery.cancel_scope.cancel()


async def client_close_code(stream: trio.SocketStream, connection: Connection) -> int:
    """The code of the close frame the client sends."""
    with trio.fail_after(10):
        while True:
            data = await stream.receive_some(65536)
            assert data, "the client closed without a close frame"
            connection.receive_data(data)
            for event in connection.events():
                if isinstance(event, CloseConnection):
                    return event.code


def help_entries(text: str) -> dict[str, str]:
    """Option name -> its help text (whitespace collapsed), from argparse's --help output."""
    entries: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("  -"):
            invocation, _, first = line.strip().partition("  ")
            current = [first]
            for name in re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", invocation):
                entries[name] = current
        elif current is not None and line.startswith("   "):
            current.append(line)
        else:
            current = None
    return {name: " ".join(" ".join(lines).split()) for name, lines in entries.items()}
