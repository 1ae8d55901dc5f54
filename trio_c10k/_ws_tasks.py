"""The tasks around WebSocket connections: ``keep_alive``, one per server (or client) for all
its connections, and ``serve_websocket``, a handler's run on one connection.

Rule 1: ``keep_alive`` looks at each connection a few times per ``ping_interval``; what to do
(nothing, a ping, the 1011 close) is the protocol's decision (``WebSocketProtocol._keep_alive``).
Rule 2: a handler's outcome decides the close code: returning (or ``ConnectionClosed``) 1000,
any other exception 1011 with its traceback logged; the connection is marked closed before the
caller closes the socket, so nothing writes to a descriptor number another connection may get.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import trio
from wsproto.frame_protocol import CloseReason

from ._config import WebSocketConfig
from ._exceptions import ConnectionClosed
from ._protocol import ABNORMAL, WebSocketProtocol
from ._websocket import WebSocket

log = logging.getLogger("trio_c10k.websocket")


async def keep_alive(websockets: Collection[WebSocketProtocol], config: WebSocketConfig) -> None:
    """Keep ``websockets`` alive with pings (``ping_interval``, ``ping_timeout``); runs until
    cancelled.

    One task for every connection instead of a timer per connection: it looks at each
    connection a few times per interval (a ping goes out between ``ping_interval`` and a
    quarter more after the peer fell silent). ``websockets`` may change meanwhile. Returns at
    once if pings are off (``ping_interval=None``).
    """
    if config.ping_interval is None:
        return
    tick = min(config.ping_interval, config.ping_timeout) / 4
    while True:
        await trio.sleep(tick)
        now = trio.current_time()
        heard_since = now - config.ping_interval
        for ws in list(websockets):
            if ws._pinged_at is not None or ws._heard <= heard_since:
                ws._keep_alive(now)


async def serve_websocket(
    ws: WebSocket,
    nursery: trio.Nursery,
    handler: Callable[..., Awaitable[None]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> None:
    """Run ``handler(ws, *args, **kwargs)`` in this task, the connection's tasks in ``nursery``.

    The handler returning (or raising ``ConnectionClosed``, as a write after the peer closed
    does) closes with 1000; raising anything else logs the traceback and closes with 1011.
    The caller closes the stream afterwards, which ends the connection's tasks.
    """
    ws._start(nursery)
    try:
        await handler(ws, *args, **kwargs)
    except ConnectionClosed:
        # Writing after the peer closed is how most handlers learn of it: a normal end.
        log.debug("%s: handler ended on a closed connection", ws._peer)
        code, reason = CloseReason.NORMAL_CLOSURE, ""
    except Exception:
        log.exception("WebSocket handler %s failed", getattr(handler, "__qualname__", handler))
        code, reason = CloseReason.INTERNAL_ERROR, "internal error"
    else:
        code, reason = CloseReason.NORMAL_CLOSURE, ""
    try:
        await ws._finish(code, reason)
    finally:
        # Closed for good before the caller closes the socket, even if the close handshake
        # was cancelled: nothing may write to its descriptor number once another connection
        # can have it.
        ws._mark_closed(ABNORMAL, "")
