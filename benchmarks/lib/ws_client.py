"""The raw-socket WebSocket client: the load client of benchmarks/websocket_bench.py, and the
frames and handshake (``client_frame``, ``frame_header``, ``parse_frames``, ``connect``) the
other benchmarks use.

    python benchmarks/lib/ws_client.py echo ws://127.0.0.1:PORT/PATH --connections 50 --in-flight 16
    python benchmarks/lib/ws_client.py pingpong ws://127.0.0.1:PORT/PATH
    SSL_CERT_FILE=ca.pem python benchmarks/lib/ws_client.py echo wss://127.0.0.1:PORT/PATH

``echo``: every connection keeps ``--in-flight`` text messages outstanding and sends a new
one for each echo received (one ``epoll`` loop for all connections). ``pingpong``: one
blocking connection, one message at a time.

Why raw sockets and not a WebSocket library: the client must cost far less per message than
the servers it loads, and every message is known in advance. Each connection cycles through
256 distinct messages whose masked frames (a random mask per frame) and expected echo frames
are built once, so sending k messages is one slice of a precomputed byte string and one
``send``, and checking the echoes of a whole ``recv`` is one byte-string comparison. Only
when that comparison fails (a server ping, a fragmented or wrong echo) are frames parsed one
by one; a wrong echo is counted as a mismatch and never stops the run.

``wss://`` URLs: TLS 1.3 only, the server's certificate checked against the system's
authorities or the PEM file ``SSL_CERT_FILE`` names (OpenSSL's variable:
benchmarks/tls_bench.py points it at its throwaway authority, for this client and for
benchmarks/lib/client_workers.py). ``TLSSocket`` stands in for the socket: an ``SSLObject``
over memory BIOs, so that one ``recv`` of the kernel brings every record that arrived and they
are decrypted in one go (a non-blocking ``SSLSocket`` reads one record per call, in two reads
of the kernel), and each ``send`` is encrypted as one record. The echo loop is the same for
both.

Talks to the parent over stdin/stdout: prints ``ready`` once every connection is open, reads
``go T0 T1`` (``time.monotonic()`` values: the clock is system-wide), starts sending, counts
the echoes and its own CPU time between T0 and T1, prints one JSON line and exits.
Only the standard library: it starts fast and imports nothing from the project.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import select
import socket
import ssl
import sys
import time
from urllib.parse import urlsplit

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: distinct messages per connection, cycled; at least the number in flight
CYCLE = 256
#: bytes asked of the kernel per read, as the servers ask. Not more: CPython allocates the
#: whole size for every ``recv`` and a 256 KiB one costs about 20 us more (mmap and page faults),
#: which a server answering each frame with its own write (picows) multiplied into the
#: clients' CPU
RECV_SIZE = 65536
#: the most plaintext one TLS record carries (RFC 8446 section 5.1)
TLS_RECORD = 16384


def frame_header(opcode: int, length: int, masked: bool) -> bytes:
    mask_bit = 0x80 if masked else 0
    if length < 126:
        return bytes([0x80 | opcode, mask_bit | length])
    if length < 65536:
        return bytes([0x80 | opcode, mask_bit | 126]) + length.to_bytes(2, "big")
    return bytes([0x80 | opcode, mask_bit | 127]) + length.to_bytes(8, "big")


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked frame, as a client must send it (RFC 6455 section 5.3)."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return frame_header(opcode, len(payload), True) + mask + masked


def payloads(tag: str, size: int) -> list[bytes]:
    """CYCLE distinct ASCII messages of exactly ``size`` bytes, unique to this connection."""
    out = []
    for i in range(CYCLE):
        head = f"{tag}:{i}:".encode()
        out.append((head + b"abcdefghijklmnopqrstuvwxyz" * (size // 26 + 1))[:size])
    return out


def parse_frames(buf: bytes) -> tuple[list[tuple[int, bool, bytes]], bytes]:
    """Split server frames (unmasked) off ``buf``: ``[(opcode, fin, payload)]``, rest."""
    frames = []
    pos, end = 0, len(buf)
    while end - pos >= 2:
        b0, b1 = buf[pos], buf[pos + 1]
        length, head = b1 & 0x7F, 2
        if length == 126:
            if end - pos < 4:
                break
            length, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
        elif length == 127:
            if end - pos < 10:
                break
            length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
        mask = b""
        if b1 & 0x80:  # servers must not mask; unmask anyway, so that it counts as a mismatch only
            mask, head = buf[pos + head : pos + head + 4], head + 4
        if end - pos < head + length:
            break
        payload = buf[pos + head : pos + head + length]
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        frames.append((b0 & 0x0F, bool(b0 & 0x80), payload))
        pos += head + length
    return frames, buf[pos:]


def client_context() -> ssl.SSLContext:
    """The clients' TLS context: TLS 1.3 only, certificates checked (see the module's docstring)."""
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


class TLSSocket:
    """A TCP socket speaking TLS, with the socket methods the clients use (see the module's
    docstring). ``recv`` returns the plaintext of every record the kernel had, b"" at the end
    of the stream, and raises ``BlockingIOError`` (non-blocking) when no plaintext came;
    ``send`` encrypts all it is given and returns its length, waiting for the socket to drain
    if the kernel's buffer is full (the benchmarks' writes are small: it does not happen)."""

    __slots__ = ("incoming", "outgoing", "raw", "tls")

    def __init__(self, raw: socket.socket, context: ssl.SSLContext, hostname: str) -> None:
        self.raw = raw
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname=hostname)

    def do_handshake(self) -> bool:
        """Advance the TLS handshake with what has arrived: True once it is complete, False if
        a non-blocking socket has nothing more to read yet (call again when it is readable).

        Raises:
            ssl.SSLError: the handshake failed (the certificate, the version).
            ConnectionError: the server closed the connection during it.
        """
        while True:
            try:
                self.tls.do_handshake()
            except ssl.SSLWantReadError:
                self._send_out()
                try:
                    data = self.raw.recv(RECV_SIZE)
                except BlockingIOError:
                    return False
                if not data:
                    raise ConnectionError("closed during the TLS handshake") from None
                self.incoming.write(data)
                continue
            self._send_out()
            return True

    def recv(self, size: int) -> bytes:
        while True:
            data = self.raw.recv(size)
            if not data:
                return b""
            self.incoming.write(data)
            chunks = []
            read = self.tls.read
            try:
                while chunk := read(TLS_RECORD):
                    chunks.append(chunk)
                return b"".join(chunks)  # b"": the server's close_notify
            except ssl.SSLWantReadError:
                pass
            if chunks:
                return b"".join(chunks) if len(chunks) > 1 else chunks[0]
            # Only records without plaintext (TLS 1.3 session tickets): read on.

    def send(self, data: bytes) -> int:
        self.tls.write(data)
        self._send_out()
        return len(data)

    sendall = send

    def _send_out(self) -> None:
        out = self.outgoing.read()
        while out:
            try:
                out = out[self.raw.send(out) :]
            except BlockingIOError:
                select.select([], [self.raw], [], 10)

    def fileno(self) -> int:
        return self.raw.fileno()

    def setblocking(self, flag: bool) -> None:
        self.raw.setblocking(flag)

    def settimeout(self, value: float | None) -> None:
        self.raw.settimeout(value)

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> TLSSocket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.raw.close()


def connect(url: str, timeout: float = 20, extensions: str = "") -> tuple[socket.socket | TLSSocket, bytes]:
    """Open a WebSocket connection offering ``extensions`` (none by default; the server must
    agree to them); returns the socket (a ``TLSSocket`` for ``wss://``) and the bytes received
    after the 101 answer."""
    parts = urlsplit(url)
    tls = parts.scheme == "wss"
    host, port = parts.hostname or "127.0.0.1", parts.port or (443 if tls else 80)
    raw = socket.create_connection((host, port), timeout=timeout)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock: socket.socket | TLSSocket = raw
    if tls:
        sock = TLSSocket(raw, client_context(), host)
        sock.do_handshake()
    key = base64.b64encode(os.urandom(16))
    sock.sendall(
        b"GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n"
        % (
            (parts.path or "/").encode(),
            host.encode(),
            port,
            key,
            b"Sec-WebSocket-Extensions: %s\r\n" % extensions.encode() if extensions else b"",
        )
    )
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"{url}: connection closed during the handshake: {data!r}")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    if lines[0].split()[1:2] != ["101"]:
        raise ConnectionError(f"{url}: handshake refused: {head!r}")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
    if headers.get("sec-websocket-accept") != accept:
        raise ConnectionError(f"{url}: wrong Sec-WebSocket-Accept: {head!r}")
    agreed = headers.get("sec-websocket-extensions", "")
    if agreed.split(";")[0].strip() != extensions.split(";")[0].strip():
        raise ConnectionError(f"{url}: the server agreed to {agreed!r}, offered {extensions!r}: {head!r}")
    return sock, rest


class Conn:
    """One echo connection: its precomputed streams and its counters."""

    __slots__ = (
        *("buf", "expect", "expect_size", "fd", "frag", "frame_size"),
        *("out", "payloads", "recvd", "sent", "sock", "stream"),
    )

    def __init__(self, sock: socket.socket | TLSSocket, rest: bytes, tag: str, size: int) -> None:
        self.sock, self.fd, self.buf = sock, sock.fileno(), rest
        self.payloads = payloads(tag, size)
        frames = [client_frame(0x1, p) for p in self.payloads]
        echoes = [frame_header(0x1, size, False) + p for p in self.payloads]
        # Doubled, so that any run of up to CYCLE frames starting anywhere is one slice.
        self.stream, self.frame_size = b"".join(frames) * 2, len(frames[0])
        self.expect, self.expect_size = b"".join(echoes) * 2, len(echoes[0])
        self.sent = self.recvd = 0
        self.out = b""
        self.frag: list[bytes] = []


class Stats:
    __slots__ = ("closed", "mismatches", "pings")

    def __init__(self) -> None:
        self.mismatches = self.pings = self.closed = 0


def send_messages(conn: Conn, count: int, ep: select.epoll) -> None:
    chunks = []
    while count > 0:
        k = min(count, CYCLE)
        start = (conn.sent % CYCLE) * conn.frame_size
        chunks.append(conn.stream[start : start + k * conn.frame_size])
        conn.sent += k
        count -= k
    write(conn, b"".join(chunks) if len(chunks) > 1 else chunks[0], ep)


def write(conn: Conn, data: bytes, ep: select.epoll) -> None:
    if conn.out:
        conn.out += data
        return
    try:
        n = conn.sock.send(data)
    except BlockingIOError:
        n = 0
    if n < len(data):
        conn.out = data[n:]
        ep.modify(conn.fd, select.EPOLLIN | select.EPOLLOUT)


def flush(conn: Conn, ep: select.epoll) -> None:
    try:
        n = conn.sock.send(conn.out)
    except BlockingIOError:
        return
    conn.out = conn.out[n:]
    if not conn.out:
        ep.modify(conn.fd, select.EPOLLIN)


def slow_path(conn: Conn, buf: bytes, stats: Stats, ep: select.epoll) -> int:
    """Parse frame by frame: answer pings, check every echo. Returns the echoes received."""
    frames, conn.buf = parse_frames(buf)
    got = 0
    for opcode, fin, payload in frames:
        if opcode in (0x0, 0x1, 0x2):
            conn.frag.append(payload)
            if not fin:
                continue
            message = b"".join(conn.frag)
            conn.frag.clear()
            if message != conn.payloads[conn.recvd % CYCLE] or opcode == 0x2:
                stats.mismatches += 1
            conn.recvd += 1
            got += 1
        elif opcode == 0x9:
            stats.pings += 1
            write(conn, client_frame(0xA, payload), ep)
        elif opcode == 0x8:
            stats.closed += 1
            raise ConnectionError(f"server closed the connection: {payload[:2].hex()} {payload[2:]!r}")
    return got


def run_echo(args: argparse.Namespace) -> dict[str, float]:
    conns = []
    for i in range(args.connections):
        sock, rest = connect(args.url)
        conns.append(Conn(sock, rest, f"{args.tag}.{i}", args.size))
    for conn in conns:
        conn.sock.setblocking(False)
    ep = select.epoll()
    for conn in conns:
        ep.register(conn.fd, select.EPOLLIN)
    t0, t1 = handshake_with_parent()
    stats = Stats()
    for conn in conns:
        send_messages(conn, args.in_flight, ep)
    marks: list[tuple[float, int, float]] = []
    recvd_at_t0: list[int] = []
    try:
        pump(conns, ep, stats, t0, t1, marks, recvd_at_t0, send=True)
        # Stop sending and collect the echoes still in flight: each message must come back once.
        pump(conns, ep, stats, time.monotonic(), time.monotonic() + 5, [], [], send=False)
    except ConnectionError as exc:
        print(f"ws_client: {exc}", file=sys.stderr)
    while len(marks) < 2:  # the connection failed before the window ended: no rate
        marks.append(marks[-1] if marks else (time.monotonic(), 0, time.process_time()))
    start_mark, end = marks
    stalled = sum(1 for conn, r in zip(conns, recvd_at_t0, strict=False) if conn.recvd == r)
    unanswered = sum(conn.sent - conn.recvd for conn in conns)
    ep.close()
    close_all([conn.sock for conn in conns])
    return result(start_mark, end, stats, stalled=stalled, unanswered=unanswered)


def pump(
    conns: list[Conn],
    ep: select.epoll,
    stats: Stats,
    t0: float,
    t1: float,
    marks: list[tuple[float, int, float]],
    recvd_at_t0: list[int],
    *,
    send: bool,
) -> None:
    """Run the echo loop until t1 (or, when not sending, until every echo came back).

    Appends (time, echoes, CPU time) to ``marks`` at t0 and at t1.
    """
    by_fd = {conn.fd: conn for conn in conns}
    total = 0
    epollin, epollout, epoll_bad = select.EPOLLIN, select.EPOLLOUT, select.EPOLLERR | select.EPOLLHUP
    while True:
        now = time.monotonic()
        if not marks and now >= t0:
            marks.append((now, total, time.process_time()))
            recvd_at_t0[:] = [conn.recvd for conn in conns]
        if now >= t1:
            marks.append((now, total, time.process_time()))
            return
        if not send and all(conn.recvd == conn.sent for conn in conns):
            return
        for fd, ev in ep.poll(max(0.0, (t0 if not marks else t1) - now)):
            conn = by_fd[fd]
            if ev & (epollin | epoll_bad):
                try:
                    data = conn.sock.recv(RECV_SIZE)
                except BlockingIOError:
                    continue
                if not data:
                    stats.closed += 1
                    raise ConnectionError("server closed the connection without a close frame")
                buf = conn.buf + data if conn.buf else data
                size = conn.expect_size
                m = min(len(buf) // size, CYCLE)
                start = (conn.recvd % CYCLE) * size
                if m and buf[: m * size] == conn.expect[start : start + m * size]:
                    conn.buf = buf[m * size :]
                    conn.recvd += m
                    got = m
                else:
                    got = slow_path(conn, buf, stats, ep)
                if got:
                    total += got
                    if send:
                        send_messages(conn, got, ep)
            if ev & epollout and conn.out:
                flush(conn, ep)


def run_pingpong(args: argparse.Namespace) -> dict[str, float]:
    sock, buf = connect(args.url)
    sock.settimeout(10)
    msgs = payloads(f"{args.tag}.pp", args.size)
    frames = [client_frame(0x1, p) for p in msgs]
    echoes = [frame_header(0x1, args.size, False) + p for p in msgs]
    t0, t1 = handshake_with_parent()
    stats = Stats()
    count, i = 0, 0
    mark0: tuple[float, int, float] | None = None
    try:
        while True:
            sock.sendall(frames[i])
            data = sock.recv(65536)
            if buf or data != echoes[i]:
                buf = pingpong_slow(sock, buf + data, msgs[i], stats)
            count += 1
            i = (i + 1) % CYCLE
            now = time.monotonic()
            if mark0 is None and now >= t0:
                mark0 = (now, count, time.process_time())
            if now >= t1:
                break
    except (ConnectionError, TimeoutError) as exc:
        print(f"ws_client: {exc!r}", file=sys.stderr)
    end = (time.monotonic(), count, time.process_time())
    close_all([sock])
    return result(mark0 or end, end, stats, stalled=0, unanswered=0)


def pingpong_slow(sock: socket.socket | TLSSocket, buf: bytes, expected: bytes, stats: Stats) -> bytes:
    """Read until one whole message arrived (answering pings); returns the unparsed rest."""
    parts: list[bytes] = []
    while True:
        frames, buf = parse_frames(buf)
        for n, (opcode, fin, payload) in enumerate(frames):
            if opcode == 0x9:
                stats.pings += 1
                sock.sendall(client_frame(0xA, payload))
            elif opcode == 0x8:
                stats.closed += 1
                raise ConnectionError(f"server closed the connection: {payload!r}")
            elif opcode in (0x0, 0x1, 0x2):
                parts.append(payload)
                if fin:
                    if b"".join(parts) != expected or opcode == 0x2:
                        stats.mismatches += 1
                    if n != len(frames) - 1:  # more than one echo for one message
                        stats.mismatches += 1
                    return buf
        data = sock.recv(65536)
        if not data:
            stats.closed += 1
            raise ConnectionError("server closed the connection without a close frame")
        buf += data


def close_all(socks: list[socket.socket | TLSSocket], timeout: float = 3) -> None:
    """Close handshake: send a close frame on every socket, read until the server hangs up."""
    ep = select.epoll()
    for sock in socks:
        try:
            sock.setblocking(True)
            sock.settimeout(1)
            sock.sendall(client_frame(0x8, (1000).to_bytes(2, "big")))
            sock.setblocking(False)
            ep.register(sock, select.EPOLLIN)
        except OSError:
            sock.close()
    open_socks = {sock.fileno(): sock for sock in socks if sock.fileno() != -1}
    deadline = time.monotonic() + timeout
    while open_socks and time.monotonic() < deadline:
        for fd, _ in ep.poll(max(0.0, deadline - time.monotonic())):
            sock = open_socks[fd]
            try:
                data = sock.recv(RECV_SIZE)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                ep.unregister(fd)
                del open_socks[fd]
                sock.close()
    for sock in open_socks.values():
        sock.close()
    ep.close()


def handshake_with_parent() -> tuple[float, float]:
    print("ready", flush=True)
    line = sys.stdin.readline().split()
    if len(line) != 3 or line[0] != "go":
        raise SystemExit(f"ws_client: expected 'go T0 T1', got {line!r}")
    return float(line[1]), float(line[2])


def result(
    start: tuple[float, int, float],
    end: tuple[float, int, float],
    stats: Stats,
    *,
    stalled: int,
    unanswered: int,
) -> dict[str, float]:
    seconds = end[0] - start[0]
    return {
        "messages": end[1] - start[1],
        "seconds": seconds,
        "rate": (end[1] - start[1]) / seconds if seconds > 0 else 0.0,
        "cpu": (end[2] - start[2]) / seconds if seconds > 0 else 0.0,
        "mismatches": stats.mismatches,
        "pings": stats.pings,
        "closed": stats.closed,
        "stalled": stalled,
        "unanswered": unanswered,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["echo", "pingpong"])
    parser.add_argument("url", help="ws:// or wss://127.0.0.1:PORT/PATH of an echo server")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--in-flight", type=int, default=16, help="echo: messages outstanding per connection")
    parser.add_argument("--size", type=int, default=32, help="bytes per message (text)")
    parser.add_argument("--tag", default=str(os.getpid()), help="prefix making this client's messages unique")
    parser.add_argument("--cpu", type=int, help="pin this process to this CPU")
    args = parser.parse_args()
    if not 16 <= args.size < 65536:
        parser.error("--size must be in 16..65535")
    if not 1 <= args.in_flight <= CYCLE:
        parser.error(f"--in-flight must be in 1..{CYCLE}")
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    out = run_echo(args) if args.mode == "echo" else run_pingpong(args)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
