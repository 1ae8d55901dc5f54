"""The counters a server keeps for its metrics (``_metrics``): plain integers, incremented where
the events happen.

Rule 1: one ``Counters`` per ``Server`` (``Server.counters``); each of its WebSockets points to
it (``WebSocketProtocol._counters``), so counting is one attribute increment on objects the
hot path already holds: no lookup, no lock, no call. Messages received are counted once per
``_parse``, bytes once per read and per write; a message sent costs one increment. A
connection no server owns (a client's) counts into ``UNCOUNTED``, which nothing reads.
Rule 2: only the server's event loop thread writes them (WebSocket events, HTTP answers), so
``+=`` needs no lock; a reader in another thread sees a value at most one event old.
Rule 3: they only grow; gauges (connections open, queued bytes, threads busy) are not kept
here but computed from the server's state when metrics are collected.
Rule 4: the one thing kept here for a gauge is ``backlogged``: the WebSockets whose writer
task runs (``_websocket``), the only ones with bytes waiting past the scheduling round they
were sent in, each with what the kernel has not taken yet of the batch the writer is writing.
The writer adds its connection as it starts, updates that number after each write and removes
it as it ends. The gauge of queued bytes adds up each one's send queue (``_queued``) and that
number: exact for the bytes a slow consumer leaves waiting, it costs nothing per idle
connection, and the hot path (a write the kernel takes whole, the flusher) never touches it.
"""

from __future__ import annotations

from typing import Protocol


class Backlogged(Protocol):
    """What the gauge of queued bytes reads of a connection (``WebSocket`` has it)."""

    _queued: int


class Counters:
    """What happened since the server started (see the module's rules)."""

    __slots__ = (
        "backlogged",
        "bytes_in",
        "bytes_out",
        "messages_in",
        "messages_out",
        "refused",
        "responses",
        "slow_closed",
    )

    def __init__(self) -> None:
        #: HTTP answers by status class: ``responses[4]`` counts the 4xx (index 1: the 101s)
        self.responses = [0] * 6
        #: WebSocket handshakes answered with something else than 101, by HTTP status
        self.refused: dict[int, int] = {}
        #: WebSocket messages received whole, and sent (``write_message``, broadcasts)
        self.messages_in = 0
        self.messages_out = 0
        #: WebSocket bytes read from the peers (decrypted over TLS), and written to them
        #: (encrypted over TLS; control frames too)
        self.bytes_in = 0
        self.bytes_out = 0
        #: connections closed with 1008 because their send queue overflowed (slow consumers)
        self.slow_closed = 0
        #: the WebSockets whose writer task runs (the kernel refused bytes), each with the bytes
        #: of the batch being written that the kernel has not taken yet (Rule 4)
        self.backlogged: dict[Backlogged, int] = {}


#: where the connections of no server (clients) count: never read (its ``backlogged`` holds a
#: client's connection only while its writer task runs)
UNCOUNTED = Counters()
