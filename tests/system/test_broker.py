"""``--broker redis://...``: group broadcasts across processes, through a real redis-server.

Each test starts its own ``redis-server`` on a port outside the kernel's ephemeral range
(``tests.helpers.Redis``; Debian's package, ``nox -s tests`` installs it) and server processes with
``python -m trio_c10k`` (the test site), and talks to them over real sockets. Two separate servers
on two ports stand for two machines: a test then knows which process each client is connected to.
"""

from __future__ import annotations

import coredis
import pytest
import trio

from tests.helpers import (
    BROKER_TIMEOUT,
    GLIDER,
    Redis,
    Supervised,
    cells,
    life,
    next_text,
    run_gameoflife,
    start_with_broker,
    states_by_step,
    wait_until_linked,
)
from trio_c10k import WebSocket
from trio_c10k._broker import channel_name, checked_url, decode, encode, redacted
from trio_c10k.client import open_websocket


def test_a_broadcast_is_framed_with_its_origin_group_and_kind() -> None:
    origin = b"12345678"
    assert decode(encode(origin, "chat.lobby", "héllo")) == (origin, "chat.lobby", "héllo")
    assert decode(encode(origin, "g", b"\x00\xff")) == (origin, "g", b"\x00\xff")
    with pytest.raises(ValueError, match="too short"):
        decode(b"xyz")
    with pytest.raises(ValueError, match="malformed"):
        decode(origin + b"x" + (1).to_bytes(4, "big") + b"g")


def test_a_password_in_the_broker_url_is_not_logged() -> None:
    assert redacted("redis://:s3cret@redis-host:6379/0") == "redis://:***@redis-host:6379/0"
    assert redacted("rediss://user:s3cret@redis-host/0") == "rediss://user:***@redis-host/0"
    assert redacted("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_tls_urls_check_the_host_name_unless_told_not_to() -> None:
    assert (
        checked_url("rediss://:pw@redis-host:6380/0")
        == "rediss://:pw@redis-host:6380/0?ssl_check_hostname=true"
    )
    assert (
        checked_url("rediss://h/0?ssl_ca_certs=/ca.pem")
        == "rediss://h/0?ssl_ca_certs=/ca.pem&ssl_check_hostname=true"
    )
    assert checked_url("rediss://h/0?ssl_check_hostname=false") == "rediss://h/0?ssl_check_hostname=false"
    assert checked_url("redis://h:6379/0") == "redis://h:6379/0"
    # What the Redis client makes of it: a TLS context that checks names.
    pool = coredis.ConnectionPool.from_url(checked_url("rediss://redis-host:6380/0"))
    assert pool.connection_kwargs["ssl_context"].check_hostname is True


def test_the_channel_is_named_after_the_database() -> None:
    assert channel_name("redis://redis-host:6379/0") == b"trio_c10k.groups.0"
    assert channel_name("redis://redis-host") == b"trio_c10k.groups.0"
    assert channel_name("rediss://:pw@redis-host:6380/3") == b"trio_c10k.groups.3"
    assert channel_name("unix:///run/redis.sock?db=2") == b"trio_c10k.groups.2"


async def test_sites_on_other_databases_do_not_get_each_others_broadcasts(
    redis: Redis, supervised: list[Supervised]
) -> None:
    # Redis pub/sub ignores database numbers; the channel's name carries it.
    site_a = [start_with_broker(supervised, redis, database=1) for _ in range(2)]
    site_b = [start_with_broker(supervised, redis, database=2) for _ in range(2)]
    with trio.fail_after(BROKER_TIMEOUT):
        async with (
            open_websocket(f"ws://127.0.0.1:{site_a[0]}/t/ws/relay/same-room/") as a_here,
            open_websocket(f"ws://127.0.0.1:{site_a[1]}/t/ws/relay/same-room/") as a_there,
            open_websocket(f"ws://127.0.0.1:{site_b[0]}/t/ws/relay/same-room/") as b_here,
            open_websocket(f"ws://127.0.0.1:{site_b[1]}/t/ws/relay/same-room/") as b_there,
        ):
            await wait_until_linked(a_here, a_there)
            await wait_until_linked(b_here, b_there)  # site B's processes are subscribed too
            a_here.write_message("site A only")
            assert await next_text(a_there) == "site A only"
            # Redis has handed "site A only" to the subscribers of its channel. Had site B's
            # processes been among them, it would come before anything published after it.
            b_here.write_message("site B only")
            assert await next_text(b_here) == "site B only"
            assert await next_text(b_there) == "site B only"


async def test_a_broadcast_reaches_the_members_held_by_another_process(
    redis: Redis, supervised: list[Supervised]
) -> None:
    one, two = start_with_broker(supervised, redis), start_with_broker(supervised, redis)
    with trio.fail_after(BROKER_TIMEOUT):
        async with (
            open_websocket(f"ws://127.0.0.1:{one}/t/ws/relay/across/") as here,
            open_websocket(f"ws://127.0.0.1:{two}/t/ws/relay/across/") as there,
        ):
            await wait_until_linked(here, there)
            here.write_message("from process one")
            assert await next_text(here) == "from process one"  # its own process, at once
            assert await next_text(there) == "from process one"  # the other, through Redis
    for command in supervised:  # a graceful stop with the broker connected: clean
        assert command.stop() == 0
        assert "Traceback" not in command.log
        assert "[ERROR]" not in command.log


async def test_groups_span_the_workers_of_one_server(redis: Redis, supervised: list[Supervised]) -> None:
    command = Supervised("--workers", "2", "--bind", "127.0.0.1:0", "--broker", redis.url)
    supervised.append(command)
    command.wait_for(r"worker \d+ trio_c10k\.server: Listening on", count=2)
    port = command.port()
    want = set(command.pids().values())
    with trio.fail_after(BROKER_TIMEOUT * 3):
        async with trio.open_nursery() as nursery:
            # One member per worker: the first connection each worker gets stays open.
            members: dict[int, WebSocket] = {}

            async def member(task_status: trio.TaskStatus[int]) -> None:
                async with open_websocket(f"ws://127.0.0.1:{port}/t/ws/group-pid/spread/") as ws:
                    pid = int(await ws.read_message())
                    first = pid not in members
                    members.setdefault(pid, ws)
                    task_status.started(pid)
                    if first:
                        await ws.wait_closed()

            for _ in range(400):
                await nursery.start(member)
                if set(members) == want:
                    break
            assert set(members) == want, f"every connection went to worker {sorted(members)}"
            sender, receiver = (members[pid] for pid in sorted(want))
            for attempt in range(200):  # until both workers' subscriptions are in place
                sender.write_message(f"hello {attempt}")
                assert await sender.read_message() == f"hello {attempt}"  # its own worker
                with trio.move_on_after(0.1):
                    assert (await receiver.read_message() or "").startswith("hello ")
                    break
            else:
                pytest.fail("the two workers never exchanged a message through Redis")
            nursery.cancel_scope.cancel()


async def test_fan_out_resumes_after_redis_restarts(redis: Redis, supervised: list[Supervised]) -> None:
    one, two = start_with_broker(supervised, redis), start_with_broker(supervised, redis)
    with trio.fail_after(BROKER_TIMEOUT * 4):
        async with (
            open_websocket(f"ws://127.0.0.1:{one}/t/ws/relay/outage/") as here,
            open_websocket(f"ws://127.0.0.1:{two}/t/ws/relay/outage/") as there,
        ):
            await wait_until_linked(here, there)
            redis.stop()
            for command in supervised:
                command.wait_for(r"\[WARNING\] trio_c10k\.broker: Broker: Redis at .* unreachable")
            here.write_message("during the outage")
            assert await next_text(here) == "during the outage"  # local members still get it
            redis.start()
            for command in supervised:
                command.wait_for(r"trio_c10k\.broker: Broker: Redis at .* reachable again")
            await wait_until_linked(here, there)
    # "there" never saw the message sent while Redis was down: lost, as the docs say.
    assert all("unreachable" in command.log for command in supervised)
    # The outage is told once, by the broker: the Redis client's own INFO lines stay out.
    assert not any(" coredis" in command.log for command in supervised)


async def test_the_game_of_life_across_two_workers_matches_the_reference(
    redis: Redis, supervised: list[Supervised]
) -> None:
    """The cells spread over both workers: a state reaches the neighbours and the watcher held
    by the other worker through Redis, and every relayed state still follows the rules."""
    size, steps = 6, 24  # a glider on a 6 x 6 torus is back where it started after 24 steps
    command = Supervised("--workers", "2", "--bind", "127.0.0.1:0", "--broker", redis.url)
    supervised.append(command)
    command.wait_for(r"trio_c10k\.broker: Broker: subscribed", count=2)
    port = command.port()
    received: list[str] = []
    with trio.fail_after(BROKER_TIMEOUT * 3):
        async with open_websocket(f"ws://127.0.0.1:{port}/watcher/") as watcher:
            assert (await watcher.read_message() or "").startswith("size ")

            async def watch() -> None:
                for _ in range(1 + size * size * (steps + 1)):  # the new size, then every state
                    message = await watcher.read_message()
                    assert isinstance(message, str), message
                    received.append(message)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                result = await run_gameoflife(port, "-s", str(size), "-n", str(steps), "-l", "0")
                assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert received[0] == f"size {size}"
    expected = life(cells(GLIDER, 1, 1), size, steps, wrap=True)
    assert states_by_step(received[1:], size, steps) == expected
    assert expected[-1] == expected[0]
