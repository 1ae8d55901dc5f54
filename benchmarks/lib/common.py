"""What the benchmarks share: the repository's paths, free ports, starting and stopping servers
(the echo servers among them), CPU placement and time, memory, log trouble, versions,
RESULTS.md."""

from __future__ import annotations

import os
import re
import resource
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

#: the benchmarks/ directory
BENCHMARKS = Path(__file__).resolve().parent.parent
ROOT = BENCHMARKS.parent
RESULTS = BENCHMARKS / "RESULTS.md"
#: the echo servers of benchmarks/websocket_bench.py and benchmarks/c10k.py
ECHO_SERVERS = ("trio_c10k", "trio-websocket", "websockets", "picows")
#: a log record at WARNING or above (trio_c10k's format), or a traceback (the peers log bare)
LOG_TROUBLE = re.compile(r"^\S+ \S+ \[(WARNING|ERROR|CRITICAL)\]|^Traceback ")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early with status {proc.returncode}: {proc.args}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"server did not listen on port {port} within {timeout} s: {proc.args}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children, from /proc."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for child in [pid, *_children(pid)]:
        try:
            fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def memory_kib(pid: int, field: str = "VmRSS") -> int:
    """A /proc/PID/status field (``VmRSS``, or ``VmHWM``: the peak) of a process, summed with
    its children's (a gunicorn master and its worker), in KiB."""
    total = 0
    for proc in [pid, *_children(pid)]:
        try:
            status = Path(f"/proc/{proc}/status").read_text()
        except FileNotFoundError:
            continue
        for line in status.splitlines():
            if line.startswith(field + ":"):
                total += int(line.split()[1])
    return total


def reset_peak_memory(pid: int) -> bool:
    """Reset VmHWM of a process and its children to their current RSS (``clear_refs`` 5, Linux
    4.0+); False where that is refused."""
    try:
        for proc in [pid, *_children(pid)]:
            Path(f"/proc/{proc}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _children(pid: int) -> list[int]:
    """The descendants of ``pid``: the children of each of its threads (trio_c10k's supervisor
    starts its workers from a worker thread), and theirs."""
    kids: list[int] = []
    try:
        threads = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return []
    for thread in threads:
        try:
            kids += [int(k) for k in (thread / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return kids + [g for k in kids for g in _children(k)]


def prepare(connections: int, modules: tuple[str, ...], install: str) -> None:
    """Raise the open-file limit to the hard one (the servers inherit it), check that it allows
    ``connections`` (spread over two client processes), and that ``modules`` import.

    Raises:
        SystemExit: what is missing, and how to get it (``install``).
    """
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if connections // 2 + 100 > hard:
        raise SystemExit(f"{connections} connections need an open-file limit over {connections // 2}")
    for module in modules:
        if subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode:
            raise SystemExit(f"{module} is not installed: {install}")


def update_results(section: str, text: str) -> None:
    """Replace the section between its markers in RESULTS.md (or append it)."""
    start, end = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    block = f"{start}\n{text.rstrip()}\n{end}\n"
    current = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    if start in current:
        before, rest = current.split(start, 1)
        current = before + block + rest.split(end, 1)[1].lstrip("\n")
    else:
        current = current.rstrip("\n") + "\n\n" + block
    RESULTS.write_text(current)


def launch(
    cmd: list[str], log: Path, env: dict[str, str] | None = None, cpu: int | None = None
) -> subprocess.Popen[bytes]:
    """Start a server from the repository's root, its output to ``log``, pinned to ``cpu``
    (if given) from its start; ``env`` adds to this process's environment."""
    with log.open("wb") as out:
        return subprocess.Popen(
            cmd,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None,
        )


def stop(proc: subprocess.Popen[Any], timeout: float = 15) -> None:
    """SIGTERM a server, then SIGKILL it if it has not exited within ``timeout`` s."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def example_site_database(logdir: Path) -> Path:
    """A fresh SQLite database for example_site, migrated (the chat stores its messages)."""
    path = logdir / "example_site.sqlite3"
    env = {**os.environ, "EXAMPLE_SITE_DB": str(path), "DJANGO_SETTINGS_MODULE": "example_site.settings"}
    migrate = [sys.executable, "manage.py", "migrate", "--verbosity", "0"]
    subprocess.run(migrate, cwd=ROOT, env=env, check=True)
    return path


def echo_server_command(name: str, port: int, tls: tuple[Path, Path] | None = None) -> tuple[list[str], str]:
    """The command serving the echo ``name`` (one of ECHO_SERVERS), and the echo's URL path;
    ``tls``: (certificate, key) PEM files to serve ``wss://`` with (trio_c10k, websockets)."""
    py = sys.executable
    options = ["--ssl-certfile", str(tls[0]), "--ssl-keyfile", str(tls[1])] if tls else []
    if name == "trio_c10k":
        cmd = [py, "-m", "trio_c10k", "example_site.wsgi", "--bind", f"127.0.0.1:{port}", "--no-access-log"]
        return cmd + options, "/test/echo/"
    if name == "trio-websocket" and not tls:
        return [py, str(BENCHMARKS / "peers" / "trio_websocket_echo.py"), str(port)], "/"
    if name == "websockets":
        return [py, str(BENCHMARKS / "peers" / "websockets_echo.py"), str(port), *options], "/"
    if name == "picows" and not tls:
        return [py, str(BENCHMARKS / "peers" / "picows_echo.py"), str(port)], "/"
    raise ValueError(name)


def client_cpu_for(server_pid: int | None) -> int | None:
    """A CPU for the clients: one the server is not pinned to (the last one if unpinned)."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None
    server = os.sched_getaffinity(server_pid) if server_pid else set(allowed)
    others = [cpu for cpu in allowed if cpu not in server]
    return (others or allowed)[-1]


def log_trouble(text: str) -> int:
    """Warnings, errors and tracebacks in a server log (a record and its traceback count once)."""
    count, previous = 0, ""
    for line in text.splitlines():
        if LOG_TROUBLE.match(line) and not (line.startswith("Traceback") and LOG_TROUBLE.match(previous)):
            count += 1
        previous = line
    return count


#: the distributions whose versions the WebSocket benchmarks' headings name
WEBSOCKET_PEERS = ("trio-c10k", "trio", "wsproto", "trio-websocket", "websockets", "picows", "uvloop")


def versions(names: tuple[str, ...] = WEBSOCKET_PEERS) -> str:
    """The versions of the distributions ``names`` (the project's and its peers'), for the
    results' headings."""
    found = []
    for dist in names:
        try:
            found.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            found.append(f"{dist} (not installed)")
    return ", ".join(found)
