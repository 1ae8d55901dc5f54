"""Views used by the tests. Tests and server share one process, so views wait on
``threading.Event`` objects that the test sets: no sleeps as synchronisation."""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections import defaultdict
from typing import Any

import trio
import trio.lowlevel
from django.http import FileResponse, HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from trio_c10k import ConnectionClosed, Group, WebSocket, database_sync_to_thread, websocket

#: per-key events: "release" is set by a test, "started"/"finished" by the view
EVENTS: defaultdict[str, dict[str, threading.Event]] = defaultdict(
    lambda: {"started": threading.Event(), "release": threading.Event(), "finished": threading.Event()}
)
#: content of the file /t/file/ serves (set by the test)
FILE_CONTENT = bytes(range(256)) * 1200


def environ(request: HttpRequest) -> HttpResponse:
    keys = [
        "REQUEST_METHOD",
        "PATH_INFO",
        "QUERY_STRING",
        "SCRIPT_NAME",
        "SERVER_NAME",
        "SERVER_PORT",
        "SERVER_PROTOCOL",
        "REMOTE_ADDR",
        "REMOTE_PORT",
        "CONTENT_TYPE",
        "CONTENT_LENGTH",
        "HTTP_X_MULTI",
        "HTTP_COOKIE",
        "wsgi.url_scheme",
        "wsgi.multithread",
        "wsgi.input_terminated",
    ]
    data = {key: request.META.get(key) for key in keys}
    data["thread"] = threading.current_thread().name
    return HttpResponse(json.dumps(data), content_type="application/json")


@csrf_exempt
def echo_body(request: HttpRequest) -> HttpResponse:
    return HttpResponse(request.body, content_type="application/octet-stream")


def stream(request: HttpRequest, key: str) -> StreamingHttpResponse:
    events = EVENTS[key]

    def chunks():
        try:
            yield b"first\n"
            events["started"].set()
            if not events["release"].wait(10):
                raise RuntimeError("test never released the stream")
            yield b"second\n"
        finally:
            events["finished"].set()

    return StreamingHttpResponse(chunks(), content_type="text/plain")


def wait(request: HttpRequest, key: str) -> HttpResponse:
    events = EVENTS[key]
    events["started"].set()
    try:
        released = events["release"].wait(10)
        return HttpResponse(b"released\n" if released else b"timed out\n", content_type="text/plain")
    finally:
        events["finished"].set()


def file(request: HttpRequest) -> FileResponse:
    handle = tempfile.TemporaryFile()  # noqa: SIM115  # FileResponse closes it
    handle.write(FILE_CONTENT)
    handle.seek(0)
    return FileResponse(handle, content_type="application/octet-stream")


def error(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("a view failed")


def hello(request: HttpRequest) -> HttpResponse:
    """The smallest view: 14 bytes of text (access-log lines show the length)."""
    return HttpResponse("Hello, world!\n", content_type="text/plain")


def whoami(request: HttpRequest) -> HttpResponse:
    """The session's user name."""
    return HttpResponse(f"You are {request.user.get_username()}.", content_type="text/plain")


# -- WebSocket handlers ------------------------------------------------------------------------

#: WebSockets of /t/ws/room/, written to by the /t/ws/broadcast/ view from a worker thread
ROOM: list[WebSocket] = []
#: close codes and events seen by handlers, per test key
WS_EVENTS: defaultdict[str, dict[str, Any]] = defaultdict(lambda: {"done": threading.Event()})


@websocket
async def ws_echo(ws: WebSocket) -> None:
    """Echoes every message, text or binary, until the client closes."""
    async for message in ws:
        ws.write_message(message)


@websocket
async def ws_hello(ws: WebSocket) -> None:
    """Says Hello!, answers three messages as "1. ...", "2. ...", "3. ...", says Goodbye! and
    returns (closing with 1000). Like every handler here, it checks the Origin (the default)."""
    ws.write_message("Hello!")
    for n in range(1, 4):
        message = await ws.read_message()
        if message is None:
            return
        ws.write_message(f"{n}. {message}")
    ws.write_message("Goodbye!")


@websocket
async def ws_return(ws: WebSocket) -> None:
    ws.write_message("bye")


@websocket
async def ws_raise(ws: WebSocket) -> None:
    ws.write_message("about to fail")
    raise RuntimeError("handler failed")


@websocket(subprotocols=["chat.v2", "chat.v1"])
async def ws_subprotocol(ws: WebSocket) -> None:
    ws.write_message(str(ws.subprotocol))
    await ws.read_message()


@websocket
async def ws_info(ws: WebSocket, number: int) -> None:
    request = ws.request
    ws.write_message(
        json.dumps(
            {
                "number": number,
                "path": request.path,
                "user": request.user.username if request.user.is_authenticated else None,
                "session": request.session.get("color"),
                "remote_address": list(ws.remote_address),
                "user_type": type(request.user).__name__,
                "meta": sorted(request.META),
                "scheme": request.scheme,
                "host": request.get_host(),
                "query": request.GET.get("q"),
                "url_name": request.resolver_match.url_name,
                "attributes": sorted(vars(request)),
            }
        )
    )
    ws.nickname = "handlers may keep attributes on ws"
    ws.write_message(ws.nickname)
    await ws.read_message()


@websocket
async def ws_watch(ws: WebSocket, key: str) -> None:
    """Reads until None, then records how the connection ended."""
    events = WS_EVENTS[key]
    events["messages"] = [message async for message in ws]
    events["close_code"] = ws.close_code
    try:
        ws.write_message("too late")
    except ConnectionClosed as exc:
        events["write_error"] = exc
    events["done"].set()


@websocket
async def ws_flood(ws: WebSocket, key: str) -> None:
    """Writes 64 KiB messages without end; a client that does not read gets closed."""
    events = WS_EVENTS[key]
    chunk = b"x" * 65536
    try:
        while True:
            ws.write_message(chunk)
            await trio.lowlevel.checkpoint()
    except ConnectionClosed as exc:
        events["close_code"] = exc.code
    finally:
        events["done"].set()


@websocket
async def ws_room(ws: WebSocket) -> None:
    ROOM.append(ws)
    try:
        ws.write_message("joined")
        await ws.read_message()
    finally:
        ROOM.remove(ws)


def ws_broadcast(request: HttpRequest) -> HttpResponse:
    """A plain Django view, in a worker thread, writing to open WebSockets."""
    message = request.GET["message"]
    for ws in list(ROOM):
        ws.write_message(message)
    return HttpResponse(str(len(ROOM)))


@csrf_exempt
def login(request: HttpRequest) -> HttpResponse:
    from django.contrib.auth import authenticate
    from django.contrib.auth import login as django_login

    user = authenticate(request, username=request.POST["username"], password=request.POST["password"])
    if user is None:
        return HttpResponse("bad credentials", status=403)
    django_login(request, user)
    request.session["color"] = "teal"
    return HttpResponse("ok")


@websocket
async def ws_group(ws: WebSocket, name: str) -> None:
    """Joins the group ``name``; broadcasts each message to it, but "leave" leaves it."""
    group = Group(name)
    group.add(ws)
    ws.write_message("joined")
    async for message in ws:
        if message == "leave":
            group.discard(ws)
            ws.write_message("left")
        else:
            group.broadcast(message)


@websocket
async def ws_relay(ws: WebSocket, name: str) -> None:
    """Joins the group ``name`` and broadcasts each message to it, the sender included."""
    group = Group(name)
    group.add(ws)
    async for message in ws:
        group.broadcast(message)


def group_broadcast(request: HttpRequest, name: str) -> HttpResponse:
    """A plain Django view, in a worker thread, broadcasting to a group."""
    return HttpResponse(str(Group(name).broadcast(request.GET["message"])))


@database_sync_to_thread
def user_count_and_thread(prefix: str) -> tuple[int, str]:
    """An ORM query, and the thread it ran in."""
    from django.contrib.auth.models import User

    return User.objects.filter(username__startswith=prefix).count(), threading.current_thread().name


@database_sync_to_thread
def fail_in_thread() -> None:
    raise LookupError("raised in the worker thread")


@websocket
async def ws_db(ws: WebSocket, prefix: str) -> None:
    """Answers each message with the number of users whose name starts with ``prefix``."""
    async for _ in ws:
        count, thread = await user_count_and_thread(prefix)
        ws.write_message(json.dumps({"count": count, "thread": thread}))
    try:
        await fail_in_thread()
    except LookupError as exc:
        WS_EVENTS[prefix]["error"] = str(exc)
    WS_EVENTS[prefix]["done"].set()


@websocket
async def ws_burst(ws: WebSocket, count: int) -> None:
    """Sends ``count`` messages at once, then reads until the client closes."""
    for i in range(count):
        ws.write_message(f"burst {i}")
    async for _ in ws:
        pass


def pid(request: HttpRequest) -> HttpResponse:
    """The process id of the server process that answered (``--workers``)."""
    return HttpResponse(str(os.getpid()))


@websocket
async def ws_pid(ws: WebSocket) -> None:
    """Says the process id of its server process, then reads until the connection closes."""
    ws.write_message(str(os.getpid()))
    async for _ in ws:
        pass


@websocket
async def ws_group_pid(ws: WebSocket, name: str) -> None:
    """Says its server's process id, joins the group ``name``, broadcasts each message to it."""
    group = Group(name)
    group.add(ws)
    ws.write_message(str(os.getpid()))
    async for message in ws:
        group.broadcast(message)


@websocket
async def silent_worker(ws: WebSocket) -> None:
    """A Game of Life relay that relays nothing: ``ready`` is answered, states are dropped."""
    async for message in ws:
        if message == "ready":
            ws.write_message("ready")


@websocket
async def ws_bursts(ws: WebSocket) -> None:
    """For each message ``N``, sends ``N`` messages at once (in one scheduling round)."""
    async for message in ws:
        for i in range(int(message)):
            ws.write_message(f"burst {i}")


# -- sending and request bodies (tests/server/test_sending.py) ---------------------------------------

#: path of the file /t/big-file/ serves (set by the test)
BIG_FILE = ""


def big(request: HttpRequest, size: int) -> HttpResponse:
    """A buffered response of ``size`` bytes."""
    return HttpResponse(b"x" * size, content_type="application/octet-stream")


def stream_endless(request: HttpRequest, key: str) -> StreamingHttpResponse:
    """1 MiB chunks, 64 of them: far more than socket buffers hold for a client that does not read."""
    events = EVENTS[key]
    chunk = b"y" * (1024 * 1024)

    def chunks():
        try:
            for _ in range(64):
                yield chunk
        finally:
            events["finished"].set()

    return StreamingHttpResponse(chunks(), content_type="application/octet-stream")


def big_file(request: HttpRequest, offset: int) -> FileResponse:
    """``BIG_FILE`` from ``offset`` on (FileResponse sends from the file's position)."""
    handle = open(BIG_FILE, "rb")  # noqa: SIM115  # FileResponse closes it
    handle.seek(offset)
    return FileResponse(handle, content_type="application/octet-stream")


@csrf_exempt
def input_kind(request: HttpRequest) -> HttpResponse:
    """Whether ``wsgi.input`` (a SpooledTemporaryFile) holds the body on disk or in memory."""
    return HttpResponse(b"disk" if request.META["wsgi.input"]._rolled else b"memory")


@websocket
async def ws_deaf(ws: WebSocket) -> None:
    """Never reads: waits until the connection closes (its inbox fills up)."""
    await ws.wait_closed()
