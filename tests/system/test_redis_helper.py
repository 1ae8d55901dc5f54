"""The tests' own redis-server (``tests.helpers.Redis``): its port, chosen before it starts, lies
outside the kernel's ephemeral range, so no client connection can take it before it starts or
while a test has stopped it to start it again; its first start moves on to another port when a
listener has the one it tried."""

from __future__ import annotations

import itertools
import socket
from pathlib import Path

import pytest

from tests.helpers import CLIENT_TIMEOUT, PORT_ATTEMPTS, Redis, service_port, service_ports


def ephemeral() -> range:
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    return range(low, high + 1)


def answers_ping(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT) as client:
        client.sendall(b"PING\r\n")
        return client.recv(64) == b"+PONG\r\n"


def test_ports_chosen_beforehand_are_outside_the_ephemeral_range_and_free() -> None:
    for port in itertools.islice(service_ports(), 20):
        assert port not in ephemeral()
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_redis_listens_outside_the_ephemeral_range_and_a_restart_keeps_its_port(redis: Redis) -> None:
    port = redis.port
    assert port not in ephemeral()
    assert redis.url == f"redis://127.0.0.1:{port}/0"
    assert answers_ping(port)
    redis.stop()
    redis.start()
    assert redis.port == port
    assert answers_ping(port)


def test_the_first_start_moves_on_from_a_port_another_listener_has(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", service_port()))
        listener.listen()
        taken = listener.getsockname()[1]
        redis = Redis(tmp_path, itertools.chain([taken], service_ports()))
        redis.start()
        try:
            assert redis.port != taken
            assert redis.port not in ephemeral()
            assert answers_ping(redis.port)
        finally:
            redis.stop()
        gives_up = Redis(tmp_path, itertools.repeat(taken))
        with pytest.raises(pytest.fail.Exception, match=r"each port it tried taken by another") as error:
            gives_up.start()
    assert str(error.value).endswith(f"{[taken] * PORT_ATTEMPTS}")
