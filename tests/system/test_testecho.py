"""``manage.py testecho`` against ``python -m trio_c10k example_site.wsgi``, both real processes.

CI runs the path with 1,000 clients; ``pytest -m slow`` runs the 10,000-client one.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "DJANGO_SETTINGS_MODULE": "example_site.settings"}


@contextlib.contextmanager
def running_server() -> Iterator[int]:
    """The example site served by ``python -m trio_c10k`` on a free port; stopped with SIGTERM."""
    server = subprocess.Popen(
        [sys.executable, "-m", "trio_c10k", "example_site.wsgi", "--bind", "127.0.0.1:0", "--no-access-log"],
        cwd=ROOT,
        env=ENV,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert server.stderr is not None
    try:
        for line in server.stderr:
            if match := re.search(r"Listening on http://127\.0\.0\.1:(\d+)", line):
                yield int(match[1])
                break
        else:
            raise AssertionError(f"the server did not start (exit status {server.wait()})")
    finally:
        server.send_signal(signal.SIGTERM)
        status = server.wait(timeout=30)
        server.stderr.close()
    assert status == 0


def run_testecho(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "testecho", *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("clients", "delay", "ramp"),
    [
        # Every exchange lasts at least three delays (12 s) and all clients start within about
        # the ramp: every client is connected at the same time. On a loaded 2-core machine the
        # 1,000 connections took 7.7 s to open, past three delays of 2 s.
        pytest.param("1000", "4", "1", id="1000"),
        # C10k, ten thousand clients at once: run with ``pytest -m slow`` (about 40 s).
        pytest.param("10000", "10", "8", id="10000", marks=pytest.mark.slow),
    ],
)
def test_testecho_all_clients_at_once(clients: str, delay: str, ramp: str) -> None:
    with running_server() as port:
        result = run_testecho(
            *("--clients", clients, "--delay", delay, "--ramp", ramp, "--processes", "2"),
            *("--url", f"ws://127.0.0.1:{port}/test/ws/"),
        )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"exchanges completed: {clients}" in result.stdout
    assert "failures: 0" in result.stdout
    assert f"peak simultaneous connections: {clients}" in result.stdout
    assert "connected" in result.stderr  # live progress


def test_testecho_reports_failures_and_exits_nonzero() -> None:
    with running_server() as port:
        pass  # stopped: nothing listens on the port any more
    result = run_testecho("--clients", "20", "--ramp", "0", "--url", f"ws://127.0.0.1:{port}/test/ws/")
    assert result.returncode == 1
    assert "failures: 20" in result.stdout
    assert re.search(r"20\s+connection failed: ", result.stdout)
