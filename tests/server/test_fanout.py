"""Fan-out over real sockets: groups, broadcast from handlers, tasks and Django views, slow members.

The server runs in the test's own trio run, so a test may look at a group (``len(Group(name))``)
or broadcast to it directly, as another handler or a background task of the site would.
"""

from __future__ import annotations

import base64
import os
import uuid

import pytest
import trio
from websockets.sync.client import connect as websockets_connect

from tests.helpers import Client, StartServer, connect, port_of
from trio_c10k import Group, Server, WebSocket, WebSocketConfig, _fanout, broadcast
from trio_c10k.client import open_websocket


def url(server: Server, path: str) -> str:
    return f"ws://127.0.0.1:{port_of(server)}{path}"


def fresh() -> str:
    """A group name no other test uses (groups are process-wide)."""
    return f"g-{uuid.uuid4().hex[:12]}"


async def wait_closed(member: WebSocket) -> None:
    """Wait until the server has closed ``member``: it has then left its groups."""
    with trio.fail_after(5):
        await member.wait_closed()


async def test_a_message_reaches_every_member_and_no_one_else(server: Server) -> None:
    name, other = fresh(), fresh()
    async with (
        open_websocket(url(server, f"/t/ws/group/{name}/")) as a,
        open_websocket(url(server, f"/t/ws/group/{name}/")) as b,
        open_websocket(url(server, f"/t/ws/group/{name}/")) as c,
        open_websocket(url(server, f"/t/ws/group/{other}/")) as outsider,
    ):
        for ws in (a, b, c, outsider):
            assert await ws.read_message() == "joined"
        assert len(Group(name)) == 3
        a.write_message("hello, room")
        for ws in (a, b, c):  # the sender too
            assert await ws.read_message() == "hello, room"
        outsider.write_message("only me")
        assert await outsider.read_message() == "only me"  # nothing from the other group came first
        assert Group(name).broadcast(b"\x00binary") == 3
        for ws in (a, b, c):
            assert await ws.read_message() == b"\x00binary"


async def test_a_closed_socket_leaves_its_groups_by_itself(server: Server) -> None:
    name = fresh()
    async with open_websocket(url(server, f"/t/ws/group/{name}/")) as stays:
        assert await stays.read_message() == "joined"
        (stays_member,) = Group(name)
        async with open_websocket(url(server, f"/t/ws/group/{name}/")) as goes:
            assert await goes.read_message() == "joined"
            assert len(Group(name)) == 2
            (goes_member,) = set(Group(name)) - {stays_member}
        await wait_closed(goes_member)
        assert len(Group(name)) == 1
        assert Group(name).broadcast("after") == 1
        assert await stays.read_message() == "after"
    await wait_closed(stays_member)
    assert len(Group(name)) == 0
    assert Group(name).broadcast("nobody") == 0


async def test_discard_stops_the_messages(server: Server) -> None:
    name = fresh()
    async with (
        open_websocket(url(server, f"/t/ws/group/{name}/")) as a,
        open_websocket(url(server, f"/t/ws/group/{name}/")) as b,
    ):
        assert await a.read_message() == await b.read_message() == "joined"
        b.write_message("leave")
        assert await b.read_message() == "left"
        assert len(Group(name)) == 1
        a.write_message("to a only")
        assert await a.read_message() == "to a only"
        b.write_message("leave")  # leaving twice is harmless
        assert await b.read_message() == "left"  # and nothing of a's message came to b first


async def _token() -> trio.lowlevel.TrioToken:
    return trio.lowlevel.current_trio_token()


async def test_a_view_broadcasting_before_anyone_joined_finds_this_server(start_server: StartServer) -> None:
    # As after an earlier server of this process (an earlier test) ended: a loop that is over.
    _fanout._loop_token = await trio.to_thread.run_sync(trio.run, _token)
    server = await start_server()
    client = await Client.open(server)
    response, body = await client.get(f"/t/group-broadcast/{fresh()}/?message=x")
    assert (response.status_code, body) == (200, b"0")


async def test_broadcast_from_a_django_view_in_a_worker_thread(server: Server) -> None:
    name = fresh()
    async with (
        open_websocket(url(server, f"/t/ws/group/{name}/")) as a,
        open_websocket(url(server, f"/t/ws/group/{name}/")) as b,
    ):
        assert await a.read_message() == await b.read_message() == "joined"
        client = await Client.open(server)
        response, body = await client.get(f"/t/group-broadcast/{name}/?message=from+a+view")
        assert (response.status_code, body) == (200, b"2")
        assert await a.read_message() == "from a view"
        assert await b.read_message() == "from a view"
        response, body = await client.get(f"/t/group-broadcast/{fresh()}/?message=x")
        assert (response.status_code, body) == (200, b"0")  # an empty group


async def test_a_trio_run_in_another_thread_reaches_the_members_through_their_loop(server: Server) -> None:
    # Another thread running trio (a library with a loop of its own) is in a trio run, but not
    # in the members': what it asks is done in theirs, and it waits until then.
    name, other = fresh(), fresh()
    async with open_websocket(url(server, f"/t/ws/group/{name}/")) as client:
        assert await client.read_message() == "joined"
        (member,) = Group(name)

        async def elsewhere() -> list[int]:
            group = Group(other)
            group.add(member)
            counts = [len(group), group.broadcast("to the group"), broadcast([member], b"to a list")]
            member.write_message("straight to it")
            group.discard(member)
            return [*counts, len(group)]

        assert await trio.to_thread.run_sync(trio.run, elsewhere) == [1, 1, 1, 0]
        assert other not in _fanout._members  # a group with no member takes no memory
        assert await client.read_message() == "to the group"
        assert await client.read_message() == b"to a list"
        assert await client.read_message() == "straight to it"
    await wait_closed(member)
    assert name not in _fanout._members  # its last member closed


async def test_a_member_that_does_not_read_is_closed_with_1008_and_delays_no_one(
    start_server: StartServer,
) -> None:
    server = await start_server(websocket=WebSocketConfig(send_queue_size=256 * 1024))
    name = fresh()
    # The stuck member: a raw socket that completes the handshake and never reads again.
    stuck = await connect(server)
    key = base64.b64encode(os.urandom(16)).decode()
    await stuck.send_all(
        f"GET /t/ws/group/{name}/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    with trio.fail_after(5):
        while b"joined" not in head:  # the 101, then the handler's first message: it is a member
            head += await stuck.receive_some(1)
    assert head.startswith(b"HTTP/1.1 101")
    count, size = 400, 64 * 1024  # 25 MB: more than the kernel's buffers and the queue hold
    received: list[list[str | bytes | None]] = [[], []]
    async with (
        open_websocket(url(server, f"/t/ws/group/{name}/")) as a,
        open_websocket(url(server, f"/t/ws/group/{name}/")) as b,
    ):
        assert await a.read_message() == await b.read_message() == "joined"
        assert len(Group(name)) == 3
        members = list(Group(name))
        for i in range(count):
            Group(name).broadcast(i.to_bytes(4, "big") * (size // 4))
            # The readers keep up with each message: only the stuck member falls behind.
            with trio.fail_after(5):
                received[0].append(await a.read_message())
                received[1].append(await b.read_message())
        [stuck_ws] = [ws for ws in members if ws.closed]
        assert stuck_ws.close_code == 1008
        assert len(Group(name)) == 2  # it left the group; the readers are still in
    expected = [i.to_bytes(4, "big") * (size // 4) for i in range(count)]
    assert received == [expected, expected]


async def test_a_compressing_member_gets_its_own_frame(start_server: StartServer) -> None:
    server = await start_server(websocket=WebSocketConfig(compression=True))
    name = fresh()
    text = "compressible " * 200
    got: list[str | bytes] = []

    joined = trio.Event()

    def compressing_client() -> None:
        with websockets_connect(url(server, f"/t/ws/group/{name}/"), compression="deflate") as ws:
            assert ws.recv(timeout=5) == "joined"
            trio.from_thread.run_sync(joined.set)
            got.append(ws.recv(timeout=5))

    async with open_websocket(url(server, f"/t/ws/group/{name}/")) as plain, trio.open_nursery() as nursery:
        assert await plain.read_message() == "joined"
        nursery.start_soon(trio.to_thread.run_sync, compressing_client)
        with trio.fail_after(5):
            await joined.wait()
        assert len(Group(name)) == 2
        compressed = [ws for ws in Group(name) if not ws._plain]
        assert len(compressed) == 1  # the websockets client agreed to permessage-deflate
        assert Group(name).broadcast(text) == 2
        assert await plain.read_message() == text
    assert got == [text]


async def test_broadcast_skips_closed_sockets(server: Server) -> None:
    name = fresh()
    async with open_websocket(url(server, f"/t/ws/group/{name}/")) as a:
        assert await a.read_message() == "joined"
        (a_member,) = Group(name)
        async with open_websocket(url(server, f"/t/ws/group/{name}/")) as b:
            assert await b.read_message() == "joined"
            members = list(Group(name))
        (b_member,) = set(members) - {a_member}
        await wait_closed(b_member)
        assert sum(ws.closed for ws in members) == 1
        assert broadcast(members, "to the open one") == 1
        assert await a.read_message() == "to the open one"


def test_bad_arguments_raise_type_errors() -> None:
    with pytest.raises(TypeError, match="group name is a str"):
        Group(3)  # type: ignore[arg-type]  # on purpose
    with pytest.raises(TypeError, match="str or bytes, not int"):
        broadcast([], 3)  # type: ignore[arg-type]  # on purpose
    assert Group("a") == Group("a")
    assert hash(Group("a")) == hash(Group("a"))
    assert Group("a") != Group("b")
    assert repr(Group(name := fresh())) == f"<Group {name!r}: 0 members>"
