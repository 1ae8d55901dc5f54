"""The raw-socket client processes that open and hold thousands of WebSocket connections.

    python -m lib.client_workers ws://127.0.0.1:PORT/PATH --in-flight 25 --timeout 30

``Worker`` is one such process (standard library only): raw non-blocking sockets in one
``epoll`` loop, one precomputed handshake request, each answer read up to its blank line, its
status line and ``Sec-WebSocket-Accept`` checked; for a ``wss://`` URL the TLS handshake comes
first (benchmarks/lib/ws_client.py's ``TLSSocket``: TLS 1.3, the certificate checked against
``SSL_CERT_FILE``), a failure counted with its reason. It keeps ``--in-flight`` handshakes
outstanding, answers the servers' keep-alive pings, notices closes, and obeys one command per
line on stdin (``open N T0``, ``count``, ``verify N [ping TIMEOUT]``, ``close``, and those a subclass adds),
answering each with one JSON line. ``Clients`` starts and drives such processes, from the
benchmarks/ directory as ``python -m MODULE`` (this module, or one defining a subclass and
calling ``worker_main``: benchmarks/lib/broadcast.py). Used by benchmarks/c10k.py and
benchmarks/broadcast_bench.py.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import errno
import hashlib
import json
import os
import resource
import select
import socket
import ssl
import subprocess
import sys
import time
from typing import Any

from .common import BENCHMARKS
from .ws_client import GUID, TLSSocket, client_context, client_frame

#: seconds between two looks for handshakes past ``--timeout``
TIMEOUT_CHECK = 0.5
#: Linux's socket option (include/uapi/linux/in.h); the socket module names it from Python 3.12
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


class Conn:
    __slots__ = ("buf", "expect", "sock", "started", "state")

    def __init__(self, sock: socket.socket) -> None:
        self.sock: socket.socket | TLSSocket = sock
        self.state = "connecting"  # (-> "tls") -> "handshake" -> "open" -> "closed"
        self.buf = b""
        self.started = time.monotonic()
        self.expect: bytes | None = None  # the echo awaited by "verify"


class Worker:
    """One client process: opens connections, keeps them open, answers pings, obeys stdin."""

    def __init__(self, url: str, in_flight: int, timeout: float, stop_on_failure: bool) -> None:
        scheme, _, rest = url.partition("://")
        host_port, _, path = rest.partition("/")
        host, _, port = host_port.partition(":")
        self.addr = (host, int(port or (443 if scheme == "wss" else 80)))
        self.context = client_context() if scheme == "wss" else None
        key = base64.b64encode(os.urandom(16))
        self.accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        self.request = (
            f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.in_flight = in_flight
        self.timeout = timeout
        self.stop_on_failure = stop_on_failure
        self.ep = select.epoll()
        self.conns: dict[int, Conn] = {}
        self.pending = 0
        self.opened = 0
        self.open_times: list[float] = []
        self.failed = 0
        self.errors: dict[str, int] = {}
        self.closed_by_server = 0
        self.pings = 0
        self.verified = 0
        self.stdin = b""
        self.ep.register(0, select.EPOLLIN)
        #: the local addresses to connect from, in turn (empty: the kernel's choice)
        self.sources: list[str] = []
        #: connections launched so far (which source the next one uses)
        self.launched = 0

    # connection life

    def launch(self) -> bool:
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError as exc:
            self.fail(None, f"client socket(): {errno.errorcode.get(exc.errno or 0, exc)}")
            return False
        sock.setblocking(False)
        if self.sources:
            # The kernel looks for a free ephemeral port of one source address in half of
            # net.ipv4.ip_local_port_range first (about 14,000 ports here); its search slows
            # sharply as that half fills: with bind() alone, 18,000 connections from one address
            # fell from 1,400 handshakes/s to 150/s past 14,000; leaving the port to connect()
            # (IP_BIND_ADDRESS_NO_PORT), still to 360-800/s, while 2,000 more from a fresh address
            # at 16,000 held went as fast as the first 2,000. So each address holds few (see
            # ``spread_sources``), and the last tenth of a run measures the server.
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((self.sources[self.launched % len(self.sources)], 0))
            self.launched += 1
        err = sock.connect_ex(self.addr)
        conn = Conn(sock)
        self.conns[sock.fileno()] = conn
        self.pending += 1
        if err not in (0, errno.EINPROGRESS):
            self.fail(conn, f"connect: {errno.errorcode.get(err, err)}")
            return False
        self.ep.register(sock.fileno(), select.EPOLLOUT)
        return True

    def fail(self, conn: Conn | None, reason: str) -> None:
        self.failed += 1
        self.errors[reason] = self.errors.get(reason, 0) + 1
        if conn is not None:
            self.pending -= 1
            self.drop(conn)

    def drop(self, conn: Conn) -> None:
        conn.state = "closed"
        fd = conn.sock.fileno()
        self.conns.pop(fd, None)
        with contextlib.suppress(OSError, ValueError):
            self.ep.unregister(fd)
        conn.sock.close()

    def on_event(self, fd: int, events: int) -> None:
        conn = self.conns.get(fd)
        if conn is None:
            return
        if conn.state == "connecting":
            assert isinstance(conn.sock, socket.socket)
            err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.fail(conn, f"connect: {errno.errorcode.get(err, err)}")
                return
            self.ep.modify(fd, select.EPOLLIN)
            if self.context is not None:
                conn.sock = TLSSocket(conn.sock, self.context, self.addr[0])
                conn.state = "tls"
        if conn.state == "tls":
            assert isinstance(conn.sock, TLSSocket)
            try:
                if not conn.sock.do_handshake():
                    return
            except (ssl.SSLError, OSError) as exc:  # OSError: ConnectionError among them
                self.fail(conn, f"TLS handshake: {getattr(exc, 'reason', None) or exc}")
                return
        if conn.state in ("connecting", "tls"):
            try:
                conn.sock.send(self.request)  # ~200 bytes into an empty buffer: sent whole
            except OSError as exc:
                self.fail(conn, f"send: {errno.errorcode.get(exc.errno or 0, exc)}")
                return
            conn.state = "handshake"
            return
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as exc:
            data = b""
            reason = errno.errorcode.get(exc.errno or 0, str(exc))
        else:
            reason = "EOF"
        if conn.state == "handshake":
            if not data:
                self.fail(conn, f"{reason} before the answer's end of headers")
                return
            conn.buf += data
            if b"\r\n\r\n" not in conn.buf:
                if len(conn.buf) > 65536:
                    self.fail(conn, "answer headers over 64 KiB")
                return
            head, _, rest = conn.buf.partition(b"\r\n\r\n")
            status = head.split(b"\r\n", 1)[0]
            if not status.startswith(b"HTTP/1.1 101"):
                self.fail(conn, "answered " + status.decode("latin-1")[:60])
                return
            if self.accept not in head:
                self.fail(conn, "wrong or missing Sec-WebSocket-Accept")
                return
            conn.state = "open"
            conn.buf = rest
            self.pending -= 1
            self.opened += 1
            self.open_times.append(time.monotonic())
            if rest:
                self.frames(conn)
            return
        if not data:
            self.closed_by_server += 1
            self.drop(conn)
            return
        conn.buf += data
        self.frames(conn)

    def frames(self, conn: Conn) -> None:
        """Handle the server's (unmasked) frames: pings answered, closes noted, echoes checked."""
        buf = conn.buf
        while len(buf) >= 2:
            opcode, length, start = buf[0] & 0x0F, buf[1] & 0x7F, 2
            if length == 126:
                if len(buf) < 4:
                    break
                length, start = int.from_bytes(buf[2:4], "big"), 4
            elif length == 127:
                if len(buf) < 10:
                    break
                length, start = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < start + length:
                break
            payload, buf = buf[start : start + length], buf[start + length :]
            if opcode == 0x9:
                self.pings += 1
                conn.sock.send(client_frame(0xA, payload))
            elif opcode == 0xA:
                if conn.expect is not None and payload == conn.expect:  # "verify N ping"
                    self.verified += 1
                    conn.expect = None
            elif opcode == 0x8:
                self.closed_by_server += 1
                self.drop(conn)
                return
            elif opcode == 0x1:
                self.on_text(conn, payload)
        conn.buf = buf

    def on_text(self, conn: Conn, payload: bytes) -> None:
        """A text message from the server: here, the echo ``verify`` waits for."""
        if conn.expect is not None:
            if payload == conn.expect:
                self.verified += 1
            conn.expect = None

    # the loop and the parent's commands

    def poll(self, timeout: float) -> list[str]:
        """Handle socket events for up to ``timeout`` s; return complete command lines from stdin."""
        lines: list[str] = []
        for fd, events in self.ep.poll(timeout, 1024):
            if fd == 0:
                chunk = os.read(0, 4096)
                if not chunk:
                    raise SystemExit(0)  # the parent went away
                self.stdin += chunk
                *done, self.stdin = self.stdin.split(b"\n")
                lines += [line.decode() for line in done]
            else:
                self.on_event(fd, events)
        return lines

    def open_all(self, count: int, t0: float) -> dict[str, Any]:
        time.sleep(max(0.0, t0 - time.monotonic()))
        cpu0 = time.process_time()
        launched = 0
        stopped = False
        next_check = time.monotonic() + TIMEOUT_CHECK
        while True:
            while not stopped and launched < count and self.pending < self.in_flight:
                launched += 1
                if not self.launch() and self.stop_on_failure:
                    stopped = True
            if self.pending == 0 and (stopped or launched >= count):
                break
            self.poll(0.05)
            if self.failed and self.stop_on_failure:
                stopped = True
            now = time.monotonic()
            if now >= next_check:
                # Every connection is looked at: not after each poll, whose cost would then
                # grow with the connections held (20,000 make that a millisecond a poll).
                next_check = now + TIMEOUT_CHECK
                for conn in [c for c in self.conns.values() if c.state != "open"]:
                    if now - conn.started > self.timeout:
                        self.fail(conn, f"no complete answer within {self.timeout:g} s")
        return {
            "opened": self.opened,
            "failed": self.failed,
            "errors": self.errors,
            "t_end": time.monotonic(),
            "open_times": self.open_times,
            "cpu": time.process_time() - cpu0,
        }

    def verify(self, count: int, ping: bool = False, timeout: float = 10) -> dict[str, Any]:
        """Send a text message (or, with ``ping``, a ping) on ``count`` open connections spread
        evenly (all of them if there are no more), and count the echoes (the pongs) that come
        within ``timeout`` s."""
        conns = [c for c in self.conns.values() if c.state == "open"]
        sample = conns[:: max(1, len(conns) // count)][:count] if count else []
        before = self.verified
        started = time.monotonic()
        for i, conn in enumerate(sample):
            conn.expect = f"c10k check {i} {os.getpid()}".encode()
            conn.sock.send(client_frame(0x9 if ping else 0x1, conn.expect))
        deadline = time.monotonic() + timeout
        while any(c.expect is not None and c.state == "open" for c in sample) and time.monotonic() < deadline:
            self.poll(0.05)
        return {"sent": len(sample), "echoed": self.verified - before, "seconds": time.monotonic() - started}

    def close_all(self) -> None:
        goodbye = client_frame(0x8, (1000).to_bytes(2, "big"))
        for conn in list(self.conns.values()):
            if conn.state == "open":
                with contextlib.suppress(OSError):
                    conn.sock.send(goodbye)
            self.drop(conn)

    def serve(self) -> None:
        reply(self, {"ready": True})
        while True:
            for line in self.poll(1.0):
                cmd, *rest = line.split()
                if cmd == "open":
                    reply(self, self.open_all(int(rest[0]), float(rest[1])))
                elif cmd == "count":
                    reply(self, {"open": self.opened - self.closed_by_server, "pings": self.pings})
                elif cmd == "verify":  # verify N [ping TIMEOUT]
                    ping = rest[1:2] == ["ping"]
                    reply(self, self.verify(int(rest[0]), ping, float(rest[2]) if ping else 10))
                elif cmd == "close":
                    self.close_all()
                    reply(self, {"closed": True})
                    return
                else:
                    reply(self, self.command(cmd, rest))

    def command(self, cmd: str, args: list[str]) -> dict[str, Any]:
        """A command a subclass adds (benchmarks/broadcast_bench.py)."""
        raise SystemExit(f"unknown command {cmd!r}")


def reply(_worker: Worker, obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def worker_main(argv: list[str], worker_class: type[Worker] = Worker) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--in-flight", type=int, required=True)
    parser.add_argument("--timeout", type=float, required=True)
    parser.add_argument("--stop-on-failure", action="store_true")
    parser.add_argument("--cpu", type=int)
    parser.add_argument("--source", help="local addresses to connect from, in turn (127.0.0.x,...)")
    args = parser.parse_args(argv)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    worker = worker_class(args.url, args.in_flight, args.timeout, args.stop_on_failure)
    worker.sources = args.source.split(",") if args.source else []
    worker.serve()


def spread_sources(processes: int, per_process: int = 4) -> list[str]:
    """``--source`` values for ``processes`` client processes: ``per_process`` addresses of
    127.0.0.0/8 each, none shared (4 x 8 processes: 127.0.0.2 to 127.0.0.33), so that no address
    holds more than a few thousand connections of a 100,000 run (see ``Worker.launch``)."""
    return [
        ",".join(f"127.0.0.{2 + process * per_process + i}" for i in range(per_process))
        for process in range(processes)
    ]


class Clients:
    """The client worker processes of one measurement, driven line by line."""

    def __init__(
        self,
        url: str,
        processes: int,
        in_flight: int,
        timeout: float,
        stop: bool,
        cpu: int | None,
        module: str = "lib.client_workers",
        sources: list[str] | None = None,
    ):
        cmd = [sys.executable, "-m", module, url, "--timeout", str(timeout)]
        if stop:
            cmd.append("--stop-on-failure")
        if cpu is not None:
            cmd += ["--cpu", str(cpu)]
        split = [in_flight // processes + (i < in_flight % processes) for i in range(processes)]
        froms = [["--source", source] for source in sources] if sources else [[] for _ in split]
        self.procs = [
            subprocess.Popen(
                [*cmd, "--in-flight", str(max(1, k)), *source],
                cwd=BENCHMARKS,  # where ``-m lib...`` finds the package
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for k, source in zip(split, froms, strict=True)
        ]
        self.ask_all(None)  # "ready"

    def ask_all(
        self, commands: list[str] | str | None, procs: list[subprocess.Popen[str]] | None = None
    ) -> list[dict[str, Any]]:
        """Send each process its command ("" or None: none) and read one answer from each."""
        procs = self.procs if procs is None else procs
        if isinstance(commands, str) or commands is None:
            commands = [commands or ""] * len(procs)
        for proc, command in zip(procs, commands, strict=True):
            if command:
                assert proc.stdin is not None
                proc.stdin.write(command + "\n")
                proc.stdin.flush()
        answers = []
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line:
                raise SystemExit(f"a client worker died (status {proc.wait()})")
            answers.append(json.loads(line))
        return answers

    def close(self) -> None:
        try:
            self.ask_all("close")
        finally:
            for proc in self.procs:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


if __name__ == "__main__":
    worker_main(sys.argv[1:])
