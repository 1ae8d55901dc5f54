"""``_metrics`` without a server: the error naming the extra, the supervisor's directory, and
the counters of a protocol that counts (synchronous, no socket)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import RequestFactory
from wsproto import ConnectionType
from wsproto.connection import Connection

from trio_c10k import WebSocketConfig, metrics_view
from trio_c10k._counters import Counters
from trio_c10k._multiprocess import MULTIPROC_ENV, metrics_directory
from trio_c10k._protocol import WebSocketProtocol


def test_without_prometheus_client_the_view_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails as if not installed
    with pytest.raises(ImproperlyConfigured, match=r"pip install 'trio-c10k\[metrics\]'"):
        metrics_view(RequestFactory().get("/metrics/"))


def test_the_supervisor_makes_a_directory_and_removes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    with metrics_directory() as environment:
        path = Path(environment[MULTIPROC_ENV])
        assert path.is_dir()
    assert not path.exists()


def test_the_supervisor_empties_the_given_directory_of_its_files_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    (tmp_path / "counter_12.db").write_bytes(b"old")
    (tmp_path / "notes.txt").write_text("kept")
    with metrics_directory() as environment:
        assert environment == {MULTIPROC_ENV: str(tmp_path)}
        assert sorted(os.listdir(tmp_path)) == ["notes.txt"]
    assert tmp_path.is_dir()


def test_a_protocol_counts_messages_bytes_and_a_slow_consumer() -> None:
    protocol = WebSocketProtocol(Connection(ConnectionType.SERVER), WebSocketConfig(send_queue_size=10))
    counters = protocol._counters = Counters()
    masked_hello = b"\x81\x85" + bytes(4) + b"hello"  # a zero mask leaves the text as it is
    protocol._receive_data(masked_hello * 2, now=1.0)
    protocol._parse()
    assert (counters.messages_in, counters.bytes_in) == (2, 2 * 11)
    protocol.write_message("x" * 20)  # queued: the protocol alone has no socket
    assert (counters.messages_out, counters.slow_closed) == (1, 0)
    protocol.write_message("y")  # the backlog (22 bytes) is over 10: closed with 1008
    assert (counters.messages_out, counters.slow_closed) == (2, 1)
    assert protocol.close_code == 1008
