"""Timing one message sent to every member of a chat room: the measurement of
benchmarks/broadcast_bench.py and benchmarks/scale_out_bench.py.

``measure()`` starts the server (trio_c10k serving example_site's chat room
``/chat/bench/ws/``, or the ``websockets`` peer, benchmarks/peers/websockets_broadcast.py), opens
the members' connections from client processes (``BroadcastWorker``: benchmarks/lib/client_workers.py's
``Worker`` that also times a token reaching its connections), broadcasts until one message
reaches everyone, then times the rounds.

    python -m lib.broadcast ws://127.0.0.1:PORT/PATH --in-flight 25 --timeout 10   # one client process
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .client_workers import Clients, Conn, Worker, reply, spread_sources, worker_main
from .common import (
    BENCHMARKS,
    ROOT,
    client_cpu_for,
    cpu_seconds,
    example_site_database,
    free_port,
    log_trouble,
    stop,
    wait_for_port,
)
from .ws_client import client_frame

#: seconds a process waits for the token on all its connections before reporting the missing
ROUND_TIMEOUT = 30
#: broadcasts before the measured ones, each waited for this long, until one reaches everyone
WARM_UP_ATTEMPTS, WARM_UP_TIMEOUT = 30, 2.0


class BroadcastWorker(Worker):
    """A c10k client process that also times a broadcast reaching its connections."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.remaining = 0
        self.first: float | None = None
        self.last: float | None = None

    def on_text(self, conn: Conn, payload: bytes) -> None:
        if conn.expect is not None and conn.expect in payload:
            conn.expect = None
            self.remaining -= 1
            self.last = time.monotonic()
            if self.first is None:
                self.first = self.last

    def command(self, cmd: str, args: list[str]) -> dict[str, Any]:
        """``arm TOKEN TIMEOUT [send]``: wait up to TIMEOUT s for TOKEN on every open connection
        (sending it first)."""
        if cmd != "arm":
            return super().command(cmd, args)
        token, timeout = args[0].encode(), float(args[1])
        waiting = [conn for conn in self.conns.values() if conn.state == "open"]
        for conn in waiting:
            conn.expect = token
        self.remaining, self.first, self.last = len(waiting), None, None
        cpu0 = time.process_time()
        sent_at = None
        if args[2:] == ["send"]:
            sent_at = time.monotonic()
            waiting[0].sock.send(client_frame(0x1, token))
        else:
            reply(self, {"armed": len(waiting)})
        deadline = time.monotonic() + timeout
        while self.remaining and time.monotonic() < deadline:
            self.poll(0.01)
        return {
            "sent_at": sent_at,
            "got": len(waiting) - self.remaining,
            "of": len(waiting),
            "first": self.first,
            "last": self.last,
            "cpu": time.process_time() - cpu0,
        }


def start_server(name: str, port: int, log: Path, extra: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    """The server ``name`` on ``port``; ``extra``: more options for trio_c10k."""
    py = sys.executable
    if name == "trio_c10k":
        cmd = [
            py,
            "-m",
            "trio_c10k",
            "example_site.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--no-access-log",
            *extra,
        ]
        pin = None  # it pins itself (--pin-cpu is on by default)
    else:
        cmd = [py, str(BENCHMARKS / "peers" / "websockets_broadcast.py"), str(port)]
        pin = min(os.sched_getaffinity(0))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EXAMPLE_SITE_DB": str(example_site_database(log.parent))}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=(lambda: os.sched_setaffinity(0, {pin})) if pin is not None else None,
        )
    wait_for_port(port, proc)
    return proc


def one_round(clients: Clients, token: str, timeout: float) -> list[dict[str, Any]]:
    """One message sent by the first client process; what each process saw of it."""
    others = clients.procs[1:]
    clients.ask_all(f"arm {token} {timeout}", others)  # "armed": they wait for the token
    return clients.ask_all([f"arm {token} {timeout} send", *[""] * len(others)])


def warm_up(clients: Clients) -> int:
    """Broadcast until one message reaches every connection: every member has joined the room
    (trio_c10k's chat replays the room's history, a database query, before it joins). Returns
    the messages it took."""
    for attempt in range(1, WARM_UP_ATTEMPTS + 1):
        outs = one_round(clients, f"warm-up-{uuid.uuid4().hex}", WARM_UP_TIMEOUT)
        if all(o["got"] == o["of"] for o in outs):
            return attempt
    raise SystemExit(f"some members never got a message in {WARM_UP_ATTEMPTS} warm-up broadcasts")


def run_rounds(clients: Clients, rounds: int) -> list[dict[str, Any]]:
    results = []
    for i in range(rounds):
        outs = one_round(clients, f"round-{i}-{uuid.uuid4().hex}", ROUND_TIMEOUT)
        sent_at = outs[0]["sent_at"]
        lasts = [o["last"] for o in outs if o["last"] is not None]
        firsts = [o["first"] for o in outs if o["first"] is not None]
        results.append(
            {
                "last": max(lasts) - sent_at if lasts else float("nan"),
                "first": min(firsts) - sent_at if firsts else float("nan"),
                "got": sum(o["got"] for o in outs),
                "of": sum(o["of"] for o in outs),
                "client_cpu": sum(o["cpu"] for o in outs),
            }
        )
        time.sleep(0.3)
    return results


def measure(
    name: str,
    members: int,
    rounds_wanted: int,
    logdir: Path,
    extra: Sequence[str] = (),
    client_processes: int = 2,
) -> dict[str, Any]:
    """Open ``members`` connections to the room of server ``name`` (started with ``extra``),
    then time ``rounds_wanted`` broadcasts."""
    port = free_port()
    log = logdir / f"{name}-{members}.log"
    proc = start_server(name, port, log, extra)
    try:
        server_cpus = sorted(os.sched_getaffinity(proc.pid))
        cpu = client_cpu_for(proc.pid)
        path = "/chat/bench/ws/" if name == "trio_c10k" else "/"
        url = f"ws://127.0.0.1:{port}{path}"
        sources = spread_sources(client_processes)
        clients = Clients(
            url, client_processes, 50, 10.0, False, cpu, module="lib.broadcast", sources=sources
        )
        try:
            t0 = time.monotonic() + 0.2
            counts = [
                members // client_processes + (i < members % client_processes)
                for i in range(client_processes)
            ]
            outs = clients.ask_all([f"open {n} {t0!r}" for n in counts])
            opened = sum(o["opened"] for o in outs)
            if opened != members:
                errors: dict[str, int] = {}
                for out in outs:
                    for reason, count in out["errors"].items():
                        errors[reason] = errors.get(reason, 0) + count
                raise SystemExit(f"{name}: opened {opened} of {members} connections; failures: {errors}")
            warm_up(clients)
            cpu0 = cpu_seconds(proc.pid)
            rounds = run_rounds(clients, rounds_wanted)
            server_cpu = (cpu_seconds(proc.pid) - cpu0) / rounds_wanted
        finally:
            clients.close()
    finally:
        stop(proc)
    lasts = sorted(r["last"] for r in rounds)
    result = {
        "p50": statistics.median(lasts),
        "p99": lasts[min(len(lasts) - 1, round(0.99 * (len(lasts) - 1)))],
        "max": lasts[-1],
        "first_p50": statistics.median(r["first"] for r in rounds),
        "missing": sum(r["of"] - r["got"] for r in rounds),
        "client_cpu": statistics.median(r["client_cpu"] for r in rounds),
        "server_cpu": server_cpu,
        "server_cpus": server_cpus,
        "client_cpu_id": cpu,
        "log_trouble": log_trouble(log.read_text(errors="replace")),
        "rounds": lasts,
    }
    print(
        f"{name:10} p50 {result['p50'] * 1000:.0f} ms  p99 {result['p99'] * 1000:.0f} ms  "
        f"max {result['max'] * 1000:.0f} ms  first {result['first_p50'] * 1000:.1f} ms  "
        f"server CPU {result['server_cpu'] * 1000:.0f} ms/broadcast  "
        f"client CPU {result['client_cpu'] * 1000:.0f} ms/round  missing {result['missing']}",
        flush=True,
    )
    return result


if __name__ == "__main__":
    worker_main(sys.argv[1:], BroadcastWorker)
