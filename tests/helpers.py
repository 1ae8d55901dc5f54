"""Plain helpers shared by test files: raw-socket HTTP and WebSocket clients, hand-built frames,
a raw WebSocket server, the CLI's help parser and runs, ``--workers`` commands, a reference Life
and the gameoflife command, headless Chromium, ports outside the kernel's ephemeral range for
servers told their port beforehand, a redis-server of a test's own, and the protocol fed by
hand. Fixtures stay in conftest.py; no test file imports another."""

from __future__ import annotations

import contextlib
import http.client
import itertools
import os
import random
import re
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import h11
import pytest
import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import CloseConnection
from wsproto.utilities import generate_accept_token

from trio_c10k import Server, WebSocket, database_sync_to_thread
from trio_c10k._protocol import WebSocketProtocol
from trio_c10k.client import _handshake

if TYPE_CHECKING:
    from playwright.sync_api import Page

#: the repository: the working directory of the commands the tests start
ROOT = Path(__file__).resolve().parents[1]


# -- HTTP and WebSocket over raw sockets --------------------------------------------------------

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


#: the key ``frame`` masks a client's payload with
MASK_KEY = b"\x37\xfa\x21\x3d"


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    masked: bool = True,
    fin: bool = True,
    rsv: int = 0,
    length_bytes: int | None = None,
) -> bytes:
    """One frame built by hand, as any peer could send it, valid or not (wsproto refuses to
    build invalid ones): a client's unless ``masked`` is false; ``length_bytes`` (0, 2 or 8)
    forces the length encoding, minimal or not. The mask key is always the same, so a frame
    built twice is the same bytes."""
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
    key = MASK_KEY
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


# -- processes ------------------------------------------------------------------------------

#: seconds a test client waits on a socket
CLIENT_TIMEOUT = 10

WORKERS_ENV = {
    **os.environ,
    "PYTHONUNBUFFERED": "1",
    "DJANGO_SETTINGS_MODULE": "tests.settings",
    "COLUMNS": "100",
}
#: seconds for every worker to say it listens (each imports Django)
WORKERS_START_TIMEOUT = 60


def http_get(host: str, port: int, path: str) -> tuple[int, bytes]:
    """GET ``path`` with the standard library's client; return the status and body."""
    conn = http.client.HTTPConnection(host, port, timeout=CLIENT_TIMEOUT)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class Output:
    """What a subprocess wrote to one pipe so far (``text``), read as a test waits for it: its
    log lines are the events the test waits on."""

    def __init__(self, pipe: IO[Any], timeout: float = WORKERS_START_TIMEOUT) -> None:
        self.text = ""
        self._fd = pipe.fileno()
        self._timeout = timeout
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._fd, selectors.EVENT_READ)

    def wait_for(self, pattern: str, count: int = 1, timeout: float | None = None) -> list[re.Match[str]]:
        """Read until ``pattern`` matched ``count`` times, within ``timeout`` (the one given to
        the constructor by default); the matches."""
        deadline = time.monotonic() + (self._timeout if timeout is None else timeout)
        while len(matches := list(re.finditer(pattern, self.text))) < count:
            remaining = deadline - time.monotonic()
            chunk = os.read(self._fd, 65536) if remaining > 0 and self._selector.select(remaining) else b""
            if not chunk:
                pytest.fail(f"{pattern!r} x{count} never came; output:\n{self.text}")
            self.text += chunk.decode(errors="replace")
        return matches


def start_redis(
    command: list[str], workdir: Path, ready: str, timeout: float
) -> tuple[subprocess.Popen[bytes], Output]:
    """Start ``command`` (a ``redis-server``, server or sentinel) in ``workdir`` and wait for its
    log to say ``ready``; the process and its log, read on as the test waits for more lines.
    Stop it with ``communicate()``, which closes the pipe."""
    proc = subprocess.Popen(command, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    output = Output(proc.stdout, timeout)
    try:
        output.wait_for(ready)
    except BaseException:  # it did not start: gone, and its pipe closed
        proc.kill()
        proc.communicate()
        raise
    return proc, output


class Supervised:
    """A running ``python -m trio_c10k`` (``--workers`` or not) and what its log said so far;
    ``env``: environment variables set on top of the tests' ones."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "trio_c10k", "tests.wsgi", "--no-access-log", *args],
            cwd=ROOT,
            env={**WORKERS_ENV, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert self.proc.stderr is not None
        #: its log (stderr), read as the test waits for lines
        self.output = Output(self.proc.stderr)

    @property
    def log(self) -> str:
        """What its log said so far."""
        return self.output.text

    def wait_for(
        self, pattern: str, count: int = 1, timeout: float = WORKERS_START_TIMEOUT
    ) -> list[re.Match[str]]:
        """Read the log until ``pattern`` matched ``count`` times; the matches."""
        return self.output.wait_for(pattern, count, timeout)

    def port(self) -> int:
        """The TCP port it listens on, from its log: bound as ``127.0.0.1:0``, the kernel's
        choice, which no other process can take meanwhile (a port found free beforehand can
        be taken by a client's outgoing connection before the server binds it)."""
        return int(self.wait_for(r"(?:workers share|Listening on https?://)127\.0\.0\.1:(\d+)")[0][1])

    def pids(self) -> dict[int, int]:
        """Worker index -> the process id it runs as now."""
        started = {int(m[1]): int(m[2]) for m in re.finditer(r"Worker (\d+) started \(pid (\d+)\)", self.log)}
        return started

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Send ``signum`` to the supervisor; its exit status. Workers still running after 30 s
        are killed (they hold its stderr open: waiting for it would never end)."""
        self.proc.send_signal(signum)
        try:
            _, rest = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
            _, rest = self.proc.communicate(timeout=30)
            self.output.text += rest.decode(errors="replace")
            pytest.fail(f"still running 30 s after {signal.Signals(signum).name}; log:\n{self.log}")
        self.output.text += rest.decode(errors="replace")
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the supervisor and its workers (they run in sessions of their own)."""
        workers: list[int] = []
        # Every thread's children: trio starts processes from a worker thread.
        for children in Path(f"/proc/{self.proc.pid}/task").glob("*/children"):
            with contextlib.suppress(FileNotFoundError):
                workers += [int(pid) for pid in children.read_text().split()]
        for pid in [self.proc.pid, *workers]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# -- ports chosen before a process starts ---------------------------------------------------
#
# A server started on a port named in its command line (redis-server, a sentinel, runserver)
# gets a port chosen beforehand. Bind port 0 to find one and the kernel picks it in its
# ephemeral range (ip_local_port_range), the range it also gives every outgoing connection its
# source port from: until the server binds the port, and while a test has stopped the server to
# start it again on the same port (it checks that clients reconnect), any of the thousands of
# connections the tests open can take it, and the server fails with "Address already in use".
# So the port comes from outside that range, where only another explicit listener can take it;
# redis-server is then given the next port if that happened (PORT_ATTEMPTS).

#: the lowest port ``service_ports()`` picks: below it are the usual ports of real services
SERVICE_PORTS_FLOOR = 20000
#: ports the first start of a redis-server tries, each found taken by another listener, at most
PORT_ATTEMPTS = 5
#: what redis-server logs when another listener has its port, then it exits
PORT_TAKEN = "Address already in use"


def ephemeral_ports() -> range:
    """The kernel's ephemeral port range, read from /proc."""
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    return range(low, high + 1)


def service_ports() -> Iterator[int]:
    """Ports for a server told its port before it starts, in random order, from
    SERVICE_PORTS_FLOOR up to 65535 but outside the kernel's ephemeral range; each free to bind
    on 127.0.0.1 when yielded. Fails the test once none is left."""
    ephemeral = ephemeral_ports()
    outside = [*range(SERVICE_PORTS_FLOOR, ephemeral.start), *range(ephemeral.stop, 65536)]
    for port in random.sample(outside, len(outside)):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:  # another listener, or connections of a closed one in TIME_WAIT
                continue
        yield port
    pytest.fail(
        f"no port free on 127.0.0.1 from {SERVICE_PORTS_FLOOR} to 65535 outside the ephemeral "
        f"range {ephemeral.start}-{ephemeral.stop - 1} (/proc/sys/net/ipv4/ip_local_port_range)"
    )


def service_port() -> int:
    """A port for a server told its port before it starts (``service_ports()``)."""
    return next(service_ports())


def start_redis_on(
    command: Callable[[int], list[str]], workdir: Path, ready: str, timeout: float, ports: Iterator[int]
) -> tuple[int, subprocess.Popen[bytes], Output]:
    """Start ``command(port)`` (as ``start_redis()``) on the first of ``ports`` it can listen on:
    the next one while its log says another listener has the port, PORT_ATTEMPTS at most; the
    port, the process and its log."""
    taken: list[int] = []
    for port in itertools.islice(ports, PORT_ATTEMPTS):
        try:
            proc, output = start_redis(command(port), workdir, ready, timeout)
        except pytest.fail.Exception as error:  # the failure shows its log
            if PORT_TAKEN not in str(error):
                raise
            taken.append(port)
        else:
            return port, proc, output
    pytest.fail(f"redis-server found each port it tried taken by another listener: {taken}", pytrace=False)


Cells = set[tuple[int, int]]


# -- a reference Life -------------------------------------------------------------------------


def cells(pattern: str, top: int = 0, left: int = 0) -> Cells:
    """The live cells of a pattern drawn with ``O`` and ``.``, moved by (top, left)."""
    return {
        (top + r, left + c)
        for r, row in enumerate(pattern.split())
        for c, char in enumerate(row)
        if char == "O"
    }


def life_step(alive: Cells, size: int, wrap: bool) -> Cells:
    """One generation of Conway's Life on a size x size grid, a torus if ``wrap``."""
    counts: Counter[tuple[int, int]] = Counter()
    for r, c in alive:
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                row, col = r + dr, c + dc
                if (dr, dc) == (0, 0):
                    continue
                if wrap:
                    counts[row % size, col % size] += 1
                elif 0 <= row < size and 0 <= col < size:
                    counts[row, col] += 1
    return {cell for cell, n in counts.items() if n == 3 or (n == 2 and cell in alive)}


def life(alive: Cells, size: int, steps: int, wrap: bool) -> list[Cells]:
    """The live cells at steps 0 to ``steps``."""
    history = [alive]
    for _ in range(steps):
        history.append(life_step(history[-1], size, wrap))
    return history


GAMEOFLIFE_ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "DJANGO_SETTINGS_MODULE": "example_site.settings"}


def gameoflife_command(port: int, *args: str) -> list[str]:
    return [
        sys.executable,
        "manage.py",
        "gameoflife",
        *("--url", f"http://127.0.0.1:{port}"),
        *args,
    ]


async def run_gameoflife(port: int, *args: str) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        gameoflife_command(port, *args),
        cwd=ROOT,
        env=GAMEOFLIFE_ENV,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


def states_by_step(messages: Iterable[str], size: int, steps: int) -> list[Cells]:
    """The live cells at each step, from relayed ``R C STEP ALIVE``; each cell once per step."""
    seen: Counter[tuple[int, int, int]] = Counter()
    alive: list[Cells] = [set() for _ in range(steps + 1)]
    for message in messages:
        match = re.fullmatch(r"([0-9]+) ([0-9]+) ([0-9]+) ([01])", message)
        assert match, message
        row, col, step, state = map(int, match.groups())
        assert max(row, col) < size, message
        assert step <= steps, message
        seen[row, col, step] += 1
        if state:
            alive[step].add((row, col))
    expected = {(r, c, s) for r in range(size) for c in range(size) for s in range(steps + 1)}
    assert set(seen) == expected
    assert set(seen.values()) == {1}
    return alive


GLIDER = "OOO O.. .O."


# -- the browser ----------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
#: a quiet, throw-away browser: no GPU, no QUIC, no first-run page, no updates or sync phoning home
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: seconds test_browser_life.py's test, which drives the browser from a worker thread, is given
BROWSER_TEST_TIMEOUT = 60
#: milliseconds Playwright waits for Chromium to start, then for each step: they bound the
#: test here, and end test_browser_life.py's worker thread (which cannot be cancelled) well
#: before BROWSER_TEST_TIMEOUT would give up on it.
LAUNCH_TIMEOUT_MS = 30_000
STEP_TIMEOUT_MS = 10_000


def require_browser() -> None:
    """Fail the test, saying what to install, if Playwright or Chromium is missing."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail(
            "Playwright is not installed: python3 -m pip install playwright (or -e '.[test]')",
            pytrace=False,
        )
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"Chromium is not installed ({CHROMIUM} is missing): apt-get install chromium", pytrace=False
        )


@contextlib.contextmanager
def open_page(args: Iterable[str] = ()) -> Iterator[tuple[Page, list[str]]]:
    """A page of a fresh headless Chromium (blocking API), and the list its errors go to:
    uncaught page errors and console messages of type "error" with their source URL. ``args``
    go to Chromium after CHROMIUM_ARGS."""
    # Imported here, so that a missing Playwright fails in require_browser() with its message.
    from playwright.sync_api import ConsoleMessage, expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *args], timeout=LAUNCH_TIMEOUT_MS
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(STEP_TIMEOUT_MS)
            expect.set_options(timeout=STEP_TIMEOUT_MS)
            errors: list[str] = []

            def on_console(message: ConsoleMessage) -> None:
                if message.type == "error":
                    errors.append(f"console: {message.text} ({message.location['url']})")

            page.on("console", on_console)
            page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
            yield page, errors
        finally:
            browser.close()


# -- the command line in a subprocess ------------------------------------------------------


#: seconds a command that should exit on its own (an error, --help) is given
RUN_TIMEOUT = 30


PROG = "python -m trio_c10k"


APP = "tests.wsgi"


ENV = {
    **os.environ,
    "PYTHONUNBUFFERED": "1",
    # The subprocess must run the test site whatever the test process has set.
    "DJANGO_SETTINGS_MODULE": "tests.settings",
    "DJANGO_DEBUG": "0",
    "COLUMNS": "100",
}


def run_cli(*args: str, pass_fds: tuple[int, ...] = ()) -> subprocess.CompletedProcess[str]:
    """Run the command line to completion."""
    return subprocess.run(
        [sys.executable, "-m", "trio_c10k", *args],
        cwd=ROOT,
        env=ENV,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        pass_fds=pass_fds,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], status: int) -> str:
    """The command failed with ``status`` and a single line on stderr; return that line."""
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{PROG}: error: "), lines[0]
    assert result.stdout == ""
    return lines[0]


# -- Redis and servers linked through it --------------------------------------------------


#: seconds a message across processes may take before the test gives up
BROKER_TIMEOUT = 10


#: what redis-server logs once it listens
REDIS_READY = "Ready to accept connections"


class Redis:
    """A redis-server of a test's own, with no persistence. Its first ``start()`` takes the first
    of ``ports`` (``service_ports()`` by default) it can listen on; ``stop()`` then ``start()``
    keep that port."""

    def __init__(self, workdir: Path, ports: Iterator[int] | None = None) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            pytest.fail("redis-server is not installed: apt-get install redis-server")
        self.executable = executable
        self.workdir = workdir
        self.ports = service_ports() if ports is None else ports
        #: its port once started, 0 before
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self, port: int) -> list[str]:
        command = [self.executable, "--port", str(port), "--bind", "127.0.0.1"]
        return [*command, "--save", "", "--appendonly", "no"]

    def start(self) -> None:
        if self.port:
            self.proc, _ = start_redis(self.command(self.port), self.workdir, REDIS_READY, BROKER_TIMEOUT)
        else:
            self.port, self.proc, _ = start_redis_on(
                self.command, self.workdir, REDIS_READY, BROKER_TIMEOUT, self.ports
            )

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            self.proc.communicate(timeout=BROKER_TIMEOUT)


def start_with_broker(supervised: list[Supervised], redis: Redis, *args: str, database: int = 0) -> int:
    """A server process (``--workers 1``) with the broker (Redis database ``database``); its port."""
    url = redis.url.rsplit("/", 1)[0] + f"/{database}"
    command = Supervised("--bind", "127.0.0.1:0", "--broker", url, *args)
    supervised.append(command)
    return command.port()


async def wait_until_linked(here: WebSocket, there: WebSocket) -> None:
    """Send probes from ``here`` until one reaches ``there`` (both processes subscribed); the
    first message ``there`` gets must be a probe, so nothing sent earlier leaked through."""
    for attempt in range(200):
        probe = f"probe {attempt}"
        here.write_message(probe)
        assert await next_text(here) == probe
        with trio.move_on_after(0.1):
            got = await next_text(there)
            assert got.startswith("probe "), got
            while got != probe:  # earlier probes that were still on their way
                got = await next_text(there)
            return
    pytest.fail("the two processes never exchanged a message through Redis")


async def next_text(ws: WebSocket) -> str:
    """The next message, a text."""
    message = await ws.read_message()
    assert isinstance(message, str), message
    return message


# -- WebSocket frames built by hand, for the protocol's tests ------------------------------


TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG = 1, 2, 0, 8, 9, 10


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()


def feed(protocol: WebSocketProtocol, *chunks: bytes, now: float = 0.0) -> list[str | bytes]:
    """Feed ``chunks`` one after another, parsing as the I/O layer does (again while a step was
    tired or the handler took a message), and return every message received."""
    messages: list[str | bytes] = []
    for chunk in (*chunks, None):
        if chunk is not None:
            protocol._receive_data(chunk, now)
        while True:
            protocol._tired = False
            protocol._parse()
            while (message := protocol._next_message()) is not None:
                messages.append(message)
            if not (protocol._tired and protocol._unparsed):
                break
    return messages
