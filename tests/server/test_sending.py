"""Sending with a deadline, file responses without a thread, request bodies with a deadline and
spooled early, over real sockets.

A client that "does not read" shrinks its receive buffer to 64 KiB (no autotuning) and reads
one byte, so the answer has begun and the server is stuck on its socket.
"""

from __future__ import annotations

import io
import logging
import os
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h11
import pytest
import trio

from tests import views
from tests.helpers import Client, StartServer, connect, header, read_until_closed
from trio_c10k import Config, ConfigError, Server
from trio_c10k._cli import build_parser, config_from_args
from trio_c10k._wsgi import FileWrapper, _run_in_thread

MiB = 1024 * 1024
#: the patterned content of the file the /t/big-file/ view serves: far more than the socket
#: buffers of a client that does not read (64 KiB) and of the server (4 MiB at most here)
BIG_CONTENT = bytes(range(256)) * (16 * MiB // 256)


@pytest.fixture
def big_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(BIG_CONTENT)
    monkeypatch.setattr(views, "BIG_FILE", str(path))


async def stuck_request(server: Server, target: str) -> trio.SocketStream:
    """A client that sends a GET for ``target``, reads the first byte of the answer, and stops."""
    stream = await connect(server)
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    await stream.send_all(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    with trio.fail_after(10):
        assert await stream.receive_some(1) == b"H"
    return stream


async def received_until_dropped(stream: trio.SocketStream) -> int:
    """How many bytes arrive until the server closes or resets the connection."""
    total = 0
    with trio.fail_after(10):
        try:
            while chunk := await stream.receive_some(MiB):
                total += len(chunk)
        except trio.BrokenResourceError:  # the reset of an aborted connection
            pass
    return total


class Aborts(logging.Handler):
    """The server's "connection aborted" log records, with an event set at the first one."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.first = trio.Event()  # records come from the event loop's thread

    def emit(self, record: logging.LogRecord) -> None:
        if "connection aborted" in record.getMessage():
            self.records.append(record)
            self.first.set()


@pytest.fixture
def aborts(caplog: pytest.LogCaptureFixture) -> Iterator[Aborts]:
    caplog.set_level(logging.INFO, logger="trio_c10k.http")
    handler = Aborts()
    logging.getLogger("trio_c10k.http").addHandler(handler)
    yield handler
    logging.getLogger("trio_c10k.http").removeHandler(handler)


@pytest.mark.parametrize(
    ("target", "size"),
    [
        pytest.param("/t/stream-endless/{key}/", 64 * MiB, id="streamed"),
        pytest.param(f"/t/big/{32 * MiB}/", 32 * MiB, id="buffered"),
        pytest.param("/t/big-file/0/", len(BIG_CONTENT), id="file"),
    ],
)
@pytest.mark.usefixtures("big_file")
async def test_client_that_does_not_read_is_aborted_after_send_timeout(
    start_server: StartServer, aborts: Aborts, target: str, size: int
) -> None:
    key = uuid.uuid4().hex
    server = await start_server(threads=1, send_timeout=0.5)
    stuck = await stuck_request(server, target.format(key=key))
    # The one worker thread answers another client: a streaming view's thread was released.
    client = await Client.open(server)
    response, _ = await client.get("/t/environ/")
    assert response.status_code == 200
    with trio.fail_after(10):
        await aborts.first.wait()
    assert await received_until_dropped(stuck) < size
    [record] = aborts.records
    assert record.levelno == logging.INFO
    assert record.exc_info is None
    if "stream" in target:  # the thread got an exception, and the body's close() ran in it
        assert views.EVENTS[key]["finished"].is_set()


@pytest.mark.usefixtures("big_file")
async def test_file_downloads_that_do_not_read_hold_no_worker_thread(
    start_server: StartServer, aborts: Aborts
) -> None:
    server = await start_server(threads=2)  # send_timeout stays 30 s: they stay stuck
    for _ in range(20):
        await stuck_request(server, "/t/big-file/0/")
    client = await Client.open(server)
    for _ in range(3):
        response, _ = await client.get("/t/environ/")
        assert response.status_code == 200
    assert server.statistics().connections == 21
    assert aborts.records == []


@pytest.mark.parametrize("offset", [0, 12345])
@pytest.mark.usefixtures("big_file")
async def test_file_response_is_byte_exact_and_sent_without_a_thread(
    start_server: StartServer, offset: int
) -> None:
    server = await start_server(threads=1)
    client = await Client.open(server)
    client.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    await client.request("GET", f"/t/big-file/{offset}/")
    response = await client.next_event()
    assert response.status_code == 200
    assert header(response, b"content-length") == str(len(BIG_CONTENT) - offset).encode()
    # While the download waits for this client to read, the one thread answers someone else.
    other = await Client.open(server)
    assert (await other.get("/t/environ/"))[0].status_code == 200
    body = bytearray()
    while type(event := await client.next_event()) is h11.Data:
        body += event.data
    assert type(event) is h11.EndOfMessage
    assert body == BIG_CONTENT[offset:]
    # Keep-alive goes on: HEAD has the length and no body, then a last GET at the file's end.
    client.conn.start_next_cycle()
    await client.request("HEAD", "/t/big-file/0/")
    response, head_body = await client.response()
    assert header(response, b"content-length") == str(len(BIG_CONTENT)).encode()
    assert head_body == b""
    _, tail = await client.get(f"/t/big-file/{len(BIG_CONTENT) - 10}/")
    assert tail == BIG_CONTENT[-10:]


async def test_body_trickled_past_body_timeout_gets_408(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_c10k.http")
    server = await start_server(body_timeout=0.5)  # header_timeout stays 10 s: no read stalls
    stream = await connect(server)
    await stream.send_all(b"POST /t/echo-body/ HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n")
    answer = b""
    with trio.fail_after(10):
        while not answer:  # one byte every 0.1 s, until the server answers
            await stream.send_all(b"x")
            with trio.move_on_after(0.1):
                answer = await stream.receive_some(65536)
    answer += await read_until_closed(stream)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert body == b"Request body not received within 0.5 s\n"
    assert [r.levelno for r in caplog.records if "408" in r.message] == [logging.INFO]


@pytest.mark.parametrize(("size", "kept_in"), [(64 * 1024, b"memory"), (64 * 1024 + 1, b"disk")])
async def test_request_body_is_spooled_to_disk_past_64_kib(
    start_server: StartServer, size: int, kept_in: bytes
) -> None:
    server = await start_server()
    client = await Client.open(server)
    await client.request("POST", "/t/input-kind/", body=b"z" * size)
    response, body = await client.response()
    assert response.status_code == 200
    assert body == kept_in


async def test_a_body_that_cannot_be_stored_gets_503_without_a_traceback(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The spool file cannot be made (no temporary directory: as with no descriptor or no disk
    # space left), which is the server's trouble, not the client's.
    monkeypatch.setattr(tempfile, "tempdir", "/nonexistent/trio_c10k")
    server = await start_server()
    client = await Client.open(server)
    await client.request("POST", "/t/input-kind/", body=b"z" * (64 * 1024 + 1))
    response, body = await client.response()
    assert (response.status_code, body) == (503, b"The server cannot store the request body now\n")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "cannot store a request body" in errors[0].getMessage()
    assert errors[0].exc_info is None


@pytest.mark.parametrize(
    ("field", "option"), [("send_timeout", "--send-timeout"), ("body_timeout", "--body-timeout")]
)
def test_timeout_options(field: str, option: str) -> None:
    assert getattr(Config(), field) == {"send_timeout": 30.0, "body_timeout": 60.0}[field]
    args = build_parser().parse_args(["tests.wsgi", option, "2.5"])
    assert getattr(config_from_args(args), field) == 2.5
    with pytest.raises(ConfigError, match=f"{field} must be a positive number of seconds"):
        Config(**{field: 0})


# --- which file responses go to sendfile (pure: the worker thread's half, synchronously) ------


def file_app(filelike: Any, length: int | None) -> Callable[..., Any]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        start_response("200 OK", [("Content-Length", str(length))] if length is not None else [])
        return environ["wsgi.file_wrapper"](filelike)

    return app


def regular_file(tmp_path: Path) -> Any:
    path = tmp_path / "f.bin"
    path.write_bytes(b"0123456789")
    handle = path.open("rb")
    handle.seek(3)
    return handle


def pipe_file(tmp_path: Path) -> Any:
    read, write = os.pipe()
    os.write(write, b"3456789")
    os.close(write)
    return os.fdopen(read, "rb")


@pytest.mark.parametrize(
    ("make", "length", "sent_from_file"),
    [
        pytest.param(regular_file, 7, True, id="regular-file"),
        pytest.param(regular_file, None, False, id="no-content-length"),
        pytest.param(lambda _: io.BytesIO(b"3456789"), 7, False, id="no-descriptor"),
        pytest.param(pipe_file, 7, False, id="pipe"),
    ],
)
def test_only_a_regular_file_with_a_length_is_sent_from_the_event_loop(
    tmp_path: Path, make: Callable[[Path], Any], length: int | None, sent_from_file: bool
) -> None:
    filelike = make(tmp_path)
    streamed: list[bytes] = []
    environ = {"wsgi.file_wrapper": FileWrapper}
    response = _run_in_thread(file_app(filelike, length), environ, lambda *args: streamed.append(args[3]))
    assert filelike.closed  # close() ran in the thread either way
    if not sent_from_file:
        assert response.file is None
        assert b"".join(streamed) == b"3456789"
        return
    assert streamed == []
    file = response.file
    assert file is not None
    try:
        assert (file.offset, len(file)) == (3, 7)
        assert os.pread(file.fd, 100, file.offset) == b"3456789"  # the duplicate outlives the file
    finally:
        os.close(file.fd)
