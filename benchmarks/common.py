"""What the benchmarks share: the repository's paths, free ports, CPU time, RESULTS.md."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


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


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    kids = [int(k) for k in text.split()]
    return kids + [g for k in kids for g in _children(k)]


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


def stop(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM a server, then SIGKILL it if it has not exited within 15 s."""
    proc.terminate()
    try:
        proc.wait(timeout=15)
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
