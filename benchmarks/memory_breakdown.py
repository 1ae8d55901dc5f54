"""Where the memory of an idle WebSocket connection goes, by source file (tracemalloc).

    python benchmarks/memory_breakdown.py [--connections 2000] [--group filename|lineno]

Runs trio_c10k in this process with example_site, ``tracemalloc`` on, and opens
``--connections`` WebSockets to ``/test/echo/`` from a child process (raw sockets, the
handshake and nothing after it). One warm-up connection is opened and closed first; the
snapshot taken after it is compared with the one taken once every connection is open.
Prints the bytes and blocks per connection, grouped by the file (or line) that allocated
them; a coroutine's frame counts where it was called. Python objects only: the RSS figure of
benchmarks/c10k.py adds the allocator's overhead (about 0.5 KB per connection here).

What it prints is for reading, not for RESULTS.md: docs/performance.md quotes it.
"""

from __future__ import annotations

import argparse
import base64
import os
import socket
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable

from lib.common import ROOT, free_port


def client(port: int, count: int) -> None:
    """Open ``count`` WebSockets, then hold them until standard input closes."""
    key = base64.b64encode(os.urandom(16))
    request = (
        b"GET /test/echo/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(4096)
        if not answer.startswith(b"HTTP/1.1 101"):
            raise SystemExit(f"handshake refused: {answer[:80]!r}")
        sockets.append(sock)
    print("open", flush=True)
    sys.stdin.read()


async def wait_until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` for up to 2 minutes (the server's counters have no event)."""
    import trio

    with trio.fail_after(120):
        while True:
            if condition():
                return
            await trio.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--group", choices=("filename", "lineno"), default="filename")
    parser.add_argument("--top", type=int, default=25, help="lines printed")
    parser.add_argument("--client", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client(args.client, args.connections)
        return

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_site.settings")
    tracemalloc.start()
    import trio
    from django.core.wsgi import get_wsgi_application

    from trio_c10k import Bind, Config, serve

    app = get_wsgi_application()
    port = free_port()
    n = args.connections

    def open_clients(count: int) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--client", str(port), "--connections", str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "open":
            raise SystemExit("the client process failed")
        return proc

    async def run() -> None:
        config = Config(binds=(Bind(host="127.0.0.1", port=port),), access_log=False)
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve, app, config)
            warm = await trio.to_thread.run_sync(open_clients, 1)
            warm.communicate("")
            await wait_until(lambda: server.statistics().websockets == 0)
            before = tracemalloc.take_snapshot()
            started = time.perf_counter()
            proc = await trio.to_thread.run_sync(open_clients, n)
            print(f"{n} connections open in {time.perf_counter() - started:.1f} s")
            await wait_until(lambda: server.statistics().websockets == n)
            await trio.sleep(0.5)
            after = tracemalloc.take_snapshot()
            diff = after.compare_to(before, args.group)
            total = sum(stat.size_diff for stat in diff)
            print(f"{total / n:.0f} bytes per connection in Python objects, by {args.group}:")
            for stat in diff[: args.top]:
                where = str(stat.traceback).replace(str(ROOT) + "/", "")
                print(f"{stat.size_diff / n:7.0f} B {stat.count_diff / n:5.1f} blocks  {where}")
            proc.communicate("")
            nursery.cancel_scope.cancel()

    trio.run(run)


if __name__ == "__main__":
    main()
