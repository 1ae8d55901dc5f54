"""Fixtures: a trio_c10k server on 127.0.0.1 port 0, and raw-socket helpers."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import h11
import pytest
import trio

os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
os.environ["TRIO_C10K_TEST_DB"] = os.path.join(tempfile.mkdtemp(prefix="trio_c10k_tests_"), "db.sqlite3")

from django.core.management import call_command
from django.core.wsgi import get_wsgi_application

from trio_c10k import Bind, Config, Server, database_sync_to_thread, serve

if TYPE_CHECKING:
    from tests.test_workers import Supervised

DJANGO_APP = get_wsgi_application()
call_command("migrate", verbosity=0)
pytest_plugins = ["trio_c10k.testing"]  # the c10k_live_server fixture

StartServer = Callable[..., Awaitable[Server]]


#: client sockets opened by ``connect()``, closed when the test's servers are torn down
_opened: list[trio.SocketStream] = []


@pytest.fixture
async def start_server(nursery: trio.Nursery) -> AsyncIterator[StartServer]:
    """``await start_server(app=None, **config)``: a server on 127.0.0.1 port 0.

    ``app`` defaults to the Django test site; keyword arguments override ``Config`` fields.
    Client sockets the test opened with ``connect()`` are closed afterwards.
    """

    async def start(app: Any = None, **overrides: Any) -> Server:
        config = Config(binds=(Bind(host="127.0.0.1", port=0),), **overrides)
        return await nursery.start(serve, app or DJANGO_APP, config)

    yield start
    while _opened:
        await trio.aclose_forcefully(_opened.pop())


@pytest.fixture
async def server(start_server: StartServer) -> Server:
    """A server for the Django test site, with default settings."""
    return await start_server()


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


@pytest.fixture
def supervised() -> Iterator[list[Supervised]]:
    """``python -m trio_c10k`` commands a test started (tests/test_workers.py's ``Supervised``);
    those still running afterwards are killed, workers included, and their log is printed."""
    started: list[Supervised] = []
    yield started
    for command in started:
        if command.proc.returncode is None:
            command.kill()
            command.proc.communicate(timeout=30)
        print(command.log)  # shown by pytest when the test failed
