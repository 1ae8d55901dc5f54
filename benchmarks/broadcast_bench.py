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
benchmarks/lib/client_workers.py, 50 handshakes in flight). Unmeasured broadcasts follow until
one reaches every connection (every member has joined the room). Then ``--rounds`` times: every
client process
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
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lib.broadcast import measure
from lib.common import update_results, versions

SERVERS = ("trio_c10k", "websockets")
#: issue target for trio_c10k with 10,000 members
TARGET_P50 = 0.120


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
    main()
