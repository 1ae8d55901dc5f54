"""``python -m trio_c10k``: options, errors, serving on every kind of address, shutdown.

Each test runs the command line in a real subprocess. A server's port is read from its
"Listening on ..." log line (it binds port 0); no test sleeps to synchronise.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import (
    APP,
    CLIENT_TIMEOUT,
    ENV,
    PROG,
    ROOT,
    assert_one_line_error,
    help_entries,
    http_get,
    run_cli,
)
from trio_c10k import Bind, Config, ConfigError

#: seconds a server is given to print its "Listening on" line (it imports Django first)
START_TIMEOUT = 30
#: seconds a server without in-flight requests is given to exit after SIGTERM
STOP_TIMEOUT = 5
HELLO = b"Hello, world!\n"


@dataclass
class ServerProcess:
    """A server started by ``start_server()``."""

    proc: subprocess.Popen[bytes]
    #: what the "Listening on" line names: http://HOST:PORT or unix:PATH
    address: str
    #: the TCP port the server listens on; None for a Unix socket
    port: int | None
    #: stderr read so far (up to and including the "Listening on" line)
    stderr: str


def start_server(*args: str, pass_fds: tuple[int, ...] = ()) -> ServerProcess:
    """Start ``python -m trio_c10k tests.wsgi ARGS`` and wait for its "Listening on" line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "trio_c10k", APP, *args],
        cwd=ROOT,
        env=ENV,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        pass_fds=pass_fds,
    )
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    data = b""
    deadline = time.monotonic() + START_TIMEOUT
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while (match := re.search(rb"Listening on (\S+)\n", data)) is None:
            remaining = deadline - time.monotonic()
            chunk = os.read(fd, 65536) if remaining > 0 and selector.select(remaining) else None
            if not chunk:
                if chunk is None:
                    proc.kill()
                proc.wait()
                proc.stderr.close()
                text = (data + (chunk or b"")).decode(errors="replace")
                reason = f"exited with {proc.returncode}" if chunk == b"" else "timed out"
                pytest.fail(f"server {reason} before listening; stderr:\n{text}")
            data += chunk
    address = match[1].decode()
    port = None if address.startswith("unix:") else int(address.rsplit(":", 1)[1])
    return ServerProcess(proc, address, port, data.decode())


def stop_server(server: ServerProcess, signum: int = signal.SIGTERM) -> tuple[int, str]:
    """Send ``signum``; return the exit status and the whole of stderr."""
    server.proc.send_signal(signum)
    try:
        _, rest = server.proc.communicate(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        _, rest = server.proc.communicate()
        pytest.fail(
            f"server still running {STOP_TIMEOUT} s after {signal.Signals(signum).name}; stderr:\n"
            + server.stderr
            + rest.decode(errors="replace")
        )
    return server.proc.returncode, server.stderr + rest.decode(errors="replace")


@contextlib.contextmanager
def running_server(*args: str, pass_fds: tuple[int, ...] = ()) -> Iterator[ServerProcess]:
    """``start_server()``; the process is killed on the way out if the test did not stop it."""
    server = start_server(*args, pass_fds=pass_fds)
    try:
        yield server
    finally:
        if server.proc.returncode is None:
            server.proc.kill()
            server.proc.communicate()


def access_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "trio_c10k.access" in line]


def assert_clean_exit(status: int, stderr: str) -> None:
    assert status == 0, stderr
    assert "Traceback" not in stderr, stderr
    assert "[ERROR]" not in stderr, stderr


# --- --help ------------------------------------------------------------------------------------


def test_help_mentions_every_option_with_its_default() -> None:
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith(f"usage: {PROG} ")
    assert "APP" in result.stdout
    entries = help_entries(result.stdout)
    config = Config()
    defaults = {
        "--bind": str(config.binds[0]),
        "--threads": str(config.threads),
        "--backlog": str(config.backlog),
        "--keep-alive-timeout": str(config.keep_alive_timeout),
        "--header-timeout": str(config.header_timeout),
        "--max-header-size": str(config.max_header_size),
        "--max-body-size": str(config.max_body_size),
        "--graceful-timeout": str(config.graceful_timeout),
        "--log-level": "info",
        "--access-log": str(config.access_log),
        "--no-access-log": str(config.access_log),
        "--proxy-headers": str(config.proxy_headers),
        "--forwarded-allow-ips": ",".join(config.forwarded_allow_ips),
    }
    for option, default in defaults.items():
        assert option in entries, f"{option} missing from --help:\n{result.stdout}"
        assert f"(default: {default})" in entries[option], f"{option}: {entries[option]!r}"
    assert "--max-connections" in entries
    assert "open-file limit" in entries["--max-connections"]
    assert "-b" in entries


def test_help_shows_no_meaningless_default() -> None:
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    assert "(default: None)" not in result.stdout, result.stdout


# --- bad options and APP -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([APP, "--threads", "0"], "threads must be at least 1"),
        ([APP, "--threads", "x"], "--threads"),
        ([APP, "--backlog", "0"], "backlog"),
        ([APP, "--keep-alive-timeout", "0"], "keep_alive_timeout"),
        ([APP, "--max-header-size", "10"], "max_header_size"),
        ([APP, "--max-connections", "0"], "max_connections"),
        ([APP, "--log-level", "loud"], "--log-level"),
        ([APP, "--bind", "nonsense"], "nonsense"),
        ([APP, "--bind", "1.2.3.4:99999"], "99999"),
        ([APP, "--bind", "unix:"], "unix:"),
        ([APP, "--bind", "fd://three"], "fd://three"),
        ([APP, "--forwarded-allow-ips", "300.1.1.1"], "300.1.1.1"),
        ([APP, "--frobnicate"], "--frobnicate"),
        ([], "APP"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_bad_option_exits_2_with_one_line(args: list[str], expected: str) -> None:
    line = assert_one_line_error(run_cli(*args), 2)
    assert expected in line


@pytest.mark.parametrize(
    ("app", "expected"),
    [
        ("no_such_module", "no_such_module"),
        ("tests.no_such_module", "tests.no_such_module"),
        ("tests.wsgi:nope", "nope"),
        ("json:__doc__", "not callable"),
    ],
)
def test_unusable_app_exits_2_with_one_line(app: str, expected: str) -> None:
    line = assert_one_line_error(run_cli(app, "--bind", "127.0.0.1:0"), 2)
    assert expected in line


def test_address_in_use_exits_1_with_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(APP, "--bind", f"127.0.0.1:{port}")
    line = assert_one_line_error(result, 1)
    assert "in use" in line.lower()
    assert f"127.0.0.1:{port}" in line


# --- serving -----------------------------------------------------------------------------------


def test_serves_tcp_and_exits_0_on_sigterm() -> None:
    with running_server("--bind", "127.0.0.1:0") as server:
        assert server.port is not None
        assert server.port != 0
        assert server.address == f"http://127.0.0.1:{server.port}"
        assert http_get("127.0.0.1", server.port, "/t/hello/") == (200, HELLO)
        status, stderr = stop_server(server)
    assert_clean_exit(status, stderr)
    assert "SIGTERM" in stderr
    lines = access_lines(stderr)
    assert len(lines) == 1, stderr
    assert re.search(r'trio_c10k\.access: 127\.0\.0\.1 - "GET /t/hello/ HTTP/1\.1" 200 14 ', lines[0]), lines


def test_sigint_exits_0() -> None:
    with running_server("--bind", "127.0.0.1:0") as server:
        status, stderr = stop_server(server, signal.SIGINT)
    assert_clean_exit(status, stderr)
    assert "SIGINT" in stderr
    assert "KeyboardInterrupt" not in stderr


def test_sigterm_closes_idle_keep_alive_connection() -> None:
    # The keep-alive timeout is long, so only the shutdown can close the idle connection
    # in time for the server to exit within STOP_TIMEOUT.
    with running_server("--bind", "127.0.0.1:0", "--keep-alive-timeout", "120") as server:
        assert server.port is not None
        with socket.create_connection(("127.0.0.1", server.port), timeout=CLIENT_TIMEOUT) as client:
            client.sendall(b"GET /t/hello/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            response = b""
            while not response.endswith(HELLO):
                chunk = client.recv(65536)
                assert chunk, response
                response += chunk
            assert response.startswith(b"HTTP/1.1 200 ")
            status, stderr = stop_server(server)
            assert client.recv(65536) == b""  # the server closed the idle connection
    assert_clean_exit(status, stderr)


def test_serves_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "server.sock"
    with running_server("--bind", f"unix:{path}") as server:
        assert server.address == f"unix:{path}"
        assert server.port is None
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(CLIENT_TIMEOUT)
            client.connect(str(path))
            client.sendall(b"GET /t/hello/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            response = b""
            while chunk := client.recv(65536):
                response += chunk
        head, _, body = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), response
        assert b"\r\ncontent-length: 14" in head.lower()
        assert body == HELLO
        status, stderr = stop_server(server)
    assert_clean_exit(status, stderr)
    lines = access_lines(stderr)
    assert len(lines) == 1, stderr
    assert '"GET /t/hello/ HTTP/1.1" 200 14 ' in lines[0]
    assert not path.exists(), "the socket file is removed on shutdown"


def test_unix_socket_replaces_stale_socket_file(tmp_path: Path) -> None:
    # Fails on the same shutdown bug as test_serves_unix_socket (exit status 1, EBADF);
    # the start over a stale socket file itself works.
    path = tmp_path / "server.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(path))  # left behind, as by a server that was killed
    with running_server("--bind", f"unix:{path}") as server:
        status, stderr = stop_server(server)
    assert_clean_exit(status, stderr)


def test_serves_ipv6_loopback() -> None:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:
        pytest.fail(f"IPv6 loopback (::1) is unavailable on this machine, this test needs it: {exc}")
    with running_server("--bind", "[::1]:0") as server:
        assert server.port is not None
        assert server.address == f"http://[::1]:{server.port}"
        assert http_get("::1", server.port, "/t/hello/") == (200, HELLO)
        status, stderr = stop_server(server)
    assert_clean_exit(status, stderr)
    lines = access_lines(stderr)
    assert len(lines) == 1, stderr
    assert 'trio_c10k.access: ::1 - "GET /t/hello/ HTTP/1.1" 200 14 ' in lines[0]


def test_serves_inherited_listening_socket() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        fd = listener.fileno()
        with running_server("--bind", f"fd://{fd}", pass_fds=(fd,)) as server:
            assert server.address == f"http://127.0.0.1:{port}"
            assert http_get("127.0.0.1", port, "/t/hello/") == (200, HELLO)
            status, stderr = stop_server(server)
    assert_clean_exit(status, stderr)
    assert len(access_lines(stderr)) == 1, stderr


def test_inherited_socket_not_listening_exits_2() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, but listen() was never called
        fd = sock.fileno()
        result = run_cli(APP, "--bind", f"fd://{fd}", pass_fds=(fd,))
    line = assert_one_line_error(result, 2)
    assert "not a listening socket" in line


def test_inherited_fd_not_a_socket_exits_2(tmp_path: Path) -> None:
    with (tmp_path / "file").open("wb") as file:
        fd = file.fileno()
        result = run_cli(APP, "--bind", f"fd://{fd}", pass_fds=(fd,))
    line = assert_one_line_error(result, 2)
    assert f"fd://{fd}" in line


def test_no_access_log() -> None:
    with running_server("--bind", "127.0.0.1:0", "--no-access-log") as server:
        assert server.port is not None
        assert http_get("127.0.0.1", server.port, "/t/hello/") == (200, HELLO)
        status, stderr = stop_server(server)
    assert_clean_exit(status, stderr)
    assert access_lines(stderr) == [], stderr
    assert "Listening on" in stderr


# --- Bind and Config from Python --------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"host": "127.0.0.1"}, {"port": 8000, "path": "/tmp/x.sock"}, {"path": "/tmp/x.sock", "fd": 3}],
)
def test_a_bind_needs_exactly_one_kind_of_address(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="exactly one of port"):
        Bind(**kwargs)  # type: ignore[arg-type]  # the values are right, the combination is not


def test_a_bind_port_is_checked() -> None:
    with pytest.raises(ConfigError, match="out of range"):
        Bind(host="127.0.0.1", port=70000)
    assert str(Bind(port=8000, host="")) == ":8000"
    assert str(Bind(fd=3)) == "fd://3"
