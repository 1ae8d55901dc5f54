"""The non-blocking socket calls the fast paths make on a descriptor, beside trio's streams.

Rule 1: a read never waits: ``read_nowait`` says "nothing yet" (None), "the end" (b"", also
after a reset) or gives what the kernel has, at most ``READ_SIZE`` bytes.
Rule 2: a socket closed with bytes still unsent after a stalled or truncated write is reset
(``reset_on_close``), never ended normally.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct

import trio

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
        return os.read(fd, READ_SIZE)
    except BlockingIOError:
        return None
    except OSError:
        return b""
