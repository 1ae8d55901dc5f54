"""Django glue: the ``@websocket`` view decorator, and ``database_sync_to_thread``.

Rule 1: the decorated view runs like any view, in a worker thread, after the middleware
(sessions, authentication): whatever it or the middleware answers that is not a 101 goes
out as plain HTTP.
Rule 2: before the handler is handed to the server, the request's lazy attributes
(``request.user``, ``request.session``) are resolved here, in the worker thread: the
handler runs in the event loop, where a database query would stall every connection.
Rule 3: the request a handler keeps for the life of its connection is trimmed of what an
open WebSocket has no use for (see ``_keep_for_handler``): at 10,000 connections every
attribute counts.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, overload

import trio
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.db import close_old_connections
from django.http import HttpRequest, HttpResponse
from django.utils.functional import SimpleLazyObject

from ._handshake import UPGRADE_SLOT, Rejection, UpgradeSlot, check_upgrade, origin_allowed
from ._threads import current_workers

log = logging.getLogger("trio_c10k.websocket")

P = ParamSpec("P")
R = TypeVar("R")
Handler = Callable[..., Awaitable[None]]
View = Callable[..., HttpResponse]


@overload
def websocket(handler: Handler, /) -> View: ...
@overload
def websocket(*, subprotocols: list[str] | tuple[str, ...] = ()) -> Callable[[Handler], View]: ...


def websocket(
    handler: Handler | None = None, /, *, subprotocols: list[str] | tuple[str, ...] = ()
) -> View | Callable[[Handler], View]:
    """Turn ``async def handler(ws, *args, **kwargs)`` into a Django view for the URLconf.

    Use it bare, ``@websocket``, or with the subprotocols the handler speaks, in order of
    preference: ``@websocket(subprotocols=["chat.v2", "chat.v1"])``.

    The view answers a valid upgrade with 101 and the server then runs the handler in the
    event loop (``ws.request`` is the Django request). It answers a plain HTTP request with
    426, a malformed handshake with 400 (426 for a WebSocket version other than 13), and a
    browser ``Origin`` that is not the site's own with 403 (see ``TRIO_C10K_CHECK_ORIGIN``).
    Under a server that cannot upgrade (Django's test client, another WSGI server) a valid
    handshake gets 500 with the reason.

    Raises:
        TypeError: ``handler`` is not an ``async def`` function.
    """

    def decorate(handler: Handler) -> View:
        if not inspect.iscoroutinefunction(handler):
            raise TypeError(f"@websocket needs an async def handler, not {handler!r}")

        @functools.wraps(handler)
        def view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            return _upgrade(request, handler, tuple(subprotocols), args, kwargs)

        return view

    return decorate if handler is None else decorate(handler)


def _upgrade(
    request: HttpRequest,
    handler: Handler,
    subprotocols: tuple[str, ...],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> HttpResponse:
    slot = request.META.get(UPGRADE_SLOT)
    result = check_upgrade(request.META, subprotocols, compression=bool(slot and slot.compression))
    if isinstance(result, Rejection):
        log.info("%s %s: %d %s", request.method, request.path, result.status, result.reason)
        return _plain(result.status, result.reason, result.headers, logged=True)
    if not isinstance(slot, UpgradeSlot):
        return _plain(
            500,
            "This WebSocket view needs the trio_c10k server (python -m trio_c10k, or runserver "
            "with 'trio_c10k' in INSTALLED_APPS); this server cannot upgrade connections",
        )
    origin = request.META.get("HTTP_ORIGIN")
    if getattr(settings, "TRIO_C10K_CHECK_ORIGIN", True) and not _origin_verified(request, origin):
        log.warning("%s: WebSocket from foreign origin %r refused (403)", request.path, origin)
        return _plain(403, f"WebSocket connections from origin {origin!r} are not allowed", logged=True)
    _keep_for_handler(request)
    slot.handler, slot.args, slot.kwargs, slot.request, slot.accept = handler, args, kwargs, request, result
    # The handshake's own headers (``result.headers``) are the server's to add to the 101:
    # the response carries only what middleware adds.
    return HttpResponse(status=101)


def _origin_verified(request: HttpRequest, origin: str | None) -> bool:
    """The origin check as ``CsrfViewMiddleware`` makes it for a POST (see ``origin_allowed``)."""
    if origin is None:
        return True
    try:
        host: str | None = request.get_host()
    except DisallowedHost:  # Django's check goes on to the trusted origins, as here
        host = None
    scheme = "https" if request.is_secure() else "http"
    return origin_allowed(origin, scheme, host, list(settings.CSRF_TRUSTED_ORIGINS))


#: request attributes an open WebSocket has no use for: the body stream (an upgrade has
#: none), the messages framework's storage (no response will carry them) and ``auser``
#: (asyncio only); the last two also hold the request in a reference cycle
_DROPPED_ATTRIBUTES = ("_stream", "_messages", "auser")
#: META keys a handler has no use for: the handshake's own headers (what they negotiated
#: is in ``ws.subprotocol``)
_HANDSHAKE_HEADERS = frozenset(
    {
        "HTTP_CONNECTION",
        "HTTP_UPGRADE",
        "HTTP_SEC_WEBSOCKET_KEY",
        "HTTP_SEC_WEBSOCKET_VERSION",
        "HTTP_SEC_WEBSOCKET_EXTENSIONS",
    }
)


def _keep_for_handler(request: HttpRequest) -> None:
    """Resolve the lazy attributes and trim the request to what a handler uses.

    ``request.user`` becomes the user itself (one query, here in the worker thread), the
    session is loaded, ``META`` keeps the CGI variables, the HTTP headers but the
    handshake's and ``wsgi.url_scheme`` (``request.scheme``), ``resolver_match.tried`` is
    emptied, and the attributes in ``_DROPPED_ATTRIBUTES`` go.
    """
    user = getattr(request, "user", None)
    if user is not None:
        user.is_authenticated  # noqa: B018  # evaluates the SimpleLazyObject: one query, here
        if isinstance(user, SimpleLazyObject):
            request.user = user._wrapped  # the object itself, without the lazy wrapper
    session = getattr(request, "session", None)
    if session is not None:
        session.keys()  # loads the session data now, in this thread
    for name in _DROPPED_ATTRIBUTES:
        request.__dict__.pop(name, None)
    request.META = {
        key: value
        for key, value in request.META.items()
        if ("." not in key and key not in _HANDSHAKE_HEADERS) or key == "wsgi.url_scheme"
    }
    request.environ = request.META  # WSGIRequest keeps both names for the one dict
    if request.resolver_match is not None:
        request.resolver_match.tried = []  # the patterns tried before this one: 404 pages use it


def database_sync_to_thread(fn: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """Make a sync function (ORM queries, any blocking Django code) awaitable from a handler.

    ``await database_sync_to_thread(fn)(*args, **kwargs)`` runs ``fn`` in one of the server's
    worker threads (``--threads``: the same threads, and the same limit, as the views) and
    returns what it returns, or raises what it raises. Around the call, in that thread,
    ``django.db.close_old_connections()`` closes database connections that are broken or
    past ``CONN_MAX_AGE``, as a request would (Django Channels' ``database_sync_to_async``
    does the same). Use it as a decorator too::

        @database_sync_to_thread
        def last_messages(room):
            return list(Message.objects.filter(room=room).order_by("-id")[:20])

        @websocket
        async def chat(ws, room):
            for message in await last_messages(room):
                ...

    A handler runs in the event loop beside every other connection: a query made there
    directly would stall them all, and Django's async-safety check does not fire under trio.

    Cancellation: the awaiting task is cancelled at once; a call that already started
    finishes in its thread and its result is dropped. Outside a trio_c10k server (a script,
    a test without a server) the call goes to ``trio.to_thread.run_sync``.
    """

    @functools.wraps(fn)
    async def in_worker_thread(*args: P.args, **kwargs: P.kwargs) -> R:
        call = functools.partial(_with_fresh_connections, fn, *args, **kwargs)
        workers = current_workers.get()
        if workers is None:
            return await trio.to_thread.run_sync(call, abandon_on_cancel=True)
        return await workers.run_sync(call)

    return in_worker_thread


def _with_fresh_connections(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    close_old_connections()
    try:
        return fn(*args, **kwargs)
    finally:
        close_old_connections()


def _plain(
    status: int, reason: str, headers: tuple[tuple[str, str], ...] = (), *, logged: bool = False
) -> HttpResponse:
    """A plain-text answer; ``logged``: this module logged it, with its reason, so Django's
    handler does not log it again (its ``log_response`` skips a response marked so)."""
    response = HttpResponse(reason + "\n", status=status, content_type="text/plain; charset=utf-8")
    for name, value in headers:
        response[name] = value
    response._has_been_logged = logged
    return response
