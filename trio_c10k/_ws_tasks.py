"""The tasks around WebSocket connections: ``keep_alive``, one per server (or client) for all
its connections, and ``serve_websocket``, a handler's run on one connection.

Rule 1: ``keep_alive`` looks at each connection once per ``Sweep.period`` (a quarter of the
shorter of ``ping_interval`` and ``ping_timeout``), in steps spread over the period: a step
looks at ``LOOKS_PER_STEP`` connections and sends ``PINGS_PER_STEP`` pings at most, so pings
never come in a burst that holds the event loop. What to do with a connection (nothing, a
ping, the 1011 close) is the protocol's decision (``WebSocketProtocol._keep_alive``).
Rule 2: a handler's outcome decides the close code: returning (or ``ConnectionClosed``) 1000,
any other exception 1011 with its traceback logged; the connection is marked closed before the
caller closes the socket, so nothing writes to a descriptor number another connection may get.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import trio
from wsproto.frame_protocol import CloseReason

from ._config import WebSocketConfig
from ._exceptions import ConnectionClosed
from ._protocol import ABNORMAL, WebSocketProtocol
from ._websocket import WebSocket

log = logging.getLogger("trio_c10k.websocket")


#: connections the keep-alive task looks at in one step: a sweep has one step per this many
#: connections, evenly spaced. In the steady state about a fifth of those looked at are due
#: (each is pinged once per ``ping_interval`` and a bit, and looked at four times): about 20.
LOOKS_PER_STEP = 128
#: pings (or 1011 closes) the keep-alive task sends in one step, at most. A ping costs ~10 us
#: here and its pong ~25 us in the reader (a wake-up, a read, a re-arm): the pongs of one step
#: come back together, so this bounds the loop's longest turn the keep-alive causes.
PINGS_PER_STEP = 32


class Sweep:
    """When the keep-alive task looks at which connection, without I/O: ``step(websockets,
    now)`` looks at the next connections, and returns when to step again.

    A sweep looks at every connection once (a snapshot of ``websockets`` taken as it starts)
    and lasts ``period`` (a quarter of ``min(ping_interval, ping_timeout)``); the next starts
    when it is over and ``period`` has passed since it started. Its steps are spread evenly
    over the period, ``LOOKS_PER_STEP`` connections each, so the pings that fall due spread
    over it too. A step also stops after ``PINGS_PER_STEP`` pings, and the next comes a
    quarter of the spacing later (``PINGS_PER_STEP / LOOKS_PER_STEP`` of it): pings never go
    out faster than one per connection per period, so a sweep where every connection is due
    (all connected at once) lasts two periods at most.
    """

    def __init__(self, config: WebSocketConfig) -> None:
        assert config.ping_interval is not None
        #: how long a sweep lasts at least, and how often a connection is looked at
        self.period = min(config.ping_interval, config.ping_timeout) / 4
        self._interval = config.ping_interval
        # The sweep's connections, how many it looked at and in how many whole steps, when it
        # started and how far apart its steps are.
        self._snapshot: list[WebSocketProtocol] = []
        self._looked = 0
        self._steps = 0
        self._started = -math.inf
        self._spacing = self.period

    def step(self, websockets: Collection[WebSocketProtocol], now: float) -> float:
        """Look at the connections due by ``now``: ping those silent for ``ping_interval``,
        close those that did not answer within ``ping_timeout`` (``_keep_alive``). Returns when
        to step next."""
        snapshot = self._snapshot
        if self._looked >= len(snapshot):
            if now < self._started + self.period:
                return self._started + self.period
            snapshot = self._snapshot = list(websockets)
            self._looked, self._steps, self._started = 0, 0, now
            self._spacing = self.period / max(1, math.ceil(len(snapshot) / LOOKS_PER_STEP))
        # The steps due by now: one more than done at least (``now`` may round below the time
        # this step was due), more if the loop was late.
        steps = max(self._steps + 1, int((now - self._started) / self._spacing) + 1)
        target = min(len(snapshot), steps * LOOKS_PER_STEP)
        looked, pings, heard_since = self._looked, 0, now - self._interval
        while looked < target and pings < PINGS_PER_STEP:
            ws = snapshot[looked]
            looked += 1
            if (ws._pinged_at is not None or ws._heard <= heard_since) and ws._keep_alive(now):
                pings += 1
        self._looked = looked
        if looked < target:  # pings left over: the rest a fraction of the spacing later
            return now + self._spacing * PINGS_PER_STEP / LOOKS_PER_STEP
        self._steps = steps
        if looked >= len(snapshot):
            self._snapshot = []  # no connection is kept alive by the snapshot
            return self._started + self.period
        return self._started + steps * self._spacing


async def keep_alive(websockets: Collection[WebSocketProtocol], config: WebSocketConfig) -> None:
    """Keep ``websockets`` alive with pings (``ping_interval``, ``ping_timeout``); runs until
    cancelled.

    One task for every connection instead of a timer per connection, stepping as ``Sweep``
    says: each connection is looked at once per ``period`` (a quarter of the shorter of the
    two), so a ping goes out between ``ping_interval`` and about half as long again after the
    peer fell silent (twice as long at worst, when every connection falls due at once), and
    no step of the event loop sends more than ``PINGS_PER_STEP``.
    ``websockets`` may change meanwhile. Returns at once if pings are off
    (``ping_interval=None``).
    """
    if config.ping_interval is None:
        return
    sweep = Sweep(config)
    while True:
        when = sweep.step(websockets, trio.current_time())
        await trio.sleep_until(when)


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
