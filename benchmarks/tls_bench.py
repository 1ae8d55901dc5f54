"""TLS benchmark: ``wss://`` echo, TLS handshakes and idle ``wss://`` connections, trio_c10k
against the ``websockets`` library's server with the same certificate, same run.

    python benchmarks/tls_bench.py [--rounds 3] [--duration 10] [--handshakes 2000]
        [--connections 10000] [--no-write]

One throwaway certificate authority and one certificate for 127.0.0.1 from ``trustme`` (ECDSA
P-256 keys, its default), written as PEM files to a temporary directory and served by both:
trio_c10k serving example_site (``python -m trio_c10k example_site.wsgi --ssl-certfile PEM
--ssl-keyfile PEM --no-access-log``, the echo socket ``/test/echo/``; it pins itself to one CPU)
and benchmarks/peers/websockets_echo.py with the same two options (pinned to the first CPU, as
benchmarks/abuse.py and benchmarks/broadcast_bench.py pin it). Both servers' contexts: TLS 1.2
or newer, ALPN ``http/1.1``, renegotiation refused, session tickets on. The clients offer TLS
1.3 only, check the certificate against the throwaway authority (``SSL_CERT_FILE``, which this
script sets for them) and resume no session: every handshake is a full one (an ECDHE key
exchange, an ECDSA signature). The version and cipher each server agreed to are recorded.

Interleaved rounds (``--rounds``), a fresh server process each time, in this order: trio_c10k
over ``wss://``, websockets over ``wss://``, trio_c10k over plain ``ws://`` (TLS's cost, same run):

A. Echo, as benchmarks/websocket_bench.py measures it (its ``run_clients``): 100 connections
   over 2 client processes, 32-byte text messages, 16 in flight per connection, messages/s over
   ``--duration`` s after 2 s of warm-up; every echo checked byte for byte by
   benchmarks/lib/ws_client.py (TLS through its ``TLSSocket``); server and client CPU.
B. Handshakes: ``--handshakes`` connections opened (TCP, TLS, then the WebSocket upgrade) with
   50 in flight from 2 client processes (benchmarks/lib/client_workers.py), handshakes/s = the
   connections opened / the time to open them all, failures counted with their reason; the
   server's and the clients' CPU over that time. Then they are closed.

C. Then once per TLS server: ``--connections`` idle ``wss://`` connections held by one server
   process, measured as benchmarks/c10k.py measures ``ws://`` (its ``measure``: 2 client
   processes with 50 handshakes in flight, VmRSS before any connection and after the last,
   KB per connection = (after - before) / N, idle CPU over 5 s, an echo on 100 of them; the
   peer unpinned, as there).

Medians of the rounds are reported. Results go to benchmarks/RESULTS.md between the ``tls``
markers (``--no-write``: printed only).

Needs: ``pip install -e '.[bench]'`` (websockets, trustme) and an open-file limit above
``--connections`` / 2 + 100 (the servers inherit this process's limit).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import c10k
import trustme
from lib.client_workers import Clients
from lib.common import (
    RESULTS,
    ROOT,
    client_cpu_for,
    cpu_seconds,
    echo_server_command,
    free_port,
    launch,
    log_trouble,
    prepare,
    stop,
    update_results,
    versions,
    wait_for_port,
)
from lib.ws_client import TLSSocket, client_frame, connect
from websocket_bench import UNSATURATED, run_clients, where

#: (label, server, over TLS): the servers of each round, in their order
VARIANTS = (
    ("trio_c10k", "trio_c10k", True),
    ("websockets", "websockets", True),
    ("trio_c10k ws://", "trio_c10k", False),
)
#: issue 14's targets: wss:// echo msgs/s at least this times websockets'
TARGET_ECHO = 1.5
#: and KB per idle wss:// connection at most this times websockets'
TARGET_KB = 1.2


def certificate(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway authority and a certificate for 127.0.0.1: (certificate chain, key, authority)."""
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    chain, key, authority = directory / "cert.pem", directory / "key.pem", directory / "ca.pem"
    chain.write_bytes(b"".join(pem.bytes() for pem in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(authority))
    return chain, key, authority


def first_connection(url: str) -> str:
    """Open and close one WebSocket connection (the server's one-time costs, paid); the TLS
    version and cipher agreed, or "none"."""
    sock, _rest = connect(url, timeout=10)
    agreed = "none"
    if isinstance(sock, TLSSocket) and (cipher := sock.tls.cipher()):
        agreed = f"{sock.tls.version()}, {cipher[0]}"
    sock.sendall(client_frame(0x8, (1000).to_bytes(2, "big")))
    with contextlib.suppress(OSError):
        sock.recv(4096)  # the close frame echoed
    sock.close()
    return agreed


def handshakes(url: str, args: argparse.Namespace, server_pid: int, cpu: int | None) -> dict[str, Any]:
    """B: open ``--handshakes`` connections, ``--in-flight-handshakes`` at a time from 2
    processes; then close them."""
    clients = Clients(url, 2, args.in_flight_handshakes, 30, False, cpu)
    try:
        half = [args.handshakes // 2 + (i < args.handshakes % 2) for i in range(2)]
        c0 = cpu_seconds(server_pid)
        r = c10k.open_connections(clients, half)
        r["server_cpu"] = (cpu_seconds(server_pid) - c0) / r["seconds"]
    finally:
        clients.close()
    return r


def run_round(
    label: str, name: str, tls: tuple[Path, Path] | None, args: argparse.Namespace, tag: str
) -> dict[str, Any]:
    """A and B on a fresh server process."""
    port = free_port()
    cmd, path = echo_server_command(name, port, tls)
    log = args.logdir / f"{name}-{'wss' if tls else 'ws'}-{tag}.log"
    # trio_c10k pins itself to one CPU (its --pin-cpu default); the peer is pinned likewise
    pin = None if name == "trio_c10k" else min(os.sched_getaffinity(0))
    proc = launch(cmd, log, {"PYTHONPATH": str(ROOT)}, pin)
    url = f"{'wss' if tls else 'ws'}://127.0.0.1:{port}{path}"
    try:
        wait_for_port(port, proc)
        r: dict[str, Any] = {"tls": first_connection(url), "server_cpus": os.sched_getaffinity(proc.pid)}
        cpu = client_cpu_for(proc.pid)
        r["client_cpu_id"] = cpu
        r["echo"] = run_clients(
            "echo",
            url,
            argparse.Namespace(in_flight=16, size=32),  # websocket_bench's defaults
            processes=2,
            connections=args.connections_echo,
            duration=args.duration,
            warmup=args.warmup,
            cpu=cpu,
            server_pid=proc.pid,
        )
        r["handshake"] = handshakes(url, args, proc.pid, cpu)
        if proc.poll() is not None:
            raise SystemExit(f"{label} exited with status {proc.returncode} during the run; see {log}")
    finally:
        stop(proc)
    r["log_trouble"] = log_trouble(log.read_text(errors="replace"))
    return r


def summary_line(label: str, r: dict[str, Any]) -> str:
    e, h = r["echo"], r["handshake"]
    return (
        f"{label:16} echo {e['rate']:7.0f} msg/s (server cpu {e['server_cpu']:.2f}, client {e['cpu']:.2f},"
        f" mismatches {e['mismatches']:.0f}, problems {e['closed'] + e['stalled'] + e['unanswered']:.0f})"
        f"  handshakes {h['rate']:5.0f}/s ({h['opened']} opened, {h['failed']} failed, server cpu"
        f" {h['server_cpu']:.2f}, client {h['client_cpu'] / h['seconds']:.2f})  {r['tls']}"
        f"  log lines {r['log_trouble']}" + (f"  errors {h['errors']}" if h["errors"] else "")
    )


def report(
    runs: dict[str, list[dict[str, Any]]],
    idle: dict[str, dict[str, Any]],
    args: argparse.Namespace,
    seconds: float,
) -> str:
    def med(label: str, part: str, key: str) -> float:
        return statistics.median(r[part][key] for r in runs[label])

    def client_cores(label: str) -> float:
        return statistics.median(
            r["handshake"]["client_cpu"] / r["handshake"]["seconds"] for r in runs[label]
        )

    rows = {
        label: {
            "echo": med(label, "echo", "rate"),
            "s_echo": med(label, "echo", "server_cpu"),
            "c_echo": med(label, "echo", "cpu"),
            "hs": med(label, "handshake", "rate"),
            "s_hs": med(label, "handshake", "server_cpu"),
            "c_hs": client_cores(label),
            "tls": runs[label][0]["tls"],
        }
        for label in runs
    }
    base = rows.get("websockets")

    def ratio(label: str, key: str) -> str:
        return f"{rows[label][key] / base[key]:.2f}x" if base else "-"

    lines = [
        "## TLS: wss:// echo, handshakes, idle connections",
        "",
        f"`python benchmarks/tls_bench.py` - one throwaway certificate for 127.0.0.1 (trustme, ECDSA "
        f"P-256) served by both servers; clients offer TLS 1.3 only and resume no session. Echo: "
        f"{args.connections_echo} connections (2 client processes), 32-byte text messages, 16 in flight "
        f"per connection, {args.duration:g} s after {args.warmup:g} s of warm-up. Handshakes (TCP + TLS + "
        f"WebSocket): {args.handshakes:,} connections, {args.in_flight_handshakes} in flight, 2 client "
        f"processes. Median of {args.rounds} interleaved rounds, a fresh server process each, "
        f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, Python {sys.version.split()[0]}; "
        f"{versions()}. The whole run took {seconds:.0f} s.",
        "",
        "| server | echo msgs/s | server / client CPU (cores) | vs websockets | handshakes/s "
        "| server / client CPU (cores) | vs websockets | TLS agreed |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for label, r in rows.items():
        lines.append(
            f"| {label} | {r['echo']:.0f} | {r['s_echo']:.2f} / {r['c_echo']:.2f} | {ratio(label, 'echo')} "
            f"| {r['hs']:.0f} | {r['s_hs']:.2f} / {r['c_hs']:.2f} | {ratio(label, 'hs')} | {r['tls']} |"
        )
    lines.append("")
    for label, key, unit in (("Echo msgs/s", "echo", "rate"), ("Handshakes/s", "handshake", "rate")):
        per_round = "; ".join(
            f"{lb} " + " / ".join(f"{r[key][unit]:.0f}" for r in rs) for lb, rs in runs.items()
        )
        lines.append(f"{label} per round: {per_round}.")
    if idle:
        lines += [
            "",
            f"Idle `wss://` connections (as `benchmarks/c10k.py` measures them, one server process each, "
            f"the peer unpinned as there): {args.connections:,} opened with 50 handshakes in flight from 2 "
            "client processes, then held; RSS is VmRSS before any connection and 1 s after the last "
            "handshake, KB per connection = (after - before) / N; idle CPU over 5 s; then an echo on 100.",
            "",
            "| server | connections held | time to open | handshakes/s | RSS before / after (MB) "
            "| KB per connection | idle CPU (cores, 5 s) | client CPU (s, opening) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for label, r in idle.items():
            lines.append(
                f"| {label} | {r['held']:,} of {args.connections:,} | {r['seconds']:.1f} s "
                f"| {r['rate']:,.0f} | {r['rss_before'] / 1024:.1f} / {r['rss_after'] / 1024:.1f} "
                f"| {kb(r):.1f} | {r['idle_cpu']:.3f} "
                f"| {r['client_cpu']:.1f} ({r['client_cpu'] / r['seconds']:.2f} cores) |"
            )
    lines.append("")
    targets = []
    if base and "trio_c10k" in rows:
        x = rows["trio_c10k"]["echo"] / base["echo"]
        targets.append(
            f"wss:// echo >= {TARGET_ECHO}x websockets: {x:.2f}x, {'met' if x >= TARGET_ECHO else 'NOT met'}"
        )
    if {"trio_c10k", "websockets"} <= idle.keys():
        ours, theirs = kb(idle["trio_c10k"]), kb(idle["websockets"])
        targets.append(
            f"KB per idle wss:// connection <= {TARGET_KB}x websockets': {ours:.1f} vs {theirs:.1f} KB = "
            f"{ours / theirs:.2f}x, {'met' if ours <= TARGET_KB * theirs else 'NOT met'}"
        )
    if targets:
        lines += ["Targets for trio_c10k: " + "; ".join(targets) + ".", ""]
    if "websockets" in idle:
        lines += [
            "Most of websockets' memory per connection with TLS is asyncio's: its SSL protocol gives each "
            "connection a 256 KiB buffer to decrypt into (`max_size` in asyncio/sslproto.py, Python 3.11+), "
            "so read trio_c10k's figure against its own over ws:// (the C10k section) as well.",
            "",
        ]
    per_handshake = "; ".join(f"{label} {r['s_hs'] / r['hs'] * 1000:.2f} ms" for label, r in rows.items())
    lines += [f"Server CPU per handshake (medians' ratio): {per_handshake}.", ""]
    if {"trio_c10k", "trio_c10k ws://"} <= rows.keys():
        tls_, plain = rows["trio_c10k"], rows["trio_c10k ws://"]
        lines += [
            f"TLS's cost to trio_c10k in this run: echo {tls_['echo']:.0f} msgs/s over wss:// against "
            f"{plain['echo']:.0f} over ws:// ({tls_['echo'] / plain['echo']:.2f}x); handshakes "
            f"{tls_['hs']:.0f}/s against {plain['hs']:.0f}/s ({tls_['hs'] / plain['hs']:.2f}x).",
            "",
        ]
    lines += [
        "Servers: trio_c10k with its defaults but `--ssl-certfile`/`--ssl-keyfile` (`--no-access-log`; "
        "no compression, 1 MiB messages, 16 queued, a ping every 20 s); websockets `serve(compression="
        "None, max_size=2**20, max_queue=16, ping_interval=20, ping_timeout=20, ssl=...)`. Both TLS "
        "contexts: TLS 1.2 or newer, ALPN http/1.1, renegotiation refused, session tickets on (the "
        "clients resume none: every handshake is a full ECDHE + ECDSA one). The clients (raw sockets, "
        "one epoll loop per process; benchmarks/lib/ws_client.py's `TLSSocket`: an SSLObject over "
        "memory BIOs, one read of the kernel then every record decrypted) check the certificate and "
        "every echo byte for byte.",
        "",
        *honesty(runs, idle),
    ]
    return "\n".join(lines)


def kb(r: dict[str, Any]) -> float:
    return (r["rss_after"] - r["rss_before"]) / r["opened"] if r["opened"] else float("nan")


def honesty(runs: dict[str, list[dict[str, Any]]], idle: dict[str, dict[str, Any]]) -> list[str]:
    """What says whether the figures can be trusted: placement, saturation, failures, logs."""
    placement = "; ".join(
        f"{label} {where(rs[0]['server_cpus'])}, its clients on CPU {rs[0]['client_cpu_id']}"
        for label, rs in runs.items()
    )
    unsaturated = [
        f"{label} round {i} ({r['echo']['server_cpu']:.2f})"
        for label, rs in runs.items()
        for i, r in enumerate(rs, 1)
        if r["echo"]["server_cpu"] < UNSATURATED
    ]
    max_echo_client = max(r["echo"]["cpu"] for rs in runs.values() for r in rs)
    max_hs_client = max(
        r["handshake"]["client_cpu"] / r["handshake"]["seconds"] for rs in runs.values() for r in rs
    )
    mismatches = sum(r["echo"]["mismatches"] for rs in runs.values() for r in rs)
    problems = sum(
        r["echo"][k] for rs in runs.values() for r in rs for k in ("closed", "stalled", "unanswered")
    )
    failed = sum(r["handshake"]["failed"] for rs in runs.values() for r in rs) + sum(
        r["failed"] for r in idle.values()
    )
    errors: dict[str, int] = {}
    for r in [x["handshake"] for rs in runs.values() for x in rs] + list(idle.values()):
        for reason, k in r["errors"].items():
            errors[reason] = errors.get(reason, 0) + k
    log_lines = sum(r["log_trouble"] for rs in runs.values() for r in rs) + sum(
        r["log_trouble"] for r in idle.values()
    )
    pings = "; ".join(f"{label} {r['pings']:,}" for label, r in idle.items())
    checked = sum(r["verify_sent"] for r in idle.values())
    echoed = sum(r["verify_echoed"] for r in idle.values())
    return [
        f"CPU placement: {placement}; server CPU from /proc/PID/stat, client CPU the client processes' "
        f"own, over the measured window. Under the echo load the servers used "
        + (
            f"at least {UNSATURATED} core in every round"
            if not unsaturated
            else f"less than {UNSATURATED} core in {', '.join(unsaturated)} (stalled: read the medians)"
        )
        + f"; the clients used at most {max_echo_client:.2f} core of theirs under echo and "
        f"{max_hs_client:.2f} while handshaking"
        + (
            " (near a whole core: the clients may have limited the handshake rate)."
            if max_hs_client >= 0.9
            else "."
        ),
        "",
        f"Echoes that differed from what was sent: {mismatches:.0f}. Echo connections closed early or "
        f"stalled, plus messages never echoed: {problems:.0f}. Failed handshakes (TCP, TLS or "
        f"WebSocket), in all the rounds and the idle runs: {failed}"
        + (f" ({', '.join(f'{k} x{v}' for k, v in errors.items())})" if errors else "")
        + (f". Echo check on idle connections: {echoed} of {checked}" if idle else "")
        + (f"; keep-alive pings they answered: {pings}" if idle else "")
        + f". Warnings, errors and tracebacks in the server logs: {log_lines}.",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per server (A and B)")
    parser.add_argument("--duration", type=float, default=10, help="seconds of echo measurement")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of echo warm-up")
    parser.add_argument("--connections-echo", type=int, default=100, help="echo connections")
    parser.add_argument("--handshakes", type=int, default=2000, help="connections opened per round (B)")
    parser.add_argument("--in-flight-handshakes", type=int, default=50, help="handshakes outstanding (B)")
    parser.add_argument("--connections", type=int, default=10000, help="idle wss:// connections (C; 0: skip)")
    parser.add_argument("--no-write", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args()
    prepare(args.connections, ("websockets", "trustme"), "pip install -e '.[bench]' trustme")
    args.logdir = Path(tempfile.mkdtemp(prefix="tls-bench-"))
    chain, key, authority = certificate(args.logdir)
    os.environ["SSL_CERT_FILE"] = str(authority)  # the clients' trust (benchmarks/lib/ws_client.py)
    tls = (chain, key)
    started = time.monotonic()
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in VARIANTS}
    for round_ in range(1, args.rounds + 1):
        for label, name, over_tls in VARIANTS:
            r = run_round(label, name, tls if over_tls else None, args, f"round{round_}")
            runs[label].append(r)
            print(f"round {round_} {summary_line(label, r)}", flush=True)
    idle: dict[str, dict[str, Any]] = {}
    # c10k.py's defaults, but for the connections
    idle_args = argparse.Namespace(connections=args.connections, in_flight=50, idle=5.0, verify=100)
    if args.connections:
        for label, name, over_tls in VARIANTS:
            if over_tls:
                idle[label] = c10k.measure(name, idle_args, args.logdir, tls)
                print(f"idle  {c10k.summary_line(label, idle[label])}", flush=True)
    text = report(runs, idle, args, time.monotonic() - started)
    print("\n" + text)
    if not args.no_write:
        update_results("tls", text)
        print(f"\nwritten to {RESULTS}; server logs in {args.logdir}")
    else:
        print(f"\nserver logs in {args.logdir}")


if __name__ == "__main__":
    main()
