"""Views used by the tests. Tests and server share one process, so views wait on
``threading.Event`` objects that the test sets: no sleeps as synchronisation."""

from __future__ import annotations

import json
import tempfile
import threading
from collections import defaultdict

from django.http import FileResponse, HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

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
