"""Fan-out: groups of WebSockets, and one message sent to many of them.

Rule 1: a broadcast builds the frame once (without compression a server frame is the same
bytes for every recipient) and hands it to each member's non-blocking write: an idle socket
gets it straight away, with no task woken; a busy one queues it. A member whose send queue
overflows is closed with 1008 by its own policy; nobody else waits for it.
Rule 2: groups are named, and a name means the same group anywhere in the process:
``Group("lobby")`` in a handler and ``Group("lobby")`` in a Django view are one group. A group
with no member takes no memory.
Rule 3: a closed socket leaves its groups by itself, when it closes.
Rule 4: with a broker (``--broker redis://...``, ``_broker``), a group broadcast also goes to
the members of that group held by other processes; without one, groups are per process.
Rule 5: the members live in the event loop's thread. Called from another thread (a Django view
in a worker thread, a trio run of its own), ``add``, ``discard`` and ``broadcast`` hand
themselves to the event loop and return once done there, as ``WebSocket.write_message`` does
(``in_loop_thread`` tells, ``call_in_loop`` hands over).
Rule 6: ``send_message`` is ``broadcast`` with back-pressure, for trio tasks: the producer
waits while a recipient's send queue is over half full, and a recipient still over it
``send_timeout`` seconds later is closed with 1008. Readers that keep up get every message;
a recipient holds at most its ``send_queue_size`` plus a message or two.
Rule 7: the registry stands below the WebSocket: a socket knows the member sets it is in
(``WebSocket._groups``), never a ``Group``; ``_websocket`` never imports this module.
Rule 8: in a process where no server runs (a management command, a task queue's worker, a
shell; or the trio run of the server that ran is over, ``_forget_at_end``), there are no
members: ``broadcast`` and ``send_message`` publish through the broker the process is
configured with (``configured_broker``: the setting or environment variable
``TRIO_C10K_BROKER``) and return once Redis took the message (``_publisher``), or raise
``BrokerError`` when none is configured.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from threading import get_ident
from typing import TYPE_CHECKING

import trio

from ._broker_url import check_broker_url
from ._exceptions import BrokerError, ConfigError
from ._frames import encode_frame
from ._protocol import in_loop_thread
from ._threads import call_in_loop
from ._websocket import WebSocket

if TYPE_CHECKING:
    from ._broker import RedisBroker
    from ._publisher import Publisher


class _Members(set[WebSocket]):
    """The members of the group ``name``: the registry forgets the group when the last one
    goes, whether ``Group.discard`` or the socket's close (``WebSocket._mark_closed``) calls
    ``discard`` (Rule 2)."""

    __slots__ = ("name",)

    # A group's set is itself, not its content: ``ws._groups.remove(members)`` finds this one.
    __eq__ = object.__eq__
    __ne__ = object.__ne__

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def discard(self, ws: object) -> None:
        super().discard(ws)
        if not self and _members.get(self.name) is self:
            del _members[self.name]


#: group name -> its members; a name is here only while its group has members
_members: dict[str, _Members] = {}
#: the event loop the members live in, and its thread, for calls from other threads (set by
#: each server as it starts, and by each add)
_loop_token: trio.lowlevel.TrioToken | None = None
_loop_thread: int | None = None


#: the link to the other processes (``--broker``), or None: groups are this process's only
_broker: RedisBroker | None = None


def use_event_loop(token: trio.lowlevel.TrioToken, broker: RedisBroker | None = None) -> None:
    """Make ``token``'s loop the one calls from other threads go to, and ``broker`` the link
    to other processes (the server calls this as it starts, in that loop's thread)."""
    global _loop_token, _loop_thread, _broker
    _loop_token, _loop_thread, _broker = token, get_ident(), broker
    trio.lowlevel.spawn_system_task(_forget_at_end, token)


async def _forget_at_end(token: trio.lowlevel.TrioToken) -> None:
    """When ``token``'s trio run ends, forget its loop and broker, unless another took their
    place: the process then runs no server (Rule 8)."""
    global _loop_token, _loop_thread, _broker
    try:
        await trio.sleep_forever()
    finally:
        if _loop_token is token:
            _loop_token = _loop_thread = _broker = None


def deliver(group: str, data: str | bytes) -> None:
    """A broadcast from another process: to this process's members of ``group``."""
    broadcast(_members.get(group, ()), data)


class Group:
    """The WebSockets that receive the same messages, by name (a chat room, a topic).

    ``Group(name)`` is cheap: it is a handle on the members kept for that name in this
    process. Join with ``group.add(ws)``; a closed socket leaves by itself.

    Example::

        @websocket
        async def chat(ws, room):
            group = Group(f"chat.{room}")
            group.add(ws)
            async for message in ws:
                group.broadcast(message)
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        if not isinstance(name, str):
            raise TypeError(f"a group name is a str, not {type(name).__name__}")
        #: the group's name
        self.name = name

    def __repr__(self) -> str:
        return f"<Group {self.name!r}: {len(self)} members>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Group) and other.name == self.name

    def __hash__(self) -> int:
        return hash((Group, self.name))

    def __len__(self) -> int:
        """The number of members."""
        return len(_members.get(self.name, ()))

    def __contains__(self, ws: object) -> bool:
        return ws in _members.get(self.name, ())

    def __iter__(self) -> Iterator[WebSocket]:
        """The members at the time of the call (a copy)."""
        return iter(list(_members.get(self.name, ())))

    def add(self, ws: WebSocket) -> None:
        """Make ``ws`` a member; it stays one until ``discard`` or until it closes.

        Adding a member twice, or a closed socket, does nothing.
        """
        global _loop_token, _loop_thread
        if not in_loop_thread(ws._loop_thread):
            call_in_loop(ws._token, self.add, ws)
            return
        if ws.closed:
            return
        if _loop_token is not ws._token:  # a loop of members that no server of ours runs
            _loop_token, _loop_thread = ws._token, ws._loop_thread
            trio.lowlevel.spawn_system_task(_forget_at_end, ws._token)
        members = _members.get(self.name)
        if members is None:
            members = _members[self.name] = _Members(self.name)
        if ws not in members:
            members.add(ws)
            if ws._groups is None:
                ws._groups = []
            ws._groups.append(members)

    def discard(self, ws: WebSocket) -> None:
        """Remove ``ws`` from the group, if it is a member."""
        if not in_loop_thread(ws._loop_thread):
            call_in_loop(ws._token, self.discard, ws)
            return
        members = _members.get(self.name)
        if members is not None and ws in members:
            members.discard(ws)
            if ws._groups is not None:
                ws._groups.remove(members)

    def broadcast(self, data: str | bytes) -> int:
        """Send ``data`` to every member (text for ``str``, binary for ``bytes``); never blocks.

        With a broker (``--broker``), the members held by other processes get it too, through
        Redis. Returns the number of members of this process it was sent to. See
        ``broadcast()``.

        In a process where no server runs (a management command, a task queue's worker), it
        publishes ``data`` through the broker configured by ``TRIO_C10K_BROKER`` (the Django
        setting, else the environment variable) and returns once Redis took it, with the
        number of server processes Redis handed it to. It then waits for Redis (at most 10 s):
        in async code, ``await send_message()`` instead.

        Raises:
            TypeError: ``data`` is neither ``str`` nor bytes-like.
            BrokerError: no server runs in this process, and no broker is configured, or
                Redis did not take the message.
        """
        token = _loop_token
        if token is None or _loop_thread is None:  # no server (nor member) in this process
            return _publish(self.name, data)
        if not in_loop_thread(_loop_thread):
            try:
                return call_in_loop(token, self.broadcast, data)
            except trio.RunFinishedError:  # that server is over, and its members with it
                return _publish(self.name, data)
        sent = broadcast(_members.get(self.name, ()), data)
        if _broker is not None:
            _broker.publish(self.name, data)
        return sent

    async def send_message(self, data: str | bytes) -> int:
        """Send ``data`` to every member, first waiting while members' send queues are full.

        The awaitable twin of ``broadcast``, as ``WebSocket.send_message`` is of
        ``write_message``: members that keep up get every message. See ``send_message()``.
        With a broker (``--broker``), the message is then published once, as ``broadcast``
        does; the other processes hand it to their members without waiting (``broadcast``).

        In a process where no server runs, it publishes ``data`` through the broker, as
        ``broadcast`` does there, from any trio or asyncio task: the task waits for Redis's
        answer, its event loop does not.

        Returns:
            The number of members of this process it was sent to; in a process where no
            server runs, the number of server processes Redis handed it to.

        Raises:
            TypeError: ``data`` is neither ``str`` nor bytes-like.
            BrokerError: as ``broadcast``.

        Cancellation: if cancelled while it waits for members, the message is sent to no one;
        once handed to the broker (no server here), it is published all the same.
        """
        if _loop_token is None:  # no server (nor member) in this process
            return await _publish_async(self.name, data)
        sent = await send_message(_members.get(self.name, ()), data)
        if _broker is not None:
            _broker.publish(self.name, data)
        return sent


def configured_broker() -> str | None:
    """The broker of a process where no server runs (Rule 8): the Django setting
    ``TRIO_C10K_BROKER`` when the process has Django settings, else the environment variable
    ``TRIO_C10K_BROKER``; None when neither names one."""
    from django.conf import settings

    if settings.configured or os.environ.get("DJANGO_SETTINGS_MODULE"):
        url: str | None = getattr(settings, "TRIO_C10K_BROKER", None)
        if url:  # (not a string: ``_publisher`` says so)
            return url
    return os.environ.get("TRIO_C10K_BROKER") or None


def _publish(group: str, data: str | bytes) -> int:
    """A broadcast from a process where no server runs, published (Rule 8); the number of
    subscribers Redis handed it to."""
    data = _checked(data)  # a wrong type first: it is the caller's mistake either way
    return _publisher().publish(group, data)


async def _publish_async(group: str, data: str | bytes) -> int:
    """``_publish``, awaited: the event loop runs meanwhile."""
    data = _checked(data)
    return await _publisher().publish_async(group, data)


def _publisher() -> Publisher:
    """The link to the broker of a process where no server runs (Rule 8)."""
    url = configured_broker()
    if url is None:
        raise BrokerError(
            "no server runs in this process, and no broker is configured to reach those that do: "
            "set TRIO_C10K_BROKER (the Django setting, or the environment variable) to the "
            "servers' broker URL"
        )
    try:
        check_broker_url(url)
    except ConfigError as exc:
        raise ConfigError(f"TRIO_C10K_BROKER: {exc}") from None
    try:
        from ._publisher import publisher
    except ImportError as exc:  # coredis, or one of its own dependencies (anyio...)
        message = f"TRIO_C10K_BROKER needs the Redis client coredis, which cannot be imported here ({exc})"
        raise ConfigError(f"{message}: pip install 'trio-c10k[redis]'") from None
    return publisher(url)


def _checked(data: str | bytes) -> str | bytes:
    """``data``, if it is a message.

    Raises:
        TypeError: ``data`` is neither ``str`` nor bytes-like.
    """
    if not isinstance(data, str | bytes | bytearray | memoryview):
        raise TypeError(f"a message is str or bytes, not {type(data).__name__}")
    return data


def broadcast(websockets: Iterable[WebSocket], data: str | bytes) -> int:
    """Send ``data`` to each of ``websockets`` that is open; never blocks.

    The frame is built once for every recipient without compression (a recipient that agreed
    to permessage-deflate gets its own compressed frame). Each recipient gets it through its
    own send path, in order with its other messages; one whose send queue overflows is closed
    with 1008 (``send_queue_size``) and the others are not delayed. Closed recipients are
    skipped.

    Callable from trio tasks of the server and from worker threads (a Django view).

    Returns:
        The number of recipients the message went to.

    Raises:
        TypeError: ``data`` is neither ``str`` nor bytes-like.
    """
    if not isinstance(data, str | bytes | bytearray | memoryview):
        raise TypeError(f"a message is str or bytes, not {type(data).__name__}")
    recipients = list(websockets)  # a recipient closed on the way leaves its groups
    if recipients and not in_loop_thread(recipients[0]._loop_thread):
        return call_in_loop(recipients[0]._token, broadcast, recipients, data)
    frame = None
    sent = 0
    for ws in recipients:
        if ws._is_closed or ws._close_sent:  # ``not ws.open``, inlined: this loop is the hot path
            continue
        if ws._plain:
            if frame is None:
                frame = encode_frame(data)
            ws._counters.messages_out += 1
            ws._send_frame(frame)
        else:
            ws.write_message(data)
        sent += 1
    return sent


async def send_message(websockets: Iterable[WebSocket], data: str | bytes) -> int:
    """Send ``data`` to each of ``websockets`` that is open, first waiting while any of them
    has its send queue over half of ``send_queue_size`` (back-pressure, as
    ``WebSocket.send_message``).

    A recipient whose queue is still over half full ``send_timeout`` seconds after the wait
    began does not read: it is closed with 1008 and logged, and the others get the message.
    So readers that keep up get every message, in order, and memory per recipient stays
    bounded. The frame is built once, as by ``broadcast()``.

    For trio tasks only: a worker thread (a Django view) uses ``broadcast()``, which never
    blocks (a thread waiting on clients would be one fewer for the views).

    Returns:
        The number of recipients the message went to.

    Raises:
        TypeError: ``data`` is neither ``str`` nor bytes-like.

    Cancellation: if cancelled while it waits, the message is sent to no one.
    """
    if not isinstance(data, str | bytes | bytearray | memoryview):
        raise TypeError(f"a message is str or bytes, not {type(data).__name__}")
    recipients = list(websockets)  # a recipient closed on the way leaves its groups
    start, waited = trio.current_time(), False
    for ws in recipients:
        if ws._queued:  # the common case is 0: nothing waits to be sent to it
            waited = await ws._wait_for_room(start) or waited
    if not waited:  # no wait: still a checkpoint, as every trio async function
        await trio.lowlevel.checkpoint()
    return broadcast(recipients, data)
