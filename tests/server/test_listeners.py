"""Listening sockets shared the way ``--workers`` shares them (``_listeners``), over real
sockets on 127.0.0.1, in one process: each "worker" is a listener of its own here."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import trio

from trio_c10k import Bind, Config, _listeners
from trio_c10k._exceptions import ConfigError
from trio_c10k._listeners import REUSE_PORT, is_shared, open_listeners, open_shared_sockets

needs_reuse_port = pytest.mark.skipif(not REUSE_PORT, reason="SO_REUSEPORT balancing is Linux's")


async def open_beside(shared: socket.socket) -> trio.SocketListener:
    """What a worker does with ``--bind fd://N``: N is its own copy of the shared socket."""
    (listener,) = await open_listeners(Config(binds=(Bind(fd=os.dup(shared.fileno())),)))
    return listener


@needs_reuse_port
async def test_a_tcp_bind_is_shared_by_listeners_of_their_own_evenly() -> None:
    (shared,) = await open_shared_sockets(Config(binds=(Bind(host="127.0.0.1", port=0),)))
    with shared:
        assert is_shared(shared)  # bound to a real port, not listening
        port = shared.getsockname()[1]
        assert port
        listeners = [await open_beside(shared) for _ in range(2)]
        for listener in listeners:
            assert listener.socket.getsockname() == ("127.0.0.1", port)
        counts = [0, 0]
        clients = []
        for _ in range(200):  # one after another, each accepted before the next
            client = trio.socket.socket()
            clients.append(client)
            await client.connect(("127.0.0.1", port))
            with trio.fail_after(5):
                async with trio.open_nursery() as nursery:

                    async def accept(index: int, cancel: trio.CancelScope) -> None:
                        stream = await listeners[index].accept()
                        counts[index] += 1
                        await stream.aclose()
                        cancel.cancel()

                    for index in (0, 1):
                        nursery.start_soon(accept, index, nursery.cancel_scope)
        for client in clients:
            client.close()
        for listener in listeners:
            await listener.aclose()
    # The kernel hashes each connection's addresses and ports: 100 each, give or take
    # (binomial, standard deviation 7; 40 is more than 5 of them). The shared socket got none.
    assert sum(counts) == 200
    assert all(60 <= count <= 140 for count in counts), counts


async def test_a_unix_bind_is_one_listening_socket_the_workers_inherit(tmp_path: Path) -> None:
    path = tmp_path / "server.sock"
    (shared,) = await open_shared_sockets(Config(binds=(Bind(path=str(path)),)))
    with shared:
        assert not is_shared(shared)
        assert shared.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        listener = await open_beside(shared)
        assert listener.socket.getsockname() == str(path)
        await listener.aclose()


async def test_a_bound_socket_without_so_reuseport_is_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        with pytest.raises(ConfigError, match="is not a listening socket"):
            await open_listeners(Config(binds=(Bind(fd=os.dup(sock.fileno())),)))


async def test_without_so_reuseport_a_tcp_bind_is_one_listening_socket_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Elsewhere than Linux the workers inherit the supervisor's listening socket."""
    monkeypatch.setattr(_listeners, "REUSE_PORT", False)
    (shared,) = await open_shared_sockets(Config(binds=(Bind(host="127.0.0.1", port=0),)))
    with shared:
        assert not is_shared(shared)
        listener = await open_beside(shared)
        assert listener.socket.getsockname() == shared.getsockname()
        await listener.aclose()
