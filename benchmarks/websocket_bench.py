"""WebSocket benchmark: echo throughput and ping-pong round trips of four servers, same run.

    python benchmarks/websocket_bench.py [--duration 10] [--pingpong-duration 5] [--rounds 3]

Each server is one process on a free port with a trivial echo handler: trio_c10k serving
example_site (``/test/echo/``, through Django's URLconf and middleware once per connection, at
the handshake), trio-websocket's ``serve_websocket`` (benchmarks/peers/trio_websocket_echo.py),
the ``websockets`` library's asyncio server (benchmarks/peers/websockets_echo.py) and picows
(Cython, on uvloop: benchmarks/peers/picows_echo.py); the peers run without compression and
with trio_c10k's limits as far as they have them (see their docstrings).

A. Echo: 100 connections split over 2 client processes, 32-byte text messages, 16 in flight
   per connection (a new one sent for each echo received), messages/s over 10 s.
B. Ping-pong: one connection, one message at a time, round trips/s over 5 s.

Both follow a warm-up. The load client (benchmarks/lib/ws_client.py) checks every echo against
what it sent and counts mismatches. trio_c10k pins itself to one CPU (its ``--pin-cpu``
default); the peers are pinned to the first CPU from their start; the client processes are
pinned to another CPU, so that they never take the server's core. The CPU use of the server
(from /proc) and of the clients (their own ``process_time``) over the measured window is
recorded: a client process near a whole core means the clients, not the server, set the rate
(``--client-processes`` spreads the connections over more of them; they share one CPU, so
their sum is what must stay below 1).
Rounds are interleaved so that drift of the machine hits every server alike; medians are
reported. Results go to benchmarks/RESULTS.md.

Needs: ``pip install -e '.[bench]'`` (trio-websocket, websockets, picows, uvloop).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lib.common import (
    BENCHMARKS,
    ECHO_SERVERS,
    RESULTS,
    ROOT,
    client_cpu_for,
    cpu_seconds,
    echo_server_command,
    free_port,
    launch,
    log_trouble,
    stop,
    update_results,
    versions,
    wait_for_port,
)

CLIENT = BENCHMARKS / "lib" / "ws_client.py"
#: with 1,600 messages in flight a server should keep its core busy; below this it was stalled
UNSATURATED = 0.9
#: client processes (all on one CPU) using this much of it together may be what set the rate
CLIENT_SATURATED = 0.9
#: issue 15's targets for trio_c10k against picows: echo msgs/s, ping-pong round trips/s
PICOWS_TARGETS = {"echo": 1.0, "pp": 0.6}


def run_clients(
    mode: str,
    url: str,
    args: argparse.Namespace,
    *,
    processes: int,
    connections: int,
    duration: float,
    warmup: float,
    cpu: int | None,
    server_pid: int | None,
) -> dict[str, float]:
    """Start the client processes, let them connect, measure one window, sum their results."""
    split = [connections // processes + (i < connections % processes) for i in range(processes)]
    common = ["--in-flight", str(args.in_flight), "--size", str(args.size)]
    if cpu is not None:
        common += ["--cpu", str(cpu)]
    clients = [
        subprocess.Popen(
            [sys.executable, str(CLIENT), mode, url, "--connections", str(n), "--tag", f"p{i}", *common],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i, n in enumerate(split)
    ]
    try:
        for client in clients:
            assert client.stdout is not None
            if client.stdout.readline().strip() != "ready":
                raise SystemExit(f"a {mode} client could not connect to {url} (status {client.wait()})")
        t0 = time.monotonic() + warmup
        t1 = t0 + duration
        for client in clients:
            assert client.stdin is not None
            client.stdin.write(f"go {t0!r} {t1!r}\n")
            client.stdin.flush()
        time.sleep(max(0.0, t0 - time.monotonic()))
        server0 = cpu_seconds(server_pid) if server_pid else 0.0
        time.sleep(max(0.0, t1 - time.monotonic()))
        server1 = cpu_seconds(server_pid) if server_pid else 0.0
        outs = []
        for client in clients:
            stdout, _ = client.communicate(timeout=30)
            lines = stdout.strip().splitlines()
            if client.returncode or not lines:
                raise SystemExit(f"a {mode} client failed with status {client.returncode}")
            outs.append(json.loads(lines[-1]))
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
                client.wait()
    total: dict[str, float] = {key: sum(o[key] for o in outs) for key in outs[0] if key != "seconds"}
    total["server_cpu"] = (server1 - server0) / duration if server_pid else float("nan")
    return total


def run_one(name: str, args: argparse.Namespace, logdir: Path, round_: int) -> dict[str, Any]:
    port = free_port()
    cmd, path = echo_server_command(name, port)
    log = logdir / f"{name}-round{round_}.log"
    # trio_c10k pins itself; a peer is pinned to the first CPU, the clients then go elsewhere.
    cpu = None if name == "trio_c10k" else min(os.sched_getaffinity(0))
    proc = launch(cmd, log, {"PYTHONPATH": str(ROOT)}, cpu)
    try:
        wait_for_port(port, proc)
        pinned = os.sched_getaffinity(proc.pid)
        result = measure(f"ws://127.0.0.1:{port}{path}", args, proc.pid)
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with status {proc.returncode} during the run; see {log}")
    finally:
        stop(proc)
    result["server_cpus"] = pinned
    result["log_trouble"] = log_trouble(log.read_text(errors="replace"))
    result["log"] = str(log)
    return result


def measure(url: str, args: argparse.Namespace, server_pid: int | None) -> dict[str, Any]:
    cpu = args.client_cpu if args.client_cpu is not None else client_cpu_for(server_pid)
    echo = run_clients(
        "echo",
        url,
        args,
        processes=args.client_processes,
        connections=args.connections,
        duration=args.duration,
        warmup=args.warmup,
        cpu=cpu,
        server_pid=server_pid,
    )
    pingpong = run_clients(
        "pingpong",
        url,
        args,
        processes=1,
        connections=1,
        duration=args.pingpong_duration,
        warmup=args.warmup / 2,
        cpu=cpu,
        server_pid=server_pid,
    )
    return {"echo": echo, "pingpong": pingpong, "client_cpu_id": cpu}


def summary_line(name: str, r: dict[str, Any]) -> str:
    e, p = r["echo"], r["pingpong"]
    problems = sum(e[k] + p[k] for k in ("closed", "stalled", "unanswered"))
    return (
        f"{name:15} echo {e['rate']:8.0f} msg/s  ping-pong {p['rate']:7.0f} rt/s"
        f"  server cpu {e['server_cpu']:.2f}/{p['server_cpu']:.2f}"
        f"  client cpu {e['cpu']:.2f}/{p['cpu']:.2f} (on CPU {r['client_cpu_id']})"
        f"  mismatches {e['mismatches'] + p['mismatches']:.0f}  problems {problems:.0f}"
        f"  log lines {r.get('log_trouble', 0)}"
        + ("  (server below 0.9 core under echo load)" if e["server_cpu"] < UNSATURATED else "")
        + ("  (clients near a whole core under echo load)" if e["cpu"] >= CLIENT_SATURATED else "")
    )


def where(cpus: set[int]) -> str:
    return f"pinned to CPU {min(cpus)}" if len(cpus) == 1 else "unpinned"


def report(runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace, seconds: float) -> str:
    def med(name: str, part: str, key: str) -> float:
        return statistics.median(r[part][key] for r in runs[name])

    rows = {
        name: {
            "echo": med(name, "echo", "rate"),
            "pp": med(name, "pingpong", "rate"),
            "s_echo": med(name, "echo", "server_cpu"),
            "s_pp": med(name, "pingpong", "server_cpu"),
            "c_echo": med(name, "echo", "cpu"),
            "c_pp": med(name, "pingpong", "cpu"),
        }
        for name in runs
    }

    def ratio(name: str, base: str) -> str:
        if base not in rows:
            return "-"
        a, b = rows[name], rows[base]
        return f"{a['echo'] / b['echo']:.2f}x / {a['pp'] / b['pp']:.2f}x"

    per_process = args.connections // args.client_processes
    lines = [
        "## WebSocket echo",
        "",
        f"`python benchmarks/websocket_bench.py` - echo: {args.connections} connections "
        f"({args.client_processes} client processes x {per_process}), {args.size}-byte text messages, "
        f"{args.in_flight} in flight per connection, {args.duration:g} s; ping-pong: 1 connection, one "
        f"{args.size}-byte message at a time, {args.pingpong_duration:g} s; after {args.warmup:g} s "
        f"(ping-pong {args.warmup / 2:g} s) of warm-up. Median of {args.rounds} interleaved rounds, "
        f"one server process each, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
        f"Python {sys.version.split()[0]}; {versions()}. The whole run took {seconds:.0f} s.",
        "",
        "| server | echo msgs/s | ping-pong round trips/s | server CPU (cores) echo / ping-pong "
        "| client CPU (cores) echo / ping-pong | vs trio-websocket echo / ping-pong "
        "| vs websockets echo / ping-pong | vs picows echo / ping-pong |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['echo']:.0f} | {r['pp']:.0f} | {r['s_echo']:.2f} / {r['s_pp']:.2f} "
            f"| {r['c_echo']:.2f} / {r['c_pp']:.2f} | {ratio(name, 'trio-websocket')} "
            f"| {ratio(name, 'websockets')} | {ratio(name, 'picows')} |"
        )
    lines.append("")
    if {"trio_c10k", "trio-websocket", "websockets"} <= rows.keys():
        ours = rows["trio_c10k"]["echo"]
        vs_tw = ours / rows["trio-websocket"]["echo"]
        vs_ws = ours / rows["websockets"]["echo"]
        lines += [
            f"Targets (echo msgs/s): trio_c10k >= 2x trio-websocket: {vs_tw:.2f}x, "
            f"{'met' if vs_tw >= 2 else 'NOT met'}; trio_c10k >= 0.75x websockets: {vs_ws:.2f}x, "
            f"{'met' if vs_ws >= 0.75 else 'NOT met'}.",
            "",
        ]
    if {"trio_c10k", "picows"} <= rows.keys():
        ours, theirs = rows["trio_c10k"], rows["picows"]
        echo, pp = ours["echo"] / theirs["echo"], ours["pp"] / theirs["pp"]
        clients = max(r["echo"]["cpu"] for r in runs["picows"])
        if echo < PICOWS_TARGETS["echo"]:
            echo_verdict = "NOT met"
        elif clients >= CLIENT_SATURATED:  # picows' figure is then a lower bound, the ratio an upper one
            echo_verdict = f"not shown: picows' clients used up to {clients:.2f} of their core"
        else:
            echo_verdict = f"met, picows' clients using at most {clients:.2f} of their core"
        lines += [
            f"Targets against picows: echo msgs/s >= {PICOWS_TARGETS['echo']:g}x: {echo:.2f}x, "
            f"{echo_verdict}; ping-pong round trips/s >= {PICOWS_TARGETS['pp']:g}x: {pp:.2f}x, "
            f"{'met' if pp >= PICOWS_TARGETS['pp'] else 'NOT met'}.",
            "",
        ]
    for label, part in (("Echo msgs/s", "echo"), ("Ping-pong round trips/s", "pingpong")):
        per_round = "; ".join(
            f"{name} " + " / ".join(f"{r[part]['rate']:.0f}" for r in rs) for name, rs in runs.items()
        )
        lines.append(f"{label} per round: {per_round}.")
    placement = "; ".join(
        f"{name} {where(rs[0]['server_cpus'])}, its clients on CPU {rs[0]['client_cpu_id']}"
        for name, rs in runs.items()
    )
    max_client = max(r["echo"]["cpu"] for rs in runs.values() for r in rs)
    client_bound = [
        f"{name} round {i} ({r['echo']['cpu']:.2f})"
        for name, rs in runs.items()
        for i, r in enumerate(rs, 1)
        if r["echo"]["cpu"] >= CLIENT_SATURATED
    ]
    unsaturated = [
        f"{name} round {i} ({r['echo']['server_cpu']:.2f})"
        for name, rs in runs.items()
        for i, r in enumerate(rs, 1)
        if r["echo"]["server_cpu"] < UNSATURATED
    ]
    if not unsaturated and not client_bound:
        limit = (
            f"Under the echo load every server kept its core busy (at least {UNSATURATED} of it) while "
            f"the clients used at most {max_client:.2f} of theirs: the servers were the limit."
        )
    else:
        limit = ""
        if unsaturated:
            limit = (
                f"Under the echo load a server should keep its core busy, but it used less than "
                f"{UNSATURATED} of it in {', '.join(unsaturated)}: the machine (a 2-vCPU KVM guest whose "
                "idle vCPUs halt, shared with other work) stalled that window, so read the medians. "
            )
        if client_bound:
            limit += (
                f"The clients used {CLIENT_SATURATED} of their core or more in {', '.join(client_bound)}: "
                "there they may have set the rate, which is then a lower bound for that server (more "
                "client processes would not help: they share the one CPU the server leaves)."
            )
        else:
            limit += f"The clients used at most {max_client:.2f} of their core."
    mismatches = sum(r[p]["mismatches"] for rs in runs.values() for r in rs for p in ("echo", "pingpong"))
    problems = sum(
        r[p][k]
        for rs in runs.values()
        for r in rs
        for p in ("echo", "pingpong")
        for k in ("closed", "stalled", "unanswered")
    )
    log_lines = sum(r["log_trouble"] for rs in runs.values() for r in rs)
    lines += [
        "",
        f"CPU placement: {placement}. Server CPU is read from /proc/PID/stat over the measured window, "
        "client CPU is the client processes' own CPU time over the same window, summed. " + limit,
        "",
        "Servers: trio_c10k with its defaults (`--no-access-log`; no compression, 1 MiB messages, 16 "
        "messages queued, a ping every 20 s); websockets `serve(compression=None, max_size=2**20, "
        "max_queue=16, ping_interval=20, ping_timeout=20)`; trio-websocket `serve_websocket("
        "max_message_size=2**20, message_queue_size=16, receive_buffer_size=65536)` (it never "
        "compresses and sends no keep-alive pings); picows `ws_create_server(max_frame_size=2**20, "
        "enable_auto_ping=True, auto_ping_idle_timeout=20, auto_ping_reply_timeout=20)` on uvloop, "
        "echoing frame by frame (it has no message layer, no queue, and does not check UTF-8). The "
        "load client (benchmarks/lib/ws_client.py) uses raw "
        "sockets and precomputed masked frames, and checks every echo byte for byte.",
        "",
        f"Echoes that differed from what was sent: {mismatches:.0f}. Connections closed early or "
        "stalled, plus messages never echoed (after the window the clients stop sending and wait for "
        f"every echo before closing): {problems:.0f}. Warnings, errors and tracebacks in the server "
        f"logs: {log_lines}.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds of echo measurement")
    parser.add_argument("--pingpong-duration", type=float, default=5, help="seconds of ping-pong")
    parser.add_argument(
        "--warmup", type=float, default=2, help="seconds of echo warm-up (half for ping-pong)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per server")
    parser.add_argument("--connections", type=int, default=100, help="echo connections")
    parser.add_argument("--client-processes", type=int, default=2, help="processes sharing the connections")
    parser.add_argument("--in-flight", type=int, default=16, help="echo messages outstanding per connection")
    parser.add_argument("--size", type=int, default=32, help="bytes per message")
    parser.add_argument("--client-cpu", type=int, help="pin the clients to this CPU (default: see above)")
    parser.add_argument("--only", nargs="*", choices=ECHO_SERVERS, help="servers to run (default: all)")
    parser.add_argument(
        "--url",
        help="measure this already-running echo server once instead (for profiling it); "
        "nothing is written to RESULTS.md",
    )
    parser.add_argument("--pid", type=int, help="with --url: the server's process id, for its CPU use")
    args = parser.parse_args()
    if args.url:
        result = measure(args.url, args, args.pid)
        print(summary_line(args.url, result))
        return
    for module in ("trio_websocket", "websockets", "picows", "uvloop"):
        if subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode:
            raise SystemExit(f"{module} is not installed: pip install -e '.[bench]'")
    names = args.only or list(ECHO_SERVERS)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    logdir = Path(tempfile.mkdtemp(prefix="ws-bench-"))
    started = time.monotonic()
    for round_ in range(1, args.rounds + 1):
        for name in names:
            result = run_one(name, args, logdir, round_)
            runs[name].append(result)
            print(f"round {round_} {summary_line(name, result)}", flush=True)
    text = report(runs, args, time.monotonic() - started)
    print("\n" + text)
    update_results("websocket", text)
    print(f"\nwritten to {RESULTS}; server logs in {logdir}")


if __name__ == "__main__":
    main()
