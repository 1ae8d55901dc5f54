"""A one-room chat on the ``websockets`` library (asyncio), for benchmarks/broadcast_bench.py.

    python benchmarks/peers/websockets_broadcast.py PORT

Every connection is a member; each message received goes to every member, the sender included,
with the library's ``broadcast()`` (which writes to each connection without waiting for it, and
skips connections whose write buffer is over the limit). Settings as in websockets_echo.py.
The path ``/echo/`` echoes instead (benchmarks/abuse.py's ordinary client). Serves until
killed.
"""

from __future__ import annotations

import asyncio
import sys

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets_echo import echo

MEMBERS: set[ServerConnection] = set()


async def room(ws: ServerConnection) -> None:
    if ws.request is not None and ws.request.path == "/echo/":
        await echo(ws)
        return
    MEMBERS.add(ws)
    try:
        async for message in ws:
            broadcast(MEMBERS, message)
    except ConnectionClosed:  # closed without a close frame (benchmarks/abuse.py's clients)
        pass
    finally:
        MEMBERS.discard(ws)


async def main(port: int) -> None:
    async with serve(
        room,
        "127.0.0.1",
        port,
        compression=None,
        max_size=2**20,
        max_queue=16,
        ping_interval=20,
        ping_timeout=20,
    ) as server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
