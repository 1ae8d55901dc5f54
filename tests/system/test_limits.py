"""The open-file limit: when accept() fails with EMFILE the server says so once, keeps
serving the connections it has, and accepts again once descriptors are free."""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[2]
FD_LIMIT = 64


def _low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


def _get(sock: socket.socket) -> bytes:
    sock.sendall(b"GET /t/hello/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    data = b""
    while not data.endswith(b"Hello, world!\n"):
        chunk = sock.recv(4096)
        assert chunk, data
        data += chunk
    return data


def _read_lines(stream: IO[str], lines: list[str], new_line: threading.Condition) -> None:
    """Collect the server's log lines (in a thread), waking ``_wait_for`` at each one."""
    for line in stream:
        with new_line:
            lines.append(line)
            new_line.notify_all()


def _wait_for(lines: list[str], new_line: threading.Condition, text: str) -> None:
    with new_line:
        seen = new_line.wait_for(lambda: any(text in line for line in lines), timeout=10)
        assert seen, f"no {text!r} in the log:\n" + "".join(lines)


def test_emfile_is_logged_once_and_existing_connections_keep_working() -> None:
    server = subprocess.Popen(
        # --max-connections above the descriptor limit, so that accept() itself runs out.
        [
            *(sys.executable, "-m", "trio_c10k", "tests.wsgi", "--bind", "127.0.0.1:0"),
            *("--max-connections", "1000", "--no-access-log", "--threads", "2"),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "DJANGO_SETTINGS_MODULE": "tests.settings"},
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_low_fd_limit,
    )
    assert server.stderr is not None
    lines: list[str] = []
    stderr = server.stderr
    new_line = threading.Condition()
    reader = threading.Thread(target=_read_lines, args=(stderr, lines, new_line), daemon=True)
    reader.start()
    clients: list[socket.socket] = []
    try:
        _wait_for(lines, new_line, "Listening on")
        listening = re.search(r"Listening on http://127\.0\.0\.1:(\d+)", "".join(lines))
        assert listening is not None
        port = int(listening[1])
        # One request first: Django imports modules (opens files) on its first request.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as warm:
            assert _get(warm).startswith(b"HTTP/1.1 200 OK")
        # More connections than the server has descriptors for: the kernel completes them
        # (backlog), the server accepts until EMFILE.
        for _ in range(FD_LIMIT + 20):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        _wait_for(lines, new_line, "accept() failed")
        assert _get(clients[0]).startswith(b"HTTP/1.1 200 OK")  # accepted connections still work
        # Free descriptors: the waiting connections get accepted and answered.
        for sock in clients[1:40]:
            sock.close()
        assert _get(clients[-1]).startswith(b"HTTP/1.1 200 OK")
        _wait_for(lines, new_line, "accept() works again")
    finally:
        for sock in clients:
            with contextlib.suppress(OSError):
                sock.close()
        server.send_signal(signal.SIGTERM)
        status = server.wait(timeout=30)
        reader.join(timeout=5)
        stderr.close()
    log = "".join(lines)
    assert status == 0, log
    failures = [line for line in lines if "accept() failed: Too many open files" in line]
    assert len(failures) == 1, log
    assert "ulimit -n" in failures[0]
