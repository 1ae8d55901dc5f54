"""Group broadcasts from a process that runs no server (a management command, a task queue's
worker, a shell, a program of its own): published through Redis for the servers' members.

Rule 1: one publish-only connection to Redis per process and broker URL, held by a thread of
its own that runs trio (``Publisher``). Every thread and every event loop of the process
(trio, asyncio) hands its broadcasts to it, and they are published one at a time, in the
order they came. It connects at the first broadcast, again at the next one after a failure,
and closes at the interpreter's exit; a forked child (a task queue's worker) opens its own.
Rule 2: a broadcast returns once Redis answered, with what ``PUBLISH`` says: the number of
subscribers it went to, one per server process with the broker. It waits at most
``PUBLISH_TIMEOUT`` seconds from the call, time behind other threads' broadcasts included:
Redis unreachable or slower than that is a ``BrokerError`` for that broadcast (nothing is
kept for later), and the next broadcast tries again.
Rule 3: what is published is what a server's broker publishes (``_broker.encode`` on
``channel_name``), with an origin of its own: every server delivers it to its members.
Rule 4: with a ``redis+sentinel://`` URL, each connection asks the sentinels for the current
primary (``_broker.open_client``): a broadcast during a failover fails as in Rule 2, and the
first one after the promotion connects to the new primary.
"""

from __future__ import annotations

import atexit
import math
import os
import threading
from concurrent.futures import Future

import anyio
import coredis
import trio

from ._broker import _ORIGIN_SIZE, _leaves, channel_name, checked_url, encode, open_client
from ._broker_url import redacted
from ._exceptions import BrokerError

#: seconds a broadcast waits for Redis to answer, connecting included
PUBLISH_TIMEOUT = 10.0

#: a broadcast to publish, the caller's answer, and the time (``trio.current_time()``) by which
#: Redis must have taken it
_Request = tuple[bytes, Future[int], float]


class Publisher:
    """The link of a process that runs no server to the servers' broker (Rule 1)."""

    # set in its thread, before the constructor returns
    _token: trio.lowlevel.TrioToken
    _send: trio.MemorySendChannel[_Request]

    def __init__(self, url: str) -> None:
        #: the broker URL as configured
        self.configured = url
        #: the URL as logged and reported: without its password
        self.shown = redacted(url)
        self._url = checked_url(url)
        self._channel = channel_name(url)
        self._origin = os.urandom(_ORIGIN_SIZE)
        ready = threading.Event()
        self._thread = threading.Thread(
            target=trio.run, args=(self._serve, ready), name="trio_c10k publisher", daemon=True
        )
        self._thread.start()
        ready.wait()

    def publish(self, group: str, data: str | bytes) -> int:
        """Publish a broadcast to ``group`` and wait for Redis's answer (Rule 2).

        Returns:
            The number of subscribers Redis handed it to.

        Raises:
            BrokerError: Redis did not take it, or the publisher is closed (the process exits).
        """
        answer: Future[int] = Future()
        try:
            self._token.run_sync_soon(self._enqueue, encode(self._origin, group, data), answer)
        except trio.RunFinishedError:
            raise BrokerError(f"the link to the broker at {self.shown} is closed") from None
        return answer.result()

    async def publish_async(self, group: str, data: str | bytes) -> int:
        """``publish``, awaited from any trio or asyncio task: the calling loop runs meanwhile.
        Once handed over, the broadcast is published even if the caller is cancelled."""
        return await anyio.to_thread.run_sync(self.publish, group, data)

    def close(self) -> None:
        """Close the connection and end the thread, once what was handed over is published."""
        try:
            self._token.run_sync_soon(self._send.close)
        except trio.RunFinishedError:
            return
        self._thread.join(PUBLISH_TIMEOUT)

    def _enqueue(self, payload: bytes, answer: Future[int]) -> None:
        try:
            self._send.send_nowait((payload, answer, trio.current_time() + PUBLISH_TIMEOUT))
        except trio.ClosedResourceError:
            answer.set_exception(BrokerError(f"the link to the broker at {self.shown} is closed"))

    async def _serve(self, ready: threading.Event) -> None:
        self._token = trio.lowlevel.current_trio_token()
        # Unbounded, yet short: each caller waits for its answer before it sends another.
        self._send, receive = trio.open_memory_channel[_Request](math.inf)
        ready.set()
        request: _Request | None = None
        try:
            while True:
                if request is None:
                    try:
                        request = await receive.receive()
                    except trio.EndOfChannel:
                        return
                try:
                    async with open_client(self._url) as client:
                        while request is not None:
                            payload, answer, deadline = request
                            with trio.fail_at(deadline):  # waiting behind others included
                                answer.set_result(await client.publish(self._channel, payload))
                            request = None
                            try:
                                request = await receive.receive()
                            except trio.EndOfChannel:
                                return
                except* (
                    coredis.exceptions.RedisError,
                    OSError,
                    anyio.ClosedResourceError,
                    trio.TooSlowError,
                ) as group:
                    # (a connection lost while idle ends here too, with no request to fail)
                    if request is not None:
                        problem = "; ".join(_reason(exc) for exc in _leaves(group))
                        request[1].set_exception(
                            BrokerError(f"Redis at {self.shown} did not take the broadcast: {problem}")
                        )
                        request = None
        finally:
            self._send.close()
            for _, answer, _ in [*([request] if request else []), *_drained(receive)]:
                if not answer.done():
                    answer.set_exception(BrokerError(f"the link to the broker at {self.shown} is closed"))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError):
        return f"no answer within {PUBLISH_TIMEOUT:g} s"
    return str(exc) or type(exc).__name__


def _drained(receive: trio.MemoryReceiveChannel[_Request]) -> list[_Request]:
    found = []
    while True:
        try:
            found.append(receive.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            return found


_lock = threading.Lock()
_current: Publisher | None = None


def publisher(url: str) -> Publisher:
    """This process's publisher to the broker at ``url``, started by the first call (the one
    for an earlier URL, if any, is closed)."""
    global _current
    with _lock:
        if _current is None or _current.configured != url:
            if _current is not None:
                _current.close()
            _current = Publisher(url)
        return _current


@atexit.register
def _close() -> None:
    with _lock:
        if _current is not None:
            _current.close()


def _forget() -> None:
    """In a forked child: the parent's thread is not there; the first broadcast starts one."""
    global _current, _lock
    _current, _lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget)
