"""A ``python -m trio_c10k --workers N`` server seen from outside: its worker processes, their
CPU time and sockets, which worker holds a given connection, waiting for them to listen and
stopping them all. Used by benchmarks/c100k.py and benchmarks/keepalive_bench.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

#: connections from one source address to the server's address and port, at most: Linux
#: gives connect() the even ones of its ~28,000 ephemeral ports first (the odd ones are left to
#: bind()), and past those (~14,100) each connect() scans them all before taking an odd one:
#: a 36,000-connection run from 2 addresses slowed from ~300 to ~45 handshakes/s per worker
#: there, the workers idle
PORTS_PER_SOURCE = 14_000
#: seconds a worker is given to stop after SIGTERM (with thousands of WebSockets to close)
STOP_TIMEOUT = 60


def worker_pids(pid: int) -> list[int]:
    """The child processes of ``pid`` (a supervisor's workers)."""
    pids = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        pids += [int(p) for p in children.read_text().split()]
    return sorted(pids)


def cpu_of(pids: list[int]) -> float:
    """User + system CPU seconds of exactly these processes (not their children)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def sockets(pid: int) -> int:
    """The sockets process ``pid`` has open."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            count += os.readlink(fd).startswith("socket:")
    return count


def holder(server_port: int, client: tuple[str, int], pids: list[int]) -> int | None:
    """Which of ``pids`` holds the server's end of the TCP connection from ``client`` (address,
    port) to 127.0.0.1:``server_port``: its socket's inode in /proc/net/tcp, then the process
    with that inode among its descriptors (None: not found). Reads every descriptor of ``pids``:
    cheap before they hold thousands."""
    local = f"0100007F:{server_port:04X}"
    a, b, c, d = (int(x) for x in client[0].split("."))
    remote = f"{d:02X}{c:02X}{b:02X}{a:02X}:{client[1]:04X}"
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[2] == remote:
            inode = fields[9]
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) == target:
                    return pid
    return None


def wait_for_workers(log: Path, count: int, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    """Until every worker said it listens: connections before would go to the others only."""
    deadline = time.monotonic() + timeout
    while log.read_text(errors="replace").count("trio_c10k.server: Listening on") < count:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the workers did not all start; see {log}")
        time.sleep(0.2)


def stop_all(proc: subprocess.Popen[bytes], pids: list[int]) -> None:
    """SIGTERM the supervisor (it stops its workers gracefully); kill whatever is left after
    ``STOP_TIMEOUT`` s, the workers by their process ids."""
    proc.terminate()
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.kill()
        proc.wait()
