"""WebSocket echo server on the ``websockets`` library (asyncio), for benchmarks/websocket.py.

    python benchmarks/peers/websockets_echo.py PORT

Settings chosen to match trio_c10k's defaults: no compression (trio_c10k agrees to none
unless --ws-compression), 1 MiB largest message, 16 messages queued before TCP back-pressure,
a keep-alive ping every 20 s with a 20 s timeout (all but compression are also the library's
defaults). Serves until killed.
"""

from __future__ import annotations

import asyncio
import sys

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed


async def echo(ws: ServerConnection) -> None:
    try:
        async for message in ws:
            await ws.send(message)
    except ConnectionClosed:  # the client closed while an echo was being sent
        pass


async def main(port: int) -> None:
    async with serve(
        echo,
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
