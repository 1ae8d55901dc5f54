"""``metrics_view`` under ``--workers 2``: a scrape, whichever process answers it, counts the
connections of both (prometheus_client's multiprocess files, written by each process)."""

from __future__ import annotations

import http.client
from pathlib import Path

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import CLIENT_TIMEOUT, Supervised
from trio_c10k import Config
from trio_c10k.client import open_websocket

#: worker threads per process (the default of --threads)
THREADS = Config().threads
#: new WebSockets opened before concluding that a worker never gets any
TRIES = 200


def scrape_via(port: int, pid: int) -> dict[str, float]:
    """The unlabelled samples of a scrape that worker ``pid`` answers, and the 2xx answers:
    name -> value. The worker scraped writes its own numbers before it adds up every
    process's (``_metrics`` Rule 3): so a scrape through each worker in turn makes the last
    one current for all, without waiting for their periodic writes. The kernel hands each
    connection to a worker: connections are opened until one reaches ``pid``."""
    for _ in range(TRIES):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT)
        try:
            conn.request("GET", "/t/pid/")
            if int(conn.getresponse().read()) != pid:
                continue
            conn.request("GET", "/t/metrics/")  # the same connection: the same worker
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        assert response.status == 200, body
        break
    else:
        pytest.fail(f"no connection reached worker {pid} in {TRIES}")
    return {
        sample.name + "".join(f"{{{v}}}" for v in sample.labels.values()): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def test_a_scrape_counts_the_websockets_of_both_workers(supervised: list[Supervised], tmp_path: Path) -> None:
    (tmp_path / "counter_1.db").write_bytes(b"a previous run's")  # removed as the supervisor starts
    command = Supervised(
        "--workers", "2", "--bind", "127.0.0.1:0", env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    )
    supervised.append(command)
    command.wait_for(r"worker \d+ trio_c10k\.server: Listening on", count=2)
    port = command.port()
    want = set(command.pids().values())
    held: dict[int, int] = {}
    seen: list[dict[str, float]] = []

    async def hold(task_status: trio.TaskStatus[None]) -> None:
        async with open_websocket(f"ws://127.0.0.1:{port}/t/ws/pid/") as ws:
            pid = int(await ws.read_message())
            held[pid] = held.get(pid, 0) + 1
            task_status.started()
            await ws.read_message()  # until the test is over

    async def main() -> None:
        with trio.fail_after(CLIENT_TIMEOUT * 3):
            async with trio.open_nursery() as nursery:
                for _ in range(TRIES):
                    await nursery.start(hold)
                    if set(held) == want:
                        break
                assert set(held) == want, f"only workers {sorted(held)} got connections"
                for pid in sorted(want):
                    seen.append(await trio.to_thread.run_sync(scrape_via, port, pid))
                nursery.cancel_scope.cancel()

    trio.run(main)
    values = seen[-1]
    assert values["trio_c10k_websockets"] == sum(held.values())
    assert values["trio_c10k_websocket_messages_sent_total"] >= sum(held.values())  # each said its pid
    assert values["trio_c10k_worker_threads"] == 2 * THREADS  # in each process
    assert {path.name for path in tmp_path.glob("counter_*.db")} == {f"counter_{pid}.db" for pid in want}
    assert command.stop() == 0
    assert "Traceback" not in command.log


def test_without_the_variable_the_supervisor_makes_a_directory_of_its_own(
    supervised: list[Supervised],
) -> None:
    command = Supervised("--workers", "2", "--bind", "127.0.0.1:0")
    supervised.append(command)
    command.wait_for(r"worker \d+ trio_c10k\.server: Listening on", count=2)
    port = command.port()
    first, last = command.pids().values()
    scrape_via(port, first)
    assert scrape_via(port, last)["trio_c10k_worker_threads"] == 2 * THREADS
    assert command.stop() == 0
    assert "Traceback" not in command.log
