"""HTTP benchmark: wrk against a Django hello view, served by five servers in the same run.

    python benchmarks/http_bench.py [--duration 10] [--rounds 3] [--connections 50]

Each server is one process serving example_site (default middleware, DEBUG off) on a free
port: trio_c10k with its defaults (and again with --no-pin-cpu, to show what pinning is
worth), gunicorn with one sync worker, granian (Rust) with one WSGI worker (``granian
--interface wsgi --workers 1``, its defaults otherwise), gunicorn with one gthread
worker (8 threads), and uvicorn serving the ASGI application of the same project. wrk (one
thread, keep-alive, 50 connections) measures req/s and p99 latency; rounds are interleaved
so that drift of the machine hits every server alike, and the median round is reported.
The server's CPU use (from /proc, its worker processes included) is recorded too, and
wrk's own (it runs on the other CPU: near a whole core, wrk set the rate). Results go to
benchmarks/RESULTS.md.

Needs: wrk (Debian package ``wrk``), and ``pip install -e '.[bench]'`` (gunicorn, granian,
uvicorn).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time

from lib.common import RESULTS, ROOT, cpu_seconds, free_port, stop, update_results, versions, wait_for_port

URL_PATH = "/hello/"


def servers(port: int) -> dict[str, list[str]]:
    py = sys.executable
    bind = f"127.0.0.1:{port}"
    return {
        "trio_c10k": [py, "-m", "trio_c10k", "example_site.wsgi", "--bind", bind],
        "trio_c10k-no-pin": [py, "-m", "trio_c10k", "example_site.wsgi", "--bind", bind, "--no-pin-cpu"],
        "gunicorn-sync": [py, "-m", "gunicorn", "-w", "1", "-k", "sync", "-b", bind, "example_site.wsgi"],
        "granian": [
            *(py, "-m", "granian", "--interface", "wsgi", "--workers", "1"),
            *("--host", "127.0.0.1", "--port", str(port), "example_site.wsgi:application"),
        ],
        "gunicorn-gthread": [
            *(py, "-m", "gunicorn", "-w", "1", "-k", "gthread", "--threads", "8"),
            *("-b", bind, "example_site.wsgi"),
        ],
        "uvicorn": [
            *(py, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port)),
            "example_site.asgi:application",
        ],
    }


def parse_wrk(output: str) -> dict[str, float]:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", output)
    if not rps or not p99:
        raise SystemExit(f"cannot parse wrk output:\n{output}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99[2]]
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return {
        "rps": float(rps[1]),
        "p99_ms": float(p99[1]) * scale,
        "bad": float(errors[1]) if errors else 0.0,
        "sock_errors": float(sum(int(x) for x in sock.groups())) if sock else 0.0,
    }


def children_cpu() -> float:
    """User + system CPU of this process's children that have exited (wrk, once it has)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_one(name: str, duration: float, connections: int) -> dict[str, float]:
    port = free_port()
    cmd = servers(port)[name]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc)
        url = f"http://127.0.0.1:{port}{URL_PATH}"
        wrk = ["wrk", "-t1", f"-c{connections}", "--latency"]
        subprocess.run([*wrk, "-d2s", url], check=True, capture_output=True)  # warm-up
        cpu0, wrk0 = cpu_seconds(proc.pid), children_cpu()
        out = subprocess.run([*wrk, f"-d{duration:g}s", url], check=True, capture_output=True, text=True)
        result = parse_wrk(out.stdout)
        result["cpu"] = (cpu_seconds(proc.pid) - cpu0) / duration
        result["wrk_cpu"] = (children_cpu() - wrk0) / duration
        return result
    finally:
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per server")
    parser.add_argument("--connections", type=int, default=50, help="wrk keep-alive connections")
    parser.add_argument("--only", nargs="*", help="servers to run (default: all)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    for module in ("gunicorn", "granian", "uvicorn"):
        if subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode:
            raise SystemExit(f"{module} is not installed: pip install -e '.[bench]'")
    names = args.only or list(servers(0))
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for round_ in range(args.rounds):
        for name in names:
            result = run_one(name, args.duration, args.connections)
            runs[name].append(result)
            print(
                f"round {round_ + 1} {name:17} {result['rps']:8.0f} req/s  p99 {result['p99_ms']:7.1f} ms"
                f"  cpu {result['cpu']:.2f}  wrk cpu {result['wrk_cpu']:.2f}  non-2xx {result['bad']:.0f}"
                f"  socket errors {result['sock_errors']:.0f}",
                flush=True,
            )
    med = {name: _median_run(results) for name, results in runs.items()}
    base = med.get("gunicorn-sync")
    granian = med.get("granian")
    lines = [
        "## HTTP: Django hello view, wrk keep-alive",
        "",
        f"`python benchmarks/http_bench.py` - wrk -t1 -c{args.connections}, {args.duration:g} s per run, "
        f"median of {args.rounds} interleaved rounds, one server process each, "
        f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, Python {sys.version.split()[0]}; "
        f"{versions(('trio-c10k', 'Django', 'gunicorn', 'granian', 'uvicorn'))}.",
        "",
        "| server | req/s | p99 ms | server CPU (cores) | wrk CPU (cores) | req/s vs gunicorn-sync "
        "| p99 vs gunicorn-sync | req/s vs granian |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in med.items():
        ratio = f"{r['rps'] / base['rps']:.2f}x" if base else "-"
        p99_ratio = f"{r['p99_ms'] / base['p99_ms']:.2f}x" if base else "-"
        vs_granian = f"{r['rps'] / granian['rps']:.2f}x" if granian else "-"
        lines.append(
            f"| {name} | {r['rps']:.0f} | {r['p99_ms']:.1f} | {r['cpu']:.2f} | {r['wrk_cpu']:.2f} "
            f"| {ratio} | {p99_ratio} | {vs_granian} |"
        )
    ours = med.get("trio_c10k")
    if ours and base and granian:
        vs_g, vs_s = ours["rps"] / granian["rps"], ours["rps"] / base["rps"]
        lines += [
            "",
            f"Targets for trio_c10k (req/s): >= 1.0x granian: {vs_g:.2f}x, "
            f"{'met' if vs_g >= 1 else 'NOT met'}; "
            f">= 1.2x gunicorn-sync: {vs_s:.2f}x, {'met' if vs_s >= 1.2 else 'NOT met'}.",
        ]
    per_round = "; ".join(f"{name} " + " / ".join(f"{r['rps']:.0f}" for r in rs) for name, rs in runs.items())
    lines += [
        "",
        f"req/s per round: {per_round}.",
        "",
        "granian is `granian --interface wsgi --workers 1` with its defaults otherwise (a Rust HTTP "
        "server, Django in its blocking threads). Server CPU includes a server's worker processes; "
        "wrk's CPU is its own user + system time over the measured run (one thread: near 1.00, wrk "
        "would be the limit). trio_c10k pins itself to one CPU; the other servers and wrk are unpinned.",
        "",
        "trio_c10k-no-pin is trio_c10k with --no-pin-cpu: the kernel then spreads the event loop and",
        "the worker threads over both cores, and every GIL hand-off crosses cores",
        "(see docs/performance.md).",
    ]
    if any(r["bad"] or r["sock_errors"] for rs in runs.values() for r in rs):
        lines += ["", "Some runs had non-2xx answers or socket errors; see the console output."]
    print("\n".join(lines))
    update_results("http", "\n".join(lines))
    print(f"\nwritten to {RESULTS}")


def _median_run(results: list[dict[str, float]]) -> dict[str, float]:
    rps = statistics.median(r["rps"] for r in results)
    return min(results, key=lambda r: abs(r["rps"] - rps))


if __name__ == "__main__":
    main()
