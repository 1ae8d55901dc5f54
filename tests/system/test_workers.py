"""``python -m trio_c10k --workers N``: N server processes on one socket, and their supervisor.

Each test runs the command line in a real subprocess (the test site, which has a view and a
WebSocket handler that report the process id) and reads its log to learn the workers' process
ids. Connections are spread over the workers by the kernel: a test that needs both opens new
connections until both have answered.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import trio

from tests.helpers import CLIENT_TIMEOUT, ROOT, WORKERS_ENV, Supervised, http_get
from trio_c10k.client import open_websocket

#: new connections tried before concluding that a worker never gets any
TRIES = 400


def start(supervised: list[Supervised], *args: str, workers: int = 2) -> Supervised:
    command = Supervised("--workers", str(workers), *args)
    supervised.append(command)
    command.wait_for(r"worker \d+ trio_c10k\.server: Listening on", count=workers)
    return command


def answering_pids(port: int, want: set[int]) -> set[int]:
    """Process ids that answered ``/t/pid/`` on new connections, until all of ``want`` did."""
    seen: set[int] = set()
    for _ in range(TRIES):
        status, body = http_get("127.0.0.1", port, "/t/pid/")
        assert status == 200
        seen.add(int(body))
        if want <= seen:
            break
    return seen


def hold_websockets(port: int, count: int, held: list[socket.socket]) -> Counter[int]:
    """Open ``count`` WebSockets to ``/t/ws/pid/`` one after another (each answers before the
    next is opened) and keep them in ``held``; how many each worker process took."""
    counts: Counter[int] = Counter()
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT)
        held.append(sock)
        sock.sendall(WS_PID_REQUEST)
        answer = b""
        while not (message := first_message(answer)):
            chunk = sock.recv(4096)
            assert chunk, answer
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 101 "), answer
        counts[int(message)] += 1
    return counts


def first_message(answer: bytes) -> bytes | None:
    """The first (short, unmasked) text message after the upgrade's head, once it is whole."""
    _, end, frames = answer.partition(b"\r\n\r\n")
    if not end or len(frames) < 2 or len(frames) < 2 + frames[1]:
        return None
    return frames[2 : 2 + frames[1]]


#: the upgrade request of /t/ws/pid/, whose first message is the worker's process id
WS_PID_REQUEST = (
    b"GET /t/ws/pid/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def test_two_workers_get_even_shares_and_a_killed_one_comes_back_for_its_share(
    supervised: list[Supervised],
) -> None:
    """Each worker listens with SO_REUSEPORT: the kernel hashes each connection to one of
    them. 400 connections opened one after another: 200 each, give or take (binomial, standard
    deviation 10; the tolerance, 50, is 5 of them). Inheriting one listening socket gave 154
    and 246 here, some runs 80 and 320."""
    command = start(supervised, "--bind", "127.0.0.1:0")
    port = command.port()
    assert "2 workers share 127.0.0.1:" in command.log
    pids = command.pids()
    assert sorted(pids) == [0, 1]
    held: list[socket.socket] = []
    counts = hold_websockets(port, 400, held)
    assert set(counts) == set(pids.values())
    assert all(150 <= count <= 250 for count in counts.values()), counts
    for pid in pids.values():  # counted by the workers' kernel too: one socket each
        assert socket_count(pid) >= counts[pid]
    os.kill(pids[1], signal.SIGKILL)
    command.wait_for(rf"Worker 1 \(pid {pids[1]}\) was killed by SIGKILL; starting it again")
    command.wait_for(r"Worker 1 started \(pid \d+\)", count=2)
    command.wait_for(r"worker 1 trio_c10k\.server: Listening on", count=2)
    new = command.pids()
    assert new[0] == pids[0]
    assert new[1] != pids[1]
    # 200 more: 100 each (standard deviation 7), the new worker among them
    counts = hold_websockets(port, 200, held)
    assert set(counts) == set(new.values())
    assert all(60 <= count <= 140 for count in counts.values()), counts
    for sock in held:
        sock.close()
    assert command.stop() == 0
    assert "Traceback" not in command.log


def socket_count(pid: int) -> int:
    """The sockets process ``pid`` has open (/proc/PID/fd)."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            count += os.readlink(fd).startswith("socket:")
    return count


def test_sigterm_closes_the_websockets_of_every_worker_with_1001(supervised: list[Supervised]) -> None:
    command = start(supervised, "--bind", "127.0.0.1:0")
    port = command.port()
    want = set(command.pids().values())
    codes: dict[int, int | None] = {}

    async def hold(task_status: trio.TaskStatus[int]) -> None:
        """One WebSocket: report its worker's pid; keep it until the server closes it, if it is
        the first on that worker."""
        async with open_websocket(f"ws://127.0.0.1:{port}/t/ws/pid/") as ws:
            pid = int(await ws.read_message())
            first = pid not in codes
            codes.setdefault(pid, None)
            task_status.started(pid)
            if first:
                assert await ws.read_message() is None  # until the server closes
                codes[pid] = ws.close_code

    async def clients() -> None:
        with trio.fail_after(CLIENT_TIMEOUT * 3):
            async with trio.open_nursery() as nursery:
                for _ in range(TRIES):
                    await nursery.start(hold)
                    if set(codes) == want:
                        break
                assert set(codes) == want, f"only workers {sorted(codes)} got connections"
                command.proc.send_signal(signal.SIGTERM)

    trio.run(clients)
    assert codes == dict.fromkeys(want, 1001)
    _, rest = command.proc.communicate(timeout=30)
    command.output.text += rest.decode(errors="replace")
    assert command.proc.returncode == 0, command.log
    assert command.log.count("exited with status 0") == 2


def test_a_unix_socket_outlives_a_worker_and_goes_with_the_supervisor(
    supervised: list[Supervised], tmp_path: Path
) -> None:
    path = tmp_path / "server.sock"
    command = start(supervised, "--bind", f"unix:{path}")
    pids = command.pids()
    os.kill(pids[0], signal.SIGKILL)
    command.wait_for(r"Worker 0 started \(pid \d+\)", count=2)
    command.wait_for(r"worker 0 trio_c10k\.server: Listening on", count=2)
    assert path.exists()  # the killed worker did not take the socket file with it
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(CLIENT_TIMEOUT)
        sock.connect(str(path))
        sock.sendall(b"GET /t/hello/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert command.stop() == 0
    assert not path.exists()


def run_to_the_end(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m trio_c10k ARGS`` with the test site's environment, run until it exits."""
    return subprocess.run(
        [sys.executable, "-m", "trio_c10k", *args],
        cwd=ROOT,
        env=WORKERS_ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_bad_app_stops_the_supervisor_with_status_2() -> None:
    result = run_to_the_end("no_such_module", "--workers", "2", "--bind", "127.0.0.1:0")
    assert result.returncode == 2, result.stderr
    assert "no module named 'no_such_module'" in result.stderr
    assert "starting it again" not in result.stderr


def test_options_cannot_be_abbreviated() -> None:
    """The workers get the command line minus --bind and --workers: an abbreviation of either
    would reach them unrecognised (each worker would start workers of its own)."""
    result = run_to_the_end("tests.wsgi", "--wo", "2")
    assert result.returncode == 2, result.stderr
    assert "unrecognized arguments: --wo 2" in result.stderr


#: run as ``python -c``: the command line's ``main()`` (the supervisor of ``--workers`` here),
#: then, as it exits, the modules it had imported that a supervisor does not need
#: (prometheus_client is imported once a worker exits, to clear its gauges)
IMPORTS_AT_EXIT = """
import atexit, sys
atexit.register(lambda: print(sorted(
    name for name in sys.modules
    if name.split(".")[0] in ("django", "wsproto", "h11", "coredis")
    or name in ("trio_c10k._server", "trio_c10k._websocket", "trio_c10k._fanout", "trio_c10k._metrics")
)))
from trio_c10k._cli import main
main(sys.argv[1:])
"""


def test_the_supervisor_imports_neither_the_server_nor_django() -> None:
    """It holds no connection: the server's modules and Django would be memory for nothing
    (43 MB of RSS before, 26.5 MB without them)."""
    result = subprocess.run(
        [sys.executable, "-c", IMPORTS_AT_EXIT, "no_such_module", "--workers", "2", "--bind", "127.0.0.1:0"],
        cwd=ROOT,
        env={**WORKERS_ENV, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr  # the workers could not import the app
    assert "Worker 0 started" in result.stderr
    assert result.stdout == "[]\n"
