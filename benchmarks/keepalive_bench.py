"""Keep-alive benchmark: what pinging many idle connections costs the other connections.

    python benchmarks/keepalive_bench.py [--connections 10000] [--ping-interval 2] [--seconds 12]

Each server holds ``--connections`` idle WebSocket connections, opened from 2 client
processes (benchmarks/lib/client_workers.py: raw sockets, one epoll loop each, from source
addresses 127.0.0.2 and 127.0.0.3) that answer every ping at once; the servers ping them every
``--ping-interval`` seconds (trio_c10k ``--ws-ping-interval``, the websockets peer
``ping_interval``; both keep their 20 s ping timeout). Once the pings have run for two
intervals, one more client (this script, ``--probe``, in a process of its own) sends a text
message every 10 ms on a connection of its own for ``--seconds`` and times each echo: a round
trip is as long as the server's event loop was busy elsewhere when the message came, so its
maximum is the longest step the pings caused. Meanwhile the server's CPU time (user + system,
/proc/PID/stat) is taken over the same whole seconds, and the pings the clients answered are
counted.

Servers, one process each, in one run: trio_c10k serving example_site (``/test/echo/``) with
pings, the same with pings off (``--ws-ping-interval 0``: the loop's baseline), and the
``websockets`` library's asyncio server (benchmarks/peers/websockets_echo.py,
``--ping-interval``). ``--source DIR`` serves trio_c10k from another checkout (the code before
a change, say). Results go to benchmarks/RESULTS.md.

Needs: ``pip install -e '.[bench]'`` (websockets) and an open-file limit above the connections
a process holds (the servers inherit this process's limit).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lib.client_workers import Clients
from lib.common import (
    RESULTS,
    ROOT,
    client_cpu_for,
    cpu_seconds,
    echo_server_command,
    free_port,
    log_trouble,
    prepare,
    stop,
    update_results,
    versions,
    wait_for_port,
)
from lib.ws_client import client_frame, connect, parse_frames

#: how often the probe sends its message, in seconds
PROBE_EVERY = 0.01
#: the servers of a run: (row name, server, pings on)
SERVERS = (
    ("trio_c10k", "trio_c10k", True),
    ("trio_c10k, pings off", "trio_c10k", False),
    ("websockets", "websockets", True),
)


def probe(url: str, seconds: float) -> None:
    """The echo client (``--probe``): one message every ``PROBE_EVERY`` s for ``seconds``, each
    echo's round trip timed; prints them as one JSON list (seconds), answers pings meanwhile."""
    sock, buf = connect(url, timeout=10)
    sock.settimeout(10)
    rtts: list[float] = []
    end = time.monotonic() + seconds
    due = time.monotonic()
    n = 0
    while due < end:
        time.sleep(max(0.0, due - time.monotonic()))
        payload = f"probe {n}".encode()
        sent = time.monotonic()
        sock.sendall(client_frame(0x1, payload))
        echoed = False
        while not echoed:
            frames, buf = parse_frames(buf)
            for opcode, _fin, data in frames:
                if opcode == 0x9:
                    sock.sendall(client_frame(0xA, data))
                elif opcode == 0x1 and data == payload:
                    echoed = True
                elif opcode == 0x8:
                    raise SystemExit("the server closed the probe's connection")
            if not echoed:
                chunk = sock.recv(65536)
                if not chunk:
                    raise SystemExit("the server closed the probe's connection")
                buf += chunk
        rtts.append(time.monotonic() - sent)
        n += 1
        due += PROBE_EVERY
        if due < time.monotonic():  # late (a long round trip): the next goes now, none skipped
            due = time.monotonic()
    sock.sendall(client_frame(0x8, (1000).to_bytes(2, "big")))
    sock.close()
    print(json.dumps(rtts))


def start_server(
    name: str, pings: bool, args: argparse.Namespace, log: Path
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd, path = echo_server_command(name, port)
    interval = f"{args.ping_interval:g}" if pings else "0"
    source = Path(args.source).resolve() if args.source and name == "trio_c10k" else ROOT
    if name == "trio_c10k":
        cmd += ["--ws-ping-interval", interval]
    else:
        cmd += ["--ping-interval", interval]
    env = {**os.environ, "PYTHONPATH": str(source)}
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=source, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc)
    except BaseException:
        stop(proc)
        raise
    return proc, f"ws://127.0.0.1:{port}{path}"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def measure(row: str, name: str, pings: bool, args: argparse.Namespace, logdir: Path) -> dict[str, Any]:
    log = logdir / f"{row.replace(' ', '_').replace(',', '')}.log"
    proc, url = start_server(name, pings, args, log)
    r: dict[str, Any] = {"log": str(log)}
    try:
        clients = Clients(
            url, 2, args.in_flight, 30, False, client_cpu_for(proc.pid), sources=["127.0.0.2", "127.0.0.3"]
        )
        try:
            half = [args.connections // 2 + (i < args.connections % 2) for i in range(2)]
            t0 = time.monotonic() + 0.2
            outs = clients.ask_all([f"open {n} {t0!r}" for n in half])
            r["opened"] = sum(o["opened"] for o in outs)
            r["failed"] = sum(o["failed"] for o in outs)
            time.sleep(2 * args.ping_interval + 1)  # the pings in their stride
            pings0 = sum(o["pings"] for o in clients.ask_all("count"))
            cpu0 = cpu_seconds(proc.pid)
            started = time.monotonic()
            out = subprocess.run(
                [sys.executable, __file__, "--probe", url, "--seconds", str(args.seconds)],
                capture_output=True,
                text=True,
                timeout=args.seconds * 3 + 60,
                check=True,
            )
            window = time.monotonic() - started
            r["cpu"] = cpu_seconds(proc.pid) - cpu0
            counts = clients.ask_all("count")
            r["pings"] = sum(o["pings"] for o in counts) - pings0
            r["held"] = sum(o["open"] for o in counts)
            r["window"] = window
            r["rtts"] = json.loads(out.stdout)
        finally:
            clients.close()
        if proc.poll() is not None:
            raise SystemExit(f"{row} exited with status {proc.returncode} during the run; see {log}")
    finally:
        stop(proc)
    r["log_trouble"] = log_trouble(log.read_text(errors="replace"))
    return r


def summary(row: str, r: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    rtts = r["rtts"]
    intervals = r["window"] / args.ping_interval
    return {
        "p50": percentile(rtts, 50) * 1000,
        "p99": percentile(rtts, 99) * 1000,
        "max": max(rtts) * 1000,
        "over_100": sum(t > 0.1 for t in rtts),
        "over_10": sum(t > 0.01 for t in rtts),
        "count": len(rtts),
        # server CPU per connection per ping interval, in microseconds
        "cpu_per_conn": r["cpu"] / max(1, r["held"]) / intervals * 1e6,
        "cores": r["cpu"] / r["window"],
        "pings_per_conn": r["pings"] / max(1, r["held"]) / intervals,
    }


def report(runs: dict[str, dict[str, Any]], args: argparse.Namespace, seconds: float) -> str:
    lines = [
        "## Keep-alive: pinging idle connections, seen from a busy one",
        "",
        f"`python benchmarks/keepalive_bench.py` - {args.connections:,} idle WebSocket connections "
        f"pinged every {args.ping_interval:g} s (server and clients as benchmarks/keepalive_bench.py "
        f"says), beside them one client sending a message every {PROBE_EVERY * 1000:.0f} ms for "
        f"{args.seconds:g} s and timing its echoes; one server process each, "
        f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, Python {sys.version.split()[0]}; "
        f"{versions()}. The whole run took {seconds:.0f} s.",
        "",
        "| server | connections held | pings per connection per interval | echo round trip p50 / p99 / max "
        "(ms) | over 10 ms / over 100 ms (of) | server CPU (cores) | server CPU per connection per "
        "interval (beyond pings off) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    base = runs.get("trio_c10k, pings off")
    for row, r in runs.items():
        s = summary(row, r, args)
        extra = None if base is None else s["cpu_per_conn"] - summary(row, base, args)["cpu_per_conn"]
        beyond = "" if extra is None else f" ({extra:.1f} us)"
        lines.append(
            f"| {row} | {r['held']:,} of {args.connections:,} | {s['pings_per_conn']:.2f} "
            f"| {s['p50']:.2f} / {s['p99']:.2f} / {s['max']:.1f} | {s['over_10']} / {s['over_100']} "
            f"({s['count']}) | {s['cores']:.3f} | {s['cpu_per_conn']:.1f} us{beyond} |"
        )
    trouble = sum(r["log_trouble"] for r in runs.values())
    failed = sum(r["failed"] for r in runs.values())
    lines += [
        "",
        "A round trip is timed by the client from before its write to after the echo's read; the "
        "longest is the longest time the server's event loop spent elsewhere (here: on pings and "
        "pongs), or the server or the client waited for a CPU: the pings-off row is that floor on this "
        f"machine (load average {args.load} as the run began). trio_c10k pings a connection once it has "
        "been silent for the interval; the pings that fall due are spread over a quarter of the "
        "interval, at most 32 per step of its event loop. The websockets server pings every connection "
        "every interval, from a task per connection. Server CPU is user + system time from "
        "/proc/PID/stat over the probe's window, divided by the connections and by the intervals in "
        "the window; in brackets, less the pings-off row's (the probe's own cost).",
        "",
        f"Handshakes that failed: {failed}. Warnings, errors and tracebacks in the server logs: {trouble}.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10000, help="idle connections per server")
    parser.add_argument("--ping-interval", type=float, default=2, help="seconds between pings")
    parser.add_argument("--seconds", type=float, default=12, help="how long the probe runs")
    parser.add_argument("--in-flight", type=int, default=50, help="handshakes outstanding at a time")
    parser.add_argument("--source", help="serve trio_c10k from this checkout (default: this one)")
    parser.add_argument("--only", nargs="*", choices=[row for row, _, _ in SERVERS], help="rows to run")
    parser.add_argument("--no-write", action="store_true", help="do not write RESULTS.md")
    parser.add_argument("--probe", help=argparse.SUPPRESS)  # the echo client's process: its URL
    args = parser.parse_args()
    if args.probe:
        probe(args.probe, args.seconds)
        return
    prepare(args.connections, ("websockets",), "pip install -e '.[bench]'")
    args.load = Path("/proc/loadavg").read_text().split()[0]
    logdir = Path(tempfile.mkdtemp(prefix="keepalive-"))
    started = time.monotonic()
    runs = {}
    for row, name, pings in SERVERS:
        if args.only and row not in args.only:
            continue
        runs[row] = r = measure(row, name, pings, args, logdir)
        s = summary(row, r, args)
        print(
            f"{row:22} held {r['held']} rtt p50 {s['p50']:.2f} p99 {s['p99']:.2f} max {s['max']:.1f} ms, "
            f">10ms {s['over_10']} >100ms {s['over_100']} of {s['count']}; cpu {s['cores']:.3f} cores, "
            f"{s['cpu_per_conn']:.1f} us/conn/interval, {s['pings_per_conn']:.2f} pings/conn/interval",
            flush=True,
        )
    text = report(runs, args, time.monotonic() - started)
    print("\n" + text)
    if not args.no_write:
        update_results("keepalive", text)
        print(f"\nwritten to {RESULTS}; server logs in {logdir}")


if __name__ == "__main__":
    main()
