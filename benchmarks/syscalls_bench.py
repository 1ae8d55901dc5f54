"""Socket calls against descriptor calls: what a write or a read costs on a TCP socket.

    python benchmarks/syscalls_bench.py [--rounds 7] [--iterations 20000]

On one connected, non-blocking TCP socket pair on 127.0.0.1, in this one process, times
``os.write`` against ``socket.send`` for a small frame (40 bytes, a WebSocket message's size),
and ``os.read`` against ``socket.recv`` and ``socket.recv_into`` for a 40-byte frame waiting, a
64 KiB read with 64 KiB waiting, and a read with nothing waiting (the BlockingIOError every
reader meets). The server writes and reads with ``os.write``/``os.read`` on POSIX
(``trio_c10k/_sockets.py``); this measures what that choice is worth. Each round runs every
call in turn (alternating, so a busy machine weighs on all alike); the table gives the median
over the rounds of the nanoseconds per call (the clock's own cost, measured the same way,
taken off). Results go to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import sys
import time
from collections.abc import Callable

from lib.common import RESULTS, update_results

FRAME = b"\x81\x26" + b"x" * 38  # a 40-byte server-to-client text frame
BIG = 65536


def socket_pair() -> tuple[socket.socket, socket.socket]:
    """A connected TCP pair on 127.0.0.1, both ends non-blocking, with room for 64 KiB."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        a = socket.create_connection(listener.getsockname())
        b, _ = listener.accept()
    for s in (a, b):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * BIG)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * BIG)
        s.setblocking(False)
    return a, b


def drain(sock: socket.socket) -> None:
    while True:
        try:
            if not sock.recv(1 << 20):
                return
        except BlockingIOError:
            return


def wait_readable(sock: socket.socket, size: int) -> None:
    """Until ``size`` bytes wait in ``sock`` (loopback delivers at once, but not atomically)."""
    deadline = time.monotonic() + 5
    while len(sock.recv(size, socket.MSG_PEEK)) < size:
        if time.monotonic() > deadline:
            raise SystemExit("the bytes written did not arrive")


def write_ns(write: Callable[[bytes], int], reader: socket.socket, n: int) -> float:
    """ns per small write, in batches of 200 (the reader drained between them, untimed)."""
    total = 0
    for _ in range(n // 200):
        started = time.perf_counter_ns()
        for _ in range(200):
            write(FRAME)
        total += time.perf_counter_ns() - started
        drain(reader)
    return total / (n // 200 * 200)


def read_ns(
    read: Callable[[], object], writer: socket.socket, reader: socket.socket, size: int, n: int
) -> float:
    """ns per read of ``size`` bytes waiting (0: nothing waiting), timed call by call."""
    payload = FRAME if size == len(FRAME) else b"y" * size
    clock = time.perf_counter_ns
    total = 0
    for _ in range(n):
        if size:
            writer.sendall(payload) if size > len(FRAME) else writer.send(payload)
            wait_readable(reader, size)
        started = clock()
        try:  # noqa: SIM105 (contextlib.suppress would weigh on the time)
            read()
        except BlockingIOError:
            pass
        total += clock() - started
    return total / n


def clock_ns(n: int) -> float:
    clock = time.perf_counter_ns
    total = 0
    for _ in range(n):
        started = clock()
        total += clock() - started
    return total / n


def measure(rounds: int, n: int) -> dict[str, list[float]]:
    a, b = socket_pair()
    fa, fb = a.fileno(), b.fileno()
    buffer = bytearray(BIG)
    cases: dict[str, Callable[[], float]] = {
        "write 40 B: os.write": lambda: write_ns(lambda d: os.write(fa, d), b, n),
        "write 40 B: socket.send": lambda: write_ns(a.send, b, n),
        "read 40 B: os.read": lambda: read_ns(lambda: os.read(fb, BIG), a, b, len(FRAME), n),
        "read 40 B: socket.recv": lambda: read_ns(lambda: b.recv(BIG), a, b, len(FRAME), n),
        "read 40 B: socket.recv_into": lambda: read_ns(lambda: b.recv_into(buffer), a, b, len(FRAME), n),
        "read 64 KiB: os.read": lambda: read_ns(lambda: os.read(fb, BIG), a, b, BIG, n // 10),
        "read 64 KiB: socket.recv": lambda: read_ns(lambda: b.recv(BIG), a, b, BIG, n // 10),
        "read 64 KiB: socket.recv_into": lambda: read_ns(lambda: b.recv_into(buffer), a, b, BIG, n // 10),
        "read, nothing waiting: os.read": lambda: read_ns(lambda: os.read(fb, BIG), a, b, 0, n),
        "read, nothing waiting: socket.recv": lambda: read_ns(lambda: b.recv(BIG), a, b, 0, n),
        "read, nothing waiting: socket.recv_into": lambda: read_ns(lambda: b.recv_into(buffer), a, b, 0, n),
    }
    results: dict[str, list[float]] = {name: [] for name in cases}
    try:
        for _ in range(rounds):
            overhead = clock_ns(n)
            for name, case in cases.items():
                took = case()
                # The batched writes time the clock once per 200 calls: nothing to take off.
                results[name].append(took if name.startswith("write") else took - overhead)
    finally:
        a.close()
        b.close()
    return results


def report(results: dict[str, list[float]], rounds: int, n: int) -> str:
    lines = [
        "## Socket calls against descriptor calls (benchmarks/syscalls_bench.py)",
        "",
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}; one TCP pair on "
        f"127.0.0.1, non-blocking; {n} calls per round ({n // 10} for 64 KiB), median of {rounds} rounds.",
        "",
        "| call | ns per call | min | max |",
        "|---|---:|---:|---:|",
    ]
    for name, values in results.items():
        lines.append(f"| {name} | {statistics.median(values):.0f} | {min(values):.0f} | {max(values):.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=20000, help="calls per case per round")
    parser.add_argument("--no-write", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args()
    if os.name != "posix":
        sys.exit("os.read/os.write on a socket need POSIX (on Windows a socket is not a file descriptor)")
    text = report(measure(args.rounds, args.iterations), args.rounds, args.iterations)
    print(text)
    if not args.no_write:
        update_results("syscalls", text)
        print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
