"""The HTTP/1.1 cycle over real sockets: keep-alive, pipelining, bodies, streaming, errors, limits."""

from __future__ import annotations

import json
import logging
import socket
import uuid

import h11
import pytest
import trio
import trio.testing

from tests import views
from tests.helpers import Client, StartServer, _opened, connect, header, port_of, read_until_closed
from trio_c10k import Bind, Server
from trio_c10k._server import ACCEPT_BATCH


def status_line(data: bytes) -> bytes:
    return data.split(b"\r\n", 1)[0]


def body_of(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[1]


async def test_keep_alive_serves_many_requests_on_one_connection(server: Server) -> None:
    client = await Client.open(server)
    for i in range(5):
        response, body = await client.get(f"/t/environ/?i={i}")
        assert response.status_code == 200
        assert json.loads(body)["QUERY_STRING"] == f"i={i}"
    await trio.testing.wait_all_tasks_blocked()
    assert server.statistics().connections == 1
    assert server.statistics().requests == 5


async def test_pipelined_requests_are_answered_in_order(server: Server) -> None:
    stream = await connect(server)
    requests = b"".join(
        f"GET /t/environ/?n={n} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode() for n in range(4)
    )
    last = b"GET /t/hello/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    await stream.send_all(requests + last)
    data = await read_until_closed(stream)
    answers = data.split(b"HTTP/1.1 200 OK")[1:]
    assert len(answers) == 5
    for n, answer in enumerate(answers[:4]):
        assert f'"QUERY_STRING": "n={n}"'.encode() in answer
    assert answers[4].endswith(b"Hello, world!\n")


async def test_pipelined_plain_heads_and_heads_with_a_body_follow_each_other(server: Server) -> None:
    # Plain heads are read by hand, the POST by h11 (``_http_read`` Rule 5): the bytes after each
    # request go to the next, whichever read it.
    stream = await connect(server)
    await stream.send_all(
        b"GET /t/environ/?n=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        b"POST /t/echo-body/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nhello"
        b"GET /t/environ/?n=3 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        b"POST /t/echo-body/ HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nbye\r\n0\r\n\r\n"
        b"GET /t/hello/ HTTP/1.0\r\n\r\n"
    )
    data = await read_until_closed(stream)
    answers = data.split(b"HTTP/1.1 200 OK")[1:]
    assert len(answers) == 5
    assert b'"QUERY_STRING": "n=1"' in answers[0]
    assert answers[1].endswith(b"\r\n\r\nhello")
    assert b'"QUERY_STRING": "n=3"' in answers[2]
    assert answers[3].endswith(b"\r\n\r\nbye")
    assert answers[4].endswith(b"Hello, world!\n")


async def test_a_plain_request_then_the_end_of_the_stream_is_answered(server: Server) -> None:
    stream = await connect(server)
    await stream.send_all(b"GET /t/hello/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await stream.send_eof()
    data = await read_until_closed(stream)
    assert status_line(data) == b"HTTP/1.1 200 OK"
    assert data.endswith(b"Hello, world!\n")


async def test_chunked_request_body_reaches_django_with_a_content_length(server: Server) -> None:
    stream = await connect(server)
    await stream.send_all(
        b"POST /t/echo-body/ HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n"
    )
    data = await read_until_closed(stream)
    assert status_line(data) == b"HTTP/1.1 200 OK"
    assert body_of(data) == b"hello world"


async def test_expect_100_continue(server: Server) -> None:
    client = await Client.open(server)
    head = [("Host", "127.0.0.1"), ("Content-Length", "4"), ("Expect", "100-continue")]
    await client.send_raw(client.conn.send(h11.Request(method="POST", target="/t/echo-body/", headers=head)))
    informational = await client.next_event()
    assert isinstance(informational, h11.InformationalResponse)
    assert informational.status_code == 100
    await client.send_raw(client.conn.send(h11.Data(data=b"ping")) + client.conn.send(h11.EndOfMessage()))
    response, body = await client.response()
    assert (response.status_code, body) == (200, b"ping")


async def test_expect_100_continue_with_too_large_body_gets_413_without_100(
    start_server: StartServer,
) -> None:
    server = await start_server(max_body_size=10)
    stream = await connect(server)
    await stream.send_all(
        b"POST /t/echo-body/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 11\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )
    data = await read_until_closed(stream)
    assert status_line(data).startswith(b"HTTP/1.1 413 ")  # "Content Too Large" since RFC 9110
    assert b"100 Continue" not in data
    assert body_of(data) == b"Request body larger than 10 bytes\n"


async def test_head_has_headers_but_no_body(server: Server) -> None:
    client = await Client.open(server)
    await client.request("HEAD", "/t/hello/")
    response, body = await client.response()
    assert response.status_code == 200
    assert header(response, b"content-length") == b"14"
    assert body == b""
    # Had any body bytes been sent, this next answer would not parse.
    response, body = await client.get("/t/hello/")
    assert body == b"Hello, world!\n"


async def test_http_1_0_client_gets_answer_and_close(server: Server) -> None:
    stream = await connect(server)
    await stream.send_all(b"GET /t/environ/ HTTP/1.0\r\n\r\n")
    data = await read_until_closed(stream)
    assert status_line(data) == b"HTTP/1.1 200 OK"
    assert json.loads(body_of(data))["SERVER_PROTOCOL"] == "HTTP/1.0"


async def test_streaming_response_chunks_leave_before_the_view_finishes(server: Server) -> None:
    key = uuid.uuid4().hex
    events = views.EVENTS[key]
    client = await Client.open(server)
    await client.request("GET", f"/t/stream/{key}/")
    response = await client.next_event()
    assert response.status_code == 200
    first = await client.next_event()
    assert first.data == b"first\n"
    assert not events["finished"].is_set()
    events["release"].set()
    second = await client.next_event()
    assert second.data == b"second\n"
    assert type(await client.next_event()) is h11.EndOfMessage


async def test_file_response_uses_file_wrapper(server: Server) -> None:
    client = await Client.open(server)
    response, body = await client.get("/t/file/")
    assert response.status_code == 200
    assert header(response, b"content-length") == str(len(views.FILE_CONTENT)).encode()
    assert body == views.FILE_CONTENT


async def test_environ_over_the_wire(server: Server) -> None:
    client = await Client.open(server)
    local_port = client.stream.socket.getsockname()[1]
    _, body = await client.get(
        "/t/%65nviron/?a=%20b",  # %65 is "e": PATH_INFO is decoded, QUERY_STRING is not
        headers=[("X-Multi", "one"), ("X-Multi", "two"), ("Cookie", "a=1"), ("Cookie", "b=2")],
    )
    environ = json.loads(body)
    assert environ["PATH_INFO"] == "/t/environ/"
    assert environ["QUERY_STRING"] == "a=%20b"
    assert environ["SCRIPT_NAME"] == ""
    assert environ["HTTP_X_MULTI"] == "one, two"
    assert environ["HTTP_COOKIE"] == "a=1; b=2"
    assert environ["REMOTE_ADDR"] == "127.0.0.1"
    assert environ["REMOTE_PORT"] == str(local_port)
    assert environ["SERVER_NAME"] == "127.0.0.1"
    assert environ["SERVER_PORT"] == str(server.addresses[0][1])
    assert environ["wsgi.url_scheme"] == "http"
    assert environ["thread"].startswith("trio_c10k worker")


async def test_environ_names_the_address_each_connection_came_to_on_a_wildcard_bind(
    start_server: StartServer,
) -> None:
    # The accept loop takes the peer's address from accept() and the local one from the
    # listener, but a wildcard listener's is 0.0.0.0: each connection then asks its own.
    server = await start_server(binds=(Bind(host="0.0.0.0", port=0),))
    port = server.addresses[0][1]
    for local in ("127.0.0.1", "127.0.0.2"):
        stream = await trio.open_tcp_stream(local, port)
        _opened.append(stream)
        _, body = await Client(stream).get("/t/environ/")
        environ = json.loads(body)
        assert environ["SERVER_NAME"] == local
        assert environ["SERVER_PORT"] == str(port)
        source = stream.socket.getsockname()
        assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == (source[0], str(source[1]))


async def test_percent_encoded_path_is_decoded_as_latin_1(server: Server) -> None:
    client = await Client.open(server)
    response, _ = await client.get("/caf%C3%A9/")
    # Django re-decodes PATH_INFO from latin-1 to UTF-8 and finds no such URL: a 404 page,
    # not a crash, proves the path went through intact.
    assert response.status_code == 404


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
    ],
)
async def test_malformed_request_gets_400_and_close(server: Server, request_bytes: bytes) -> None:
    stream = await connect(server)
    await stream.send_all(request_bytes)
    data = await read_until_closed(stream)
    assert status_line(data) == b"HTTP/1.1 400 Bad Request"
    assert body_of(data).startswith(b"Bad request: ")
    # The server keeps serving everyone else.
    client = await Client.open(server)
    response, _ = await client.get("/t/hello/")
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("config", "request_bytes", "status", "reason"),
    [
        pytest.param(
            {"max_header_size": 2048},
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"x" * 4096 + b"\r\n\r\n",
            b"431 Request Header Fields Too Large",
            b"Request header fields too large (limit 2048 bytes)\n",
            id="head-too-large",
        ),
        pytest.param(
            # Only the head is sent: the answer must not wait for the 10 MB body.
            {"max_body_size": 1000},
            b"POST /t/echo-body/ HTTP/1.1\r\nHost: a\r\nContent-Length: 10000000\r\n\r\n",
            b"413 ",  # "Payload Too Large", "Content Too Large" since RFC 9110
            b"Request body larger than 1000 bytes\n",
            id="declared-body-too-large",
        ),
        pytest.param(
            {"max_body_size": 1000},
            b"POST /t/echo-body/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"400\r\n"
            + b"x" * 1024
            + b"\r\n",
            b"413 ",
            b"Request body larger than 1000 bytes\n",
            id="chunked-body-too-large",
        ),
        pytest.param(
            {"header_timeout": 0.3},
            b"GET /t/hello/ HTTP/1.1\r\nHost: 127.0.0.1\r\n",  # never finished
            b"408 Request Timeout",
            b"Request headers not received within 0.3 s\n",
            id="slow-headers",
        ),
        pytest.param(
            {"header_timeout": 0.3},
            b"POST /t/echo-body/ HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc",
            b"408 Request Timeout",
            b"Request body stalled for 0.3 s\n",
            id="stalled-body",
        ),
    ],
)
async def test_limit_answers_with_reason_and_close(
    start_server: StartServer, config: dict[str, float], request_bytes: bytes, status: bytes, reason: bytes
) -> None:
    server = await start_server(**config)
    stream = await connect(server)
    await stream.send_all(request_bytes)
    data = await read_until_closed(stream)
    assert status_line(data).startswith(b"HTTP/1.1 " + status)
    assert body_of(data) == reason


async def test_body_within_limit_is_accepted(start_server: StartServer) -> None:
    server = await start_server(max_body_size=3 * 1024 * 1024)
    client = await Client.open(server)
    payload = bytes(range(256)) * (2 * 1024 * 1024 // 256 + 7)  # > the 1 MiB spool: a temp file
    await client.request("POST", "/t/echo-body/", body=payload)
    response, body = await client.response()
    assert response.status_code == 200
    assert body == payload


async def test_idle_keep_alive_connection_is_closed_silently(start_server: StartServer) -> None:
    server = await start_server(keep_alive_timeout=0.3)
    client = await Client.open(server)
    response, _ = await client.get("/t/hello/")
    assert response.status_code == 200
    assert await read_until_closed(client.stream) == b""


async def test_connection_that_never_sends_is_closed_silently(start_server: StartServer) -> None:
    server = await start_server(keep_alive_timeout=0.3)
    stream = await connect(server)
    assert await read_until_closed(stream) == b""
    await trio.testing.wait_all_tasks_blocked()
    assert server.statistics().connections == 0


async def test_application_exception_gives_500_and_server_keeps_serving(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_app(environ, start_response):  # type: ignore[no-untyped-def]
        if environ["PATH_INFO"] == "/boom":
            raise RuntimeError("boom")
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    server = await start_server(app=broken_app)
    stream = await connect(server)
    await stream.send_all(b"GET /boom HTTP/1.1\r\nHost: a\r\n\r\n")
    data = await read_until_closed(stream)
    assert status_line(data) == b"HTTP/1.1 500 Internal Server Error"
    assert body_of(data) == b"Internal Server Error\n"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].name == "trio_c10k.http"
    assert errors[0].exc_info is not None
    assert "boom" in str(errors[0].exc_info[1])
    client = await Client.open(server)
    _, body = await client.get("/ok")
    assert body == b"ok"


async def test_invalid_response_header_from_the_app_gives_500(start_server: StartServer) -> None:
    def app(environ, start_response):  # type: ignore[no-untyped-def]
        start_response("200 OK", [("X-Bad", "line\r\nbreak")])
        return [b"never sent"]

    server = await start_server(app=app)
    stream = await connect(server)
    await stream.send_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    data = await read_until_closed(stream)
    assert status_line(data) == b"HTTP/1.1 500 Internal Server Error"
    assert b"never sent" not in data


@pytest.mark.parametrize(
    ("status", "headers", "body"),
    [
        ("200 OK", [("Content-Length", "10")], [b"short"]),
        ("200 OK", [("Content-Length", "2")], [b"too long"]),
        ("200 OK", [("Transfer-Encoding", "chunked")], [b"3\r\nabc\r\n0\r\n\r\n"]),
        ("101 Switching Protocols", [("Content-Length", "2")], [b"ok"]),  # not an upgrade
        ("103 Early Hints", [("Content-Length", "2")], [b"ok"]),
    ],
    ids=["shorter-than-its-length", "longer-than-its-length", "transfer-encoding", "101", "103"],
)
async def test_an_answer_the_app_breaks_gets_500_and_no_byte_of_it(
    start_server: StartServer, status: str, headers: list[tuple[str, str]], body: list[bytes]
) -> None:
    def app(environ, start_response):  # type: ignore[no-untyped-def]
        start_response(status, headers)
        return body

    server = await start_server(app=app)
    stream = await connect(server)
    await stream.send_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    data = await read_until_closed(stream)
    assert status_line(data) == b"HTTP/1.1 500 Internal Server Error"
    assert body[0] not in data
    assert data.count(b"HTTP/1.1 ") == 1


async def test_a_streamed_body_past_its_content_length_ends_the_connection(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    def app(environ, start_response):  # type: ignore[no-untyped-def]
        start_response("200 OK", [("Content-Length", "4")])
        yield b"abc"
        yield b"de"  # one byte too many: never sent

    server = await start_server(app=app)
    stream = await connect(server)
    await stream.send_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
    data = await read_until_closed(stream)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert data.endswith(b"\r\n\r\nabc")  # the client can tell: 3 bytes of 4, then the close
    assert [r.levelno for r in caplog.records if r.name == "trio_c10k.http"] == [logging.ERROR]


async def test_the_app_saying_connection_close_ends_the_connection_after_its_answer(
    start_server: StartServer,
) -> None:
    def app(environ, start_response):  # type: ignore[no-untyped-def]
        start_response("200 OK", [("Content-Length", "2"), ("Connection", "close")])
        return [b"ok"]

    server = await start_server(app=app)
    stream = await connect(server)
    await stream.send_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
    data = await read_until_closed(stream)
    assert data.count(b"HTTP/1.1 200 OK") == 1
    assert b"\r\nconnection: close\r\n" in data
    assert body_of(data) == b"ok"


async def test_an_http_1_0_client_gets_a_streamed_body_until_the_close(start_server: StartServer) -> None:
    def app(environ, start_response):  # type: ignore[no-untyped-def]
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"one"
        yield b"two"

    server = await start_server(app=app)
    stream = await connect(server)
    await stream.send_all(b"GET / HTTP/1.0\r\n\r\n")
    data = await read_until_closed(stream)
    assert status_line(data) == b"HTTP/1.1 200 OK"
    assert b"transfer-encoding" not in data.lower()
    assert b"\r\nconnection: close\r\n" in data
    assert body_of(data) == b"onetwo"


async def test_django_view_exception_gives_djangos_500(server: Server) -> None:
    client = await Client.open(server)
    response, _ = await client.get("/t/error/")
    assert response.status_code == 500


async def test_error_after_streaming_began_aborts_the_connection(start_server: StartServer) -> None:
    def app(environ, start_response):  # type: ignore[no-untyped-def]
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"partial"
        raise RuntimeError("failed mid-stream")

    server = await start_server(app=app)
    stream = await connect(server)
    await stream.send_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    data = await read_until_closed(stream)
    assert status_line(data) == b"HTTP/1.1 200 OK"
    # chunked framing never terminated with the zero-length chunk: the client can tell
    assert data.endswith(b"partial\r\n")


async def test_client_gone_mid_request(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    key = uuid.uuid4().hex
    events = views.EVENTS[key]
    stream = await connect(server)
    await stream.send_all(f"GET /t/wait/{key}/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    await trio.to_thread.run_sync(events["started"].wait, 5)
    await stream.aclose()
    events["release"].set()
    await trio.to_thread.run_sync(events["finished"].wait, 5)
    client = await Client.open(server)
    response, _ = await client.get("/t/hello/")
    assert response.status_code == 200
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_client_gone_mid_stream_stops_the_iteration(server: Server) -> None:
    key = uuid.uuid4().hex
    events = views.EVENTS[key]
    client = await Client.open(server)
    await client.request("GET", f"/t/stream/{key}/")
    assert (await client.next_event()).status_code == 200
    assert (await client.next_event()).data == b"first\n"
    await client.aclose()
    events["release"].set()
    # The generator is closed in its thread (its finally ran) and the server is fine.
    await trio.to_thread.run_sync(events["finished"].wait, 5)
    client = await Client.open(server)
    response, _ = await client.get("/t/hello/")
    assert response.status_code == 200


async def test_graceful_shutdown_finishes_in_flight_request(start_server: StartServer) -> None:
    key = uuid.uuid4().hex
    events = views.EVENTS[key]
    server = await start_server(keep_alive_timeout=60)
    port = server.addresses[0][1]
    idle = await Client.open(server)
    response, _ = await idle.get("/t/hello/")
    assert response.status_code == 200
    busy = await Client.open(server)
    await busy.request("GET", f"/t/wait/{key}/")
    await trio.to_thread.run_sync(events["started"].wait, 5)

    server.shutdown()
    # Idle keep-alive connections are closed, new connections refused...
    assert await read_until_closed(idle.stream) == b""
    with pytest.raises(OSError, match="all attempts to connect"):
        await trio.open_tcp_stream("127.0.0.1", port)
    # ...and the request in flight is answered, with Connection: close.
    events["release"].set()
    response, body = await busy.response()
    assert (response.status_code, body) == (200, b"released\n")
    assert header(response, b"connection") == b"close"
    assert await read_until_closed(busy.stream) == b""


async def test_graceful_timeout_cancels_what_is_left(nursery: trio.Nursery) -> None:
    from tests.conftest import DJANGO_APP
    from trio_c10k import Bind, Config, serve

    key = uuid.uuid4().hex
    events = views.EVENTS[key]
    config = Config(binds=(Bind(host="127.0.0.1", port=0),), graceful_timeout=0.2)
    done = trio.Event()

    async def run_server(task_status: trio.TaskStatus[Server]) -> None:
        await serve(DJANGO_APP, config, task_status=task_status)
        done.set()

    server = await nursery.start(run_server)
    client = await Client.open(server)
    await client.request("GET", f"/t/wait/{key}/")
    await trio.to_thread.run_sync(events["started"].wait, 5)
    server.shutdown()
    with trio.fail_after(5):
        await done.wait()
    assert await read_until_closed(client.stream) == b""
    events["release"].set()


async def test_max_connections_answers_503(start_server: StartServer) -> None:
    server = await start_server(max_connections=2)
    first, second = await Client.open(server), await Client.open(server)
    for client in (first, second):
        response, _ = await client.get("/t/hello/")
        assert response.status_code == 200
    third = await connect(server)
    data = await read_until_closed(third)
    assert status_line(data) == b"HTTP/1.1 503 Service Unavailable"
    assert server.statistics().rejected == 1
    await first.aclose()
    await trio.testing.wait_all_tasks_blocked()
    assert server.statistics().connections == 1
    fourth = await Client.open(server)
    response, _ = await fourth.get("/t/hello/")
    assert response.status_code == 200


async def test_the_503_reaches_a_client_that_sent_its_request_already(start_server: StartServer) -> None:
    server = await start_server(max_connections=1)
    first = await Client.open(server)
    response, _ = await first.get("/t/hello/")
    assert response.status_code == 200
    second = await connect(server)
    # A request with a body, all sent before anything is read: closing with it unread would
    # make the kernel answer with a reset, which can destroy the 503 before it is read.
    await second.send_all(
        b"POST /t/hello/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 300000\r\n\r\n" + b"x" * 300_000
    )
    await second.send_eof()
    data = await read_until_closed(second)
    assert status_line(data) == b"HTTP/1.1 503 Service Unavailable"
    assert data.endswith(b"Server at its connection limit; retry\n")


async def test_access_log_line(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trio_c10k.access")
    client = await Client.open(server)
    await client.get("/t/hello/?x=1")
    await trio.testing.wait_all_tasks_blocked()
    [record] = [r for r in caplog.records if r.name == "trio_c10k.access"]
    message = record.getMessage()
    assert message.startswith('127.0.0.1 - "GET /t/hello/?x=1 HTTP/1.1" 200 14 ')
    assert message.endswith("ms")


async def test_no_access_log(start_server: StartServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trio_c10k.access")
    server = await start_server(access_log=False)
    client = await Client.open(server)
    await client.get("/t/hello/")
    assert not [r for r in caplog.records if r.name == "trio_c10k.access"]


@pytest.mark.parametrize(
    ("proxy_headers", "expected"), [(True, ("203.0.113.9", "https")), (False, ("127.0.0.1", "http"))]
)
async def test_proxy_headers(
    start_server: StartServer, proxy_headers: bool, expected: tuple[str, str]
) -> None:
    server = await start_server(proxy_headers=proxy_headers)
    client = await Client.open(server)
    _, body = await client.get(
        "/t/environ/", headers=[("X-Forwarded-For", "203.0.113.9"), ("X-Forwarded-Proto", "https")]
    )
    environ = json.loads(body)
    assert (environ["REMOTE_ADDR"], environ["wsgi.url_scheme"]) == expected


async def test_proxy_headers_from_untrusted_peer_are_ignored(start_server: StartServer) -> None:
    server = await start_server(proxy_headers=True, forwarded_allow_ips=("10.0.0.0/8",))
    client = await Client.open(server)
    _, body = await client.get("/t/environ/", headers=[("X-Forwarded-For", "203.0.113.9")])
    assert json.loads(body)["REMOTE_ADDR"] == "127.0.0.1"


class _SpawnsPerStep(trio.abc.Instrument):
    """How many connection tasks each task step started (the accept loop's steps)."""

    def __init__(self) -> None:
        self.counts: list[int] = []
        self.count = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.count = 0

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        if task.name == "trio_c10k connection":
            self.count += 1

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if self.count:
            self.counts.append(self.count)


async def test_the_connections_waiting_in_the_backlog_are_accepted_a_batch_per_round(
    server: Server,
) -> None:
    waiting = 2 * ACCEPT_BATCH + 5
    spawns = _SpawnsPerStep()
    trio.lowlevel.add_instrument(spawns)
    # Connected without yielding: the kernel completes them, the accept loop cannot run yet.
    for _ in range(waiting):
        sock = socket.create_connection(("127.0.0.1", port_of(server)))
        _opened.append(trio.SocketStream(trio.socket.from_stdlib_socket(sock)))
    with trio.fail_after(10):
        while server.statistics().connections < waiting:
            await trio.lowlevel.checkpoint()
    trio.lowlevel.remove_instrument(spawns)
    # A batch per wake-up, not one (rounds of the event loop each) and not the whole backlog
    # (one round running every new connection's first step).
    assert spawns.counts == [ACCEPT_BATCH, ACCEPT_BATCH, 5]


async def test_200_concurrent_keep_alive_clients_20_requests_each(start_server: StartServer) -> None:
    server = await start_server(access_log=False)
    answered = 0

    async def one_client(n: int) -> None:
        nonlocal answered
        client = await Client.open(server)
        for i in range(20):
            response, body = await client.get(f"/t/environ/?client={n}&i={i}")
            assert response.status_code == 200
            assert json.loads(body)["QUERY_STRING"] == f"client={n}&i={i}"
            answered += 1
        await client.aclose()

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for n in range(200):
                nursery.start_soon(one_client, n)
    assert answered == 4000
    await trio.testing.wait_all_tasks_blocked()
    assert server.statistics().requests == 4000
