"""What an idle WebSocket's task keeps while its handler waits for a message: one frame
between the handler and trio's wait, nothing of the handshake but the request (each object
here is paid once per connection: 100,000 times on one machine, benchmarks/RESULTS.md); and
a wait cancelled leaves nothing behind."""

from __future__ import annotations

from collections.abc import Iterator
from types import CoroutineType
from typing import Any

import trio
import trio.lowlevel
import trio.testing
from wsproto.events import TextMessage

from tests.helpers import RawWebSocket, url
from trio_c10k import Server
from trio_c10k._handshake import UpgradeSlot
from trio_c10k.client import open_websocket


def tasks(task: trio.lowlevel.Task) -> Iterator[trio.lowlevel.Task]:
    yield task
    for nursery in task.child_nurseries:
        for child in nursery.child_tasks:
            yield from tasks(child)


def awaited(coro: Any) -> Iterator[CoroutineType[Any, Any, Any]]:
    """``coro`` and the coroutines it is awaiting, outermost first."""
    while isinstance(coro, CoroutineType):
        yield coro
        coro = coro.cr_await


async def idle_handler_chain(server: Server) -> tuple[list[CoroutineType[Any, Any, Any]], RawWebSocket]:
    """The coroutines of the task of a connection to ``/t/ws/echo/`` once it waits, and the
    client (to close once they are looked at)."""
    raw = await RawWebSocket.open(server, "/t/ws/echo/")
    await raw.send(TextMessage(data="hello"))
    assert (await raw.next_event()).data == "hello"
    await trio.testing.wait_all_tasks_blocked()
    chains = [list(awaited(task.coro)) for task in tasks(trio.lowlevel.current_root_task())]
    (chain,) = [chain for chain in chains if any(coro.cr_code.co_name == "ws_echo" for coro in chain)]
    return chain, raw


async def test_an_idle_handler_waits_for_a_message_with_one_frame_between(server: Server) -> None:
    """``async for`` (and ``read_message()``) to trio's wait: the frame that looks at the
    inbox, and nothing else."""
    chain, raw = await idle_handler_chain(server)
    names = [coro.cr_code.co_name for coro in chain]
    below = ["_read", "wait_task_rescheduled"]
    assert names[names.index("ws_echo") + 1 :] == below
    await raw.stream.aclose()


async def test_the_connection_task_keeps_nothing_of_the_handshake(server: Server) -> None:
    chain, raw = await idle_handler_chain(server)
    for coro in chain:
        for value in coro.cr_frame.f_locals.values():
            kept = value if isinstance(value, tuple) else (value,)
            assert not any(isinstance(item, UpgradeSlot) for item in kept), coro.cr_code.co_name
    await raw.stream.aclose()


async def test_a_cancelled_wait_leaves_the_wait_list_and_the_connection_as_they_were(server: Server) -> None:
    """The abort of a parked ``read_message()`` (``_Unpark``) takes the task off the list."""
    async with open_websocket(url(server, "/t/ws/echo/")) as ws:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ws.read_message)
            await trio.testing.wait_all_tasks_blocked()
            assert len(ws._waiters) == 1
            nursery.cancel_scope.cancel()
        assert ws._waiters == []
        ws.write_message("again")
        assert await ws.read_message() == "again"


async def test_an_idle_connection_without_extensions_has_no_wsproto_connection(server: Server) -> None:
    """Messages, keep-alive pings and pongs go without wsproto (``_protocol_send`` Rule 7);
    the close makes one for its frame."""
    async with open_websocket(url(server, "/t/ws/echo/")) as client:
        await client.send_message("hello")
        assert await client.read_message() == "hello"
        (ws,) = server.websockets
        assert ws._ws is None
        await client.close()
        await ws.wait_closed()
        assert ws._ws is not None
        assert ws.close_code == 1000
