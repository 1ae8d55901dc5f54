"""Graceful shutdown loses no request: what reached the server before ``shutdown()`` is answered.

The requests are written, and the connections opened, without yielding to trio, and
``shutdown()`` is called in that same step: the server cannot have read or accepted them
before it began to shut down.
"""

from __future__ import annotations

import os
import select
import socket

import h11
import trio
import trio.testing

from tests.helpers import Client, StartServer, _opened, header, port_of, read_until_closed
from trio_c10k import Server
from trio_c10k._server import ACCEPT_BATCH

REQUEST = b"GET /t/hello/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def server_end(client: trio.SocketStream) -> int:
    """The descriptor of the server's end of ``client``'s connection (the server runs in this
    process): the socket whose peer is the client's address."""
    address = client.socket.getsockname()
    for name in os.listdir("/proc/self/fd"):
        try:
            with socket.fromfd(int(name), socket.AF_INET, socket.SOCK_STREAM) as sock:  # a duplicate
                if sock.getpeername() == address:
                    return int(name)
        except OSError:  # not a socket, or not a connected one
            continue
    raise LookupError(f"no server socket for {address}")


def wait_readable(fd: int) -> None:
    """Block the whole event loop (so the server's tasks cannot read) until ``fd`` has bytes."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    assert poller.poll(10_000), "the request did not reach the server's socket"


def open_in_backlog(server: Server) -> Client:
    """A connection the kernel completed but the server did not accept (its accept loop
    cannot run before the caller yields), with a request sent on it."""
    sock = socket.create_connection(("127.0.0.1", port_of(server)))
    sock.sendall(REQUEST)
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
    _opened.append(stream)
    return Client(stream)


async def answered_then_closed(client: Client) -> None:
    response, body = await client.response()
    assert (response.status_code, body) == (200, b"Hello, world!\n")
    assert header(response, b"connection") == b"close"
    assert await read_until_closed(client.stream) == b""


async def test_requests_that_reached_the_server_are_answered(start_server: StartServer) -> None:
    server = await start_server(keep_alive_timeout=60)
    keep_alive = [await Client.open(server) for _ in range(4)]
    for client in keep_alive:
        response, _ = await client.get("/t/hello/")
        assert response.status_code == 200
    idle = await Client.open(server)
    response, _ = await idle.get("/t/hello/")
    assert response.status_code == 200
    await trio.testing.wait_all_tasks_blocked()  # every connection waits for its next request

    for client in keep_alive:  # written, not read: the server's tasks do not run meanwhile
        request = h11.Request(method="GET", target="/t/hello/", headers=[("Host", "127.0.0.1")])
        os.write(
            client.stream.socket.fileno(), client.conn.send(request) + client.conn.send(h11.EndOfMessage())
        )
        wait_readable(server_end(client.stream))
    backlog = [open_in_backlog(server) for _ in range(4)]
    server.shutdown()

    async with trio.open_nursery() as nursery:
        for client in keep_alive + backlog:
            nursery.start_soon(answered_then_closed, client)
        assert await read_until_closed(idle.stream) == b""  # nothing sent: closed, unanswered
    assert server.statistics().requests == 5 + 4 + 4


async def test_every_connection_in_the_backlog_at_shutdown_is_answered(start_server: StartServer) -> None:
    server = await start_server()
    backlog = [open_in_backlog(server) for _ in range(3 * ACCEPT_BATCH)]  # more than one batch
    server.shutdown()
    async with trio.open_nursery() as nursery:
        for client in backlog:
            nursery.start_soon(answered_then_closed, client)
    assert server.statistics().requests == 3 * ACCEPT_BATCH


async def test_a_connection_that_sent_nothing_yet_gets_a_moment_for_its_request(
    start_server: StartServer,
) -> None:
    server = await start_server()
    late, silent = [await Client.open(server) for _ in range(2)]
    await trio.testing.wait_all_tasks_blocked()  # both accepted, waiting for their first bytes
    server.shutdown()
    await trio.testing.wait_all_tasks_blocked()  # found nothing yet: waiting a moment more
    await late.send_raw(REQUEST)
    await answered_then_closed(late)
    assert await read_until_closed(silent.stream) == b""  # nothing came: closed, unanswered


async def test_a_request_read_during_shutdown_is_checked_as_strictly(start_server: StartServer) -> None:
    server = await start_server(keep_alive_timeout=60)
    client = await Client.open(server)
    response, _ = await client.get("/t/hello/")
    assert response.status_code == 200
    await trio.testing.wait_all_tasks_blocked()  # waiting for its next request
    smuggling = (
        b"POST /t/hello/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    )
    os.write(client.stream.socket.fileno(), smuggling)  # the server's tasks do not run meanwhile
    wait_readable(server_end(client.stream))
    server.shutdown()  # the request is read without a wait, then checked like any other
    answer = await read_until_closed(client.stream)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
