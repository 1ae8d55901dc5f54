"""One WebSocket connection's I/O: ``WebSocket``, the protocol (``_protocol``) over a trio
socket, for server and client alike, and the tasks that serve it.

Rule 1: one reader task reads the socket with plain non-blocking reads and feeds the protocol
(``_receive_data``, ``_parse``); while the inbox is full it stops reading, and TCP pushes back
on the peer; after a ``_parse`` that handed wsproto ``FRAMES_PER_STEP`` frames, and after two
reads in a row, it lets other tasks run.
Rule 2: writes never wait. The first frame a connection gets in a scheduling round goes
straight to the socket with a non-blocking write (a broadcast to thousands of idle sockets
then wakes no task); the frames it gets later in the same round are queued, and one task per
trio run (``_Flusher``) writes each connection's queue in one write once the round is over.
A connection that got several frames in one of its last ``COALESCING_ROUNDS`` flushed
rounds is *coalescing*: its first frame waits for the flush too, so a busy connection (a
pipelining client, a cell hearing from its eight neighbours, a watch page hearing from every
cell) costs one write per round, not one per frame. Whatever the kernel does not take stays
queued for the connection's writer task, and from then on every frame goes through the
queue, so order holds. The queue is bounded as the protocol says (its Rule 3).
Rule 3: a close frame never lands inside another frame. When a backlog is dropped, the rest
of a frame the writer task has partly written stays, and the close frame follows it; when the
socket is closed with bytes still unsent, it is reset (SO_LINGER 0), so the peer never takes
what follows a truncated frame for its end.
Rule 4: an idle connection has one task (its reader) beside the handler; the writer task
exists only while the kernel does not take what is queued, and one ``keep_alive`` task
(``_ws_tasks``) pings every connection of a server that falls silent. While its writer task
runs, a connection is in its server's ``Counters.backlogged`` (``_counters``, Rule 4).
The reader and writer run in a nursery the caller owns (the server's connection nursery), not
one of their own; they end by themselves once the connection is closed and its socket with
it. Every wait (a message, room in the inbox or the send queue, the close) parks in ``_wait``
and looks again when woken.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, cast

import trio
from wsproto.connection import Connection
from wsproto.frame_protocol import CloseReason

from ._config import WebSocketConfig
from ._flusher import flusher
from ._protocol import ABNORMAL, WebSocketProtocol
from ._sockets import READ_SIZE, read_nowait, reset_on_close, write_nowait
from ._threads import call_in_loop

log = logging.getLogger("trio_c10k.websocket")

#: rounds a connection keeps coalescing after one in which it got several frames
COALESCING_ROUNDS = 8


class WebSocket(WebSocketProtocol):
    """A WebSocket connection, as a handler receives it: ``async def handler(ws, ...)``.

    Read with ``await ws.read_message()`` (or ``async for message in ws``); write with
    ``ws.write_message(data)``, which never blocks and may be called from any trio task or
    from a worker thread running Django, or ``await ws.send_message(data)``, which waits for
    room in the send queue.

    Handlers may keep their own attributes on it (``ws.room = "lobby"``).

    The fan-out (``_fanout``) uses these names, and no other private one: ``_token`` and
    ``_loop_thread`` (its loop, for ``in_loop_thread`` and ``call_in_loop``); ``_groups`` (the
    member sets it is in); for ``broadcast``'s loop, ``_is_closed`` and ``_close_sent`` (``not
    open``, inlined), ``_plain`` (it takes the frame ``encode_frame(data)`` built once for every
    member) and ``_send_frame(frame)``; for ``send_message``, ``_queued`` (bytes in the send
    queue) and ``_wait_for_room(since)``.
    """

    # Slots: at 10,000 connections a per-object attribute dictionary costs 10 MB. The
    # ``__dict__`` slot is there for attributes handlers add; it is created on first use.
    __slots__ = (
        "__dict__",
        "__weakref__",
        "_coalescing",
        "_fd",
        "_flush_due",
        "_flusher",
        "_groups",
        "_nursery",
        "_stream",
        "_stuck",
        "_token",
        "_writer_running",
        "_writing",
        "request",
        "subprotocol",
    )

    #: what the socket has (see ``_read_nowait``); over TLS, the plaintext it completes
    _read_nowait = staticmethod(read_nowait)

    def __init__(
        self,
        stream: trio.SocketStream,
        connection: Connection | None,
        config: WebSocketConfig,
        *,
        request: Any = None,
        subprotocol: str | None = None,
        remote_address: Any = None,
        extensions: list[Any] | None = None,
        received: bytes = b"",
    ) -> None:
        super().__init__(
            connection,
            config,
            remote_address=remote_address,
            extensions=extensions,
            received=received,
            now=trio.current_time(),
        )
        #: the Django ``HttpRequest`` of the handshake (None on the client side)
        self.request = request
        #: the subprotocol agreed in the handshake, or None
        self.subprotocol = subprotocol
        self._stream = stream
        self._fd = stream.socket.fileno()
        self._token = trio.lowlevel.current_trio_token()
        # Whether the writer task is writing.
        self._writing = False
        # Set once a frame went out this scheduling round: the next wait for the flusher.
        self._flush_due = False
        # Set while the connection gets several frames per round: then the first waits too.
        self._coalescing = 0
        self._flusher = flusher()
        # Set when the peer stopped reading: the last writes are not waited for.
        self._stuck = False
        # The writer task runs only while frames wait: an idle connection costs no task.
        self._writer_running = False
        # The member sets of the fan-out groups it belongs to (None until it joins one): as it
        # closes, it calls each one's ``discard(self)`` (a set of the fan-out's own that forgets
        # its group once empty).
        self._groups: list[set[WebSocket]] | None = None
        self._nursery: trio.Nursery | None = None

    # -- the public API -------------------------------------------------------------------

    def read_message(self) -> Coroutine[Any, Any, str | bytes | None]:
        """The next message (await it): ``str`` for text, ``bytes`` for binary; None once
        closed.

        Messages received before the close are still returned first. Cancellation leaves
        the connection as it was (no message is lost). A message that is already here is
        returned without yielding to other tasks (a cancellation point, not a schedule
        point): a burst is at most ``INCOMING_QUEUE`` messages, or ``max_message_size`` bytes
        and one message, long.
        """
        return self._read(stop=False)

    def __aiter__(self) -> WebSocket:
        return self

    def __anext__(self) -> Coroutine[Any, Any, str | bytes]:
        # ``_read`` raises StopAsyncIteration instead of returning None.
        return cast("Coroutine[Any, Any, str | bytes]", self._read(stop=True))

    async def _read(self, *, stop: bool) -> str | bytes | None:
        # ``read_message()`` and ``__anext__()`` return this coroutine as it is, not one of
        # their own awaiting it: a handler waiting for a message holds one frame less
        # (200 bytes per idle connection).
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._inbox:
            if self._inbox_closed:
                if stop:
                    raise StopAsyncIteration
                return None
            await self._wait()
        return self._next_message()

    async def send_message(self, data: str | bytes) -> None:
        """Send a message, first waiting while the send queue is over half full.

        For producers that can wait (back-pressure instead of the 1008 close).

        Raises:
            ConnectionClosed: the connection is closing or closed.
        """
        while self._queued > self._config.send_queue_size // 2 and not self._is_closed:
            await self._wait()
        self.write_message(data)

    async def close(self, code: int = CloseReason.NORMAL_CLOSURE, reason: str = "") -> None:
        """Close the connection: send a close frame, wait for the peer's (``close_timeout``).

        Returns once the connection is closed; a peer that does not answer in time is
        disconnected. Closing a closed connection does nothing.

        Args:
            code: a ``CloseReason`` member or any int RFC 6455 allows (4000-4999 for your own).
            reason: a short text for the peer.
        """
        self._start_close(code, reason)
        with trio.move_on_after(self._config.close_timeout):
            await self.wait_closed()
        if not self._is_closed:
            log.info("%s: no close frame within %g s; disconnecting", self._peer, self._config.close_timeout)
            self._mark_closed(ABNORMAL, "close handshake timed out")

    def going_away(self) -> None:
        """Start closing with 1001 (server shutting down): the handler reads None next."""
        if self.open:
            self._start_close(CloseReason.GOING_AWAY, "server shutting down")
            self._close_inbox()

    async def wait_closed(self) -> None:
        """Wait until the connection is closed, whoever closes it."""
        while not self._is_closed:
            await self._wait()

    # -- tasks --------------------------------------------------------------------------

    def _start(self, nursery: trio.Nursery) -> None:
        """Start the reader task in ``nursery``; the writer task will run there too."""
        self._nursery = nursery
        nursery.start_soon(self._reader, name="trio_c10k websocket reader")

    async def _finish(self, code: int, reason: str = "") -> None:
        """Close with ``code`` and let the last frames go out; the caller then closes the
        socket, which ends the reader task."""
        try:
            await self.close(code, reason)
            with trio.move_on_after(0 if self._stuck else self._config.close_timeout):
                while self._queue or self._writing:
                    await self._wait()
        finally:
            if self._queue or self._writing:  # a frame may be half written: reset, never truncate
                reset_on_close(self._stream.socket)

    async def _reader(self) -> None:
        # A plain non-blocking read on the file descriptor, then ``wait_readable`` if there is
        # nothing yet: an idle reader is one task parked in epoll, with no stream machinery
        # and no cancel scope around it.
        fd, read = self._fd, self._read_nowait
        waited = False  # whether the last read came after a wait (a checkpoint already)
        # Whether the last read took less than it asked: nothing more yet. True to begin with:
        # the peer has not had the 101 yet, and what it sent with its handshake is ``_unparsed``.
        drained = True
        try:
            while True:
                # What is not parsed yet first: the bytes that came with the handshake may
                # hold whole frames.
                if self._unparsed:
                    self._parse()
                # Checked after every wait too: once closed, the socket may be gone and its
                # number reused by another connection. (wsproto's state is never CLOSED before
                # this: the protocol marks the connection closed as it handles that event.)
                if self._is_closed:
                    break
                if self._inbox_full():
                    await self._wait()  # for room in the inbox
                    continue
                if self._tired:  # more frames are here, but this step did its share: others first
                    self._tired = False
                    await trio.lowlevel.checkpoint()
                    continue
                data = None if drained else read(fd)
                if data is None:
                    await trio.lowlevel.wait_readable(fd)
                    waited, drained = True, False
                    continue
                if not waited:  # a second read in a row: a peer that always has data must not starve others
                    await trio.lowlevel.checkpoint()
                waited, drained = False, len(data) < READ_SIZE
                self._receive_data(data, trio.current_time())
        except trio.ClosedResourceError:
            pass  # the socket was closed under us: the connection is over
        except Exception:  # a task boundary in someone else's nursery: never let it escape
            log.exception("%s: unexpected error reading a WebSocket", self._peer)
            self._fail(CloseReason.INTERNAL_ERROR, "internal error")
        finally:
            self._mark_closed(ABNORMAL, "")

    async def _writer(self) -> None:
        # trio's socket writes, not ``send_all``: what the kernel has not taken of the batch is
        # then known after each write, for the gauge of queued bytes (``Counters.backlogged``).
        backlogged, sock = self._counters.backlogged, self._stream.socket
        try:
            while self._queue:
                data = memoryview(self._data_to_send())
                backlogged[self] = len(data)
                self._writing = True
                try:
                    while data:
                        sent = await sock.send(data)
                        self._counters.bytes_out += sent
                        data = data[sent:]
                        backlogged[self] = len(data)
                except (OSError, trio.ClosedResourceError):  # reset, or closed under us
                    self._mark_closed(ABNORMAL, "")
                    return
                finally:
                    self._writing = False
                    self._wake()
        finally:
            self._writer_running = False
            backlogged.pop(self, None)

    # -- the protocol's hooks -----------------------------------------------------------

    def _send_frame(self, frame: bytes) -> None:
        # Straight to the socket when it is the first frame of this round, nothing waits
        # before it and the connection is not coalescing (``_queued`` rather than the list
        # itself: a broadcast then reads only this object, for each of its members).
        if not (self._flush_due or self._queued or self._writer_running or self._coalescing):
            try:
                sent = write_nowait(self._fd, frame)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._mark_closed(ABNORMAL, "")
                return
            self._counters.bytes_out += sent  # counted as written: once per write, not per frame
            if sent == len(frame):
                self._flush_due = True
                self._flusher.add(self)
                return
            self._queue.append(frame[sent:])  # the queue was empty: no bound to check
            self._queued = len(frame) - sent
            self._start_writer()
        elif self._enqueue(frame) and not (self._flush_due or self._writer_running):
            self._flush_due = True
            self._flusher.add(self)

    def _wake(self) -> None:
        """Wake every task parked in ``_wait``."""
        waiters, self._waiters = self._waiters, []
        for task in waiters:
            trio.lowlevel.reschedule(task)

    def _from_other_thread(self, fn: Callable[..., None], *args: Any) -> None:
        call_in_loop(self._token, fn, *args)

    def _drop(self, why: str, keep_first: bool = False) -> None:
        # The rest of a frame already partly written that the writer task has not taken yet
        # stays, and the close frame goes after it (Rule 3); a peer reading it gets both
        # (``_finish`` waits up to ``close_timeout``), otherwise nothing is waited for, and
        # unsent bytes mean a reset.
        partial = bool(self._writer_running and not self._writing and self._queue)
        self._stuck = not partial
        super()._drop(why, partial)

    def _mark_closed(self, code: int, reason: str) -> None:
        if self._is_closed:
            return
        super()._mark_closed(code, reason)
        if self._groups is not None:
            for members in self._groups:
                members.discard(self)
            self._groups = None

    # -- writes -------------------------------------------------------------------------

    def _flush(self) -> None:
        """Write the frames queued this round in one write (the flusher calls this)."""
        self._flush_due = False
        queue = self._queue
        # A connection that got several frames this round (a busy cell, a watch page) is
        # likely to next round too: its first frame then waits for the flush as well, for one
        # write per round. One that got a single frame goes back to writing it at once.
        if len(queue) >= (2 if self._coalescing else 1):
            self._coalescing = COALESCING_ROUNDS
        elif self._coalescing:
            self._coalescing -= 1
        if not queue or self._writer_running:
            return
        queued = self._queued
        data = self._data_to_send()
        try:
            # The descriptor as the socket has it now: -1 once closed, never another
            # connection's reused number.
            sent = write_nowait(self._stream.socket.fileno(), data)
            self._counters.bytes_out += sent
        except BlockingIOError:
            sent = 0
        except OSError:
            sent = len(data)  # lost with the connection
            self._mark_closed(ABNORMAL, "")
        if sent < len(data):
            queue.append(data[sent:])
            self._queued = len(data) - sent
            self._start_writer()
        elif self._waiters and (not self.open or queued > self._config.send_queue_size // 2):
            self._wake()  # ``_finish`` or ``send_message`` waits for the queue to drain

    async def _wait_for_room(self, since: float) -> bool:
        """Wait while the send queue is over half full (``send_message()`` of the fan-out); a
        peer still over it ``send_timeout`` seconds after ``since`` does not read: it is
        closed with 1008. Returns whether it waited (then it was a checkpoint)."""
        half = self._config.send_queue_size // 2
        if not (self._queued > half and self.open):
            return False
        with trio.move_on_at(since + self._config.send_timeout):
            while self._queued > half and self.open:
                await self._wait()  # woken as its queue drains, or as it closes
        if self._queued > half and self.open:
            self._counters.slow_closed += 1
            self._drop(f"send queue still over {half} bytes after {self._config.send_timeout:g} s")
        return True

    def _start_writer(self) -> None:
        if not self._writer_running and self._nursery is not None:
            self._writer_running = True
            self._counters.backlogged[self] = 0  # its queued bytes count in the gauge from now on
            self._nursery.start_soon(self._writer, name="trio_c10k websocket writer")

    def _wait(self) -> Awaitable[None]:
        """Park the current task until the connection's state changes (a message, room, the
        close): the caller awaits what this returns at once, then looks again. The parked
        tasks are kept in a plain list, not a ``ParkingLot``: an idle connection always has its
        handler parked, and a lot's ordered dict costs 500 bytes. A plain function returning
        trio's wait, not a coroutine of its own: a parked task holds one frame less (about
        300 bytes per idle connection)."""
        task = trio.lowlevel.current_task()
        self._waiters.append(task)
        return trio.lowlevel.wait_task_rescheduled(_Unpark(self, task))  # noqa: ASYNC105  # the caller awaits it


class _Unpark:
    """What a task parked in ``WebSocket._wait`` does when cancelled: leave the wait list. An
    object of two slots (48 bytes) where a closure would be a function and two cells (about
    250 bytes), paid by every idle connection."""

    __slots__ = ("task", "ws")

    def __init__(self, ws: WebSocket, task: trio.lowlevel.Task) -> None:
        self.ws = ws
        self.task = task

    def __call__(self, _: object) -> trio.lowlevel.Abort:
        self.ws._waiters.remove(self.task)
        return trio.lowlevel.Abort.SUCCEEDED
