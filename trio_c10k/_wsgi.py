"""The WSGI bridge: PEP 3333 environ, and the application run in a worker thread.

Rule 1: ``connection_environ()``, ``build_environ()`` and ``apply_proxy_headers()`` are pure:
no socket, no trio; they are tested with plain sync tests.
Rule 2: the application is called, its body iterated and its ``close()`` called in one worker
thread (Django's ``request_finished`` signal closes database connections in ``close()``, so it
must run in the thread that opened them).
Rule 3: a buffered response (a list or tuple, or a Django response that is not streaming) comes
back to the event loop in one piece; a file response (our ``FileWrapper`` around a regular file,
with a Content-Length) comes back as a duplicate of the file's descriptor, which the event loop
sends and closes, so no thread waits on the client; any other iterable is streamed, each chunk
handed to the event loop as soon as the application yields it, with back-pressure (the thread
waits until the chunk is written).
"""

from __future__ import annotations

import io
import ipaddress
import os
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import unquote_to_bytes

from ._http_head import Head
from ._sockets import POSIX
from ._threads import WorkerThreads

Environ = dict[str, Any]
Headers = list[tuple[bytes, bytes]]
#: called in the worker thread with each chunk of a streamed body; returns once it is written
StreamChunk = Callable[[int, bytes, Headers, bytes], None]

# PEP 3333 names for the two headers that do not get an HTTP_ prefix.
_SPECIAL = {b"content-type": "CONTENT_TYPE", b"content-length": "CONTENT_LENGTH"}
# Cache of header name -> environ key for the names browsers and tools send; bounded,
# unlike a cache filled from client input.
_KEYS: dict[bytes, str] = {
    name: "HTTP_" + name.decode().upper().replace("-", "_")
    for name in (
        b"host accept accept-encoding accept-language cache-control connection cookie "
        b"user-agent referer origin upgrade pragma dnt priority if-modified-since "
        b"if-none-match x-forwarded-for x-forwarded-proto x-requested-with x-csrftoken "
        b"sec-fetch-dest sec-fetch-mode sec-fetch-site sec-fetch-user sec-websocket-key "
        b"sec-websocket-version sec-websocket-extensions sec-websocket-protocol "
        b"upgrade-insecure-requests authorization expect"
    ).split()
}


class FileWrapper:
    """``wsgi.file_wrapper``: iterates a file in large blocks (Django's ``FileResponse`` uses it).

    Django asks for 4 KiB blocks; each block costs a hop to the event loop, so blocks are
    at least 64 KiB.
    """

    def __init__(self, filelike: IO[bytes], block_size: int = 65536) -> None:
        self.filelike = filelike
        self.block_size = max(block_size, 65536)

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.filelike.read(self.block_size):
            yield chunk

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()


def connection_environ(
    client: tuple[str, int] | None, server: tuple[str, int] | None, url_scheme: str = "http"
) -> Environ:
    """The environ keys that stay the same for every request of one connection.

    Args:
        client: the peer's address and port; None for a Unix socket.
        server: the local address and port; None for a Unix socket.
        url_scheme: ``"http"`` or ``"https"``.
    """
    environ: Environ = {
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": url_scheme,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
        "wsgi.file_wrapper": FileWrapper,
        "SCRIPT_NAME": "",
        "SERVER_NAME": server[0] if server else "localhost",
        "SERVER_PORT": str(server[1]) if server else "80",
    }
    if client is not None:
        environ["REMOTE_ADDR"] = client[0]
        environ["REMOTE_PORT"] = str(client[1])
    return environ


def build_environ(base: Environ, request: Head, body: IO[bytes], length: int) -> Environ:
    """The PEP 3333 environ of one request.

    Args:
        base: the connection's environ, from ``connection_environ()``; it is copied.
        request: the parsed request line and headers, its target checked (``check_request``):
            origin-form, absolute-form (whose host then replaces the Host header) or ``*``.
        body: the whole request body, already read, positioned at its start.
        length: the body's length in bytes; ``CONTENT_LENGTH`` says it even when the client
            sent the body chunked (the body is complete, so WSGI applications can read it).
    """
    environ = base.copy()
    target = request.target
    host = None
    if target[:1] != b"/":
        host, target = _origin_form(target)
    path, _, query = target.partition(b"?")
    if b"%" in path:
        path = unquote_to_bytes(path)
    environ["REQUEST_METHOD"] = request.method.decode("ascii")
    environ["PATH_INFO"] = path.decode("latin-1")
    environ["QUERY_STRING"] = query.decode("latin-1")
    environ["SERVER_PROTOCOL"] = "HTTP/" + request.http_version.decode("ascii")
    environ["wsgi.input"] = body
    if length:
        environ["CONTENT_LENGTH"] = str(length)
    for raw_name, value in request.fields:
        name = raw_name.lower()
        key = _KEYS.get(name) or _SPECIAL.get(name)
        if key is None:
            if b"_" in name:
                # Dropped, as Django's runserver and nginx do: X-Auth_User would otherwise
                # arrive as HTTP_X_AUTH_USER, indistinguishable from X-Auth-User.
                continue
            key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
        elif key == "CONTENT_LENGTH":
            continue
        text = value.decode("latin-1")
        if key in environ:
            # RFC 9110 section 5.3: repeated fields join with commas; Cookie with "; ".
            text = environ[key] + ("; " if key == "HTTP_COOKIE" else ", ") + text
        environ[key] = text
    if host:
        # RFC 9112 section 3.2.2: the target's host, not the Host header, names the host.
        environ["HTTP_HOST"] = host.decode("latin-1")
    return environ


def _origin_form(target: bytes) -> tuple[bytes | None, bytes]:
    """``http://host/path?q`` (absolute-form, RFC 9112 section 3.2.2) -> ``(b"host", b"/path?q")``;
    ``*`` stays, with no host."""
    if target == b"*":
        return None, target
    _, _, rest = target.partition(b"://")
    authority_and_path, question, query = rest.partition(b"?")
    slash = authority_and_path.find(b"/")
    if slash < 0:
        return authority_and_path, b"/" + question + query
    return authority_and_path[:slash], authority_and_path[slash:] + question + query


def apply_proxy_headers(
    environ: Environ,
    trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None,
) -> None:
    """Take the client address and scheme from X-Forwarded-For / X-Forwarded-Proto.

    Call it only when the peer is a trusted proxy. The client is the right-most address of
    X-Forwarded-For that is not itself a trusted proxy (the left-most entries are whatever
    the client chose to send).

    Args:
        environ: modified in place.
        trusted: the trusted proxy networks; None trusts every address.
    """
    forwarded_for = environ.get("HTTP_X_FORWARDED_FOR")
    if forwarded_for:
        hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
        client = hops[0] if hops else None
        for hop in reversed(hops):
            if not is_trusted(hop, trusted):
                client = hop
                break
        if client:
            environ["REMOTE_ADDR"] = client
            environ.pop("REMOTE_PORT", None)
    proto = environ.get("HTTP_X_FORWARDED_PROTO")
    if proto:
        scheme = proto.split(",")[0].strip().lower()
        if scheme in ("http", "https"):
            environ["wsgi.url_scheme"] = scheme


def is_trusted(
    address: str, trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None
) -> bool:
    """Whether ``address`` lies in one of the ``trusted`` networks (None: every address)."""
    if trusted is None:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def empty_body() -> IO[bytes]:
    """A fresh empty ``wsgi.input``."""
    return io.BytesIO()


@dataclass(frozen=True, slots=True)
class FileBody:
    """A response body to send from a file with sendfile(2); ``len()`` is its length in bytes.

    The event loop sends it after its head (``_http_send``). Resource handling: the
    descriptor is a duplicate owned by whoever holds this object, who must close it.
    """

    #: a duplicate of the file's descriptor (its original is closed with the response)
    fd: int
    #: where the body starts in the file
    offset: int
    #: bytes to send: the response's Content-Length
    length: int

    def __len__(self) -> int:
        return self.length


@dataclass(frozen=True, slots=True)
class AppResponse:
    """What the application answered, as the event loop needs it."""

    status: int
    reason: bytes
    headers: Headers
    #: the whole body of a buffered response; b"" once a streamed one is over
    body: bytes
    #: True when the head and some chunks already went out through ``StreamChunk``
    streamed: bool
    #: the body of a file response, sent from the event loop (``body`` is then b"")
    file: FileBody | None = None


class _StartResponse:
    """The ``start_response`` callable and the status and headers it was given."""

    __slots__ = ("headers", "reason", "sent", "status", "stream")

    def __init__(self, stream: StreamChunk) -> None:
        self.stream = stream
        self.status = 0
        self.reason = b""
        self.headers: Headers = []
        self.sent = False

    def __call__(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        if exc_info is not None and self.sent:
            raise exc_info[1].with_traceback(exc_info[2])
        code, _, reason = status.partition(" ")
        if len(code) != 3 or not code.isdigit():
            raise ValueError(f"start_response: invalid status {status!r}")
        self.status = int(code)
        self.reason = reason.encode("latin-1")
        # Django's Set-Cookie values start with a space; RFC 9110 field values do not.
        self.headers = [(k.encode("latin-1"), v.strip(" \t").encode("latin-1")) for k, v in headers]
        return self.write

    def write(self, chunk: bytes) -> None:
        """PEP 3333's legacy ``write()``: the chunk goes out before it returns."""
        if not self.status:
            raise RuntimeError("write() called before start_response()")
        if chunk:
            self.sent = True
            self.stream(self.status, self.reason, self.headers, chunk)


def _file_body(result: FileWrapper, start_response: _StartResponse) -> FileBody | None:
    """The regular file behind a file response, for sendfile(2); None if it is not one, or
    where sockets are not descriptors (``_sockets`` Rule 3: the body is then read and sent)."""
    length = next((v for k, v in start_response.headers if k.lower() == b"content-length"), b"")
    if start_response.sent or not length.isdigit() or not POSIX:
        return None
    try:
        fd = result.filelike.fileno()
        offset = result.filelike.tell()
    except (AttributeError, OSError, ValueError):  # no descriptor (BytesIO), or closed
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # a pipe or a socket has no offset to send from
        return None
    return FileBody(os.dup(fd), offset, int(length))


def _run_in_thread(app: Callable[..., Iterable[bytes]], environ: Environ, stream: StreamChunk) -> AppResponse:
    start_response = _StartResponse(stream)
    result = app(environ, start_response)
    file = None
    try:
        if isinstance(result, list | tuple) or getattr(result, "streaming", None) is False:
            body = b"".join(result)
        elif type(result) is FileWrapper and (file := _file_body(result, start_response)) is not None:
            body = b""
        else:
            body = b""
            for chunk in result:
                start_response.write(chunk)
        if not start_response.status:
            raise RuntimeError("the WSGI application did not call start_response()")
        return AppResponse(
            start_response.status,
            start_response.reason,
            start_response.headers,
            body,
            start_response.sent,
            file,
        )
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            try:
                close()
            except BaseException:
                if file is not None:
                    os.close(file.fd)
                raise


async def call_application(
    app: Callable[..., Iterable[bytes]], environ: Environ, stream: StreamChunk, workers: WorkerThreads
) -> AppResponse:
    """Run ``app`` on ``environ`` in a worker thread and return its response.

    Args:
        app: the WSGI application.
        environ: from ``build_environ()``.
        stream: called in the worker thread with ``(status, reason, headers, chunk)`` for each
            chunk of a streamed body; whatever it raises stops the iteration (the body is still
            closed) and comes out of this function.
        workers: the threads that run the application.

    Returns:
        The response; for a streamed one, ``streamed`` says the head already went out; for a
        file response, ``file`` holds a descriptor the caller must close.

    Raises:
        Exception: whatever the application raised.

    Cancellation abandons the thread: it finishes the request (and its ``close()``) on its
    own, and the descriptor of a file response is left open. The server only cancels requests
    at the end of a graceful shutdown.
    """
    return await workers.run_sync(_run_in_thread, app, environ, stream)
