"""WebSocket echo server on ``picows`` (Cython, on uvloop), for benchmarks/websocket_bench.py and
benchmarks/c10k.py.

    python benchmarks/peers/picows_echo.py PORT

picows hands its listener frames, not messages: every data frame is echoed at once as a frame
of the same type and ``fin`` bit (so a fragmented message comes back fragmented, byte for
byte the same message), a close frame is answered with the same code and the connection is
dropped, pings are answered by picows itself. It does not check that text is UTF-8.

Settings chosen to match trio_c10k's defaults as far as picows has them: no compression (it
has none), 1 MiB largest frame, a keep-alive ping after 20 s without incoming data with a
20 s timeout; the event loop is uvloop, as picows recommends, and picows' own transport
(``aiofastnet``, its default when installed). It has no message queue: each frame is written
to the socket as it is sent. Serves until killed.
"""

from __future__ import annotations

import argparse

import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server


class Echo(WSListener):
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
        elif frame.msg_type in (WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION):
            transport.send(frame.msg_type, frame.get_payload_as_bytes(), frame.fin)


def listener(request: WSUpgradeRequest) -> Echo:
    return Echo()


async def main(port: int) -> None:
    server = await ws_create_server(
        listener,
        "127.0.0.1",
        port,
        max_frame_size=2**20,
        enable_auto_ping=True,
        auto_ping_idle_timeout=20,
        auto_ping_reply_timeout=20,
    )
    await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    uvloop.run(main(parser.parse_args().port))
