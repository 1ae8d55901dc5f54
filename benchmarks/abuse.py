"""Hostile clients (issue 12): each attack against trio_c10k and a peer, in the same run.

    python benchmarks/abuse.py [--only row3,row8] [--no-write]

Each attack runs against a fresh server process of trio_c10k (serving
benchmarks/abuse_site.py, a Django site without middleware or database) and against a peer
that shows what a careful server does: gunicorn (one gthread worker, as many threads as
trio_c10k's ``--threads``) for the HTTP rows, the ``websockets`` library for the WebSocket rows
(benchmarks/peers/). The rows are those of the issue's table:

- row1: clients request an 8 MiB download (streamed, ``FileResponse``) or a 20 MB buffered
  response and never read it; more of them than worker threads.
- row3: with compression, one 65 KB frame that inflates to 64 MiB.
- row4: one message in 1 M zero-length continuation frames; a 1 MB message in 2-byte
  fragments; a 4 MB UTF-8 text (1 M four-byte characters) in 4 KB fragments, over a 1 MiB limit.
- row5: with compression, connections each sending 20 messages inflating to 1 MB each to a
  handler that never reads.
- row6: uploads announcing 10 MB, sending 1 MB, then one byte every few seconds.
- row8: one WebSocket sending empty pings as fast as it can.
- row10: a burst of 2,000 x 16 KB messages to a room of 19 members reading as fast as they
  can and 1 that never reads (``Group`` method: ``--broadcast``; the peer: websockets'
  ``broadcast()``).

Reported for each server: its peak RSS (VmHWM, reset before the attack, and VmRSS sampled
every 10 ms, of the process and its children), its growth over the RSS before the attack,
the RSS 1 s after the attack's connections closed, its CPU seconds during the attack
(/proc/PID/stat), the p50/p99 latency of an ordinary client during the attack (one process
per kind: ``GET /hello/`` on a new connection every 50 ms, answered or not, for the HTTP
rows and row 8; 32-byte WebSocket echo round trips on one connection, one after the other,
for the WebSocket rows and row 8; a request without an answer within ``--probe-timeout``
counts as "timeout"), and what the attacker saw (close code, status, messages delivered).
Every attack is bounded in time; a failed attack or a server that dies is reported as such.
The servers are pinned to one CPU, the clients to the other. Results go to the ``abuse``
section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import selectors
import socket
import statistics
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from lib.common import (
    ROOT,
    client_cpu_for,
    cpu_seconds,
    free_port,
    launch,
    memory_kib,
    reset_peak_memory,
    stop,
    update_results,
    versions,
    wait_for_port,
)
from lib.ws_client import connect, frame_header, parse_frames

HERE = Path(__file__).resolve().parent
MiB = 2**20
ROWS = ("row1", "row3", "row4", "row5", "row6", "row8", "row10")
#: how long an attacker waits for the server's answer (a close frame, an echo) after sending
ANSWER_TIMEOUT = 15.0
#: a WebSocket text probe, and the WebSocket ordinary client's pause between two round trips
PROBE_MESSAGE, PROBE_PAUSE = b"x" * 32, 0.02
#: seconds between two requests of the HTTP ordinary client, each sent on time whether the
#: ones before were answered or not (a stalled server then shows as many timeouts, not a few)
HTTP_INTERVAL = 0.05
#: seconds the ordinary clients are measured at least, from the attack's start (one frame is quick)
MIN_WINDOW = 1.0
#: trio_c10k's options besides its defaults: no access log, a 1 s graceful stop
QUICK = ("--no-access-log", "--graceful-timeout", "1")
#: bytes asked per recv() by the attackers' readers
RECV = 262144


# --- servers -------------------------------------------------------------------------------


@dataclass
class Server:
    """A server process started for one attack."""

    name: str
    port: int
    #: the WebSocket path attacked (/echo/, /sink/ or /room/; an echo is at /echo/ as well),
    #: "" for an HTTP-only server
    ws_path: str
    #: whether it answers GET /hello/
    hello: bool = True
    proc: Any = None  # subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{self.ws_path}"


def server_command(name: str, port: int, args: argparse.Namespace, ws: str, compression: bool) -> list[str]:
    """The command line of server ``name``; each stops within 1 s of SIGTERM (the attacks
    leave requests in flight that would hold the default 30 s)."""
    py, bind, threads = sys.executable, f"127.0.0.1:{port}", str(args.threads)
    if name == "trio_c10k":
        compress = ["--ws-compression"] if compression else []
        return [py, "-m", "trio_c10k", "abuse_site", "--bind", bind, "--threads", threads, *QUICK, *compress]
    if name == "gunicorn":
        gthread = ["-w", "1", "-k", "gthread", "--threads", threads, "--graceful-timeout", "1"]
        return [py, "-m", "gunicorn", *gthread, "-b", bind, "abuse_site:application"]
    if name == "websockets" and ws == "room":
        return [py, str(HERE / "peers" / "websockets_broadcast.py"), str(port)]
    if name == "websockets":
        compress = ["--compression"] if compression else []
        return [py, str(HERE / "peers" / "websockets_echo.py"), str(port), "--hello", *compress]
    raise ValueError(name)


@contextmanager
def serving(
    name: str, args: argparse.Namespace, log: Path, *, ws: str = "echo", compression: bool = False
) -> Iterator[Server]:
    """Start ``name`` (trio_c10k, websockets or gunicorn) for one attack; always stopped.

    ``ws``: the WebSocket handler wanted: ``echo``, ``sink`` (never reads) or ``room``.
    """
    port = free_port()
    server = Server(
        name, port, "" if name == "gunicorn" else f"/{ws}/", hello=(name, ws) != ("websockets", "room")
    )
    env = {
        "PYTHONPATH": os.pathsep.join((str(ROOT), str(HERE))),
        "ABUSE_FILE": str(args.download_file),
        "ABUSE_BROADCAST": args.current_broadcast,
    }
    # trio_c10k pins itself to one CPU (its --pin-cpu default); the peers are pinned likewise
    cpu = None if name == "trio_c10k" else args.cpus[0]
    server.proc = launch(server_command(name, port, args, ws, compression), log, env, cpu)
    try:
        wait_for_port(port, server.proc)
        yield server
    finally:
        stop(server.proc, timeout=5)


# --- measurement ---------------------------------------------------------------------------


class MemorySampler(threading.Thread):
    """The largest VmRSS of a server (and its children) seen every 10 ms, in KiB."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak = pid, memory_kib(pid)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.01):
            self.peak = max(self.peak, memory_kib(self.pid))

    def stop(self) -> int:
        self.done.set()
        self.join()
        return self.peak


def http_get(port: int, path: str, timeout: float) -> float | None:
    """Seconds for one ``GET`` on a new connection answered 200 in full, None if not."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
            )
            data = b""
            while True:
                sock.settimeout(max(0.001, deadline - time.monotonic()))
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    return time.monotonic() - t0 if data.startswith(b"HTTP/1.1 200") else None


def ws_round_trip(sock: socket.socket, incoming: Incoming, timeout: float) -> float | None:
    """Seconds for one echo of PROBE_MESSAGE, None past ``timeout`` or if the socket fails."""
    t0 = time.monotonic()
    expected = incoming.messages + 1
    try:
        sock.settimeout(timeout)
        sock.sendall(frame(0x1, PROBE_MESSAGE))
        while incoming.messages < expected:
            sock.settimeout(max(0.001, t0 + timeout - time.monotonic()))
            data = sock.recv(65536)
            if not data or incoming.feed(data) is not None:
                return None
    except OSError:
        return None
    return time.monotonic() - t0


def probe_main(
    kind: str, target: str, port: int, timeout: float, cpu: int | None, ready: Any, stop_: Any, out: Any
) -> None:
    """An ordinary client, in its own process, until told to stop: ``http`` requests sent every
    HTTP_INTERVAL s (each in a thread), ``ws`` round trips one after the other. Sends their
    latencies (None: no answer) through ``out``; ``ready`` is set once one was answered."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    if kind == "http":
        http_get(port, target, timeout)
        ready.set()
        with ThreadPoolExecutor(max_workers=int(timeout / HTTP_INTERVAL) + 8) as pool:
            futures = []
            while not stop_.wait(HTTP_INTERVAL):
                futures.append(pool.submit(http_get, port, target, timeout))
            out.send([future.result() for future in futures])
        return
    latencies: list[float | None] = []
    sock: socket.socket | None = None
    incoming = Incoming()
    while not stop_.is_set():
        if sock is None:
            try:
                sock, rest = connect(target, timeout=timeout)
                incoming = Incoming(rest)
            except OSError:
                latencies.append(None)
                stop_.wait(timeout)
                continue
        latency = ws_round_trip(sock, incoming, timeout)
        latencies.append(latency)
        if latency is None:
            sock.close()
            sock = None
        ready.set()  # after one round trip: the attack starts when this client is at work
        stop_.wait(PROBE_PAUSE)
    out.send(latencies[1:])


@contextmanager
def probes(
    server: Server, kinds: Sequence[str], args: argparse.Namespace
) -> Iterator[dict[str, list[float | None]]]:
    """Run one ordinary client per kind (``http``, ``ws``) in the block; the dict yielded is
    filled with their latencies on exit."""
    ctx = multiprocessing.get_context("spawn")
    stop_ = ctx.Event()
    running = []
    for kind in kinds:
        if (kind == "http" and not server.hello) or (kind == "ws" and not server.ws_path):
            continue
        target = "/hello/" if kind == "http" else f"ws://127.0.0.1:{server.port}/echo/"
        ready, (receiver, sender) = ctx.Event(), ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=probe_main,
            args=(kind, target, server.port, args.probe_timeout, args.client_cpu, ready, stop_, sender),
        )
        proc.start()
        ready.wait(10)
        running.append((kind, proc, receiver))
    results: dict[str, list[float | None]] = {}
    try:
        yield results
    finally:
        stop_.set()
        for kind, proc, receiver in running:
            if receiver.poll(args.probe_timeout + 10):
                results[kind] = receiver.recv()
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()


def percentile(values: Sequence[float | None], q: float) -> float:
    """The nearest-rank percentile; an unanswered request (None) counts as infinitely slow."""
    ordered = sorted(math.inf if v is None else v for v in values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def latency_text(values: Sequence[float | None]) -> str:
    if not values:
        return "-"

    def ms(x: float) -> str:
        return "timeout" if math.isinf(x) else f"{x * 1000:.0f}" if x >= 0.01 else f"{x * 1000:.1f}"

    failed = sum(v is None for v in values)
    return f"{ms(percentile(values, 0.5))} / {ms(percentile(values, 0.99))} ms (n={len(values)}" + (
        f", {failed} unanswered)" if failed else ")"
    )


@dataclass
class Result:
    row: str
    attack: str
    server: str
    outcome: str = "not run"
    before_kib: int = 0
    peak_kib: int = 0
    after_kib: int = 0
    cpu: float = math.nan
    latencies: dict[str, list[float | None]] = field(default_factory=dict)


def attack(
    row: str,
    label: str,
    name: str,
    args: argparse.Namespace,
    run: Callable[[Server], str],
    kinds: Sequence[str],
    **server_options: Any,
) -> Result:
    """Start server ``name``, run ``run(server)`` (the attack, bounded in time, returning its
    outcome) with the ordinary clients ``kinds`` running and the server's memory and CPU
    measured; never raises (a failure is the outcome)."""
    result = Result(row, label, name)
    print(f"{row} {label} against {name}...", end=" ", flush=True)
    try:
        args.runs += 1
        log = args.logdir / f"{args.runs:02}-{row}-{name}.log"
        with serving(name, args, log, **server_options) as server:
            args.client_cpu = client_cpu_for(server.pid)
            if args.client_cpu is not None:  # this process too, while it attacks
                os.sched_setaffinity(0, {args.client_cpu})
            with probes(server, kinds, args) as result.latencies:
                reset = reset_peak_memory(server.pid)
                result.before_kib = memory_kib(server.pid)
                sampler = MemorySampler(server.pid)
                sampler.start()
                cpu0, t0 = cpu_seconds(server.pid), time.monotonic()
                try:
                    result.outcome = run(server)
                except Exception as exc:
                    result.outcome = f"attack failed: {type(exc).__name__}: {exc}"
                time.sleep(max(0.0, t0 + MIN_WINDOW - time.monotonic()))
                result.cpu = cpu_seconds(server.pid) - cpu0
                result.peak_kib = max(sampler.stop(), memory_kib(server.pid, "VmHWM") if reset else 0)
            time.sleep(1)
            result.after_kib = memory_kib(server.pid)
            if server.proc.poll() is not None:
                result.outcome += f"; the server exited with status {server.proc.returncode}"
        result.outcome += log_note(log)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        result.outcome = f"failed: {type(exc).__name__}: {exc}"
    finally:
        os.sched_setaffinity(0, args.cpus)  # the next server starts unpinned
    print(summary(result), flush=True)
    return result


def log_note(log: Path) -> str:
    """The server's warnings and errors (with the first one's text), tracebacks counted."""
    trouble = [
        line
        for line in log.read_text(errors="replace").splitlines()
        if any(f"[{level}]" in line for level in ("WARNING", "ERROR", "CRITICAL"))
        or line.startswith("Traceback")
    ]
    if not trouble:
        return ""
    first = trouble[0].split("]", 1)[-1].strip() if "]" in trouble[0] else trouble[0]
    first = first.rsplit("] ", 1)[-1]  # gunicorn's format: [time] [pid] [LEVEL] text
    return f"; server log: {len(trouble)} warnings or errors, the first: {first[:100]}"


def summary(r: Result) -> str:
    lat = "; ".join(f"{kind} {latency_text(v)}" for kind, v in r.latencies.items())
    return (
        f"peak RSS {r.peak_kib / 1024:.0f} MiB (+{(r.peak_kib - r.before_kib) / 1024:.0f}), "
        f"after {r.after_kib / 1024:.0f} MiB, CPU {r.cpu:.2f} s, {lat or 'no probe'}: {r.outcome}"
    )


# --- WebSocket frames, as an attacker writes them ------------------------------------------


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv1: bool = False) -> bytes:
    """A masked client frame, any size, fragment or not, compressed (RSV1) or not."""
    head = bytearray(frame_header(opcode, len(payload), True))
    head[0] = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    mask = os.urandom(4)
    key = int.from_bytes((mask * (len(payload) // 4 + 1))[: len(payload)], "big")
    masked = (int.from_bytes(payload, "big") ^ key).to_bytes(len(payload), "big")
    return bytes(head) + mask + masked


@cache
def deflated(size: int) -> bytes:
    """``size`` zero bytes as one permessage-deflate message body (RFC 7692 section 7.2.1)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = compressor.compress(bytes(size)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4]  # without the empty block's 00 00 ff ff


class Incoming:
    """What a server sent on one connection: messages (count and bytes), pongs, close code."""

    def __init__(self, data: bytes = b"") -> None:
        self.buf = b""
        self.messages = self.message_bytes = self.partial = self.pongs = 0
        self.close: int | None = None
        self.reason = ""
        #: the connection ended (EOF or error); with ``close`` None, without a close frame
        self.ended = False
        self.feed(data)

    def feed(self, data: bytes) -> int | None:
        """Parse ``data``; returns the close code once a close frame came (1005: none given)."""
        frames, self.buf = parse_frames(self.buf + data if self.buf else data)
        for opcode, fin, payload in frames:
            if opcode in (0x0, 0x1, 0x2):
                self.partial += len(payload)
                if fin:
                    self.messages += 1
                    self.message_bytes, self.partial = self.partial, 0
            elif opcode == 0xA:
                self.pongs += 1
            elif opcode == 0x8 and self.close is None:
                self.close = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self.reason = payload[2:].decode(errors="replace")
        return self.close


def send_and_read(sock: socket.socket, data: bytes, incoming: Incoming, deadline: float) -> tuple[int, bool]:
    """Write ``data`` while reading what comes back, until all is sent, the server closes or
    the deadline; returns (bytes sent, connection ended)."""
    sock.setblocking(False)
    view, sent = memoryview(data), 0
    with selectors.DefaultSelector() as sel:
        sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        while sent < len(data) and incoming.close is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for _, events in sel.select(remaining):
                try:
                    if events & selectors.EVENT_READ:
                        chunk = sock.recv(RECV)
                        if not chunk:
                            return sent, True
                        incoming.feed(chunk)
                    if events & selectors.EVENT_WRITE:
                        sent += sock.send(view[sent : sent + RECV])
                except BlockingIOError:
                    pass
                except OSError:
                    return sent, True
    return sent, False


def wait_answer(sock: socket.socket, incoming: Incoming, messages: int, deadline: float) -> bool:
    """Read until ``messages`` messages came in all, a close frame, the end or the deadline;
    returns whether the connection ended."""
    while incoming.close is None and incoming.messages < messages:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(RECV)
        except TimeoutError:
            return False
        except OSError:
            return True
        if not chunk:
            return True
        incoming.feed(chunk)
    return False


def verdict(incoming: Incoming, ended: bool) -> str:
    if incoming.messages:
        said = f"accepted: echoed {incoming.message_bytes:,} bytes"
    elif incoming.partial:
        said = f"accepted: {incoming.partial:,} bytes of its echo"
    else:
        said = ""
    if incoming.close is not None:
        closed = f"closed {incoming.close}" + (f" ({incoming.reason})" if incoming.reason else "")
        return f"{said}, then {closed}" if said else closed
    if ended:
        return f"{said}, then dropped without a close frame" if said else "dropped without a close frame"
    return said or "no answer"


def one_message(server: Server, data: bytes, extensions: str = "") -> str:
    """Send ``data`` (frames making one message) on a new connection; what came back."""
    sock, rest = connect(server.ws_url(), extensions=extensions)
    with sock:
        incoming = Incoming(rest)
        t0 = time.monotonic()
        sent, ended = send_and_read(sock, data, incoming, t0 + ANSWER_TIMEOUT)
        if not ended:
            ended = wait_answer(sock, incoming, 1, t0 + ANSWER_TIMEOUT)
        outcome = f"{verdict(incoming, ended)} after {time.monotonic() - t0:.1f} s"
        return outcome + (f" ({sent:,} of {len(data):,} bytes sent)" if sent < len(data) else "")


# --- the attacks ---------------------------------------------------------------------------


def stalled_downloads(path: str, clients: int, hold: float) -> Callable[[Server], str]:
    """Row 1: ``clients`` connections request ``path`` and never read; held ``hold`` s."""

    def run(server: Server) -> str:
        socks = []
        try:
            for _ in range(clients):
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window
                sock.settimeout(5)
                socks.append(sock)
                sock.connect(("127.0.0.1", server.port))
                sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
            time.sleep(hold)
            closed = sum(_closed_by_peer(sock) for sock in socks)
            return f"{clients} downloads held unread {hold:g} s; " + (
                f"{closed} closed by the server" if closed else "none closed by the server"
            )
        finally:
            for sock in socks:
                sock.close()

    return run


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether the server closed or reset the connection. What it sent before is read first:
    the kernel reports the end (or the reset) only after the bytes queued ahead of it."""
    sock.setblocking(False)
    try:
        while sock.recv(65536):
            pass
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True


def row1(args: argparse.Namespace) -> list[Result]:
    results = []
    for path, label, clients in (
        ("/stream/", "8 MiB stream", args.stalled),
        ("/file/", "8 MiB FileResponse", args.stalled),
        ("/buffered/", "20 MB buffered", args.threads),
    ):
        for name in ("trio_c10k", "gunicorn"):
            run = stalled_downloads(path, clients, args.hold)
            results.append(attack("row1", f"{label}, {clients} unread", name, args, run, ["http"]))
    return results


def row3(args: argparse.Namespace) -> list[Result]:
    """One compressed frame inflating to 64 MiB, on a connection that agreed to compression."""
    data = frame(0x2, deflated(64 * MiB), rsv1=True)

    def run(server: Server) -> str:
        return f"{len(data):,}-byte frame: " + one_message(server, data, "permessage-deflate")

    return [
        attack("row3", "65 KB -> 64 MiB", name, args, run, ["ws"], compression=True)
        for name in ("trio_c10k", "websockets")
    ]


def row4(args: argparse.Namespace) -> list[Result]:
    """Messages in many fragments, to an echo: zero-length continuations, 2-byte fragments,
    4-byte UTF-8 characters over the limit."""
    zero = frame(0x1, fin=False) + frame(0x0, fin=False) * args.continuations + frame(0x0)
    two = b"ab"
    pieces = 500_000
    small = frame(0x1, two, fin=False) + frame(0x0, two, fin=False) * (pieces - 2) + frame(0x0, two)
    text = "\U0001f600".encode() * 1000  # 4,000 bytes, 1,000 characters
    utf8 = frame(0x1, text, fin=False) + frame(0x0, text, fin=False) * 998 + frame(0x0, text)
    results = []
    for label, data in (
        (f"{args.continuations:,} empty continuations", zero),
        (f"{pieces * 2:,} B in 2-byte fragments", small),
        ("4 MB UTF-8 text (1 M chars) in 4 KB fragments", utf8),
    ):
        for name in ("trio_c10k", "websockets"):
            run = _fixed(one_message, data)
            results.append(attack("row4", label, name, args, run, ["ws"]))
    return results


def _fixed(fn: Callable[[Server, bytes], str], data: bytes) -> Callable[[Server], str]:
    return lambda server: fn(server, data)


def row5(args: argparse.Namespace) -> list[Result]:
    """Connections with compression, each sending messages of 1 MB inflated to a handler that
    never reads them."""
    message = frame(0x2, deflated(1_000_000), rsv1=True)
    count, each = args.inbox_connections, args.inbox_messages

    def run(server: Server) -> str:
        socks = []
        try:
            for _ in range(count):
                sock, _rest = connect(server.ws_url(), extensions="permessage-deflate")
                socks.append(sock)
            deadline = time.monotonic() + ANSWER_TIMEOUT
            ended = sum(send_and_read(sock, message * each, Incoming(), deadline)[1] for sock in socks)
            settle(server.pid, args.settle)  # the server inflates what it reads
            return (
                f"{count} x {each} messages of {len(message):,} B (1 MB inflated) sent; "
                f"{ended} connections closed by the server"
            )
        finally:
            for sock in socks:
                sock.close()

    return [
        attack(
            "row5",
            f"{count} x {each} x 1 MB, never read",
            name,
            args,
            run,
            ["ws"],
            ws="sink",
            compression=True,
        )
        for name in ("trio_c10k", "websockets")
    ]


def settle(pid: int, bound: float) -> None:
    """Wait until the server's RSS stops moving (within 1 MiB over 0.5 s), ``bound`` s at most."""
    deadline, last = time.monotonic() + bound, memory_kib(pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = memory_kib(pid)
        if abs(now - last) < 1024:
            return
        last = now


def slow_uploads(count: int, trickle: float, every: float) -> Callable[[Server], str]:
    """Row 6: ``count`` uploads announce 10 MB, send 1 MB, then 1 byte every ``every`` s for
    ``trickle`` s."""
    head = b"POST /upload/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10000000\r\n\r\n"
    first = head + b"u" * 1_000_000

    def run(server: Server) -> str:
        socks = []
        try:
            for _ in range(count):
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
                sock.setblocking(False)
                socks.append(sock)
            sent = _send_to_all(socks, first, time.monotonic() + ANSWER_TIMEOUT)
            whole = sum(n == len(first) for n in sent)
            end, refused = time.monotonic() + trickle, 0
            while time.monotonic() < end:
                time.sleep(min(every, max(0.0, end - time.monotonic())))
                for sock in socks:
                    try:
                        sock.send(b"u")
                    except OSError:
                        refused += 1
            statuses = _statuses(socks)
            return (
                f"{whole} of {count} sent their first MB; after {trickle:g} s of 1 byte per {every:g} s: "
                + (", ".join(f"{n} x {s}" for s, n in sorted(statuses.items())) or "no answer")
            )
        finally:
            for sock in socks:
                sock.close()

    return run


def _send_to_all(socks: list[socket.socket], data: bytes, deadline: float) -> list[int]:
    """Write ``data`` on every (non-blocking) socket, as far as the server reads before the
    deadline; returns the bytes sent on each."""
    sent = dict.fromkeys(socks, 0)
    with selectors.DefaultSelector() as sel:
        for sock in socks:
            sel.register(sock, selectors.EVENT_WRITE)
        while sel.get_map() and time.monotonic() < deadline:
            for key, _ in sel.select(max(0.0, deadline - time.monotonic())):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    sent[sock] += sock.send(data[sent[sock] : sent[sock] + RECV])
                except BlockingIOError:
                    continue
                except OSError:
                    sent[sock] = -1
                if sent[sock] in (-1, len(data)):
                    sel.unregister(sock)
    return list(sent.values())


def _statuses(socks: list[socket.socket]) -> dict[str, int]:
    """What each connection was answered so far: its status, "reset", "closed" or "open"."""
    found: dict[str, int] = {}
    for sock in socks:
        try:
            data = sock.recv(65536)
            status = data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/") else "closed"
        except BlockingIOError:
            status = "open"
        except OSError:
            status = "reset"
        found[status] = found.get(status, 0) + 1
    return found


def row6(args: argparse.Namespace) -> list[Result]:
    run = slow_uploads(args.uploads, args.trickle, args.trickle_every)
    label = f"{args.uploads} uploads: 1 MB of 10 MB, then 1 B / {args.trickle_every:g} s"
    return [attack("row6", label, name, args, run, ["http"]) for name in ("trio_c10k", "gunicorn")]


def flood_main(url: str, seconds: float, cpu: int | None, out: Any) -> None:
    """Row 8's attacker, in its own process: empty pings as fast as the server takes them
    (its pongs read and dropped), for ``seconds``."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    os.nice(10)  # the ordinary clients share its CPU: they go first when they have work
    batch = memoryview(frame(0x9) * 100_000)
    sock, _rest = connect(url)
    sock.setblocking(False)
    sent = received = 0
    tail, ended = b"", False
    deadline = time.monotonic() + seconds
    with selectors.DefaultSelector() as sel:
        sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        while not ended and time.monotonic() < deadline:
            for _, events in sel.select(max(0.0, deadline - time.monotonic())):
                try:
                    if events & selectors.EVENT_READ:
                        chunk = sock.recv(RECV)
                        ended = not chunk
                        received += len(chunk)
                        tail = (tail + chunk)[-4:]
                    if events & selectors.EVENT_WRITE:
                        sent += sock.send(batch[sent % len(batch) :])
                except BlockingIOError:
                    pass
                except OSError:
                    ended = True
    sock.close()
    # Pongs are not parsed (the client would compete with the probes for its CPU): an empty
    # pong is 2 bytes; a close frame with a code, 4, ends what the server sent.
    close = f", closed {int.from_bytes(tail[2:], 'big')}" if ended and tail[:2] == b"\x88\x02" else ""
    out.send(
        f"{sent // 6:,} pings sent in {seconds:g} s, ~{received // 2:,} pongs back"
        + (close or (", then dropped" if ended else ""))
    )


def row8(args: argparse.Namespace) -> list[Result]:
    def run(server: Server) -> str:
        ctx = multiprocessing.get_context("spawn")
        receiver, sender = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=flood_main, args=(server.ws_url(), args.flood, args.client_cpu, sender))
        proc.start()
        try:
            return receiver.recv() if receiver.poll(args.flood + 30) else "the flood gave no result"
        finally:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()

    return [
        attack("row8", f"ping flood, {args.flood:g} s", name, args, run, ["http", "ws"])
        for name in ("trio_c10k", "websockets")
    ]


def burst_to_room(messages: int, size: int, readers: int, bursts: int) -> Callable[[Server], str]:
    """Row 10, ``bursts`` times (the outcome varies from one to the next): ``readers`` members
    read as fast as they can, one never reads; the first reader sends ``messages`` of ``size``
    bytes at once."""

    def run(server: Server) -> str:
        return "; ".join(
            f"burst {i + 1}: {_one_burst(server, messages, size, readers)}" for i in range(bursts)
        )

    return run


def _one_burst(server: Server, messages: int, size: int, readers: int) -> str:
    stuck, _rest = connect(server.ws_url())  # joins first
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    conns = [connect(server.ws_url()) for _ in range(readers)]
    members = [(sock, Incoming(rest)) for sock, rest in conns]
    try:
        if not _all_get(members, frame(0x2, b"hello"), 1, time.monotonic() + 10)[0]:
            return "the room did not relay a first message to every reader within 10 s"
        one = frame(0x2, b"m" * size)
        t0 = time.monotonic()
        _, sent = _all_get(members, one * messages, messages + 1, t0 + ANSWER_TIMEOUT)
        took = time.monotonic() - t0
        got = sorted(incoming.messages - 1 for _, incoming in members)
        closes = sorted({incoming.close for _, incoming in members if incoming.close is not None})
        closed = sum(incoming.close is not None for _, incoming in members)
        dropped = sum(incoming.ended and incoming.close is None for _, incoming in members)
        return (
            f"{sent // len(one):,} sent in {took:.1f} s; readers: got min {got[0]:,}, median "
            f"{statistics.median(got):,.0f}, closed {closed}"
            + (f" ({', '.join(map(str, closes))})" if closes else "")
            + f", dropped {dropped}; stuck member: {_stuck_member(stuck)}"
        )
    finally:
        stuck.close()
        for sock, _ in members:
            sock.close()


def _all_get(
    members: list[tuple[socket.socket, Incoming]], data: bytes, count: int, deadline: float
) -> tuple[bool, int]:
    """The first member sends ``data``; every member reads until it has ``count`` messages in
    all (or is closed), or the deadline, or 1 s of silence once the sender's connection ended.
    Returns whether all of them have ``count``, and the bytes sent."""
    sender, sender_in = members[0]
    view, sent, last_data = memoryview(data), 0, time.monotonic()
    by_fd = {sock.fileno(): (sock, incoming) for sock, incoming in members}
    with selectors.DefaultSelector() as sel:
        for sock, _ in members:
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if sock is sender else 0))
        waiting = {fd for fd, (_, incoming) in by_fd.items() if incoming.messages < count}
        while waiting and time.monotonic() < deadline:
            if (sender_in.ended or sender_in.close is not None) and time.monotonic() > last_data + 1:
                break
            for key, events in sel.select(min(0.2, max(0.0, deadline - time.monotonic()))):
                sock, incoming = by_fd[key.fd]
                try:
                    if events & selectors.EVENT_WRITE:
                        sent += sock.send(view[sent : sent + RECV])
                        if sent == len(data):
                            sel.modify(sock, selectors.EVENT_READ)
                    if events & selectors.EVENT_READ:
                        chunk = sock.recv(RECV)
                        if chunk:
                            incoming.feed(chunk)
                            last_data = time.monotonic()
                        incoming.ended = not chunk
                        if not chunk or incoming.close is not None or incoming.messages >= count:
                            waiting.discard(key.fd)
                            if not chunk or incoming.close is not None:
                                sel.unregister(sock)
                except BlockingIOError:
                    pass
                except OSError:
                    incoming.ended = True
                    waiting.discard(key.fd)
                    sel.unregister(sock)
    return all(incoming.messages >= count for _, incoming in members), sent


def _stuck_member(sock: socket.socket) -> str:
    """Whether the server closed the member that never read (read what it queued, 2 s at most)."""
    incoming, deadline = Incoming(), time.monotonic() + 2
    ended = wait_answer(sock, incoming, sys.maxsize, deadline)
    if incoming.close is not None:
        return f"closed {incoming.close} after {incoming.messages:,}"
    return f"dropped after {incoming.messages:,}" if ended else f"open, {incoming.messages:,} reached it"


def row10(args: argparse.Namespace) -> list[Result]:
    run = burst_to_room(args.burst, 16 * 1024, args.readers, args.bursts)
    label = f"{args.burst:,} x 16 KB to {args.readers} readers + 1 stuck"
    results = []
    for method in args.broadcast.split(","):
        args.current_broadcast = method
        results.append(
            attack("row10", f"{label} (Group.{method})", "trio_c10k", args, run, ["ws"], ws="room")
        )
    args.current_broadcast = "broadcast"
    results.append(attack("row10", f"{label} (broadcast())", "websockets", args, run, ["ws"], ws="room"))
    return results


# --- the report ----------------------------------------------------------------------------


def report(results: list[Result], args: argparse.Namespace, seconds: float) -> str:
    lines = [
        "## Hostile clients (issue 12)",
        "",
        f"`python benchmarks/abuse.py` - each attack against a fresh server process, trio_c10k and a "
        f"peer in the same run; {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, Python "
        f"{sys.version.split()[0]}; {versions()}, gunicorn {_version('gunicorn')}. The whole run took "
        f"{seconds:.0f} s; the machine's load average (1 min) was {args.load[0]:.1f} at its start and "
        f"{os.getloadavg()[0]:.1f} at its end (other processes' share of the cores).",
        "",
        "| row | attack | server | peak RSS | growth | RSS after | server CPU | ordinary client p50 / p99 "
        "| what the attacker saw |",
        "|---|---|---|---:|---:|---:|---:|---|---|",
    ]
    for r in results:
        lat = "<br>".join(f"{kind}: {latency_text(v)}" for kind, v in r.latencies.items()) or "-"
        lines.append(
            f"| {r.row[3:]} | {r.attack} | {r.server} | {r.peak_kib / 1024:.0f} MiB "
            f"| +{(r.peak_kib - r.before_kib) / 1024:.0f} MiB | {r.after_kib / 1024:.0f} MiB "
            f"| {r.cpu:.2f} s | {lat} | {r.outcome} |"
        )
    notes = [
        "Peak RSS: the largest of VmHWM (reset before the attack through /proc/PID/clear_refs) and",
        "VmRSS sampled every 10 ms, of the server and its children; growth: over the RSS just before",
        "the attack; RSS after: 1 s after the attack's connections closed. Server CPU: user + system",
        "seconds during the attack. Ordinary client: `http` is `GET /hello/` on a new connection, one",
        f"sent every {HTTP_INTERVAL * 1000:.0f} ms whether the ones before were answered or not; `ws` a",
        f"{len(PROBE_MESSAGE)}-byte echo round trip on one connection, one after the other; an answer",
        f'missing after {args.probe_timeout:g} s is counted as "timeout" (and the percentile reads so',
        "when it falls there).",
        "Servers: trio_c10k serving benchmarks/abuse_site.py (Django, no middleware) with its defaults",
        f"(`--threads {args.threads}`, and `--ws-compression` for rows 3 and 5); gunicorn",
        f"`-w 1 -k gthread --threads {args.threads}` serving the same site; the `websockets` library's",
        "asyncio server (benchmarks/peers/: `max_size=2**20, max_queue=16`, its default",
        "permessage-deflate for rows 3 and 5, its `broadcast()` for row 10).",
        f"Row 1's clients ask for a 4 KiB receive buffer and read nothing for {args.hold:g} s, past both",
        "servers' 30 s limits (trio_c10k's `--send-timeout`, gunicorn's `--timeout`); with more",
        "stalled streams than threads, the second wave takes the threads the first one freed.",
        "Row 5's messages are 1 MB of zeros deflated to",
        f"~1 KB each, sent on {args.inbox_connections} connections, the attack lasting until the",
        "server's RSS stopped moving. Row 10: the members join, one message reaches every reader, then",
        "the first reader sends the burst as fast as the server reads it while every reader reads as",
        "fast as it can (one epoll loop); the member that never reads asked for a 4 KiB receive buffer",
        f"and is read for 2 s after the burst (the messages that reached it). {args.bursts} bursts, new",
        'members for each: the outcome varies from one to the next. "Dropped": the connection ended',
        "without a close frame.",
        "trio_c10k's room (abuse_site.py) relays with the `Group` method named in the attack",
        "(`--broadcast`; one that returns an awaitable is awaited).",
    ]
    lines += ["", " ".join(notes)]
    return "\n".join(lines)


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "(not installed)"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--only", default=",".join(ROWS), help="comma-separated rows to run")
    parser.add_argument("--no-write", action="store_true", help="do not write RESULTS.md")
    parser.add_argument("--threads", type=int, default=10, help="worker threads of trio_c10k and gunicorn")
    parser.add_argument(
        "--probe-timeout", type=float, default=2.0, help="seconds before a probe is a timeout"
    )
    parser.add_argument("--stalled", type=int, default=20, help="row 1: clients not reading a download")
    parser.add_argument(
        "--hold", type=float, default=35.0, help="row 1: seconds the downloads stay unread (past 30 s)"
    )
    parser.add_argument("--continuations", type=int, default=1_000_000, help="row 4: empty fragments")
    parser.add_argument("--inbox-connections", type=int, default=50, help="row 5: connections")
    parser.add_argument("--inbox-messages", type=int, default=20, help="row 5: messages per connection")
    parser.add_argument(
        "--settle", type=float, default=20.0, help="row 5: seconds at most for the server's memory to settle"
    )
    parser.add_argument("--uploads", type=int, default=100, help="row 6: slow uploads")
    parser.add_argument("--trickle", type=float, default=10.0, help="row 6: seconds of trickling")
    parser.add_argument("--trickle-every", type=float, default=2.0, help="row 6: seconds between two bytes")
    parser.add_argument("--flood", type=float, default=8.0, help="row 8: seconds of ping flood")
    parser.add_argument("--burst", type=int, default=2000, help="row 10: messages of 16 KB")
    parser.add_argument("--readers", type=int, default=19, help="row 10: members reading")
    parser.add_argument("--bursts", type=int, default=3, help="row 10: bursts, new members for each")
    parser.add_argument(
        "--broadcast",
        default="broadcast,send_message",
        help="row 10: comma-separated Group methods relaying the room's messages, each measured "
        "(an awaitable one is awaited)",
    )
    args = parser.parse_args()
    rows = args.only.split(",")
    if unknown := set(rows) - set(ROWS):
        parser.error(f"unknown rows: {', '.join(sorted(unknown))}")
    args.logdir = Path(tempfile.mkdtemp(prefix="abuse-"))
    args.download_file = args.logdir / "download.bin"
    args.download_file.write_bytes(b"f" * 8 * MiB)
    args.current_broadcast = "broadcast"
    args.client_cpu, args.runs = None, 0
    args.cpus = sorted(os.sched_getaffinity(0))
    started, args.load = time.monotonic(), os.getloadavg()
    results = [r for row in rows for r in globals()[row](args)]
    text = report(results, args, time.monotonic() - started)
    print("\n" + text)
    if not args.no_write:
        update_results("abuse", text)
        print(f"\nwritten to benchmarks/RESULTS.md; server logs in {args.logdir}")


if __name__ == "__main__":
    main()
