"""Game of Life benchmark: one WebSocket client per cell, the server relaying every state.

    python benchmarks/gameoflife_bench.py [--size 100] [--steps 20] [--pattern glider] [--no-write]

1. The server: ``python -m trio_c10k example_site.wsgi --no-access-log`` on a free port, one
   process (it pins itself to one CPU; this process and the command run on another).
2. A watcher on ``/watcher/``: a raw socket in a thread of this process (standard library only,
   it answers the server's keep-alive pings), which timestamps the moment each step is
   complete, that is when it has the state of every cell at that step.
3. ``manage.py gameoflife -s SIZE -l 0 -n STEPS``: SIZE x SIZE clients in one process, on a
   torus. Each step is SIZE² states in and, on a torus of 3 x 3 or more, 9 x SIZE² out (8
   neighbours and the watcher).
4. Sustained steps/s = STEPS / (time step STEPS was complete - time step 0 was complete), as the
   watcher saw it: connecting and subscribing are left out. The CPU time of the server and of
   the command (/proc) is taken at the same two moments. The command's own steps/s (from its
   first state sent to its last) is recorded beside it.
5. Checks: the watcher received the state of every cell at every step exactly once, and its
   number of live cells at the last step is the command's.

Results go to the ``gameoflife`` section of benchmarks/RESULTS.md (not with ``--no-write``).
Needs an open-file limit above SIZE² + 100 (10,100 at the default size).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from lib.common import (
    RESULTS,
    ROOT,
    client_cpu_for,
    cpu_seconds,
    example_site_database,
    free_port,
    log_trouble,
    stop,
    update_results,
    versions,
    wait_for_port,
)
from lib.ws_client import client_frame, connect, parse_frames

#: the target of the demo: steps per second with 10,000 cells
TARGET_STEPS_PER_S, TARGET_SIZE = 1.0, 100
#: seconds the watcher waits for more states once the command has exited
DRAIN_TIMEOUT = 30.0
_OPCODE_TEXT, _OPCODE_CLOSE, _OPCODE_PING = 0x1, 0x8, 0x9


class Watcher(threading.Thread):
    """A watch page's socket, without the page: counts every state, timestamps complete steps."""

    def __init__(self, port: int, size: int, steps: int) -> None:
        super().__init__(name="watcher", daemon=True)
        self.size, self.steps = size, steps
        #: processes whose CPU time is read when step 0 and the last step are complete
        self.pids: dict[str, int] = {}
        #: received[step]: one flag per cell, 1 once its state arrived
        self.received = [bytearray(size * size) for _ in range(steps + 1)]
        #: states received for each step, duplicates counted apart, and live cells per step
        self.count = [0] * (steps + 1)
        self.live = [0] * (steps + 1)
        self.duplicates = 0
        self.unexpected: list[str] = []
        #: step -> (monotonic time, {name: CPU seconds}) when its last state arrived
        self.complete: dict[int, tuple[float, dict[str, float]]] = {}
        #: the close frame's code, if the server closed the watcher
        self.closed_with: int | None = None
        self._stopping = threading.Event()
        # The server says "size N" at once: it may come with the 101, in ``_early``.
        self._sock, self._early = connect(f"ws://127.0.0.1:{port}/watcher/")

    def run(self) -> None:
        buf = self._frames(self._early)
        self._sock.settimeout(0.5)
        with self._sock:
            while not self._done():
                try:
                    data = self._sock.recv(262144)
                except TimeoutError:
                    continue
                if not data:
                    self.closed_with = 1006
                    break
                buf = self._frames(buf + data)

    def _done(self) -> bool:
        """Every step complete, the socket closed, or told to stop."""
        return len(self.complete) > self.steps or self.closed_with is not None or self._stopping.is_set()

    def stop(self) -> None:
        self._stopping.set()

    def _frames(self, buf: bytes) -> bytes:
        """Handle the whole frames at the start of ``buf``; return the rest."""
        frames, rest = parse_frames(buf)
        for opcode, _fin, payload in frames:
            if opcode == _OPCODE_TEXT:
                self._message(payload.decode())
            elif opcode == _OPCODE_PING:
                self._sock.sendall(client_frame(0xA, payload))
            elif opcode == _OPCODE_CLOSE:
                self.closed_with = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                break
        return rest

    def _message(self, text: str) -> None:
        if text.startswith("size "):
            return  # the size it had, then the command's reset
        try:
            row, col, step, alive = map(int, text.split())
            flags = self.received[step]
        except (ValueError, IndexError):
            self.unexpected.append(text)
            return
        if not (0 <= row < self.size and 0 <= col < self.size and alive in (0, 1)):
            self.unexpected.append(text)
            return
        index = row * self.size + col
        if flags[index]:
            self.duplicates += 1
            return
        flags[index] = 1
        self.count[step] += 1
        self.live[step] += alive
        if self.count[step] == self.size * self.size:
            self.complete[step] = (
                time.monotonic(),
                {name: cpu_seconds(pid) for name, pid in self.pids.items()},
            )


def start_server(log: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "trio_c10k",
        "example_site.wsgi",
        "--no-access-log",
        "--bind",
        f"127.0.0.1:{port}",
    ]
    database = example_site_database(log.parent)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            # A fresh database for the grid size /reset/ stores.
            env={
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "EXAMPLE_SITE_DB": str(database),
            },
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, proc)
        _wait_pinned(proc.pid)
    except BaseException:
        stop(proc)
        raise
    return proc, port


def _wait_pinned(pid: int, timeout: float = 5) -> None:
    """Wait until the server has pinned itself to one CPU (it does so just after it listens)."""
    deadline = time.monotonic() + timeout
    while len(os.sched_getaffinity(pid)) > 1 and time.monotonic() < deadline:
        time.sleep(0.05)


def relayed_per_step(size: int) -> int:
    """States relayed to cells at each step on a torus: each to every distinct neighbour."""
    offsets = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0)]
    return sum(
        len({((r + dr) % size, (c + dc) % size) for dr, dc in offsets})
        for r in range(size)
        for c in range(size)
    )


def options(args: argparse.Namespace) -> list[str]:
    """The command's options, as given to it and as the report shows them."""
    return ["-s", str(args.size), "-l", "0", "-n", str(args.steps), "-p", args.pattern]


def summary_value(output: str, label: str) -> float:
    """A number from the command's summary, e.g. ``steps/s: 1.23``."""
    match = re.search(rf"^{re.escape(label)}: ([0-9.]+)", output, re.MULTILINE)
    if match is None:
        raise SystemExit(f"no {label!r} in the command's summary:\n{output}")
    return float(match[1])


def measure(args: argparse.Namespace, logdir: Path) -> dict[str, Any]:
    """One run: server, watcher, command; the watcher's timings and checks, the command's summary."""
    server, port = start_server(logdir / "server.log")
    try:
        cpu = client_cpu_for(server.pid)
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})  # this process, its watcher thread and the command
        watcher = Watcher(port, args.size, args.steps)
        command = subprocess.Popen(
            [sys.executable, "manage.py", "gameoflife", "--url", f"http://127.0.0.1:{port}", *options(args)],
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        watcher.pids = {"server": server.pid, "command": command.pid}
        watcher.start()
        try:
            out, err = command.communicate(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            command.kill()
            command.wait()
            raise SystemExit(f"the command took over {args.timeout:g} s") from None
        finally:
            watcher.join(DRAIN_TIMEOUT if command.returncode == 0 else 0)
            watcher.stop()
            watcher.join()
        if command.returncode != 0:
            raise SystemExit(f"the command failed (status {command.returncode}):\n{out}{err}")
    finally:
        stop(server)
    return results(args, watcher, out, logdir / "server.log", cpu)


def results(
    args: argparse.Namespace, watcher: Watcher, out: str, log: Path, cpu: int | None
) -> dict[str, Any]:
    """The figures of a run, from the watcher and the command's summary."""
    cells = args.size * args.size
    r: dict[str, Any] = {
        "cells": cells,
        "received": sum(watcher.count),
        "expected": cells * (args.steps + 1),
        "duplicates": watcher.duplicates,
        "unexpected": len(watcher.unexpected),
        "closed_with": watcher.closed_with,
        "watcher_live": watcher.live[args.steps],
        "command_live": int(summary_value(out, f"live cells at step {args.steps}")),
        "command_rate": summary_value(out, "steps/s"),
        "connect": summary_value(out, "time to connect all"),
        "subscribe": summary_value(out, "time to subscribe all"),
        "relayed_per_step": relayed_per_step(args.size) + cells,  # and one to the watcher
        "log_trouble": log_trouble(log.read_text(errors="replace")),
        "client_cpu_id": cpu,
    }
    r["every_state"] = r["received"] == r["expected"] and not r["duplicates"] and not r["unexpected"]
    if 0 in watcher.complete and args.steps in watcher.complete and args.steps > 0:
        (t0, cpu0), (t1, cpu1) = watcher.complete[0], watcher.complete[args.steps]
        r["seconds"] = t1 - t0
        r["rate"] = args.steps / r["seconds"]
        r["server_cpu"] = (cpu1["server"] - cpu0["server"]) / r["seconds"]
        r["command_cpu"] = (cpu1["command"] - cpu0["command"]) / r["seconds"]
    return r


def report(r: dict[str, Any], args: argparse.Namespace, seconds: float) -> str:
    if "rate" not in r:
        raise SystemExit(f"the watcher did not see step 0 and step {args.steps} complete: {r}")
    lines = [
        "## Game of Life: one WebSocket client per cell",
        "",
        f"`python benchmarks/gameoflife_bench.py` - `manage.py gameoflife {' '.join(options(args))}` "
        f"(a torus): {r['cells']:,} cells, each a WebSocket client, as trio tasks of the "
        f"command's one process, against one trio_c10k server process (example_site, `--no-access-log`, "
        f"pinned to one CPU; the command and the watcher on CPU {r['client_cpu_id']}), "
        f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, Python {sys.version.split()[0]}; "
        f"{versions()}. The whole run took {seconds:.0f} s.",
        "",
        "| cells | steps | sustained steps/s | states in/s | relayed out/s | server CPU (cores) "
        "| command CPU (cores) | watcher got every state |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
        f"| {r['cells']:,} | {args.steps} | {r['rate']:.2f} | {r['cells'] * r['rate']:,.0f} "
        f"| {r['relayed_per_step'] * r['rate']:,.0f} | {r['server_cpu']:.2f} | {r['command_cpu']:.2f} "
        f"| {'yes' if r['every_state'] else 'NO'} ({r['received']:,} of {r['expected']:,}) |",
        "",
    ]
    if args.size == TARGET_SIZE:
        met = "met" if r["rate"] >= TARGET_STEPS_PER_S else "NOT met"
        lines += [f"Target: >= {TARGET_STEPS_PER_S:g} step/s with {TARGET_SIZE**2:,} cells: {met}.", ""]
    lines += [
        f"Sustained steps/s: {args.steps} steps over the {r['seconds']:.2f} s between the moments the "
        f"watcher had the state of every cell at step 0 and at step {args.steps}, so connecting "
        f"({r['connect']:.1f} s) and subscribing ({r['subscribe']:.1f} s) are left out; the command counts "
        f"{r['command_rate']:.2f} steps/s from its first state sent to its last. Each step is one state in "
        f"per cell and {r['relayed_per_step']:,} out (to every distinct neighbour and to the watcher). "
        "Server and command CPU: user + system time from /proc/PID/stat over the same window, in cores.",
        "",
        f"Checks: states the watcher received twice {r['duplicates']}, malformed {r['unexpected']}, "
        f"closed by the server {r['closed_with'] or 'no'}; live cells at step {args.steps}: "
        f"{r['watcher_live']} seen by the watcher, {r['command_live']} counted by the command. Warnings, "
        f"errors and tracebacks in the server log: {r['log_trouble']}.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=TARGET_SIZE, help="cells on a side (100)")
    parser.add_argument("--steps", type=int, default=20, help="steps after the initial state (20)")
    parser.add_argument("--pattern", default="glider", help="the command's --pattern (glider)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds the command may take (900)")
    parser.add_argument("--no-write", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args()
    if args.steps < 1:
        raise SystemExit("--steps must be at least 1")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the server and the command inherit it
    if args.size * args.size + 100 > hard:
        raise SystemExit(f"{args.size}² cells need an open-file limit over {args.size * args.size + 100}")
    logdir = Path(tempfile.mkdtemp(prefix="gameoflife-"))
    started = time.monotonic()
    r = measure(args, logdir)
    text = report(r, args, time.monotonic() - started)
    print(text)
    if not args.no_write:
        update_results("gameoflife", text)
        print(f"\nwritten to {RESULTS}; server log in {logdir}")


if __name__ == "__main__":
    main()
