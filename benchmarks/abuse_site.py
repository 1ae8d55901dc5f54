"""The Django site that benchmarks/abuse.py attacks: one module, settings, views and URLconf.

    python -m trio_c10k abuse_site                       # with benchmarks/ on the path
    python -m gunicorn -k gthread --threads 10 abuse_site:application

No middleware, no database: what is measured is the server, not Django. Views:

- ``/hello/``: the ordinary client's request (as example_site's).
- ``/stream/``: an 8 MiB ``StreamingHttpResponse`` in 64 KiB chunks; ``/file/``: a
  ``FileResponse`` of the 8 MiB file named by ``ABUSE_FILE``; ``/buffered/``: a 20 MB
  ``HttpResponse`` (row 1 of issue 12).
- ``/upload/``: reads the request body in 64 KiB chunks, answers its size (row 6).
- ``/echo/``: WebSocket echo; ``/sink/``: a WebSocket handler that never reads (row 5).
- ``/room/``: a chat room relaying every message to every member, the sender included (row
  10), with the ``Group`` method named by ``ABUSE_BROADCAST`` (default ``broadcast``, which
  never waits); an awaitable method is awaited, so a broadcast that makes the producer wait
  is measured by naming it (``abuse.py --broadcast NAME``), without touching this file.
"""

from __future__ import annotations

import inspect
import os

from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="abuse-benchmark-not-secret",
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=[],
    MIDDLEWARE=[],
    DATABASES={},
    USE_TZ=True,
)

from collections.abc import Iterator  # noqa: E402

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import FileResponse, HttpRequest, HttpResponse, StreamingHttpResponse  # noqa: E402
from django.urls import path  # noqa: E402

from trio_c10k import Group, WebSocket, websocket  # noqa: E402

#: row 1: the size of a download (as in issue 12), sent in chunks of CHUNK
DOWNLOAD_SIZE, CHUNK = 8 * 2**20, 64 * 2**10
#: row 1: a buffered response, the body kept whole in memory
BUFFERED_SIZE = 20_000_000
ROOM = Group("abuse.room")


def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse("Hello, world!\n", content_type="text/plain")


def stream(request: HttpRequest) -> StreamingHttpResponse:
    def chunks() -> Iterator[bytes]:
        block = b"x" * CHUNK
        for _ in range(DOWNLOAD_SIZE // CHUNK):
            yield block

    return StreamingHttpResponse(chunks(), content_type="application/octet-stream")


def file(request: HttpRequest) -> FileResponse:
    return FileResponse(open(os.environ["ABUSE_FILE"], "rb"))  # FileResponse closes it


def buffered(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"x" * BUFFERED_SIZE, content_type="application/octet-stream")


def upload(request: HttpRequest) -> HttpResponse:
    size = 0
    while chunk := request.read(CHUNK):
        size += len(chunk)
    return HttpResponse(f"{size}\n", content_type="text/plain")


@websocket
async def echo(ws: WebSocket) -> None:
    async for message in ws:
        ws.write_message(message)


@websocket
async def sink(ws: WebSocket) -> None:
    await ws.wait_closed()


@websocket
async def room(ws: WebSocket) -> None:
    fan_out = getattr(ROOM, os.environ.get("ABUSE_BROADCAST", "broadcast"))
    ROOM.add(ws)
    async for message in ws:
        sent = fan_out(message)
        if inspect.isawaitable(sent):
            await sent


urlpatterns = [
    path("hello/", hello),
    path("stream/", stream),
    path("file/", file),
    path("buffered/", buffered),
    path("upload/", upload),
    path("echo/", echo),
    path("sink/", sink),
    path("room/", room),
]

application = get_wsgi_application()
