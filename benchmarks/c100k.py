"""C100k: 100,000 WebSocket connections held by one ``python -m trio_c10k --workers N``.

    flock /tmp/bench.lock python benchmarks/c100k.py [--connections 100000] [--workers 6]

One process can hold about 19,900 connections here (its open-file limit, 20,000, cannot be
raised), so the connections go to ``--workers N`` processes, which share the listening socket
through ``SO_REUSEPORT`` (docs/deployment.md), with ``--broker`` a ``redis-server`` this script
starts on a free port (no persistence). In one run:

1. The server, ``python -m trio_c10k example_site.wsgi --workers N --broker redis://...``: every
   connection joins example_site's chat room ``/chat/bench/ws/`` (each handshake goes through
   Django's URLconf and middleware, each join reads the room's history from SQLite in a worker
   thread). ``--connections`` are opened from client processes (benchmarks/lib/client_workers.py,
   each holding fewer than 20,000 and fewer than ``PORTS_PER_SOURCE``, each from four source
   addresses 127.0.0.x of its own in turn: ``spread_sources``), ``--in-flight`` handshakes
   outstanding at a time: the time, the handshakes per second over the first and the last
   tenth, the connections each worker holds (its sockets, /proc/PID/fd), and the RSS of the
   supervisor and its workers (not the clients') before and after, per connection.
2. One message sent on one connection reaches all the members through Redis (broadcasts until
   one reaches everyone, then ``--rounds`` timed ones): the time until the last member has it.
   A subscriber of this script on the same Redis times when each message came out of Redis,
   and the CPU time of Redis and of the workers per broadcast is read from /proc: they say
   whether Redis is the slow link.
3. Every connection is sent a WebSocket ping and must answer with its pong (RFC 6455's echo of
   the ping's data, answered by the server's reader of that connection; the chat room would
   relay a text message to all 100,000 instead of echoing it).
4. For comparison, in the same run: one process without broker, 10,000 members, the same
   broadcast (benchmarks/lib/broadcast.py); and the largest number of connections one process
   holds (benchmarks/c10k.py's probe: a fresh server, connections until it refuses one).

Results go to the ``c100k`` section of benchmarks/RESULTS.md. Needs ``redis-server`` and the
``redis`` extra (``pip install -e '.[redis]'``). ``--time-limit`` bounds the run.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types
import uuid
from pathlib import Path
from typing import Any

import c10k
from lib import broadcast
from lib.client_workers import Clients, spread_sources
from lib.common import free_port, log_trouble, update_results, versions
from lib.workers import PORTS_PER_SOURCE, cpu_of, sockets, stop_all, wait_for_workers, worker_pids
from scale_out_bench import start_redis

#: members of the one-process broadcast compared with
SINGLE_MEMBERS = 10_000
#: broadcasts before the timed ones, until one reaches every member (they join as they connect)
WARM_UP_ATTEMPTS = 5


class RedisProbe:
    """A subscriber to every Redis channel (``PSUBSCRIBE *``, raw RESP): when each armed token
    came out of Redis."""

    def __init__(self, url: str) -> None:
        host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.sock.sendall(b"*2\r\n$10\r\nPSUBSCRIBE\r\n$1\r\n*\r\n")
        self.sock.settimeout(None)
        self.armed: set[bytes] = set()
        self.seen: dict[bytes, float] = {}
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def arm(self, token: str) -> None:
        with self.lock:
            self.armed.add(token.encode())

    def _read(self) -> None:
        tail = b""
        while chunk := self.sock.recv(65536):
            now = time.monotonic()
            data = tail + chunk
            with self.lock:
                for token in [t for t in self.armed if t in data]:
                    self.seen[token] = now
                    self.armed.discard(token)
            tail = data[-200:]

    def close(self) -> None:
        self.sock.close()


def rss_of(pids: list[int]) -> int:
    """VmRSS of exactly these processes, in KiB."""
    return sum(c10k.vm_rss_kb(pid) for pid in pids)


def redis_hop(url: str, probe: RedisProbe, count: int = 20) -> float:
    """Redis alone: the median time from a PUBLISH of 100 bytes to its arrival at ``probe``."""
    host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
    times = []
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        for _ in range(count):
            token = f"hop-{uuid.uuid4().hex}".ljust(100, ".")
            probe.arm(token)
            command = f"*3\r\n$7\r\nPUBLISH\r\n$9\r\nc100k.hop\r\n${len(token)}\r\n{token}\r\n"
            sent = time.monotonic()
            sock.sendall(command.encode())
            sock.recv(100)  # ":1": one subscriber
            deadline = sent + 5
            while token.encode() not in probe.seen and time.monotonic() < deadline:
                time.sleep(0.0002)
            times.append(probe.seen.get(token.encode(), float("nan")) - sent)
            time.sleep(0.01)
    return statistics.median(times)


def warm_up(clients: Clients) -> int:
    """``lib.broadcast.warm_up`` with more time per message: 100,000 members take seconds."""
    for attempt in range(1, WARM_UP_ATTEMPTS + 1):
        outs = broadcast.one_round(clients, f"warm-up-{uuid.uuid4().hex}", broadcast.ROUND_TIMEOUT)
        if all(o["got"] == o["of"] for o in outs):
            return attempt
    raise SystemExit(f"some members never got a message in {WARM_UP_ATTEMPTS} warm-up broadcasts")


def broadcast_rounds(clients: Clients, rounds: int, probe: RedisProbe) -> list[dict[str, Any]]:
    """``lib.broadcast.run_rounds``, each message also timed out of Redis."""
    results = []
    for i in range(rounds):
        token = f"c100k-{i}-{uuid.uuid4().hex}"
        probe.arm(token)
        outs = broadcast.one_round(clients, token, broadcast.ROUND_TIMEOUT)
        sent_at = outs[0]["sent_at"]
        lasts = [o["last"] for o in outs if o["last"] is not None]
        firsts = [o["first"] for o in outs if o["first"] is not None]
        time.sleep(0.3)
        redis_at = probe.seen.get(token.encode())
        results.append(
            {
                "last": max(lasts) - sent_at if lasts else float("nan"),
                "first": min(firsts) - sent_at if firsts else float("nan"),
                "redis": redis_at - sent_at if redis_at is not None else float("nan"),
                "got": sum(o["got"] for o in outs),
                "of": sum(o["of"] for o in outs),
            }
        )
        print(
            f"  round {i}: last {results[-1]['last'] * 1000:.0f} ms, out of Redis "
            f"{results[-1]['redis'] * 1000:.1f} ms, {results[-1]['got']}/{results[-1]['of']}",
            flush=True,
        )
    return results


def measure_workers(
    args: argparse.Namespace, redis: subprocess.Popen[bytes], url: str, logdir: Path
) -> dict[str, Any]:
    port = free_port()
    log = logdir / "workers.log"
    options = ["--workers", str(args.workers), "--broker", url]
    if args.ws_ping_interval is not None:
        options += ["--ws-ping-interval", args.ws_ping_interval]
    proc = broadcast.start_server("trio_c10k", port, log, options)
    pids: list[int] = []
    r: dict[str, Any] = {"load": [os.getloadavg()[0]]}
    try:
        wait_for_workers(log, args.workers, proc)
        pids = worker_pids(proc.pid)
        time.sleep(1)
        base = {pid: sockets(pid) for pid in pids}
        everyone = [proc.pid, *pids]
        r["rss_before"] = rss_of(everyone)
        processes = args.client_processes
        sources = spread_sources(processes)
        clients = Clients(
            f"ws://127.0.0.1:{port}/chat/bench/ws/",
            processes,
            args.in_flight,
            30,
            False,
            None,
            module="lib.broadcast",
            sources=sources,
        )
        try:
            counts = [
                args.connections // processes + (i < args.connections % processes) for i in range(processes)
            ]
            cpu0 = cpu_of(everyone)
            r.update(c10k.open_connections(clients, counts))
            r["server_cpu_opening"] = (cpu_of(everyone) - cpu0) / r["seconds"]
            print(
                f"opened {r['opened']} (failed {r['failed']} {r['errors']}) in {r['seconds']:.1f} s: "
                f"{r['rate']:.0f}/s, first tenth {r['rate_first_tenth']:.0f}/s, "
                f"last {r['rate_last_tenth']:.0f}/s",
                flush=True,
            )
            time.sleep(2)
            r["load"].append(os.getloadavg()[0])
            r["rss_after"] = rss_of(everyone)
            r["rss_parent"] = rss_of([proc.pid])
            r["per_worker"] = [sockets(pid) - base[pid] for pid in pids]
            r["worker_rss"] = [rss_of([pid]) for pid in pids]
            r["held"], r["pings"] = c10k.still_open(clients)
            print(
                f"held {r['held']}; per worker {r['per_worker']}; RSS {r['rss_before'] // 1024} -> "
                f"{r['rss_after'] // 1024} MB",
                flush=True,
            )
            probe = RedisProbe(url)
            try:
                r["warm_up"] = warm_up(clients)
                r["redis_hop"] = redis_hop(url, probe)
                cpu0, redis0 = cpu_of(everyone), cpu_of([redis.pid])
                r["rounds"] = broadcast_rounds(clients, args.rounds, probe)
                r["server_cpu_broadcast"] = (cpu_of(everyone) - cpu0) / args.rounds
                r["redis_cpu_broadcast"] = (cpu_of([redis.pid]) - redis0) / args.rounds
            finally:
                probe.close()
            outs = clients.ask_all(f"verify {args.connections} ping 60")
            r["ping_sent"] = sum(o["sent"] for o in outs)
            r["ping_answered"] = sum(o["echoed"] for o in outs)
            r["ping_seconds"] = max(o["seconds"] for o in outs)
            print(
                f"pings answered {r['ping_answered']}/{r['ping_sent']} in {r['ping_seconds']:.1f} s",
                flush=True,
            )
        finally:
            clients.close()
        r["alive"] = proc.poll() is None
    finally:
        stop_all(proc, pids)
    r["log_trouble"] = log_trouble(log.read_text(errors="replace"))
    r["restarts"] = log.read_text(errors="replace").count("starting it again")
    return r


def report(
    args: argparse.Namespace, w: dict[str, Any], single: dict[str, Any], most: dict[str, Any], seconds: float
) -> str:
    lasts = sorted(x["last"] for x in w["rounds"])
    p50 = statistics.median(lasts)
    redis_p50 = statistics.median(x["redis"] for x in w["rounds"])
    first_p50 = statistics.median(x["first"] for x in w["rounds"])
    missing = sum(x["of"] - x["got"] for x in w["rounds"])
    kb_growth = (w["rss_after"] - w["rss_before"]) / w["held"]
    kb_total = w["rss_after"] / w["held"]
    pace = w["rate_last_tenth"] / w["rate_first_tenth"]
    ratio = p50 / single["p50"]
    shares = w["per_worker"]
    spread = (args.connections * (1 / args.workers) * (1 - 1 / args.workers)) ** 0.5  # binomial
    met = {
        f"{args.connections:,} held": w["held"] == args.connections,
        "handshakes/s over the last tenth within 10% of the first": abs(pace - 1) <= 0.10,
        "< 8 KB per connection": kb_total < 8,
        "broadcast p50 <= 10x the 10,000-member one": ratio <= 10,
    }
    lines = [
        "## C100k: 100,000 connections on one machine (`--workers`)",
        "",
        f"`flock /tmp/bench.lock python benchmarks/c100k.py` - {args.connections:,} WebSocket connections "
        f"to `python -m trio_c10k example_site.wsgi --workers {args.workers} --broker redis://...` "
        f"(example_site's chat room, one `redis-server`), opened from {args.client_processes} client "
        f"processes (each from 4 addresses of 127.0.0.2-{4 * args.client_processes + 1}, in turn), "
        f"{args.in_flight} handshakes in flight"
        + (f", `--ws-ping-interval {args.ws_ping_interval}`" if args.ws_ping_interval is not None else "")
        + "; "
        f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, Python {sys.version.split()[0]}; "
        f"{versions()}. The whole run took {seconds:.0f} s; the machine's load average (1 min) was "
        f"{w['load'][0]:.1f} at its start and {w['load'][1]:.1f} once the connections were open (other "
        "processes' share of the cores).",
        "",
        "| held | time to open | handshakes/s (all / first tenth / last tenth) | connections per worker "
        "| RSS supervisor + workers, before / after | KB per connection (all RSS / growth) |",
        "|---:|---:|---:|---|---:|---:|",
        f"| {w['held']:,} of {args.connections:,} | {w['seconds']:.1f} s | {w['rate']:,.0f} / "
        f"{w['rate_first_tenth']:,.0f} / {w['rate_last_tenth']:,.0f} "
        f"| {', '.join(f'{n:,}' for n in shares)} | {w['rss_before'] / 1024:,.0f} / "
        f"{w['rss_after'] / 1024:,.0f} MB | {kb_total:.1f} / {kb_growth:.1f} |",
        "",
        "| broadcast to every member | members | until the last: p50 | max | until the first | out of Redis "
        "| server CPU per broadcast | Redis CPU per broadcast | messages missing |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| `--workers {args.workers} --broker redis://...` | {w['held']:,} | {p50 * 1000:.0f} ms "
        f"| {lasts[-1] * 1000:.0f} ms | {first_p50 * 1000:.1f} ms | {redis_p50 * 1000:.1f} ms "
        f"| {w['server_cpu_broadcast'] * 1000:.0f} ms | {w['redis_cpu_broadcast'] * 1000:.1f} ms "
        f"| {missing} |",
        f"| one process, no broker | {SINGLE_MEMBERS:,} | {single['p50'] * 1000:.0f} ms "
        f"| {single['max'] * 1000:.0f} ms | {single['first_p50'] * 1000:.1f} ms | - "
        f"| {single['server_cpu'] * 1000:.0f} ms | - | {single['missing']} |",
        "",
        "Targets: "
        + "; ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in met.items())
        + f" (last tenth / first tenth {pace:.2f}; {kb_total:.1f} KB per connection; broadcast p50 "
        f"{ratio:.1f}x).",
        "",
        f"While opening: the supervisor and workers used {w['server_cpu_opening']:.2f} cores, the client "
        f"processes {w['client_cpu'] / w['seconds']:.2f} cores, of the machine's {os.cpu_count()}; the "
        f"clients answered {w['pings']:,} keep-alive pings meanwhile (the server pings a connection "
        f"silent for 20 s, `--ws-ping-interval`: with every connection idle, 1/20 of those held each "
        f"second).",
        "",
        f"Connections per worker: its sockets (/proc/PID/fd) once all were open, less those it had "
        f"before; the kernel hashes each connection to one worker's listening socket (`SO_REUSEPORT`), "
        f"so the shares differ by chance only (expected {args.connections // args.workers:,} each, with "
        f"a standard deviation of {spread:,.0f}). The most one process held at once: "
        f"{most['held']:,} (a fresh single-process server, connections opened until it refused one: its "
        f"`--max-connections` defaults to the open-file limit, 20,000, less 100; first failures "
        f"{', '.join(f'{k} x{v}' for k, v in list(most['errors'].items())[:2]) or 'none'}).",
        "",
        f"RSS: VmRSS of the supervisor and its {args.workers} workers (not the clients, not Redis), "
        f"before any connection and 2 s after the last handshake. KB per connection counts all of it "
        f"(the workers' Python, Django and site included: {w['rss_before'] / 1024:,.0f} MB before) over "
        f"the connections held; growth counts only what came with the connections. The supervisor "
        f"itself: {w['rss_parent'] / 1024:.0f} MB; each worker after: "
        + ", ".join(f"{kb / 1024:.0f}" for kb in w["worker_rss"])
        + " MB.",
        "",
        f"Broadcast: one message sent on one connection; the sender's worker writes it to its own "
        f"members and publishes it, every other worker writes it to its members when Redis delivers "
        f"it ({w['warm_up']} warm-up broadcasts, then {args.rounds} timed; every round, sorted: "
        + " ".join(f"{x * 1000:.0f}" for x in lasts)
        + ' ms). "Out of Redis": when a subscriber of this script got the message from Redis, after '
        f"it was sent ({redis_p50 * 1000:.1f} ms): the sender's worker writes to its own members "
        f"(about 1/{args.workers} of them) before it publishes. Redis alone (a PUBLISH of 100 bytes to "
        f"its arrival at that subscriber, measured with every connection open) takes "
        f"{w['redis_hop'] * 1000:.2f} ms, and Redis spends {w['redis_cpu_broadcast'] * 1000:.1f} ms of CPU "
        f"per broadcast against the workers' {w['server_cpu_broadcast'] * 1000:.0f} ms: "
        + (
            "Redis is not the slow link; writing the frame to every member is (the workers share 2 "
            "cores with the clients), and the sender's worker publishing only after its own members "
            "delays the others by that much."
            if w["redis_hop"] < 0.1 * p50
            else "the hop through Redis is a large part of the time."
        )
        + " The one-process figure is benchmarks/lib/broadcast.py's measurement (2 client processes), "
        "run after the workers had stopped.",
        "",
        f"Echo check at the end: {w['ping_answered']:,} of {w['ping_sent']:,} connections (all of them) "
        f"answered a ping with its pong within {w['ping_seconds']:.1f} s. Handshakes that failed: "
        f"{w['failed']}{' ' + str(w['errors']) if w['errors'] else ''}. Workers restarted: {w['restarts']}. "
        f"Warnings, errors and tracebacks in the server logs: {w['log_trouble'] + single['log_trouble']}.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=100_000, help="connections over the workers")
    parser.add_argument("--workers", type=int, default=6, help="server processes (each under 19,900)")
    parser.add_argument(
        "--client-processes", type=int, default=8, help=f"each under {PORTS_PER_SOURCE:,} connections"
    )
    parser.add_argument("--in-flight", type=int, default=120, help="handshakes outstanding at a time")
    parser.add_argument("--rounds", type=int, default=7, help="broadcasts timed per setup")
    parser.add_argument("--time-limit", type=int, default=900, help="seconds before the run gives up")
    parser.add_argument(
        "--ws-ping-interval",
        help="passed on to the workers (0: no keep-alive pings; default: the server's, 20 s)",
    )
    parser.add_argument("--no-probe", action="store_true", help="skip the most held by one process")
    parser.add_argument("--no-write", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    limits = (
        ("client process", args.client_processes, PORTS_PER_SOURCE),
        ("worker", args.workers, hard - 200),
    )
    for what, count, most in limits:
        if args.connections / count > most:
            raise SystemExit(
                f"{args.connections} connections need more than {count} {what}es (each at most {most:,})"
            )

    def give_up(_signum: int, _frame: types.FrameType | None) -> None:
        raise SystemExit(f"over --time-limit ({args.time_limit} s)")

    signal.signal(signal.SIGALRM, give_up)
    signal.alarm(args.time_limit)
    logdir = Path(tempfile.mkdtemp(prefix="c100k-"))
    started = time.monotonic()
    redis, url = start_redis(logdir)
    try:
        workers = measure_workers(args, redis, url, logdir)
    finally:
        redis.send_signal(signal.SIGTERM)
        redis.wait(timeout=10)
    single = broadcast.measure("trio_c10k", SINGLE_MEMBERS, args.rounds, logdir)
    most = (
        {"held": 0, "errors": {"not measured (--no-probe)": 1}}
        if args.no_probe
        else c10k.probe("trio_c10k", argparse.Namespace(in_flight=50), logdir)
    )
    signal.alarm(0)
    text = report(args, workers, single, most, time.monotonic() - started)
    print("\n" + text)
    if not args.no_write:
        update_results("c100k", text)
        print(f"\nwritten to benchmarks/RESULTS.md; server logs in {logdir}")


if __name__ == "__main__":
    main()
