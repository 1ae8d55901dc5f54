"""The non-blocking socket calls the fast paths make on a descriptor, beside trio's streams.

Rule 1: a read never waits: ``read_nowait`` says "nothing yet" (None), "the end" (b"", also
after a reset) or gives what the kernel has, at most ``READ_SIZE`` bytes.
Rule 2: a socket closed with bytes still unsent after a stalled or truncated write is reset
(``reset_on_close``), never ended normally.
Rule 3: the one platform seam. On POSIX (Linux, macOS) a socket is a file descriptor: the
fast paths call ``os.read``, ``os.write`` and ``os.writev`` on it (``write_nowait`` *is*
``os.write``: nothing between the hot path and the call; benchmarks/syscalls_bench.py measures
them against the socket methods). Elsewhere (Windows: a socket handle is no descriptor) the same
names send and receive through a socket object over the handle, and file responses go out
without ``sendfile`` (``POSIX`` is False). What else differs is here too: the open-file limit
(``open_file_limit``; none on Windows) and ``AF_UNIX`` (None where there is none).
Rule 4: what needs POSIX (``--workers``, ``fd://`` and ``unix:`` binds) is refused elsewhere
with one line (``require_posix``), not left to fail later.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from ._exceptions import ConfigError

if TYPE_CHECKING:  # trio is not imported at run time: ``_config`` imports this (its Rule 1)
    import trio

#: sockets are file descriptors (Linux, macOS): Rule 3. Tests set it False to check Rule 4.
POSIX = os.name == "posix"
if POSIX:
    import resource

#: the Unix socket family, None where there is none (Windows): ``sock.family == AF_UNIX`` is
#: then False
AF_UNIX: socket.AddressFamily | None = getattr(socket, "AF_UNIX", None)
#: the connections ``open_file_limit`` allows where there is no open-file limit (Windows)
NO_FILE_LIMIT = 10000

#: bytes asked of the kernel per read
READ_SIZE = 65536

#: SO_LINGER on, 0 seconds: close() then resets the connection instead of sending the rest
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)


def reset_on_close(sock: trio.socket.SocketType) -> None:
    """Make closing ``sock`` a reset: the kernel drops what it still holds for the peer (as
    nginx's ``reset_timedout_connection``), and a peer never takes a truncated frame or
    response for a normal end. Does nothing once the socket is closed."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)


def resets_on_close(sock: trio.socket.SocketType) -> bool:
    """Whether closing ``sock`` will reset the connection (``reset_on_close`` was called)."""
    try:
        return sock.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, len(_RESET_ON_CLOSE)) == _RESET_ON_CLOSE
    except OSError:
        return True  # closed already: nothing more may be written


def read_nowait(fd: int) -> bytes | None:
    """What the socket has (b"" at its end, or once reset by the peer), None if nothing yet.

    A function of its own, not inlined in the reader: the traceback of the BlockingIOError
    then holds this short-lived frame, not the reader coroutine's, which would otherwise keep
    a frame object (200 bytes) for the life of every connection.
    """
    try:
        return _read(fd, READ_SIZE)
    except BlockingIOError:
        return None
    except OSError:
        return b""


def open_file_limit() -> int:
    """The soft RLIMIT_NOFILE: the most descriptors this process may hold (``NO_FILE_LIMIT``
    off POSIX)."""
    if not POSIX:
        return NO_FILE_LIMIT
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft


def require_posix(what: str) -> None:
    """Refuse ``what`` where sockets are not file descriptors (Rule 4).

    Raises:
        ConfigError: not POSIX.
    """
    if not POSIX:
        raise ConfigError(f"{what}: not available on {sys.platform} (needs Linux or macOS)")


def socket_send(fd: int, data: bytes | memoryview) -> int:
    """``os.write`` for a socket handle that is not a file descriptor (Rule 3)."""
    with _socket_of(fd) as sock:
        return sock.send(data)


def socket_sendmsg(fd: int, buffers: Sequence[bytes | memoryview]) -> int:
    """``os.writev`` for a socket handle that is not a file descriptor (Rule 3): one send of
    the buffers joined (Windows has no ``sendmsg``)."""
    with _socket_of(fd) as sock:
        return sock.send(b"".join(buffers))


def socket_recv(fd: int, size: int) -> bytes:
    """``os.read`` for a socket handle that is not a file descriptor (Rule 3)."""
    with _socket_of(fd) as sock:
        return sock.recv(size)


@contextlib.contextmanager
def _socket_of(fd: int) -> Iterator[socket.socket]:
    """A socket object over the handle ``fd``, let go (not closed) after use; a closed
    socket's -1 fails as ``os.write`` would."""
    if fd < 0:
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))
    sock = socket.socket(fileno=fd)
    try:
        yield sock
    finally:
        sock.detach()


# Rule 3: chosen once, here.
write_nowait = os.write if POSIX else socket_send
writev_nowait = os.writev if POSIX else socket_sendmsg
_read = os.read if POSIX else socket_recv
