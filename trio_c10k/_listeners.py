"""Listening sockets: opening those of ``--bind``, and sharing them between ``--workers``.

Rule 1: ``open_listeners`` opens one listening socket per address (two for a TCP bind on every
interface: IPv4 and IPv6); an ``fd://`` bind takes the descriptor as it is if it listens.
Rule 2: ``--workers`` share a TCP address through ``SO_REUSEPORT`` (Linux): the supervisor
binds the address without listening (``open_shared_sockets``: it holds the port, and a port 0
becomes a real one), each worker inherits that socket as ``fd://N`` and opens a listening
socket of its own at the same address. The kernel then hands each new connection to one of the
workers' sockets by a hash of its addresses and ports, so they get even shares; a bound socket
that does not listen gets none. A connection waiting in a worker's backlog when that worker
dies is reset (unless ``net.ipv4.tcp_migrate_req`` is 1).
Rule 3: where ``SO_REUSEPORT`` does not apply (a Unix socket, an inherited ``fd://`` listening
socket, a system other than Linux) the supervisor opens the listening socket and the workers
inherit it: the kernel wakes the workers waiting on it, and the first to accept takes the
connection, so the shares are not even.
"""

from __future__ import annotations

import os
import socket
import stat
import sys

import trio

from ._config import Bind, Config
from ._exceptions import ConfigError

#: Rule 2 applies: Linux balances the listening sockets of one SO_REUSEPORT group (the BSDs
#: and macOS accept the option but do not spread connections, or need another one)
REUSE_PORT = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


async def open_listeners(config: Config) -> list[trio.SocketListener]:
    """Open a listening socket for every ``--bind`` address (Rule 1).

    Raises:
        OSError: an address cannot be bound (in use, no permission).
        ConfigError: an ``fd://`` descriptor is not a socket this process can listen with.
    """
    listeners: list[trio.SocketListener] = []
    try:
        for bind in config.binds:
            try:
                listeners.extend(await _open(bind, config.backlog))
            except OSError as exc:
                raise OSError(exc.errno, f"cannot listen on {bind}: {exc.strerror or exc}") from exc
    except BaseException:
        for listener in listeners:
            await trio.aclose_forcefully(listener)
        raise
    return listeners


async def open_shared_sockets(config: Config) -> list[socket.socket]:
    """The sockets the supervisor of ``--workers`` passes on to every worker as ``fd://N``: for
    a TCP bind (on Linux) bound but not listening, each worker listening beside it (Rule 2);
    for any other bind the listening socket itself (Rule 3).

    Raises:
        OSError: an address cannot be bound (in use, no permission).
        ConfigError: an ``fd://`` descriptor is not a listening socket.
    """
    sockets: list[socket.socket] = []
    try:
        for bind in config.binds:
            try:
                if bind.port is not None and REUSE_PORT:
                    sockets.extend(await _reserve(bind))
                elif bind.port is not None:
                    sockets.extend(_detach(listener) for listener in await _open(bind, config.backlog))
                else:
                    sockets.append(_open_socket(bind, config.backlog))
            except OSError as exc:
                raise OSError(exc.errno, f"cannot listen on {bind}: {exc.strerror or exc}") from exc
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _detach(listener: trio.SocketListener) -> socket.socket:
    return socket.socket(fileno=listener.socket.detach())


def is_shared(sock: socket.socket) -> bool:
    """True for a socket of ``open_shared_sockets`` that workers listen beside (Rule 2)."""
    return not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)


async def _reserve(bind: Bind) -> list[socket.socket]:
    """One socket bound to each of the addresses ``bind`` means, ``SO_REUSEPORT`` set, not
    listening (as ``trio.open_tcp_listeners`` binds them: IPv6 sockets take no IPv4)."""
    assert bind.port is not None
    infos = await trio.socket.getaddrinfo(
        bind.host or None, bind.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            _reuse(sock, v6only=True)
            sock.bind(address)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _reuse(sock: socket.socket, *, v6only: bool) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)


def _listen_beside(shared: socket.socket, backlog: int) -> socket.socket | None:
    """A listening socket of this process at the address of ``shared`` (Rule 2), or None if
    ``shared`` is not a TCP socket bound with ``SO_REUSEPORT``."""
    if (
        not REUSE_PORT
        or shared.type != socket.SOCK_STREAM
        or shared.family not in (socket.AF_INET, socket.AF_INET6)
        or not shared.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
        or not shared.getsockname()[1]
    ):
        return None
    sock = socket.socket(shared.family, socket.SOCK_STREAM)
    try:
        v6only = shared.family == socket.AF_INET6 and bool(
            shared.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
        )
        _reuse(sock, v6only=v6only)
        sock.bind(shared.getsockname())
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def _open_socket(bind: Bind, backlog: int) -> socket.socket:
    """The listening socket of an ``fd://`` or ``unix:`` bind."""
    if bind.fd is not None:
        try:
            sock = socket.socket(fileno=bind.fd)
        except OSError as exc:
            raise ConfigError(f"bind {bind}: {exc.strerror}") from None
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            return sock
        with sock:  # the supervisor keeps its own copy
            own = _listen_beside(sock, backlog)
        if own is None:
            raise ConfigError(
                f"bind {bind}: descriptor {bind.fd} is not a listening socket "
                "(nor a TCP socket bound with SO_REUSEPORT)"
            )
        return own
    assert bind.path is not None
    _remove_stale_socket(bind.path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(bind.path)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


async def _open(bind: Bind, backlog: int) -> list[trio.SocketListener]:
    if bind.port is not None:
        return await trio.open_tcp_listeners(bind.port, host=bind.host or None, backlog=backlog)
    return [trio.SocketListener(trio.socket.from_stdlib_socket(_open_socket(bind, backlog)))]


def remove_unix_sockets(config: Config) -> None:
    """Remove the socket files of the ``unix:`` binds (not those of inherited ``fd://`` ones)."""
    for bind in config.binds:
        if bind.path is not None:
            _remove_stale_socket(bind.path)


def _remove_stale_socket(path: str) -> None:
    """A socket file left by a previous run would make bind() fail; anything else is kept."""
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
