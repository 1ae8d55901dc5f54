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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FD_LIMIT = 64


def _low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


def _get(sock: socket.socket) -> bytes:
    sock.sendall(b"GET /hello/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    data = b""
    while not data.endswith(b"Hello, world!\n"):
        chunk = sock.recv(4096)
        assert chunk, data
        data += chunk
    return data


def test_emfile_is_logged_once_and_existing_connections_keep_working() -> None:
    server = subprocess.Popen(
        # --max-connections above the descriptor limit, so that accept() itself runs out.
        [
            *(sys.executable, "-m", "trio_c10k", "example_site.wsgi", "--bind", "127.0.0.1:0"),
            *("--max-connections", "1000", "--no-access-log", "--threads", "2"),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "DJANGO_SETTINGS_MODULE": "example_site.settings"},
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_low_fd_limit,
    )
    assert server.stderr is not None
    clients: list[socket.socket] = []
    try:
        port = None
        for line in server.stderr:
            if match := re.search(r"Listening on http://127\.0\.0\.1:(\d+)", line):
                port = int(match[1])
                break
        assert port is not None, "the server did not start"
        # One request first: Django imports modules (opens files) on its first request.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as warm:
            assert _get(warm).startswith(b"HTTP/1.1 200 OK")
        # Far more connections than the server has descriptors for: the kernel completes
        # them (backlog), the server accepts until EMFILE.
        for _ in range(FD_LIMIT + 20):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        first = clients[0]
        assert _get(first).startswith(b"HTTP/1.1 200 OK")  # an accepted connection still works
        # Free descriptors: the waiting connections get accepted and answered.
        for sock in clients[1:40]:
            sock.close()
        last = clients[-1]
        assert _get(last).startswith(b"HTTP/1.1 200 OK")
    finally:
        for sock in clients:
            with contextlib.suppress(OSError):
                sock.close()
        server.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        status = server.wait(timeout=max(1, deadline - time.monotonic()))
        log = server.stderr.read()
        server.stderr.close()
    assert status == 0, log
    failures = [line for line in log.splitlines() if "accept() failed: Too many open files" in line]
    assert len(failures) == 1, log
    assert "ulimit -n" in failures[0]
    assert "accept() works again" in log
