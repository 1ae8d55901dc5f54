"""``python manage.py testecho``: many clients run the echo page's exchange at once.

Each client connects to ``/test/ws/``, receives ``Hello!``, then three times waits
``--delay`` seconds, sends a message and reads its numbered echo, receives ``Goodbye!`` and
sees the server close with 1000. Connections open evenly over ``--ramp`` seconds; with
``--processes N`` the clients are split over N processes (one process holds at most about
as many sockets as its open-file limit allows).
"""

from __future__ import annotations

import multiprocessing
import resource
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import trio
from django.core.management.base import BaseCommand, CommandError, CommandParser

from trio_c10k import ConnectionClosed, HandshakeRejected
from trio_c10k.client import open_websocket


@dataclass
class Tally:
    """Counters of one process, sent to the parent as a dict."""

    connected: int = 0
    peak: int = 0
    done: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    all_connected_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "peak": self.peak,
            "done": self.done,
            "failures": dict(self.failures),
            "all_connected_at": self.all_connected_at,
        }


#: seconds a client waits for its TCP connection and handshake
CONNECT_TIMEOUT = 10.0


class ExchangeError(Exception):
    """The server said something other than the echo page's script."""


async def _expect(ws: Any, expected: str) -> None:
    message = await ws.read_message()
    if message != expected:
        raise ExchangeError(f"expected {expected!r}, got {message!r}")


async def _one_client(url: str, delay: float, limit: float, tally: Tally, name: str) -> None:
    opened = False
    try:
        with trio.fail_after(limit):
            async with open_websocket(url, connect_timeout=min(limit, CONNECT_TIMEOUT)) as ws:
                opened = True
                tally.connected += 1
                tally.peak = max(tally.peak, tally.connected)
                try:
                    await _expect(ws, "Hello!")
                    for n in range(1, 4):
                        await trio.sleep(delay)
                        ws.write_message(f"{name} message {n}")
                        await _expect(ws, f"{n}. {name} message {n}")
                    await _expect(ws, "Goodbye!")
                    if await ws.read_message() is not None or ws.close_code != 1000:
                        raise ExchangeError(f"expected close 1000, got {ws.close_code}")
                finally:
                    tally.connected -= 1
        tally.done += 1
    except trio.TooSlowError:
        if opened:
            tally.failures[f"no full exchange within {limit:g} s"] += 1
        else:
            tally.failures[f"no handshake within {min(limit, CONNECT_TIMEOUT):g} s"] += 1
    except HandshakeRejected as exc:
        tally.failures[f"handshake rejected: HTTP {exc.status}"] += 1
    except ConnectionClosed as exc:
        tally.failures[f"closed early: {exc.code}"] += 1
    except ExchangeError as exc:
        tally.failures[f"wrong answer: {str(exc)[:80]}"] += 1
    except OSError as exc:
        tally.failures[f"connection failed: {exc.strerror or exc}"] += 1


async def _run_clients(
    url: str, clients: list[int], total: int, delay: float, ramp: float, limit: float, report: Any
) -> Tally:
    tally = Tally()
    start = trio.current_time()

    async def reporter() -> None:
        while True:
            report(tally)
            await trio.sleep(0.5)

    async with trio.open_nursery() as outer:
        outer.start_soon(reporter)
        async with trio.open_nursery() as nursery:
            for index in clients:
                await trio.sleep_until(start + ramp * index / max(total, 1))
                nursery.start_soon(_one_client, url, delay, limit, tally, f"c{index}")
        outer.cancel_scope.cancel()
    report(tally)
    return tally


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _child(
    queue: Any,
    index: int,
    url: str,
    clients: list[int],
    total: int,
    delay: float,
    ramp: float,
    timeout: float,
) -> None:
    """One client process: runs its share and reports its tally to the parent."""
    _raise_fd_limit()
    started = time.monotonic()

    def report(tally: Tally) -> None:
        if tally.all_connected_at is None and tally.connected + tally.done == len(clients):
            tally.all_connected_at = time.monotonic() - started
        queue.put({"child": index, **tally.as_dict()})

    trio.run(_run_clients, url, clients, total, delay, ramp, timeout, report)
    queue.put(None)


class Command(BaseCommand):
    help = "Run the echo page's exchange with many concurrent WebSocket clients."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--clients", type=int, default=10_000, help="number of clients (10000)")
        parser.add_argument("--delay", type=float, default=1.0, help="seconds between messages (1.0)")
        parser.add_argument(
            "--ramp", type=float, default=10.0, help="seconds over which clients connect (10)"
        )
        parser.add_argument(
            "--url",
            default="ws://127.0.0.1:8000/test/ws/",
            help="the echo socket (ws://127.0.0.1:8000/test/ws/)",
        )
        parser.add_argument("--processes", type=int, default=1, help="client processes (1)")
        parser.add_argument(
            "--timeout", type=float, default=60.0, help="seconds one client may take, connect included (60)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        total, processes = options["clients"], options["processes"]
        if total < 1 or processes < 1:
            raise CommandError("--clients and --processes must be at least 1")
        context = multiprocessing.get_context("spawn")
        queue = context.Queue()
        children = [
            context.Process(
                target=_child,
                args=(
                    queue,
                    p,
                    options["url"],
                    list(range(p, total, processes)),
                    total,
                    options["delay"],
                    options["ramp"],
                    options["timeout"],
                ),
            )
            for p in range(processes)
        ]
        for child in children:
            child.start()
        latest: dict[int, dict[str, Any]] = {}
        finished, peak, last_print = 0, 0, 0.0
        started = time.monotonic()
        while finished < processes:
            item = queue.get()
            if item is None:
                finished += 1
                continue
            latest[item["child"]] = item
            peak = max(peak, sum(t["connected"] for t in latest.values()))
            if time.monotonic() - last_print >= 1:
                last_print = time.monotonic()
                self._progress(latest, peak, started)
        for child in children:
            child.join()
        self._summary(latest, peak, total, started)

    def _progress(self, latest: dict[int, dict[str, Any]], peak: int, started: float) -> None:
        connected = sum(t["connected"] for t in latest.values())
        done = sum(t["done"] for t in latest.values())
        failed = sum(sum(t["failures"].values()) for t in latest.values())
        self.stderr.write(
            f"{time.monotonic() - started:6.1f} s  connected {connected:6d}  peak {peak:6d}  "
            f"done {done:6d}  failed {failed:6d}"
        )

    def _summary(self, latest: dict[int, dict[str, Any]], peak: int, total: int, started: float) -> None:
        done = sum(t["done"] for t in latest.values())
        failures: Counter[str] = Counter()
        for t in latest.values():
            failures.update(t["failures"])
        connect_times = [t["all_connected_at"] for t in latest.values() if t["all_connected_at"] is not None]
        self.stdout.write(f"clients: {total}")
        self.stdout.write(f"peak simultaneous connections: {peak}")
        if connect_times:
            self.stdout.write(f"time to connect all: {max(connect_times):.1f} s")
        self.stdout.write(f"exchanges completed: {done}")
        self.stdout.write(f"failures: {sum(failures.values())}")
        for cause, count in failures.most_common():
            self.stdout.write(f"  {count:6d}  {cause}")
        self.stdout.write(f"elapsed: {time.monotonic() - started:.1f} s")
        if failures or done != total:
            sys.exit(1)
