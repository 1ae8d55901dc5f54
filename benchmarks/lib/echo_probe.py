"""The echo probe: a process of its own timing the round trips of small echoed messages on a few
WebSocket connections, while other processes load the server.

    python -m lib.echo_probe ws://127.0.0.1:PORT/PATH

It obeys one command per line on stdin, answering each with one JSON line: ``open`` opens one
more connection and answers its local ``[address, port]`` (so the caller can find which of a
server's worker processes holds it); ``go SECONDS I J ...`` closes every connection but those
numbered I, J... (in the order opened), then on each of those sends a text message every
``EVERY`` s for ``SECONDS`` s and times each echo, from before the write to after the read, and
answers ``{"rtts": [[seconds, ...] per connection kept]}``; after that it closes them and exits.
A message goes out only once the previous one's echo came (a late echo: the next goes at once,
none is skipped), so a connection whose server is busy sends fewer. The server's pings are
answered meanwhile, between commands too. Used by benchmarks/keepalive_bench.py.
"""

from __future__ import annotations

import json
import os
import select
import socket
import sys
import time
from typing import Any

from .ws_client import client_frame, connect, parse_frames

#: how often each connection sends its message, in seconds
EVERY = 0.01
#: seconds an echo may take before the probe gives up
ECHO_TIMEOUT = 10


class Probe:
    """The probe's connections, each with its unparsed bytes and the message awaiting its echo."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.socks: list[socket.socket] = []
        self.bufs: list[bytes] = []

    def open(self) -> list[Any]:
        sock, buf = connect(self.url, timeout=10)
        assert isinstance(sock, socket.socket), "ws:// only"
        sock.setblocking(False)
        self.socks.append(sock)
        self.bufs.append(buf)
        return list(sock.getsockname())

    def read(self, i: int) -> list[bytes]:
        """The text messages that came on connection ``i`` (pings answered, a close fatal)."""
        try:
            chunk = self.socks[i].recv(65536)
        except BlockingIOError:
            return []
        if not chunk:
            raise SystemExit("the server closed a probe connection")
        frames, self.bufs[i] = parse_frames(self.bufs[i] + chunk)
        texts = []
        for opcode, _fin, data in frames:
            if opcode == 0x9:
                self.socks[i].sendall(client_frame(0xA, data))
            elif opcode == 0x1:
                texts.append(data)
            elif opcode == 0x8:
                raise SystemExit("the server closed a probe connection")
        return texts

    def idle(self, timeout: float) -> bytes:
        """Answer pings until stdin has something (or ``timeout``); returns what it had."""
        fds = [0, *(sock.fileno() for sock in self.socks)]
        ready, _, _ = select.select(fds, [], [], timeout)
        line = b""
        for fd in ready:
            if fd == 0:
                line = os.read(0, 4096)
                if not line:
                    raise SystemExit(0)  # the parent went away
            else:
                self.read(fds.index(fd) - 1)
        return line

    def keep(self, indices: list[int]) -> None:
        for i, sock in enumerate(self.socks):
            if i not in indices:
                sock.close()
        self.socks = [self.socks[i] for i in indices]
        self.bufs = [self.bufs[i] for i in indices]

    def time_echoes(self, seconds: float) -> list[list[float]]:
        count = len(self.socks)
        rtts: list[list[float]] = [[] for _ in range(count)]
        now = time.monotonic()
        end = now + seconds
        due = [now] * count
        sent: list[float | None] = [None] * count
        expect = [b""] * count
        n = 0
        while True:
            now = time.monotonic()
            for i, start in enumerate(sent):
                if start is None and due[i] <= now < end:
                    expect[i] = f"probe {n}".encode()
                    n += 1
                    sent[i] = time.monotonic()
                    self.socks[i].sendall(client_frame(0x1, expect[i]))
                elif start is not None and now - start > ECHO_TIMEOUT:
                    raise SystemExit(f"no echo within {ECHO_TIMEOUT} s")
            if now >= end and all(s is None for s in sent):
                return rtts
            waiting = [due[i] - now for i in range(count) if sent[i] is None and due[i] < end and now < end]
            ready, _, _ = select.select(self.socks, [], [], max(0.0, min([*waiting, 0.5])))
            for sock in ready:
                i = self.socks.index(sock)
                for text in self.read(i):
                    start = sent[i]
                    if start is not None and text == expect[i]:
                        got = time.monotonic()
                        rtts[i].append(got - start)
                        sent[i] = None
                        due[i] = max(due[i] + EVERY, got)

    def close(self) -> None:
        for sock in self.socks:
            sock.setblocking(True)
            sock.sendall(client_frame(0x8, (1000).to_bytes(2, "big")))
            sock.close()


def main(url: str) -> None:
    probe = Probe(url)
    pending = b""
    while True:
        pending += probe.idle(1.0)
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            cmd, *rest = line.decode().split()
            if cmd == "open":
                answer: dict[str, Any] = {"address": probe.open()}
            elif cmd == "go":
                probe.keep([int(i) for i in rest[1:]])
                answer = {"rtts": probe.time_echoes(float(rest[0]))}
                probe.close()
            else:
                raise SystemExit(f"unknown command {cmd!r}")
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()
            if cmd == "go":
                return


if __name__ == "__main__":
    main(sys.argv[1])
