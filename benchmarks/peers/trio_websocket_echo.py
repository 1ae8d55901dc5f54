"""WebSocket echo server on ``trio-websocket`` (``serve_websocket``), for benchmarks/websocket.py.

    python benchmarks/peers/trio_websocket_echo.py PORT

Settings chosen to match trio_c10k's defaults: 1 MiB largest message, 16 messages queued
before TCP back-pressure (the library's default is 1), reads of up to 64 KiB (its default
is 4 KiB; the benchmark's messages arrive in far smaller batches, so this changes nothing
but the parity). trio-websocket never compresses and sends no keep-alive pings. Serves until
killed.
"""

from __future__ import annotations

import sys
from functools import partial

import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket


async def echo(request: WebSocketRequest) -> None:
    ws = await request.accept()
    try:
        while True:
            await ws.send_message(await ws.get_message())
    except ConnectionClosed:
        pass


if __name__ == "__main__":
    trio.run(
        partial(
            serve_websocket,
            echo,
            "127.0.0.1",
            int(sys.argv[1]),
            ssl_context=None,
            max_message_size=2**20,
            message_queue_size=16,
            receive_buffer_size=65536,
        )
    )
