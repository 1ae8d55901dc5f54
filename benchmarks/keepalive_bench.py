"""Keep-alive benchmark: what pinging many idle connections costs the other connections.

    python benchmarks/keepalive_bench.py [--connections 10000] [--ping-interval 2] [--seconds 12]
    python benchmarks/keepalive_bench.py --workers 6 --connections 100000 --ping-interval 10 --seconds 40 \
        --in-flight 120

(At 100,000 connections a 2 s interval would be 50,000 pings a second, at ~50 us of server CPU
each more than a 2-core machine has; 10 s makes it 10,000.)

Each server holds ``--connections`` idle WebSocket connections, opened from client processes
(benchmarks/lib/client_workers.py: raw sockets, one epoll loop each, each from four source
addresses 127.0.0.x of its own in turn, fewer than ``PORTS_PER_SOURCE`` connections each, at least 2)
that answer every ping at once; the servers ping them every ``--ping-interval`` seconds
(trio_c10k ``--ws-ping-interval``, the websockets peer ``ping_interval``; both keep their 20 s
ping timeout). Before them, the echo probe (benchmarks/lib/echo_probe.py, a process of its
own, from 127.0.0.1) opens its connections: one for a single-process server; with
``--workers N``, one at a time until every worker holds one (the kernel hashes each connection
to one worker's listening socket; which worker holds it is read from /proc/net/tcp and the
workers' /proc/PID/fd), ``--probes`` at most, the extra ones closed. Once the pings have run for
two intervals, each probe connection sends a text message every 10 ms for ``--seconds`` and
times each echo: a round trip is as long as the server's event loop (that worker's) was busy
elsewhere when the message came, so its maximum is the longest step the pings caused. Meanwhile
the server's CPU time (user + system of the process and its workers, /proc/PID/stat) is taken
over the same whole seconds, the pings the clients answered are counted, and trio_c10k's event
loops (each worker's) time their steps (benchmarks/lib/loop_steps: the longest in wall and in
CPU time, and those over 10 ms).

Servers, in one run: trio_c10k serving example_site (``/test/echo/``) with pings, the same with
pings off (``--ws-ping-interval 0``: the loop's baseline), and, for a single process only, the
``websockets`` library's asyncio server (benchmarks/peers/websockets_echo.py,
``--ping-interval``). ``--workers N`` serves trio_c10k with ``--workers N``. ``--source DIR``
serves trio_c10k from another checkout (the code before a change, say). Results go to
benchmarks/RESULTS.md: a single process to the ``keepalive`` section, ``--workers`` to
``keepalive-workers``. ``--time-limit`` bounds the run.

Needs: ``pip install -e '.[bench]'`` (websockets) and an open-file limit above the connections
a process holds (the servers inherit this process's limit).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

from lib.client_workers import Clients, spread_sources
from lib.common import (
    BENCHMARKS,
    RESULTS,
    ROOT,
    client_cpu_for,
    echo_server_command,
    free_port,
    log_trouble,
    prepare,
    update_results,
    versions,
    wait_for_port,
)
from lib.echo_probe import EVERY
from lib.loop_steps import loop_steps_env, read_steps, start_window
from lib.workers import PORTS_PER_SOURCE, cpu_of, holder, stop_all, wait_for_workers, worker_pids

#: the servers of a run: (row name, server, pings on)
SERVERS = (
    ("trio_c10k", "trio_c10k", True),
    ("trio_c10k, pings off", "trio_c10k", False),
    ("websockets", "websockets", True),
)


def start_server(
    name: str, pings: bool, args: argparse.Namespace, log: Path, steps: Path
) -> tuple[subprocess.Popen[bytes], int, str]:
    """Start server ``name``; trio_c10k's event loops (every worker's) timed into ``steps``
    (benchmarks/lib/loop_steps)."""
    port = free_port()
    cmd, path = echo_server_command(name, port)
    interval = f"{args.ping_interval:g}" if pings else "0"
    source = Path(args.source).resolve() if args.source and name == "trio_c10k" else ROOT
    if name == "trio_c10k":
        cmd += ["--ws-ping-interval", interval]
        if args.workers:
            cmd += ["--workers", str(args.workers)]
    else:
        cmd += ["--ping-interval", interval]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(source), os.environ.get("PYTHONPATH")])),
    }
    if name == "trio_c10k":
        env = loop_steps_env(steps, env)
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=source, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        if args.workers and name == "trio_c10k":
            wait_for_workers(log, args.workers, proc)
        wait_for_port(port, proc)
    except BaseException:
        stop_all(proc, worker_pids(proc.pid))
        raise
    return proc, port, f"ws://127.0.0.1:{port}{path}"


def ask(proc: subprocess.Popen[str], command: str) -> dict[str, Any]:
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.write(command + "\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"the echo probe died (status {proc.wait()})")
    answer: dict[str, Any] = json.loads(line)
    return answer


def open_probes(probe: subprocess.Popen[str], port: int, pids: list[int], most: int) -> dict[int, int]:
    """Probe connections until every one of ``pids`` holds one (``most`` at most): the first
    connection each process holds, by process id."""
    first: dict[int, int] = {}
    for i in range(most):
        address = ask(probe, "open")["address"]
        pid = holder(port, (address[0], address[1]), pids)
        if pid is None:
            raise SystemExit(f"no server process holds the probe connection from {address}")
        first.setdefault(pid, i)
        if len(first) == len(pids):
            break
    return first


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def measure(row: str, name: str, pings: bool, args: argparse.Namespace, logdir: Path) -> dict[str, Any]:
    log = logdir / f"{row.replace(' ', '_').replace(',', '')}.log"
    steps = logdir / "loop-steps"
    steps.mkdir(exist_ok=True)
    proc, port, url = start_server(name, pings, args, log, steps)
    pids = worker_pids(proc.pid) if args.workers and name == "trio_c10k" else [proc.pid]
    everyone = sorted({proc.pid, *pids})  # cpu_of: the workers are not all the main thread's children
    r: dict[str, Any] = {"log": str(log), "processes": len(pids)}
    probe = subprocess.Popen(
        [sys.executable, "-m", "lib.echo_probe", url],
        cwd=BENCHMARKS,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        first = open_probes(probe, port, pids, args.probes)
        r["probes_opened"] = max(first.values()) + 1
        processes = max(2, math.ceil(args.connections / PORTS_PER_SOURCE))
        sources = spread_sources(processes)
        cpu = None if args.workers else client_cpu_for(proc.pid)
        clients = Clients(url, processes, args.in_flight, 30, False, cpu, sources=sources)
        try:
            counts = [
                args.connections // processes + (i < args.connections % processes) for i in range(processes)
            ]
            t0 = time.monotonic() + 0.2
            outs = clients.ask_all([f"open {n} {t0!r}" for n in counts])
            r["opened"] = sum(o["opened"] for o in outs)
            r["failed"] = sum(o["failed"] for o in outs)
            r["open_seconds"] = max(o["t_end"] for o in outs) - t0
            print(f"{row}: opened {r['opened']} in {r['open_seconds']:.0f} s", flush=True)
            time.sleep(2 * args.ping_interval + 1)  # the pings in their stride
            r["load"] = os.getloadavg()[0]
            pings0 = sum(o["pings"] for o in clients.ask_all("count"))
            cpu0 = cpu_of(everyone)
            started = time.monotonic()
            keep = sorted(first.values())
            if name == "trio_c10k":
                start_window(pids)
            rtts = ask(probe, "go " + " ".join([f"{args.seconds:g}", *map(str, keep)]))["rtts"]
            window = time.monotonic() - started
            r["cpu"] = cpu_of(everyone) - cpu0
            r["steps"] = list(read_steps(pids, steps).values()) if name == "trio_c10k" else None
            counts = clients.ask_all("count")
            r["pings"] = sum(o["pings"] for o in counts) - pings0
            r["held"] = sum(o["open"] for o in counts)
            r["window"] = window
            r["rtts"] = [t for times in rtts for t in times]
            # each covered process's longest round trip, in the order of ``pids``
            by_index = dict(zip(keep, rtts, strict=True))
            r["per_process"] = [max(by_index[first[pid]]) if pid in first else None for pid in pids]
        finally:
            clients.close()
        if proc.poll() is not None:
            raise SystemExit(f"{row} exited with status {proc.returncode} during the run; see {log}")
    finally:
        probe.kill()
        probe.wait()
        stop_all(proc, pids)
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
        "loop": "-"
        if not r["steps"]
        else f"{max(f['longest_wall'] for f in r['steps']) * 1000:.1f} / "
        f"{max(f['longest_cpu'] for f in r['steps']) * 1000:.1f} ms; "
        f"{sum(f['over_10ms_wall'] for f in r['steps'])} / {sum(f['over_10ms_cpu'] for f in r['steps'])} "
        f"({sum(f['steps'] for f in r['steps']):,})",
    }


def report(runs: dict[str, dict[str, Any]], args: argparse.Namespace, seconds: float) -> str:
    workers = f" --workers {args.workers}" if args.workers else ""
    command = (
        f"python benchmarks/keepalive_bench.py{workers} --connections {args.connections} "
        f"--ping-interval {args.ping_interval:g} --seconds {args.seconds:g}"
        + (f" --in-flight {args.in_flight}" if args.in_flight != 50 else "")
    )
    processes = max(2, math.ceil(args.connections / PORTS_PER_SOURCE))
    if args.workers:
        heading = f"### {args.connections:,} connections over `--workers {args.workers}`"
        setup = (
            f"trio_c10k with `--workers {args.workers}` (its worker processes share the listening "
            "socket, `SO_REUSEPORT`), beside them one probe connection on each worker"
        )
    else:
        heading = "## Keep-alive: pinging idle connections, seen from a busy one"
        setup = "one server process each, beside them one probe connection"
    lines = [
        heading,
        "",
        f"`{command}` - {args.connections:,} idle WebSocket connections from {processes} client "
        f"processes, pinged every {args.ping_interval:g} s (server and clients as "
        f"benchmarks/keepalive_bench.py says); {setup}, sending a message every {EVERY * 1000:.0f} ms "
        f"for {args.seconds:g} s and timing its echoes; {time.strftime('%Y-%m-%d')}, {os.cpu_count()} "
        f"cores, Python {sys.version.split()[0]}; {versions()}. The whole run took {seconds:.0f} s; "
        f"the machine's load average (1 min) was {args.load} as it began.",
        "",
        "| server | connections held | pings per connection per interval | echo round trip p50 / p99 / max "
        "(ms) | over 10 ms / over 100 ms (of) | server CPU (cores) | server CPU per connection per "
        "interval (beyond pings off) | the loop's longest step, wall / CPU; steps over 10 ms, wall / "
        "CPU (of) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = next((r for row, r in runs.items() if row.endswith("pings off")), None)
    for row, r in runs.items():
        s = summary(row, r, args)
        extra = None if base is None else s["cpu_per_conn"] - summary(row, base, args)["cpu_per_conn"]
        beyond = "" if extra is None else f" ({extra:.1f} us)"
        lines.append(
            f"| {row} | {r['held']:,} of {args.connections:,} | {s['pings_per_conn']:.2f} "
            f"| {s['p50']:.2f} / {s['p99']:.2f} / {s['max']:.1f} | {s['over_10']} / {s['over_100']} "
            f"({s['count']}) | {s['cores']:.3f} | {s['cpu_per_conn']:.1f} us{beyond} | {s['loop']} |"
        )
    trouble = sum(r["log_trouble"] for r in runs.values())
    failed = sum(r["failed"] for r in runs.values())
    loads = ", ".join(f"{row} {r['load']:.1f}" for row, r in runs.items())
    lines += [
        "",
        "A round trip is timed by the client from before its write to after the echo's read; the "
        "longest is the longest time the server's event loop spent elsewhere (here: on pings and "
        "pongs), or the server or the client waited for a CPU: the pings-off row is that floor on this "
        "machine (load average as each probe began, this run's own processes counted: "
        f"{loads}). trio_c10k pings a connection once it "
        "has been silent for the interval; the pings that fall due are spread over a quarter of the "
        "interval, at most 32 per step of its event loop. The websockets server pings every connection "
        "every interval, from a task per connection. Server CPU is user + system time from "
        "/proc/PID/stat (the server process and its workers) over the probe's window, divided by the "
        "connections and by the intervals in the window; in brackets, less the pings-off row's (the "
        "probe's own cost). The loop's steps (trio_c10k only; benchmarks/lib/loop_steps): each turn of "
        "trio's run loop from the end of one wait for I/O to the start of the next, over the probe's "
        "window, in wall time and in the loop thread's CPU time, the longest of every worker; a step "
        "whose wall time is much longer than its CPU time waited for a CPU, not on the loop.",
    ]
    if args.workers:
        lines += [
            "",
            "Each worker's longest round trip (ms; its probe connection's), and probe connections "
            "opened until every worker held one: "
            + "; ".join(
                f"{row}: "
                + ", ".join("-" if m is None else f"{m * 1000:.1f}" for m in r["per_process"])
                + f" ({r['probes_opened']} opened)"
                for row, r in runs.items()
            )
            + f". {args.connections / args.ping_interval:,.0f} pings a second fall due over the "
            f"workers. The websockets peer is single-process: its {SERVERS[2][0]} row at 10,000 "
            "connections, in the table above, is the comparison.",
        ]
        if any(
            len({round(m, 4) for m in r["per_process"] if m}) < len(r["per_process"]) for r in runs.values()
        ):
            lines[-1] += (
                " Equal maxima on several workers are one stall that every probe connection saw at "
                "once: the probe process, or the whole machine, waited, not those workers' loops."
            )
    lines += [
        "",
        f"Handshakes that failed: {failed}. Warnings, errors and tracebacks in the server logs: {trouble}.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10000, help="idle connections per server")
    parser.add_argument("--workers", type=int, default=0, help="trio_c10k --workers N (0: one process)")
    parser.add_argument("--ping-interval", type=float, default=2, help="seconds between pings")
    parser.add_argument("--seconds", type=float, default=12, help="how long the probe runs")
    parser.add_argument("--in-flight", type=int, default=50, help="handshakes outstanding at a time")
    parser.add_argument("--probes", type=int, default=40, help="probe connections opened, at most")
    parser.add_argument("--source", help="serve trio_c10k from this checkout (default: this one)")
    parser.add_argument("--only", nargs="*", choices=[row for row, _, _ in SERVERS], help="rows to run")
    parser.add_argument("--time-limit", type=int, default=1500, help="seconds before the run gives up")
    parser.add_argument("--no-write", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args()
    prepare(args.connections // max(1, args.workers), ("websockets",), "pip install -e '.[bench]'")
    args.load = Path("/proc/loadavg").read_text().split()[0]

    def give_up(_signum: int, _frame: types.FrameType | None) -> None:
        raise SystemExit(f"over --time-limit ({args.time_limit} s)")

    signal.signal(signal.SIGALRM, give_up)
    signal.alarm(args.time_limit)
    logdir = Path(tempfile.mkdtemp(prefix="keepalive-"))
    started = time.monotonic()
    runs = {}
    for base, name, pings in SERVERS:
        if (args.only and base not in args.only) or (args.workers and name != "trio_c10k"):
            continue
        row = base.replace("trio_c10k", f"trio_c10k --workers {args.workers}") if args.workers else base
        runs[row] = r = measure(row, name, pings, args, logdir)
        s = summary(row, r, args)
        print(
            f"{row:22} held {r['held']} rtt p50 {s['p50']:.2f} p99 {s['p99']:.2f} max {s['max']:.1f} ms, "
            f">10ms {s['over_10']} >100ms {s['over_100']} of {s['count']}; cpu {s['cores']:.3f} cores, "
            f"{s['cpu_per_conn']:.1f} us/conn/interval, {s['pings_per_conn']:.2f} pings/conn/interval; "
            f"loop {s['loop']}; "
            f"per process max {r['per_process']}",
            flush=True,
        )
    signal.alarm(0)
    text = report(runs, args, time.monotonic() - started)
    print("\n" + text)
    if not args.no_write:
        update_results("keepalive-workers" if args.workers else "keepalive", text)
        print(f"\nwritten to {RESULTS}; server logs in {logdir}")


if __name__ == "__main__":
    main()
