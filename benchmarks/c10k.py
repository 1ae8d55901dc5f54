"""C10k benchmark: many idle WebSocket connections held by one server process, four servers.

    python benchmarks/c10k.py [--connections 10000] [--in-flight 50] [--max-probe]

The servers are those of benchmarks/websocket_bench.py, one process each, on a free port:
trio_c10k serving example_site (``/test/echo/``: every handshake goes through Django's URLconf
and middleware), trio-websocket's ``serve_websocket`` (benchmarks/peers/trio_websocket_echo.py),
the ``websockets`` library's asyncio server (benchmarks/peers/websockets_echo.py) and picows on
uvloop (benchmarks/peers/picows_echo.py).

1. Open ``--connections`` WebSocket connections with ``--in-flight`` handshakes outstanding at
   a time, from 2 client processes (each holds half and keeps half the handshakes in flight);
   time to open them all, handshakes/s, and the client processes' CPU time over that window.
2. Server memory: VmRSS (/proc/PID/status) before any connection and once all are open, so
   KB per connection = (after - before) / N. Then the server's CPU over 5 s of idleness
   (/proc/PID/stat), every connection still open.
3. The connections still open are counted, and one text message is sent on ``--verify`` of
   them (spread evenly), each expecting its echo.
4. ``--max-probe`` (off by default: it takes a while): a fresh server, 3 client processes
   opening connections until the server refuses one (trio_c10k answers 503 beyond its
   ``--max-connections``, by default the open-file limit - 100) or a handshake fails or times
   out; the largest number held at once is reported.

The clients are benchmarks/lib/client_workers.py's processes (standard library only): raw
non-blocking sockets in one ``epoll`` loop per process, one precomputed handshake request, each
answer read up to its blank line, its status line and ``Sec-WebSocket-Accept`` checked. While
connections are idle, the clients answer the servers' keep-alive pings (trio_c10k, the
websockets peer and the picows peer ping every 20 s and close a connection whose pong does not
come within 20 s) and notice closes. Results go to benchmarks/RESULTS.md.

Needs: ``pip install -e '.[bench]'`` (trio-websocket, websockets, picows) and an open-file limit above
the connections a process holds (the servers inherit this process's limit).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lib.client_workers import Clients
from lib.common import (
    ECHO_SERVERS,
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
from lib.ws_client import client_frame, connect


def vm_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def one_connection(url: str) -> None:
    """Open one WebSocket connection (blocking), close it: the server's one-time costs, paid."""
    sock, _rest = connect(url, timeout=10)
    with sock:
        sock.sendall(client_frame(0x8, (1000).to_bytes(2, "big")))
        with contextlib.suppress(OSError):
            sock.recv(4096)  # the close frame echoed


def open_file_limit(pid: int) -> str:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return line.split()[3]
    return "?"


def open_connections(clients: Clients, counts: list[int]) -> dict[str, Any]:
    t0 = time.monotonic() + 0.2
    outs = clients.ask_all([f"open {n} {t0!r}" for n in counts])
    seconds = max(o["t_end"] for o in outs) - t0
    errors: dict[str, int] = {}
    for o in outs:
        for reason, k in o["errors"].items():
            errors[reason] = errors.get(reason, 0) + k
    opened = sum(o["opened"] for o in outs)
    times = sorted(t for o in outs for t in o["open_times"])
    tenth = len(times) // 10
    first = tenth / (times[tenth - 1] - t0) if tenth > 1 else float("nan")
    last = tenth / (times[-1] - times[-tenth - 1]) if tenth > 1 else float("nan")
    return {
        "rate_first_tenth": first,
        "rate_last_tenth": last,
        "opened": opened,
        "failed": sum(o["failed"] for o in outs),
        "errors": errors,
        "seconds": seconds,
        "rate": opened / seconds,
        "client_cpu": sum(o["cpu"] for o in outs),
    }


def still_open(clients: Clients) -> tuple[int, int]:
    outs = clients.ask_all("count")
    return sum(o["open"] for o in outs), sum(o["pings"] for o in outs)


def start_server(
    name: str, logdir: Path, tag: str, tls: tuple[Path, Path] | None = None
) -> tuple[subprocess.Popen[bytes], str, Path]:
    """Start the echo server ``name``; ``tls``: its certificate and key, for ``wss://`` (see
    ``echo_server_command``)."""
    port = free_port()
    cmd, path = echo_server_command(name, port, tls)
    log = logdir / f"{name}-{tag}.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc)
    except BaseException:
        stop(proc)
        raise
    return proc, f"{'wss' if tls else 'ws'}://127.0.0.1:{port}{path}", log


def measure(
    name: str, args: argparse.Namespace, logdir: Path, tls: tuple[Path, Path] | None = None
) -> dict[str, Any]:
    proc, url, log = start_server(name, logdir, "c10k", tls)
    r: dict[str, Any] = {"fd_limit": open_file_limit(proc.pid)}
    try:
        time.sleep(0.5)
        r["rss_before"] = vm_rss_kb(proc.pid)
        one_connection(url)
        time.sleep(0.5)
        r["rss_warm"] = vm_rss_kb(proc.pid)
        cpu = client_cpu_for(proc.pid)
        r["client_cpu_id"] = cpu
        clients = Clients(url, 2, args.in_flight, 30, False, cpu)
        try:
            half = [args.connections // 2 + (i < args.connections % 2) for i in range(2)]
            c0 = cpu_seconds(proc.pid)
            r.update(open_connections(clients, half))
            r["server_cpu_opening"] = (cpu_seconds(proc.pid) - c0) / r["seconds"]
            time.sleep(1)
            r["rss_after"] = vm_rss_kb(proc.pid)
            c0 = cpu_seconds(proc.pid)
            time.sleep(args.idle)
            r["idle_cpu"] = (cpu_seconds(proc.pid) - c0) / args.idle
            r["held"], r["pings"] = still_open(clients)
            k = args.verify // 2
            outs = clients.ask_all([f"verify {k}", f"verify {args.verify - k}"])
            r["verify_sent"] = sum(o["sent"] for o in outs)
            r["verify_echoed"] = sum(o["echoed"] for o in outs)
        finally:
            clients.close()
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with status {proc.returncode} during the run; see {log}")
    finally:
        stop(proc)
    r["log_trouble"] = log_trouble(log.read_text(errors="replace"))
    r["log"] = str(log)
    return r


def probe(name: str, args: argparse.Namespace, logdir: Path) -> dict[str, Any]:
    """Open connections from 3 processes until the server refuses or fails; the most held at once."""
    proc, url, log = start_server(name, logdir, "probe")
    try:
        limit = int(open_file_limit(proc.pid))
        per = (limit + 600) // 3  # past the server's open-file limit, within each client's
        clients = Clients(url, 3, args.in_flight, 5, True, client_cpu_for(proc.pid))
        try:
            opened = open_connections(clients, [per] * 3)
            time.sleep(2)
            held, _ = still_open(clients)
            rss = vm_rss_kb(proc.pid)
            outs = clients.ask_all(["verify 10"] * 3)
        finally:
            clients.close()
        alive = proc.poll() is None
    finally:
        stop(proc)
    return {
        **opened,
        "held": held,
        "rss": rss,
        "verify_sent": sum(o["sent"] for o in outs),
        "verify_echoed": sum(o["echoed"] for o in outs),
        "alive": alive,
        "attempted": per * 3,
        "log_trouble": log_trouble(log.read_text(errors="replace")),
    }


def summary_line(name: str, r: dict[str, Any]) -> str:
    kb = (r["rss_after"] - r["rss_before"]) / r["opened"] if r["opened"] else float("nan")
    return (
        f"{name:15} opened {r['opened']} (failed {r['failed']}) in {r['seconds']:.1f} s = {r['rate']:.0f}/s"
        f" (first tenth {r['rate_first_tenth']:.0f}/s, last {r['rate_last_tenth']:.0f}/s,"
        f" server CPU {r['server_cpu_opening']:.2f})"
        f"  RSS {r['rss_before'] / 1024:.1f} -> {r['rss_after'] / 1024:.1f} MB = {kb:.1f} KB/conn"
        f"  idle CPU {r['idle_cpu']:.3f}  client CPU {r['client_cpu']:.1f} s"
        f"  held {r['held']}  echoed {r['verify_echoed']}/{r['verify_sent']}  log lines {r['log_trouble']}"
        + (f"  errors {r['errors']}" if r["errors"] else "")
    )


def report(
    runs: dict[str, dict[str, Any]],
    probes: dict[str, dict[str, Any]],
    args: argparse.Namespace,
    seconds: float,
) -> str:
    lines = [
        "## C10k: idle connections",
        "",
        f"`python benchmarks/c10k.py{' --max-probe' if probes else ''}` - {args.connections} WebSocket "
        f"connections opened with {args.in_flight} handshakes in flight, from 2 client processes (raw "
        f"sockets, one epoll loop each), then held idle; one server process each, "
        f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, Python {sys.version.split()[0]}; "
        f"{versions()}. The whole run took {seconds:.0f} s.",
        "",
        "| server | connections held | time to open | handshakes/s | RSS before / after (MB) "
        "| KB per connection | idle CPU (cores, 5 s) | client CPU (s, opening) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in runs.items():
        kb = (r["rss_after"] - r["rss_before"]) / r["opened"] if r["opened"] else float("nan")
        lines.append(
            f"| {name} | {r['held']:,} of {args.connections:,} | {r['seconds']:.1f} s | {r['rate']:,.0f} "
            f"| {r['rss_before'] / 1024:.1f} / {r['rss_after'] / 1024:.1f} | {kb:.1f} | {r['idle_cpu']:.3f} "
            f"| {r['client_cpu']:.1f} ({r['client_cpu'] / r['seconds']:.2f} cores) |"
        )
    lines.append("")
    if "trio_c10k" in runs:
        r = runs["trio_c10k"]
        kb = (r["rss_after"] - r["rss_before"]) / r["opened"]
        met = {
            "<= 12 KB per connection": kb <= 12,
            ">= 1,500 handshakes/s": r["rate"] >= 1500,
            "idle CPU ~ 0 (< 0.01 core)": r["idle_cpu"] < 0.01,
        }
        lines += [
            "Targets for trio_c10k: "
            + "; ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in met.items())
            + f" ({kb:.1f} KB, {r['rate']:,.0f}/s, {r['idle_cpu']:.3f} core). For reference, the "
            "websockets server uses about 14 KB per connection here, and Django Channels + Daphne "
            "manages about 135 handshakes/s.",
            "",
        ]
    warm = "; ".join(
        f"{name} {r['rss_warm'] / 1024:.1f} MB, so {(r['rss_after'] - r['rss_warm']) / r['opened']:.1f} KB "
        "per connection from there"
        for name, r in runs.items()
        if r["opened"]
    )
    pace = "; ".join(
        f"{name} {r['rate_first_tenth']:,.0f} / {r['rate_last_tenth']:,.0f}/s, server CPU "
        f"{r['server_cpu_opening']:.2f} core"
        for name, r in runs.items()
    )
    sent = sum(r["verify_sent"] for r in runs.values())
    echoed = sum(r["verify_echoed"] for r in runs.values())
    failed = sum(r["failed"] for r in runs.values())
    pings = "; ".join(f"{name} {r['pings']:,}" for name, r in runs.items())
    lines += [
        f"Handshakes/s over the first / last tenth of the connections, and the server's CPU while "
        f"opening: {pace}.",
        "",
        'RSS is VmRSS from /proc/PID/status, before any connection (so the "after" includes one-time '
        "costs of the first request, e.g. Django's URLconf import) and 1 s after the last handshake; KB "
        f"per connection = (after - before) / N. RSS after one warm-up connection (opened and closed "
        f"before the N): {warm}. Idle CPU is the server's user + system time over 5 s "
        "with every connection open, from /proc/PID/stat. trio_c10k (its default `--ws-ping-interval "
        "20`), the websockets peer (`ping_interval=20`) and the picows peer (`auto_ping_idle_timeout="
        "20`) send each connection a keep-alive ping every 20 s of silence, which the clients answer; "
        "trio-websocket sends none. Pings answered while the "
        f"connections were open: {pings} (0 means none fell due: from the first handshake to the end "
        "of the echo check took under 20 s, so the idle CPU figure contains no ping round). "
        f"Client CPU is the client processes' own CPU time while opening, summed; they "
        f"ran on the CPU the server is not pinned to (trio_c10k pins itself; the peers are unpinned).",
        "",
        f'Handshakes that failed: {failed}. Connections still open after the idle window: see "held". '
        f"Echo check at the end: {echoed} of {sent} sampled idle connections ({args.verify} per server) "
        "echoed a text message. Warnings, errors and tracebacks in the server logs: "
        f"{sum(r['log_trouble'] for r in runs.values())}.",
    ]
    if probes:
        lines += [
            "",
            "Largest number of connections held at once (`--max-probe`: a fresh server, 3 client "
            "processes opening until the server refuses a connection or a handshake fails or takes "
            "over 5 s; servers' open-file limit "
            f"{next(iter(runs.values()))['fd_limit']}):",
            "",
        ]
        lines += [
            "| server | held at once | opened in | first failures | RSS at most (MB) | echo check |",
            "|---|---:|---:|---|---:|---:|",
        ]
        for name, p in probes.items():
            errors = ", ".join(f"{k} x{v}" for k, v in sorted(p["errors"].items(), key=lambda kv: -kv[1])[:3])
            lines.append(
                f"| {name} | {p['held']:,} | {p['seconds']:.1f} s | {errors or 'none'} "
                f"| {p['rss'] / 1024:.0f} | {p['verify_echoed']}/{p['verify_sent']} |"
            )
        lines += [
            "",
            "trio_c10k's aim: 19,500 (its `--max-connections` defaults to the open-file limit - 100).",
        ]
    else:
        lines += ["", "The largest number held at once (`--max-probe`) was not measured in this run."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10000, help="idle connections per server")
    parser.add_argument("--in-flight", type=int, default=50, help="handshakes outstanding at a time")
    parser.add_argument("--idle", type=float, default=5, help="seconds of idle CPU measurement")
    parser.add_argument("--verify", type=int, default=100, help="idle connections checked with an echo")
    parser.add_argument("--max-probe", action="store_true", help="also find the most connections held")
    parser.add_argument("--only", nargs="*", choices=ECHO_SERVERS, help="servers to run (default: all)")
    parser.add_argument("--no-write", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args()
    prepare(args.connections, ("trio_websocket", "websockets", "picows"), "pip install -e '.[bench]'")
    names = args.only or list(ECHO_SERVERS)
    logdir = Path(tempfile.mkdtemp(prefix="c10k-"))
    started = time.monotonic()
    runs = {}
    for name in names:
        runs[name] = measure(name, args, logdir)
        print(summary_line(name, runs[name]), flush=True)
    probes = {}
    if args.max_probe:
        for name in names:
            probes[name] = p = probe(name, args, logdir)
            print(f"{name:15} max probe: held {p['held']} at once, {p['errors']}", flush=True)
    text = report(runs, probes, args, time.monotonic() - started)
    print("\n" + text)
    if not args.no_write:
        update_results("c10k", text)
        print(f"\nwritten to {RESULTS}; server logs in {logdir}")


if __name__ == "__main__":
    main()
