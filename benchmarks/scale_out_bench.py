"""Scale-out benchmark: 30,000 members over two worker processes joined by Redis, one broadcast.

    python benchmarks/scale_out_bench.py [--members 30000] [--rounds 20] [--no-write]

Two measurements of benchmarks/broadcast_bench.py's kind (the chat room of example_site, raw
socket clients, the time until the **last** member has the message), in the same run:

1. ``python -m trio_c10k example_site.wsgi --workers 2 --broker redis://...`` (a
   ``redis-server`` this script starts on a free port, without persistence) and ``--members``
   connections, more than one process can hold here (about 19,900, its open-file limit), from
   3 client processes. A message sent on one connection reaches the members of the other
   worker through Redis.
2. One process, no broker, and half as many members, for comparison.

On this 2-core machine the two workers, Redis and the clients share the cores: the first
measurement has no CPU to itself, which the report says. Results go to the ``scale-out``
section of benchmarks/RESULTS.md. Needs ``redis-server`` (``apt-get install redis-server``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lib.broadcast import measure
from lib.common import free_port, update_results, versions


def start_redis(logdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    executable = shutil.which("redis-server")
    if executable is None:
        raise SystemExit("redis-server is not installed: apt-get install redis-server")
    port = free_port()
    proc = subprocess.Popen(
        [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=logdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port)):
                return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"redis-server did not start on port {port}") from None
            time.sleep(0.05)


def row(label: str, members: int, r: dict[str, Any]) -> str:
    return (
        f"| {label} | {members:,} | {r['p50'] * 1000:.0f} ms | {r['p99'] * 1000:.0f} ms "
        f"| {r['max'] * 1000:.0f} ms | {r['first_p50'] * 1000:.1f} ms | {r['server_cpu'] * 1000:.0f} ms "
        f"| {r['missing']} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=30000, help="connections over the two workers")
    parser.add_argument("--rounds", type=int, default=20, help="broadcasts timed per setup")
    parser.add_argument("--no-write", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args()
    logdir = Path(tempfile.mkdtemp(prefix="scale-out-"))
    started = time.monotonic()
    redis, url = start_redis(logdir)
    try:
        workers = measure(
            "trio_c10k", args.members, args.rounds, logdir, ["--workers", "2", "--broker", url], 3
        )
    finally:
        redis.send_signal(signal.SIGTERM)
        redis.wait(timeout=10)
    single = measure("trio_c10k", args.members // 2, args.rounds, logdir)
    ratio = workers["p50"] / single["p50"]
    lines = [
        "## Scale-out: two worker processes and Redis",
        "",
        f"`python benchmarks/scale_out_bench.py` - one chat room, {args.rounds} broadcasts per setup, "
        f"the time until the last member has the message; {time.strftime('%Y-%m-%d')}, "
        f"{os.cpu_count()} cores, Python {sys.version.split()[0]}; {versions()}. The whole run took "
        f"{time.monotonic() - started:.0f} s.",
        "",
        "| setup | members | until the last: p50 | p99 | max | until the first | server CPU per broadcast "
        "| messages missing |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        row("`--workers 2 --broker redis://...`", args.members, workers),
        row("one process, no broker", args.members // 2, single),
        "",
        f"Two workers reach {args.members:,} members (more than one process holds here, about 19,900) "
        f"with a p50 {ratio:.2f}x that of one process reaching half as many. The sender's worker "
        "writes to its own members and publishes to Redis; the other worker writes to its members "
        "when Redis delivers. Server CPU is both workers' (and the supervisor's) user + system time "
        "per broadcast. On this 2-core machine the two workers, redis-server and the 3 client "
        "processes share the cores (each worker pins itself to one, the clients run beside them), "
        "so the first figure includes that contention; the second setup has a core for the server "
        "and one for the clients.",
        "",
        "Every round, sorted (ms): two workers "
        + " ".join(f"{x * 1000:.0f}" for x in workers["rounds"])
        + "; one process "
        + " ".join(f"{x * 1000:.0f}" for x in single["rounds"])
        + f". Median client CPU per round: {statistics.median([workers['client_cpu']]) * 1000:.0f} ms "
        f"and {single['client_cpu'] * 1000:.0f} ms. Warnings, errors and tracebacks in the server "
        f"logs: {workers['log_trouble'] + single['log_trouble']}.",
    ]
    text = "\n".join(lines)
    print("\n" + text)
    if not args.no_write:
        update_results("scale-out", text)
        print(f"\nwritten to benchmarks/RESULTS.md; server logs in {logdir}")


if __name__ == "__main__":
    main()
