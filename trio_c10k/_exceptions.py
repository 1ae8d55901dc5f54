"""The exception tree of trio_c10k.

::

    TrioC10kError
    ├── BrokerError: a group broadcast from a process that runs no server was not published
    ├── ConfigError (also a ValueError): a bad option or setting
    ├── ConnectionClosed: writing to a WebSocket that is closing or closed
    └── HandshakeRejected: the server answered a WebSocket client's handshake with plain HTTP

Errors of the peer (malformed HTTP, oversized requests, WebSocket protocol errors) are not
raised to users: the server answers them with an HTTP error status or a WebSocket close
code, and logs the reason.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class TrioC10kError(Exception):
    """Base class of every exception trio_c10k raises."""


class BrokerError(TrioC10kError):
    """A group broadcast from a process that runs no server (a management command, a task
    queue's worker, a shell) was not published: no broker is configured (the Django setting or
    environment variable ``TRIO_C10K_BROKER``), or Redis did not take it in time. The message
    says which."""


class ConfigError(TrioC10kError, ValueError):
    """A configuration value is invalid; the message names the option and the problem."""


class ConnectionClosed(TrioC10kError):
    """The WebSocket is closing or closed; ``code`` and ``reason`` say how it closed.

    ``code`` is a ``CloseReason`` member for a known code (an ``IntEnum``: it equals, and
    prints as, its number), the plain int of an application's code (3000-4999);
    ``ABNORMAL_CLOSURE`` (1006) when the connection ended without a close frame.
    """

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"WebSocket closed with code {code}" + (f": {reason}" if reason else ""))
        #: the close code (RFC 6455 section 7.4)
        self.code = code
        #: the close reason
        self.reason = reason


class HandshakeRejected(TrioC10kError):
    """The server refused the WebSocket handshake and answered with plain HTTP."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        super().__init__(f"WebSocket handshake rejected with HTTP {status}: {body[:200]!r}")
        #: the HTTP status code of the answer
        self.status = status
        #: the answer's headers
        self.headers = headers
        #: the answer's body
        self.body = body


@contextlib.contextmanager
def lone_exception_unwrapped() -> Iterator[None]:
    """Let a lone exception out of a nursery as itself, not in a one-member ExceptionGroup.

    trio wraps whatever leaves a nursery, the block's own exceptions too: a failed ``assert``
    in a test's ``async with`` would arrive as ``ExceptionGroup(ExceptionGroup(AssertionError))``
    and ``pytest.raises(SomeError)`` around the block would miss it. trio's ``as_safe_channel``
    and trio-websocket's ``open_websocket`` unwrap the same way.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) != 1:
            raise
        error = group.exceptions[0]
        context = error.__context__  # ``raise`` below would make the group its context
        try:
            raise error  # the lone exception as it was raised, not a new one
        finally:
            error.__context__ = context
            del error, context  # no reference cycle through this frame
