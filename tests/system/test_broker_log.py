"""The broker's log lines, from a real ``python -m trio_c10k`` process: the Redis password
never shows.

No redis-server is needed: the broker URL names a port on 127.0.0.1 bound by the test and not
listening, so each attempt to reach Redis is refused and logged (test_broker.py runs a real
Redis).
"""

from __future__ import annotations

import signal
import socket

import pytest

from tests.helpers import Supervised

PASSWORD = "s3cret-pw"


@pytest.mark.parametrize("given_by", ["--broker", "the environment variable"])
def test_no_log_line_shows_the_redis_password(given_by: str) -> None:
    with socket.socket() as refusing:  # bound, never listening: connections are refused
        refusing.bind(("127.0.0.1", 0))
        port = refusing.getsockname()[1]
        url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0?password={PASSWORD}"
        if given_by == "--broker":
            server = Supervised("--bind", "127.0.0.1:0", "--broker", url, "--log-level", "debug")
        else:  # the tests' settings set no TRIO_C10K_BROKER
            env = {"TRIO_C10K_BROKER": url}
            server = Supervised("--bind", "127.0.0.1:0", "--log-level", "debug", env=env)
        try:
            server.wait_for(r"unreachable while (publishing|subscribing)")
        finally:
            assert server.stop(signal.SIGTERM) == 0
    shown = f"redis://:***@127.0.0.1:{port}/0?password=***"
    assert f"Group broadcasts go through Redis at {shown}\n" in server.log
    assert f"Redis at {shown} unreachable" in server.log
    assert PASSWORD not in server.log
