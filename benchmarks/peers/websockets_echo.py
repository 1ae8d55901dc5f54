"""WebSocket echo server on the ``websockets`` library (asyncio), for benchmarks/websocket_bench.py.

    python benchmarks/peers/websockets_echo.py PORT [--compression] [--hello]
        [--ssl-certfile PEM --ssl-keyfile PEM] [--ping-interval SECONDS]

Settings chosen to match trio_c10k's defaults: no compression (trio_c10k agrees to none
unless --ws-compression), 1 MiB largest message, 16 messages queued before TCP back-pressure,
a keep-alive ping every 20 s with a 20 s timeout (all but compression are also the library's
defaults; benchmarks/keepalive_bench.py sets another interval with ``--ping-interval``).
Serves until killed.

For benchmarks/tls_bench.py: ``--ssl-certfile`` and ``--ssl-keyfile`` (uvicorn's names, as
trio_c10k's) serve ``wss://`` with an ``SSLContext`` set as trio_c10k sets its own: TLS 1.2 or
newer, ALPN ``http/1.1``, renegotiation refused, the ``ssl`` module's defaults otherwise
(session tickets on).

For benchmarks/abuse.py: ``--compression`` agrees to permessage-deflate (the library's
default), ``--hello`` answers a plain ``GET /hello/`` with ``Hello, world!`` (its ordinary
client), and the path ``/sink/`` is a handler that never reads (it waits for the close).
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
from http import HTTPStatus

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response


async def echo(ws: ServerConnection) -> None:
    try:
        async for message in ws:
            await ws.send(message)
    except ConnectionClosed:  # the client closed while an echo was being sent
        pass


async def handler(ws: ServerConnection) -> None:
    if ws.request is not None and ws.request.path == "/sink/":
        await ws.wait_closed()
    else:
        await echo(ws)


def hello(ws: ServerConnection, request: Request) -> Response | None:
    if request.path == "/hello/" and "upgrade" not in request.headers.get("Connection", "").lower():
        return ws.respond(HTTPStatus.OK, "Hello, world!\n")
    return None


def tls_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(["http/1.1"])
    context.load_cert_chain(certfile, keyfile)
    return context


async def main(args: argparse.Namespace) -> None:
    async with serve(
        handler,
        "127.0.0.1",
        args.port,
        compression="deflate" if args.compression else None,
        process_request=hello if args.hello else None,
        max_size=2**20,
        max_queue=16,
        ping_interval=args.ping_interval or None,
        ping_timeout=20,
        ssl=tls_context(args.ssl_certfile, args.ssl_keyfile) if args.ssl_certfile else None,
    ) as server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--compression", action="store_true")
    parser.add_argument("--hello", action="store_true")
    parser.add_argument("--ping-interval", type=float, default=20, help="seconds between pings (0: none)")
    parser.add_argument("--ssl-certfile", help="serve wss:// with this certificate (PEM)")
    parser.add_argument("--ssl-keyfile", help="and this private key (PEM)")
    asyncio.run(main(parser.parse_args()))
