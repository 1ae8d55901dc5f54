"""Broadcast benchmark: one message to 10,000 members of one chat room, time until the last has it.

    python benchmarks/broadcast_bench.py [--members 10000] [--rounds 20] [--no-write]

Two servers in the same run, one process each, each pinned to one CPU (trio_c10k pins itself;
the peer is pinned the same way), the clients on the other CPU:

- trio_c10k serving example_site: the chat room ``/chat/bench/ws/`` (a ``trio_c10k.Group``;
  every text message goes to every member as JSON tagged with the sender, ``anonymous`` here,
  then is stored in a fresh SQLite database);
- the ``websockets`` library's asyncio server with its ``broadcast()``
  (benchmarks/peers/websockets_broadcast.py): every message to every connection.

``--members`` connections are opened by 2 client processes (the raw-socket epoll clients of
benchmarks/c10k.py, 50 handshakes in flight). Unmeasured broadcasts follow until one reaches
every connection (every member has joined the room). Then ``--rounds`` times: every client process
marks its connections as waiting for a fresh token; the first process sends the token as a text
message on one of its connections (itself a member) and notes the time; each process notes when
the token reached its last connection (CLOCK_MONOTONIC, the same clock in every process). A
round's figure is the latest of those minus the sending time: the time until the **last**
member had the message. Reported: p50, p99 and max over the rounds, the time until the first
member had it, the server's CPU per broadcast, and the client processes' CPU per round beside
the round's duration: clients that used less CPU than the round lasted were waiting on the
server, not the other way round.

Results go to the ``broadcast`` section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from c10k import Clients, Conn, Worker, masked_frame, reply, worker_main
from common import ROOT, cpu_seconds, example_site_database, free_port, stop, update_results, wait_for_port
from websocket_bench import client_cpu_for, log_trouble, versions

HERE = Path(__file__).resolve().parent
SERVERS = ("trio_c10k", "websockets")
#: issue target for trio_c10k with 10,000 members
TARGET_P50 = 0.120
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
            waiting[0].sock.send(masked_frame(0x1, token))
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
        cmd = [py, str(HERE / "peers" / "websockets_broadcast.py"), str(port)]
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
        sources = [f"127.0.0.{i + 2}" for i in range(client_processes)]  # ports enough for 30,000
        clients = Clients(url, client_processes, 50, 10.0, False, cpu, script=__file__, sources=sources)
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


def report(runs: dict[str, dict[str, Any]], args: argparse.Namespace, seconds: float) -> str:
    lines = [
        "## Broadcast: one message to every member of a room",
        "",
        f"`python benchmarks/broadcast_bench.py` - {args.members:,} members of one room (2 client "
        f"processes, raw sockets), {args.rounds} rounds each; {time.strftime('%Y-%m-%d')}, "
        f"{os.cpu_count()} cores, Python {sys.version.split()[0]}; {versions()}. The whole run took "
        f"{seconds:.0f} s.",
        "",
        "| server | until the last member: p50 | p99 | max | until the first | server CPU per broadcast "
        "| client CPU per round | messages missing |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in runs.items():
        lines.append(
            f"| {name} | {r['p50'] * 1000:.0f} ms | {r['p99'] * 1000:.0f} ms | {r['max'] * 1000:.0f} ms "
            f"| {r['first_p50'] * 1000:.1f} ms | {r['server_cpu'] * 1000:.0f} ms "
            f"| {r['client_cpu'] * 1000:.0f} ms | {r['missing']} |"
        )
    lines.append("")
    if "trio_c10k" in runs:
        r = runs["trio_c10k"]
        met = "met" if r["p50"] <= TARGET_P50 else "NOT met"
        ratio = ""
        if "websockets" in runs:
            ratio = f"; the websockets server's p50 is {runs['websockets']['p50'] / r['p50']:.2f}x it"
        lines.append(
            f"Target for trio_c10k: p50 <= {TARGET_P50 * 1000:.0f} ms with 10,000 members: {met} "
            f"({r['p50'] * 1000:.0f} ms{ratio})."
        )
        lines.append("")
    rounds = "; ".join(
        f"{name} " + " ".join(f"{x * 1000:.0f}" for x in r["rounds"]) for name, r in runs.items()
    )
    lines += [
        f"Every round, sorted (ms): {rounds}.",
        "",
        "A round's time runs from the moment a client process sent the message on one of its "
        "connections (a member too) to the moment the last of the other connections received it, on "
        "the same monotonic clock in every process. trio_c10k relays through example_site's chat "
        "(the handshake went through Django; each message is wrapped in JSON with the sender's name "
        "and sent with `Group.broadcast`, which encodes the frame once); the peer relays the bytes "
        "with `websockets.broadcast()`. Servers pinned to one CPU "
        + ", ".join(f"({name}: CPU {r['server_cpus']})" for name, r in runs.items())
        + ", the client processes to another "
        + ", ".join(f"({name}: CPU {r['client_cpu_id']})" for name, r in runs.items())
        + ". Client CPU per round is both processes' CPU time from arming to the last "
        "receipt, summed: below the round's duration, the clients were waiting for the server.",
        "",
        "Warnings, errors and tracebacks in the server logs: "
        f"{sum(r['log_trouble'] for r in runs.values())}.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=10000, help="connections in the room")
    parser.add_argument("--rounds", type=int, default=20, help="broadcasts timed per server")
    parser.add_argument("--only", nargs="*", choices=SERVERS, help="servers to run (default: both)")
    parser.add_argument("--no-write", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args()
    if subprocess.run([sys.executable, "-c", "import websockets"], capture_output=True).returncode:
        raise SystemExit("websockets is not installed: pip install -e '.[bench]'")
    logdir = Path(tempfile.mkdtemp(prefix="broadcast-"))
    started = time.monotonic()
    runs = {name: measure(name, args.members, args.rounds, logdir) for name in args.only or SERVERS}
    text = report(runs, args, time.monotonic() - started)
    print("\n" + text)
    if not args.no_write:
        update_results("broadcast", text)
        print(f"\nwritten to benchmarks/RESULTS.md; server logs in {logdir}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--client-worker"]:
        worker_main(sys.argv[2:], BroadcastWorker)
    else:
        main()
