"""The accept loop: listeners, one task per connection, limits, graceful shutdown.

Rule 1: listeners live in their own nursery, apart from the connection handlers, so that
shutdown stops accepting while the handlers drain.
Rule 2: every connection task closes its socket in ``finally`` (``trio.aclose_forcefully``).
Rule 3: graceful shutdown = stop accepting, close idle keep-alive connections, give in-flight
requests ``graceful_timeout`` seconds, then cancel what is left. A request that reached the
server before (in a socket's buffer, or on a connection in the listen backlog) is in flight:
it is answered, with ``Connection: close``.
Rule 4: each time the accept loop wakes, it accepts the connections waiting in the backlog,
not one (asyncio's loop does the same, nginx's ``multi_accept``): trio's ``accept()`` takes one
per scheduling round, and a busy server's round takes milliseconds, so connections queued in
the backlog waited seconds while established keep-alive connections were served. It takes
``ACCEPT_BATCH`` at most per round, then lets the round run: every connection accepted runs
its first step in the next round, so a whole backlog at once (2,048 in a reconnect storm) made
one round that held every other connection for a tenth of a second and more. It accepts
from a non-blocking duplicate of each listening socket, which gives each peer's address with
the connection (the local one is the listener's, but on a wildcard bind): no ``getpeername()``
or ``getsockname()`` per connection.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from ._config import Config
from ._counters import Counters
from ._exceptions import ConfigError
from ._fanout import deliver, use_event_loop
from ._http import HTTPConnection
from ._http_send import LINGER_BYTES, LINGER_TIME, linger, peer_label
from ._listeners import open_listeners, remove_unix_sockets
from ._sockets import AF_UNIX, open_file_limit
from ._threads import WorkerThreads, current_workers, open_worker_threads
from ._tls_context import ServerContext
from ._tls_stream import PlainHTTP, TLSStream, accept_tls
from ._websocket import WebSocket
from ._ws_tasks import keep_alive, serve_websocket

if TYPE_CHECKING:
    from ._broker import RedisBroker

log = logging.getLogger("trio_c10k.server")

#: the servers running in this process (``_metrics`` reads them)
running: set[Server] = set()

# accept() errors that mean "out of a resource right now", not "this listener is broken"
# (the same list as trio's serve_listeners): wait a little and try again.
ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
#: seconds to wait before accepting again after one of those errors
ACCEPT_RETRY_DELAY = 0.1
#: connections accepted per scheduling round at most (Rule 4): a new connection's first step
#: (its request read, parsed and handed to a worker thread) takes 100-300 us of the loop
ACCEPT_BATCH = 16
#: what ``_accept_backlog`` returns when it stopped at ``ACCEPT_BATCH`` (more may be waiting)
_BATCH_FULL = -1
# accept() errors that concern only the connection at hand (Linux passes the network errors
# pending on the new socket on, man 2 accept: "treat them like EAGAIN by retrying")
ACCEPT_NEXT_ERRNOS = frozenset(
    {errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.ENETDOWN, errno.ENOPROTOOPT}
    | {errno.EHOSTDOWN, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EOPNOTSUPP}
)
#: descriptors kept free for the application when max_connections follows RLIMIT_NOFILE
FD_RESERVE = 100
#: seconds, then bytes, a connection turned away with 503 is given: to take the answer, and to
#: have what it sent read and dropped (its descriptor comes from ``FD_RESERVE``: kept short)
REJECT_TIME = 1.0
REJECT_BYTES = 1024 * 1024
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 38\r\nconnection: close\r\nretry-after: 1\r\n\r\n"
    b"Server at its connection limit; retry\n"
)


@dataclass(frozen=True, slots=True)
class ServerStatistics:
    """A snapshot of the server's counters (from ``Server.statistics()``)."""

    #: connections open now
    connections: int
    #: requests answered since the server started
    requests: int
    #: connections turned away with 503 because ``max_connections`` was reached
    rejected: int
    #: WebSocket connections open now (counted in ``connections`` too)
    websockets: int


def default_max_connections() -> int:
    """The soft RLIMIT_NOFILE minus ``FD_RESERVE``: the most sockets this process can hold."""
    return max(1, open_file_limit() - FD_RESERVE)


def broker_class() -> type[RedisBroker]:
    """The Redis broker's class; its client library is imported only when a broker is
    configured.

    Raises:
        ConfigError: the Redis client coredis cannot be imported, with how to install it.
    """
    try:
        from ._broker import RedisBroker
    except ImportError as exc:  # coredis, or one of its own dependencies (anyio...)
        message = f"--broker needs the Redis client coredis, which cannot be imported here ({exc})"
        raise ConfigError(f"{message}: pip install 'trio-c10k[redis]'") from None
    return RedisBroker


def _fixed_local_address(listener: trio.SocketListener) -> tuple[str, int] | None:
    """The local address of every connection ``listener`` accepts, if one is fixed: a TCP
    listener bound to one address; None for a wildcard bind (``0.0.0.0``, ``::``: each
    connection's own) and for a Unix socket."""
    name = listener.socket.getsockname()
    if not isinstance(name, tuple) or ipaddress.ip_address(name[0]).is_unspecified:
        return None
    return name[0], name[1]


def _address(listener: trio.SocketListener, scheme: str) -> str:
    name = listener.socket.getsockname()
    if listener.socket.family == AF_UNIX:
        return f"unix:{name}"
    host, port = name[0], name[1]
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


class Server:
    """A running server, as ``serve()`` hands it to ``task_status.started()``."""

    def __init__(
        self,
        app: Callable[..., Iterable[bytes]],
        config: Config,
        listeners: list[trio.SocketListener],
        tls: ServerContext | None = None,
    ) -> None:
        #: the WSGI application
        self.app = app
        #: the settings it runs with
        self.config = config
        #: the listening sockets
        self.listeners = listeners
        #: the threads running the application (set while serving)
        self.workers: WorkerThreads
        #: cancel scopes of connections idle between requests (shutdown cancels them)
        self.idle: set[trio.CancelScope] = set()
        #: the WebSocket connections open now
        self.websockets: set[WebSocket] = set()
        #: True once shutdown() was called
        self.closing = False
        #: requests answered so far
        self.requests = 0
        #: what happened so far, for the metrics (``_counters``)
        self.counters = Counters()
        #: the link to the other processes (``--broker``), None without one
        self.broker: RedisBroker | None = None
        #: the TLS server context holder (``.current``: the ``ssl.SSLContext`` new connections
        #: use; ``reload()`` on SIGHUP), or None for plain TCP
        self.tls = tls
        self._max_connections = config.max_connections or default_max_connections()
        self._connections = 0
        self._rejected = 0
        self._full = False
        self._accept_failing = False
        self._stop_accepting = trio.CancelScope()
        # Each listener's non-blocking duplicate, which the accept loop accepts from: unlike
        # trio's accept(), it gives each peer's address (no getpeername() per connection).
        self._accepters: dict[trio.SocketListener, socket.socket] = {}
        self._drained = trio.Event()
        # Owns every connection task, and the reader and writer tasks of each WebSocket.
        self._handlers: trio.Nursery

    @property
    def addresses(self) -> list[Any]:
        """Each listener's ``getsockname()``: ``(host, port, ...)`` for TCP, a path for Unix."""
        return [listener.socket.getsockname() for listener in self.listeners]

    def statistics(self) -> ServerStatistics:
        """Counters for monitoring and tests."""
        return ServerStatistics(self._connections, self.requests, self._rejected, len(self.websockets))

    def shutdown(self) -> None:
        """Begin a graceful shutdown; ``serve()`` returns once it is over.

        Stops accepting, closes keep-alive connections that are idle, lets in-flight
        requests finish within ``graceful_timeout``, then cancels the rest. Requests that
        reached the server already are in flight: those in an idle connection's buffer, and
        those of the connections the kernel completed before this call (accepted now, each
        given a moment for its request). Each is answered with ``Connection: close``. Calling
        it again does nothing.
        """
        if self.closing:
            return
        self.closing = True
        self._stop_accepting.cancel()
        for listener, accepter in self._accepters.items():
            local = _fixed_local_address(listener)
            while self._accept_backlog(accepter, local) == _BATCH_FULL:  # all of it, not a batch
                pass
        for scope in self.idle:
            scope.cancel()
        for ws in self.websockets:
            ws.going_away()
        if not self._connections:
            self._drained.set()

    async def _run(self, task_status: trio.TaskStatus[Server]) -> None:
        try:
            for listener in self.listeners:
                accepter = socket.socket(fileno=os.dup(listener.socket.fileno()))
                accepter.setblocking(False)
                self._accepters[listener] = accepter
            async with (
                open_worker_threads(self.config.threads) as self.workers,
                trio.open_nursery() as handlers,
            ):
                self._handlers = handlers
                current_workers.set(self.workers)  # for database_sync_to_thread in handlers
                broker = broker_class()(self.config.broker, deliver) if self.config.broker else None
                self.broker = broker
                use_event_loop(trio.lowlevel.current_trio_token(), broker)  # for Group calls
                if broker is not None:
                    handlers.start_soon(broker.run)
                    log.info("Group broadcasts go through Redis at %s", broker.shown)
                handlers.start_soon(keep_alive, self.websockets, self.config.websocket)
                with self._stop_accepting:
                    async with trio.open_nursery() as accepting:
                        for listener in self.listeners:
                            accepting.start_soon(self._accept_loop, listener)
                            log.info(
                                "Listening on %s", _address(listener, "http" if self.tls is None else "https")
                            )
                        running.add(self)
                        task_status.started(self)
                self._close_listeners()
                with trio.move_on_after(self.config.graceful_timeout):
                    await self._drained.wait()
                if self._connections:
                    log.warning(
                        "Graceful timeout (%g s) reached: cancelling %d connections",
                        self.config.graceful_timeout,
                        self._connections,
                    )
                handlers.cancel_scope.cancel()
        finally:
            running.discard(self)
            self._close_listeners()
            remove_unix_sockets(self.config)

    def _close_listeners(self) -> None:
        for accepter in self._accepters.values():
            accepter.close()  # a duplicate: the listening socket stays open until both are closed
        for listener in self.listeners:
            listener.socket.close()

    async def _accept_loop(self, listener: trio.SocketListener) -> None:
        accepter = self._accepters[listener]
        local = _fixed_local_address(listener)
        while True:
            failure = self._accept_backlog(accepter, local)  # Rule 4
            if failure is None:
                await trio.lowlevel.wait_readable(accepter)
                continue
            if failure == _BATCH_FULL:
                await trio.lowlevel.checkpoint()  # the connections just accepted start first
                continue
            if not self._accept_failing:
                self._accept_failing = True
                log.error(
                    "accept() failed: %s (%d connections open); raise the open-file limit "
                    "(ulimit -n) or lower --max-connections. Existing connections are "
                    "still served; retrying every %g s",
                    os.strerror(failure),
                    self._connections,
                    ACCEPT_RETRY_DELAY,
                )
            await trio.sleep(ACCEPT_RETRY_DELAY)

    def _accept_backlog(self, accepter: socket.socket, local: tuple[str, int] | None) -> int | None:
        """Start serving the connections the kernel holds for ``accepter`` (a listener's
        non-blocking duplicate), ``ACCEPT_BATCH`` at most, without waiting; the ``errno`` if
        the process is out of a resource (``ACCEPT_CAPACITY_ERRNOS``: the rest wait in the
        backlog), ``_BATCH_FULL`` if it stopped at ``ACCEPT_BATCH``, None once none is left."""
        for _ in range(ACCEPT_BATCH):
            try:
                accepted, peer = accepter.accept()
            except BlockingIOError:  # none left
                return None
            except OSError as exc:
                if exc.errno in ACCEPT_NEXT_ERRNOS:
                    continue
                if exc.errno in ACCEPT_CAPACITY_ERRNOS:
                    return exc.errno
                if exc.errno == errno.EBADF:  # closed: serve() is over
                    return None
                raise
            if self._accept_failing:
                self._accept_failing = False
                log.info("accept() works again (%d connections open)", self._connections)
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(accepted))
            if self._connections >= self._max_connections:
                self._handlers.start_soon(self._reject, stream)
            else:
                self._connections += 1
                self._handlers.start_soon(self._handle, stream, peer, local, name="trio_c10k connection")
        return _BATCH_FULL

    async def _handle(self, stream: trio.SocketStream, peer: Any, local: tuple[str, int] | None) -> None:
        try:
            served: trio.SocketStream | TLSStream | None = stream
            client = peer[:2] if isinstance(peer, tuple) else None  # a Unix socket's is a str
            if self.tls is not None and client is not None:  # TLS on TCP binds
                served = await self._accept_tls(stream, self.tls.current, client)
            if served is None:
                return
            if client is not None and local is None:  # a wildcard bind: which address it came to
                local = stream.socket.getsockname()[:2]
            upgrade = await HTTPConnection(served, self, client, local).run()
            if upgrade is not None:
                ws, slot = upgrade
                handler, args, kwargs = slot.handler, slot.args, slot.kwargs
                del upgrade, slot  # not kept for the connection's life (100,000 of them: 150 B each)
                ws._counters = self.counters
                self.websockets.add(ws)
                if self.closing:  # the upgrade finished after shutdown() began
                    ws.going_away()
                try:
                    await serve_websocket(ws, self._handlers, handler, args, kwargs)
                finally:
                    self.websockets.discard(ws)
            if isinstance(served, TLSStream):
                served.close_notify_nowait()
        except Exception:
            log.exception("Unexpected error in a connection task")
        finally:
            await trio.aclose_forcefully(stream)
            self._connections -= 1
            if self._full and self._connections < self._max_connections:
                self._full = False
            if self.closing and not self._connections:
                self._drained.set()

    async def _accept_tls(
        self, stream: trio.SocketStream, context: ssl.SSLContext, client: tuple[str, int]
    ) -> TLSStream | None:
        """The TLS handshake of a new connection, within ``header_timeout`` (None: it failed,
        stalled or was plain HTTP, which got its 400 and a lingering close)."""
        try:
            return await accept_tls(stream, context, self.config.header_timeout, peer_label(client))
        except PlainHTTP:
            await linger(stream, LINGER_TIME, LINGER_BYTES)
            return None

    async def _reject(self, stream: trio.SocketStream) -> None:
        self._rejected += 1
        if not self._full:
            self._full = True
            log.warning(
                "max_connections (%d) reached: answering new connections with 503",
                self._max_connections,
            )
        try:
            with trio.move_on_after(REJECT_TIME):  # the answer and the lingering, together
                await stream.send_all(_BUSY)
                # As after any error answer: the request the client sent is read and dropped.
                await linger(stream, REJECT_TIME, REJECT_BYTES)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)


async def serve(
    app: Callable[..., Iterable[bytes]],
    config: Config | None = None,
    *,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the WSGI application ``app`` over HTTP/1.1 until shut down or cancelled.

    Use it as ``server = await nursery.start(serve, app, config)``: it calls
    ``task_status.started(server)`` once every listener is bound, so ``server.addresses``
    gives the real ports when a bind asked for port 0.

    Args:
        app: a WSGI application (Django's ``get_wsgi_application()``, or any other).
        config: limits and addresses; ``Config()`` if omitted.
        task_status: for ``nursery.start()``.

    Raises:
        OSError: an address cannot be bound.
        ConfigError: a bind address is unusable, or a TLS file (``config.tls``) cannot be used.

    Resource handling: the listening sockets and every accepted connection are closed
    before ``serve()`` returns; a Unix socket file is removed.

    Cancellation: cancelling ``serve()`` stops at once, cancelling in-flight requests (their
    worker threads finish on their own). ``Server.shutdown()`` is the graceful way.
    """
    config = config or Config()
    # Loaded before listening: a certificate that cannot be used stops the start.
    tls = ServerContext(config.tls) if config.tls.enabled else None
    listeners = await open_listeners(config)
    await Server(app, config, listeners, tls)._run(task_status)
