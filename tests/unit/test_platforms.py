"""The platform seam (``trio_c10k/_sockets.py`` Rules 3 and 4, ``_cli`` Rule 5), checked on
Linux: the POSIX choice is the descriptor calls themselves, the portable calls work on a real
socket pair on 127.0.0.1, and what a platform lacks is refused with one line (or, for a
default, gone without with an INFO line), the platform faked by monkeypatching."""

from __future__ import annotations

import errno
import importlib
import io
import logging
import os
import resource
import socket
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
import trustme

from trio_c10k import ConfigError, _cli, _sockets, _wsgi
from trio_c10k._config import Bind

APP = "tests.unit.test_platforms:app"


def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("204 No Content", [])
    return []


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        a = socket.create_connection(listener.getsockname())
        b, _ = listener.accept()
    with a, b:
        a.setblocking(False)
        b.setblocking(False)
        yield a, b


def test_on_posix_the_fast_paths_call_the_descriptor_functions_themselves() -> None:
    assert _sockets.POSIX
    assert _sockets.write_nowait is os.write
    assert _sockets.writev_nowait is os.writev
    assert _sockets._read is os.read


def test_off_posix_the_same_names_are_the_socket_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "name", "nt")
    try:
        module = importlib.reload(_sockets)
        assert not module.POSIX
        assert module.write_nowait is module.socket_send
        assert module.writev_nowait is module.socket_sendmsg
        assert module._read is module.socket_recv
    finally:
        monkeypatch.undo()
        importlib.reload(_sockets)
    assert _sockets.write_nowait is os.write


def test_the_portable_calls_send_and_receive_and_leave_the_socket_open(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    assert _sockets.socket_send(a.fileno(), b"hello ") == 6
    assert _sockets.socket_sendmsg(a.fileno(), [b"wor", memoryview(b"ld")]) == 5
    received = b""
    while len(received) < 11:
        try:
            received += _sockets.socket_recv(b.fileno(), 65536)
        except BlockingIOError:
            socket.socket.recv(b, 0, socket.MSG_PEEK)  # nothing yet: loopback is all but instant
    assert received == b"hello world"
    with pytest.raises(BlockingIOError):
        _sockets.socket_recv(b.fileno(), 65536)  # non-blocking, as the descriptor call
    a.sendall(b"still open")  # neither was closed by the calls
    assert a.fileno() >= 0
    assert b.fileno() >= 0


def test_the_portable_calls_fail_as_os_write_on_a_closed_socket() -> None:
    with pytest.raises(OSError, match="Bad file descriptor") as info:
        _sockets.socket_send(-1, b"x")
    assert info.value.errno == errno.EBADF


@pytest.fixture
def windows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_sockets, "POSIX", False)
    monkeypatch.setattr(_sockets.sys, "platform", "win32")


@pytest.mark.parametrize("text", ["fd://3", "unix:/run/app.sock"])
@pytest.mark.usefixtures("windows")
def test_a_posix_bind_is_refused_elsewhere(text: str) -> None:
    with pytest.raises(
        ConfigError, match=rf"^bind '{text}': not available on win32 \(needs Linux or macOS\)$"
    ):
        Bind.parse(text)


@pytest.mark.usefixtures("windows")
def test_a_tcp_bind_parses_everywhere() -> None:
    assert Bind.parse("127.0.0.1:8000") == Bind(host="127.0.0.1", port=8000)


@pytest.fixture
def ran(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[Any, ...]]]:
    """What ``main`` would have run (nothing is served, no logging set up, the GC untouched)."""
    calls: list[tuple[str, tuple[Any, ...]]] = []

    async def supervise(*args: Any) -> int:
        calls.append(("supervise", args))
        return 0

    async def serve_until_stopped(*args: Any) -> None:
        calls.append(("serve", args))

    monkeypatch.setattr(_cli, "supervise", supervise)
    monkeypatch.setattr(_cli, "serve_until_stopped", serve_until_stopped)
    monkeypatch.setattr(_cli, "log_to_stderr", lambda *args: None)
    monkeypatch.setattr(_cli, "tune_garbage_collector", lambda: None)
    return calls


def run_main(argv: list[str]) -> int | str | None:
    with pytest.raises(SystemExit) as info:
        _cli.main(argv)
    return info.value.code


@pytest.mark.usefixtures("windows")
def test_workers_are_refused_off_posix(ran: list[Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main([APP, "--workers", "2"]) == 2
    assert ran == []
    err = capsys.readouterr().err
    assert err.endswith("error: --workers: not available on win32 (needs Linux or macOS) (see --help)\n")


def test_pin_cpu_asked_for_is_refused_without_sched_setaffinity(
    monkeypatch: pytest.MonkeyPatch, ran: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delattr(os, "sched_setaffinity")
    monkeypatch.setattr(_cli.sys, "platform", "darwin")
    assert run_main([APP, "--pin-cpu"]) == 2
    assert ran == []
    assert capsys.readouterr().err.endswith(
        "error: --pin-cpu: not available on darwin (needs sched_setaffinity: Linux) (see --help)\n"
    )


def test_pin_cpu_by_default_goes_unpinned_without_sched_setaffinity(
    monkeypatch: pytest.MonkeyPatch, ran: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delattr(os, "sched_setaffinity")
    monkeypatch.setattr(_cli.sys, "platform", "darwin")
    caplog.set_level(logging.INFO, logger="trio_c10k.server")
    assert run_main([APP]) is None
    [(what, args)] = ran
    assert what == "serve"
    assert args[2] is None  # no CPU
    assert [r.getMessage() for r in caplog.records] == [
        "Not pinned to one CPU: darwin has no sched_setaffinity"
    ]


def test_no_pin_cpu_says_nothing(
    monkeypatch: pytest.MonkeyPatch, ran: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delattr(os, "sched_setaffinity")
    caplog.set_level(logging.INFO, logger="trio_c10k.server")
    assert run_main([APP, "--no-pin-cpu"]) is None
    assert [what for what, _ in ran] == ["serve"]
    assert caplog.records == []


def test_no_file_response_goes_by_sendfile_off_posix(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    path = tmp_path / "body"
    path.write_bytes(b"0123456789")
    with path.open("rb") as file:
        start_response = _wsgi._StartResponse(lambda *args: None)
        start_response("200 OK", [("Content-Length", "10")])
        wrapper = _wsgi.FileWrapper(file)
        found = _wsgi._file_body(wrapper, start_response)
        assert found is not None  # POSIX: sendfile
        os.close(found.fd)
        monkeypatch.setattr(_wsgi, "POSIX", False)
        assert _wsgi._file_body(wrapper, start_response) is None
        assert _wsgi._file_body(_wsgi.FileWrapper(io.BytesIO(b"x")), start_response) is None


def test_tls_without_sighup_serves_and_says_a_renewal_needs_a_restart(
    monkeypatch: pytest.MonkeyPatch, ran: list[Any], caplog: pytest.LogCaptureFixture, tmp_path: Any
) -> None:
    leaf = trustme.CA().issue_cert("localhost")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    monkeypatch.setattr(_cli, "RELOAD_SIGNAL", None)
    monkeypatch.setattr(_cli.sys, "platform", "win32")
    caplog.set_level(logging.INFO, logger="trio_c10k.server")
    assert run_main([APP, "--no-pin-cpu", "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]) is None
    assert [what for what, _ in ran] == ["serve"]
    said = [r.getMessage() for r in caplog.records]
    assert said == ["No SIGHUP on win32: restart the server to load a renewed certificate"]


def test_the_open_file_limit_off_posix_is_a_fixed_number(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _sockets.open_file_limit() == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    monkeypatch.setattr(_sockets, "POSIX", False)
    assert _sockets.open_file_limit() == _sockets.NO_FILE_LIMIT
