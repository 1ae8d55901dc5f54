"""HTTP/1.1 framing as strict as RFC 9112 asks, and error answers that reach the client.

Over real sockets: raw request bytes in; the status line, the reason and the connection's
state out. Every case here is one h11 alone lets through (or answers with a vaguer status).
"""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing
from django.core.handlers.wsgi import WSGIRequest

import trio_c10k._http_send
from tests.helpers import StartServer, _opened, connect, port_of, read_until_closed
from trio_c10k import Server


def split_answer(data: bytes) -> tuple[bytes, bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0], body


def post(*lines: bytes, body: bytes = b"", version: bytes = b"1.1") -> bytes:
    """A POST to the echo view with these header lines (Host is added for HTTP/1.1)."""
    host = [b"Host: 127.0.0.1"] if version == b"1.1" else []
    return b"\r\n".join([b"POST /t/echo-body/ HTTP/" + version, *host, *lines, b"", body])


def chunked(body: bytes) -> bytes:
    return post(b"Transfer-Encoding: chunked", body=body)


def get(*lines: bytes, target: bytes = b"/t/hello/", version: bytes = b"1.1") -> bytes:
    return b"\r\n".join([b"GET " + target + b" HTTP/" + version, *lines, b"", b""])


BAD_REQUEST = b"HTTP/1.1 400 Bad Request"
HOST = b"Host: 127.0.0.1"
# After the refused request, one a server would answer if it read the framing another way.
SMUGGLED = b"GET /t/hello/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

CASES = [
    # Framing headers (RFC 9112 section 6.1, 6.3, 7).
    pytest.param(
        post(b"Content-Length: 5", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n" + SMUGGLED),
        BAD_REQUEST,
        b"both Transfer-Encoding and Content-Length",
        id="te-and-content-length",
    ),
    pytest.param(
        post(b"Transfer-Encoding: xchunked", body=b"0\r\n\r\n"),
        BAD_REQUEST,
        b"the last coding must be chunked",
        id="te-xchunked",
    ),
    pytest.param(
        post(b"Transfer-Encoding: gzip", body=b"0\r\n\r\n"),
        BAD_REQUEST,
        b"the last coding must be chunked",
        id="te-gzip",
    ),
    pytest.param(
        post(b"Transfer-Encoding: chunked, chunked", body=b"0\r\n\r\n"),
        BAD_REQUEST,
        b"the last coding must be chunked, once",
        id="te-chunked-twice",
    ),
    pytest.param(
        post(b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
        BAD_REQUEST,
        b"the last coding must be chunked, once",
        id="te-two-fields",
    ),
    pytest.param(
        post(b"Transfer-Encoding: gzip, chunked", body=b"0\r\n\r\n"),
        b"HTTP/1.1 501 Not Implemented",
        b"Transfer-Encoding 'gzip, chunked' not implemented (only chunked is)\n",
        id="te-gzip-chunked",
    ),
    pytest.param(
        post(b"Transfer-Encoding: chunked", body=b"0\r\n\r\n" + SMUGGLED, version=b"1.0"),
        BAD_REQUEST,
        b"Transfer-Encoding in an HTTP/1.0 request",
        id="te-in-http-1.0",
    ),
    # Versions (RFC 9110 section 15.6.6).
    *(
        pytest.param(
            get(HOST, version=version),
            b"HTTP/1.1 505 HTTP Version Not Supported",
            b"HTTP/" + version + b" not supported (HTTP/1.1 and HTTP/1.0 are)\n",
            id=f"version-{version.decode()}",
        )
        for version in (b"2.0", b"1.2", b"3.0", b"0.9")
    ),
    # Control characters, line ends, folding (RFC 9110 section 5.5, RFC 9112 sections 2.2, 5.2).
    *(
        pytest.param(
            get(HOST, b"X-Value: a" + ctl + b"b"),
            BAD_REQUEST,
            b"control character %r in the request head" % ctl,
            id=f"ctl-{ctl.hex()}-in-header-value",
        )
        for ctl in (b"\x01", b"\x1f", b"\x7f", b"\x0b")
    ),
    pytest.param(
        b"GET /t/hello/ HTTP/1.1\nHost: 127.0.0.1\n\n",
        BAD_REQUEST,
        b"line ending other than CRLF",
        id="bare-lf-in-head",
    ),
    pytest.param(
        b"GET /t/hello/ HTTP/1.1\r\nHost: 127.0.0.1\nX-Hidden: 1\r\n\r\n",
        BAD_REQUEST,
        b"line ending other than CRLF",
        id="bare-lf-inside-a-field-line",
    ),
    pytest.param(
        get(HOST, b"X-Folded: a", b" b"),
        BAD_REQUEST,
        b"obsolete line folding",
        id="obs-fold",
    ),
    pytest.param(
        post(b"Transfer-Encoding:", b" chunked", body=b"0\r\n\r\n" + SMUGGLED),
        BAD_REQUEST,
        b"obsolete line folding",
        id="obs-fold-transfer-encoding",
    ),
    # Chunked bodies (RFC 9112 section 7.1).
    pytest.param(
        chunked(b"3 \r\nabc\r\n0\r\n\r\n"), BAD_REQUEST, b"invalid chunk-size line", id="size-space"
    ),
    pytest.param(chunked(b"3\t\r\nabc\r\n0\r\n\r\n"), BAD_REQUEST, b"invalid chunk-size line", id="size-tab"),
    pytest.param(
        chunked(b"3;a=\x01\r\nabc\r\n0\r\n\r\n"), BAD_REQUEST, b"invalid chunk-size line", id="ext-ctl"
    ),
    pytest.param(
        chunked(b"3;a\rb\r\nabc\r\n0\r\n\r\n"), BAD_REQUEST, b"invalid chunk-size line", id="ext-bare-cr"
    ),
    pytest.param(
        chunked(b'3;a="\x7f"\r\nabc\r\n0\r\n\r\n'),
        BAD_REQUEST,
        b"invalid chunk-size line",
        id="ext-quoted-del",
    ),
    pytest.param(
        chunked(b"3;=x\r\nabc\r\n0\r\n\r\n"), BAD_REQUEST, b"invalid chunk-size line", id="ext-no-name"
    ),
    pytest.param(
        chunked(b"3\r\nabc\r\n0\r\n\n" + SMUGGLED),
        BAD_REQUEST,
        b"line ending other than CRLF in the chunked body",
        id="trailer-ends-with-bare-lf",
    ),
    pytest.param(
        chunked(b"3\r\nabc\r\n0\r\nX-Trailer: 1\n\r\n"),
        BAD_REQUEST,
        b"line ending other than CRLF in the chunked body",
        id="trailer-line-bare-lf",
    ),
    pytest.param(
        chunked(b"3\r\nabc\r\n0\r\nX-Trailer: \x01\r\n\r\n"),
        BAD_REQUEST,
        b"invalid trailer line",
        id="trailer-ctl",
    ),
    # Request targets (RFC 9112 section 3.2) and Host (section 3.2, RFC 3986 section 3.2.2).
    pytest.param(
        get(HOST, target=b"hello/"), BAD_REQUEST, b"request target must start with /", id="no-leading-slash"
    ),
    pytest.param(get(HOST, target=b"*"), BAD_REQUEST, b"request target * is for OPTIONS only", id="star-get"),
    pytest.param(
        get(HOST, target=b"ftp://127.0.0.1/t/hello/"),
        BAD_REQUEST,
        b"scheme other than http or https",
        id="absolute-ftp",
    ),
    pytest.param(
        get(HOST, target=b"http://user@127.0.0.1/t/hello/"),
        BAD_REQUEST,
        b"request target with userinfo",
        id="absolute-userinfo",
    ),
    pytest.param(
        get(HOST, target=b"http:///t/hello/"),
        BAD_REQUEST,
        b"request target with an invalid host",
        id="absolute-no-host",
    ),
    pytest.param(get(b"Host: a/b"), BAD_REQUEST, b"invalid Host header", id="host-with-slash"),
    pytest.param(get(b"Host: 127.0.0.1 evil"), BAD_REQUEST, b"invalid Host header", id="host-with-space"),
]


@pytest.mark.parametrize(("request_bytes", "status_line", "reason"), CASES)
async def test_refused_with_one_answer_then_closed(
    server: Server, request_bytes: bytes, status_line: bytes, reason: bytes
) -> None:
    stream = await connect(server)
    await stream.send_all(request_bytes)
    data = await read_until_closed(stream)  # the server closes the connection
    status, body = split_answer(data)
    assert status == status_line
    assert reason in body
    assert body.count(b"\n") == 1  # one line of reason, and nothing after the refused request


def connected_with(server: Server, data: bytes) -> trio.SocketStream:
    """A connection whose first bytes are in the server's socket buffer before the server's
    connection task first runs: connect and send happen here, with no checkpoint between."""
    sock = socket.create_connection(("127.0.0.1", port_of(server)))
    sock.sendall(data)
    sock.setblocking(False)
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
    _opened.append(stream)
    return stream


@pytest.mark.parametrize(("request_bytes", "status_line", "reason"), CASES)
async def test_a_head_already_received_on_accept_is_checked_the_same(
    server: Server, request_bytes: bytes, status_line: bytes, reason: bytes
) -> None:
    # The first request is read without waiting when it is there (``_http_read`` Rule 4): the same
    # checks, the same answer.
    stream = connected_with(server, request_bytes)
    status, body = split_answer(await read_until_closed(stream))
    assert status == status_line
    assert reason in body
    assert body.count(b"\n") == 1


async def test_a_head_partly_received_on_accept_is_awaited_then_served(server: Server) -> None:
    stream = connected_with(server, b"GET /t/hello/ HTTP/1.1\r\nHost: 127.0")
    with trio.fail_after(10):
        await trio.testing.wait_all_tasks_blocked()  # the server read the first part
    await stream.send_all(b".0.1\r\nConnection: close\r\n\r\n")
    status, body = split_answer(await read_until_closed(stream))
    assert status == b"HTTP/1.1 200 OK"
    assert body == b"Hello, world!\n"


async def test_a_partial_head_received_on_accept_gets_408_after_header_timeout(
    start_server: StartServer,
) -> None:
    server = await start_server(header_timeout=0.2, keep_alive_timeout=30)
    stream = connected_with(server, b"GET /t/hello/ HTTP/1.1\r\n")
    status, _ = split_answer(await read_until_closed(stream))
    assert status == b"HTTP/1.1 408 Request Timeout"


def host_app(environ, start_response):  # type: ignore[no-untyped-def]
    """Answers the host Django sees (``request.get_host()``)."""
    host = WSGIRequest(environ).get_host()
    start_response("200 OK", [("Content-Length", str(len(host)))])
    return [host.encode()]


@pytest.mark.parametrize(
    ("target", "host"),
    [
        (b"http://localhost/", b"localhost"),
        (b"HTTPS://localhost:8443?x=1", b"localhost:8443"),
    ],
)
async def test_absolute_form_target_host_wins_over_the_host_header(
    start_server: StartServer, target: bytes, host: bytes
) -> None:
    server = await start_server(app=host_app)
    stream = await connect(server)
    await stream.send_all(get(HOST, b"Connection: close", target=target))
    assert split_answer(await read_until_closed(stream)) == (b"HTTP/1.1 200 OK", host)


# --- lingering close: the error answer reaches a client that is still sending ---------------

UNREAD = 2 * 1024 * 1024  # more than the socket buffers take while the server does not read


@pytest.mark.parametrize(
    ("config", "request_bytes", "status_line", "reason"),
    [
        pytest.param(
            {"max_body_size": 1000},
            post(b"Content-Length: %d" % UNREAD, body=b"x" * UNREAD),
            b"HTTP/1.1 413 ",
            b"Request body larger than 1000 bytes\n",
            id="413-body-still-coming",
        ),
        pytest.param(
            {"max_header_size": 2048},
            b"GET /t/hello/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"x" * UNREAD,
            b"HTTP/1.1 431 Request Header Fields Too Large",
            b"Request header fields too large (limit 2048 bytes)\n",
            id="431-head-still-coming",
        ),
    ],
)
async def test_error_answer_reaches_a_client_still_sending(
    start_server: StartServer, config: dict[str, int], request_bytes: bytes, status_line: bytes, reason: bytes
) -> None:
    server = await start_server(**config)
    stream = await connect(server)
    # Everything is sent before anything is read: without a lingering close the server's close
    # with unread input resets the connection, and this send or the read below fails.
    with trio.fail_after(10):
        await stream.send_all(request_bytes)
    data = await read_until_closed(stream)
    status, body = split_answer(data)
    assert (status.startswith(status_line), body) == (True, reason)


@pytest.mark.parametrize(
    ("linger_time", "linger_bytes"),
    [pytest.param(1.0, 1 << 40, id="time-bound"), pytest.param(60, UNREAD + 1_000_000, id="bytes-bound")],
)
async def test_lingering_is_bounded(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch, linger_time: float, linger_bytes: int
) -> None:
    monkeypatch.setattr(trio_c10k._http_send, "LINGER_TIME", linger_time)
    monkeypatch.setattr(trio_c10k._http_send, "LINGER_BYTES", linger_bytes)
    server = await start_server(max_body_size=1000)
    stream = await connect(server)
    with trio.fail_after(10):
        await stream.send_all(post(b"Content-Length: 100000000", body=b"x" * UNREAD))
    assert split_answer(await read_until_closed(stream))[0].startswith(b"HTTP/1.1 413 ")
    # A client that keeps sending after the answer is cut off once either bound is reached.
    with trio.fail_after(10), pytest.raises(trio.BrokenResourceError):
        await send_forever(stream)


async def send_forever(stream: trio.SocketStream) -> None:
    while True:
        await stream.send_all(b"x" * 65536)
