"""``Group(...).broadcast()`` from a process where no server runs: a management command, a
program of its own (trio or asyncio), a thread. It publishes through the broker named by
``TRIO_C10K_BROKER`` and reaches the members of every server process, through a real
redis-server (the ``redis`` fixture); without a broker it raises ``BrokerError``.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import uuid
from contextlib import AsyncExitStack

import coredis
import pytest
import trio
from django.test import override_settings

from tests.helpers import BROKER_TIMEOUT, ROOT, WORKERS_ENV, Redis, Supervised, start_with_broker
from trio_c10k import Bind, BrokerError, Config, ConfigError, Group, WebSocket, serve
from trio_c10k._broker import channel_name, decode
from trio_c10k._fanout import configured_broker
from trio_c10k.client import open_websocket

#: a program of its own: ``python -c PROGRAM GROUP TEXT trio|asyncio`` prints what
#: ``await Group(GROUP).send_message(TEXT)`` returned
PROGRAM = """
import asyncio, sys, trio
from trio_c10k import Group

async def main():
    return await Group(sys.argv[1]).send_message(sys.argv[2])

print(trio.run(main) if sys.argv[3] == "trio" else asyncio.run(main()))
"""


#: a long-lived process (a task queue's worker): ``python -c WORKER GROUP`` broadcasts each
#: line of its input to GROUP and prints what ``broadcast`` returned, or the ``BrokerError``
WORKER = """
import sys
from trio_c10k import BrokerError, Group

for line in sys.stdin:
    try:
        print(Group(sys.argv[1]).broadcast(line.strip()), flush=True)
    except BrokerError as exc:
        print(f"BrokerError: {exc}", flush=True)
"""


def room() -> str:
    """A chat room no other test uses (a room keeps its history)."""
    return f"room-{uuid.uuid4().hex[:10]}"


def without_broker() -> dict[str, str]:
    """The environment of the commands the tests start, with no ``TRIO_C10K_BROKER``."""
    return {name: value for name, value in WORKERS_ENV.items() if name != "TRIO_C10K_BROKER"}


async def say(*args: str, env: dict[str, str]) -> trio.CompletedProcess[bytes]:
    """``python manage.py say ARGS`` with the test site's settings."""
    return await trio.run_process(
        [sys.executable, "manage.py", "say", *args],
        cwd=ROOT,
        env=env,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


async def test_a_management_command_reaches_the_chat_members_of_every_worker(
    redis: Redis, supervised: list[Supervised]
) -> None:
    command = Supervised("--workers", "2", "--bind", "127.0.0.1:0", "--broker", redis.url)
    supervised.append(command)
    command.wait_for(r"trio_c10k\.broker: Broker: subscribed", count=2)
    port = command.port()
    workers = set(command.pids().values())
    name = room()
    with trio.fail_after(BROKER_TIMEOUT * 3):
        async with AsyncExitStack() as stack:
            # Members of the room's group that say which worker holds them, until both do.
            held_by: dict[int, list[WebSocket]] = {}
            for _ in range(400):
                ws = await stack.enter_async_context(
                    open_websocket(f"ws://127.0.0.1:{port}/t/ws/group-pid/chat.{name}/")
                )
                held_by.setdefault(int(await ws.read_message() or ""), []).append(ws)
                if set(held_by) == workers:
                    break
            assert set(held_by) == workers, f"every connection went to worker {sorted(held_by)}"
            # And the chat's own sockets, wherever they land.
            chatters = [
                await stack.enter_async_context(open_websocket(f"ws://127.0.0.1:{port}/chat/{name}/ws/"))
                for _ in range(4)
            ]
            env = {**without_broker(), "TRIO_C10K_BROKER": redis.url}
            result = await say(name, "Doors close at six", "--user", "staff", env=env)
            assert result.returncode == 0, result.stderr.decode()
            assert result.stdout.decode() == f"Said in {name}: sent to 2 server processes\n"
            said = {"user": "staff", "text": "Doors close at six"}
            for ws in [*(ws for members in held_by.values() for ws in members), *chatters]:
                assert json.loads(await ws.read_message() or "") == said
        # It joined the room's history: a newcomer gets it first.
        async with open_websocket(f"ws://127.0.0.1:{port}/chat/{name}/ws/") as newcomer:
            assert json.loads(await newcomer.read_message() or "") == {**said, "history": True}
    assert command.stop() == 0


async def test_without_a_broker_the_command_says_so_and_fails() -> None:
    result = await say(room(), "anyone?", env=without_broker())
    assert result.returncode == 1
    assert result.stderr.decode() == (
        "CommandError: no server runs in this process, and no broker is configured to reach those "
        "that do: set TRIO_C10K_BROKER (the Django setting, or the environment variable) to the "
        "servers' broker URL\n"
    )


@pytest.mark.parametrize("loop", ["trio", "asyncio"])
async def test_a_program_of_its_own_awaits_its_broadcast(
    redis: Redis, supervised: list[Supervised], loop: str
) -> None:
    port = start_with_broker(supervised, redis)
    supervised[-1].wait_for(r"trio_c10k\.broker: Broker: subscribed")
    name = f"g-{uuid.uuid4().hex[:12]}"
    # A plain program: no Django settings, the broker from the environment variable.
    env = {**without_broker(), "TRIO_C10K_BROKER": redis.url}
    del env["DJANGO_SETTINGS_MODULE"]
    with trio.fail_after(BROKER_TIMEOUT * 2):
        async with open_websocket(f"ws://127.0.0.1:{port}/t/ws/relay/{name}/") as member:
            result = await trio.run_process(
                [sys.executable, "-c", PROGRAM, name, "from a program", loop],
                cwd=ROOT,
                env=env,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            assert (result.returncode, result.stdout, result.stderr) == (0, b"1\n", b"")  # closed cleanly
            assert await member.read_message() == "from a program"


async def test_threads_and_tasks_share_one_link(redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """In this test's process no server runs (the earlier tests' runs are over)."""
    monkeypatch.setenv("TRIO_C10K_BROKER", redis.url)
    name = f"g-{uuid.uuid4().hex[:12]}"
    subscriber = coredis.Redis.from_url(redis.url)
    with trio.fail_after(BROKER_TIMEOUT * 2):
        async with subscriber, subscriber.pubsub(channels=[channel_name(redis.url)]) as pubsub:
            async with trio.open_nursery() as nursery:
                for text in ("one", "two", "three"):
                    nursery.start_soon(trio.to_thread.run_sync, Group(name).broadcast, text)
            received = set()
            async for message in pubsub:
                if message["type"] == "message":
                    _, group, data = decode(message["data"])  # type: ignore[arg-type]
                    assert group == name
                    received.add(data)
                    if len(received) == 3:
                        break
            assert received == {"one", "two", "three"}
            assert await Group(name).send_message(b"\x00binary") == 1  # from this trio run


def test_a_long_lived_process_publishes_again_once_redis_is_back(redis: Redis) -> None:
    # In a process of its own: the Redis client leaves a failed connection's buffers for the
    # garbage collector, which would warn in whatever test runs then.
    env = {**without_broker(), "TRIO_C10K_BROKER": redis.url}
    with subprocess.Popen(
        [sys.executable, "-c", WORKER, "some-group"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as worker:

        def broadcast(text: str) -> str:
            assert worker.stdin is not None
            assert worker.stdout is not None
            print(text, file=worker.stdin, flush=True)
            return worker.stdout.readline()

        assert broadcast("before") == "0\n"  # published: no server subscribed
        redis.stop()
        assert re.fullmatch(
            r"BrokerError: Redis at redis://127\.0\.0\.1:\d+/0 did not take the broadcast: .+\n",
            broadcast("during"),
        )
        redis.start()
        assert broadcast("after") == "0\n"
        _, errors = worker.communicate(timeout=BROKER_TIMEOUT)  # end of input: the program ends
    assert (worker.returncode, errors) == (0, "")  # the link closed at exit, quietly


#: ``python -c SILENT``: six threads broadcast at once, with the bound shortened to 0.5 s;
#: prints how long each waited and what it was told
SILENT = """
import threading, time
import trio_c10k._publisher as publisher
from trio_c10k import BrokerError, Group

publisher.PUBLISH_TIMEOUT = 0.5

told = []

def broadcast():
    start = time.monotonic()
    try:
        Group("g").broadcast("x")
    except BrokerError as exc:
        told.append(f"{time.monotonic() - start} {exc}")

threads = [threading.Thread(target=broadcast) for _ in range(6)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print("\\n".join(told))
"""


def test_a_broadcast_waits_for_redis_a_bounded_time() -> None:
    # A "Redis" that accepts connections and never answers. The broadcasts are published one
    # at a time: each waits 0.5 s in all, not 0.5 s more for each one before it.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        result = subprocess.run(
            [sys.executable, "-c", SILENT],
            cwd=ROOT,
            env={**without_broker(), "TRIO_C10K_BROKER": url},
            capture_output=True,
            text=True,
            timeout=BROKER_TIMEOUT * 3,
            check=False,
        )
    assert (result.returncode, result.stderr) == (0, "")
    lines = result.stdout.splitlines()
    assert len(lines) == 6, result.stdout
    for line in lines:
        waited, message = line.split(" ", 1)
        assert 0.5 <= float(waited) < 2.0  # six in turn would take 3 s
        assert message.startswith(f"Redis at {url} did not take the broadcast: "), message


#: ``python -c FORKING GROUP``: broadcasts, forks a child that broadcasts (as a task queue's
#: prefork worker does after its parent's first broadcast), then broadcasts again
FORKING = """
import os, sys
from trio_c10k import Group

print("parent", Group(sys.argv[1]).broadcast("before"), flush=True)
child = os.fork()
if child == 0:
    print("child", Group(sys.argv[1]).broadcast("from the child"), flush=True)
    sys.exit(0)
os.waitpid(child, 0)
print("parent", Group(sys.argv[1]).broadcast("after"), flush=True)
"""


async def test_a_forked_child_opens_a_link_of_its_own(redis: Redis, supervised: list[Supervised]) -> None:
    port = start_with_broker(supervised, redis)
    supervised[-1].wait_for(r"trio_c10k\.broker: Broker: subscribed")
    name = f"g-{uuid.uuid4().hex[:12]}"
    with trio.fail_after(BROKER_TIMEOUT * 2):
        async with open_websocket(f"ws://127.0.0.1:{port}/t/ws/relay/{name}/") as member:
            result = await trio.run_process(
                [sys.executable, "-c", FORKING, name],
                cwd=ROOT,
                env={**without_broker(), "TRIO_C10K_BROKER": redis.url},
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            assert result.returncode == 0, result.stderr.decode()
            assert result.stdout == b"parent 1\nchild 1\nparent 1\n"
            assert [await member.read_message() for _ in range(3)] == ["before", "from the child", "after"]


async def test_without_a_broker_a_broadcast_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRIO_C10K_BROKER", raising=False)
    group = Group(f"g-{uuid.uuid4().hex[:12]}")
    with pytest.raises(BrokerError, match="no broker is configured"):
        await trio.to_thread.run_sync(group.broadcast, "x")
    with pytest.raises(BrokerError, match="no broker is configured"):
        await group.send_message("x")
    with pytest.raises(TypeError, match="a message is str or bytes, not int"):
        group.broadcast(3)  # type: ignore[arg-type]


def no_pages(environ: object, start_response: object) -> list[bytes]:
    """A WSGI application for a server that is asked nothing."""
    raise AssertionError("no request expected")


def test_once_a_servers_run_is_over_its_thread_runs_no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRIO_C10K_BROKER", raising=False)

    async def serve_a_while() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve, no_pages, Config(binds=(Bind(host="127.0.0.1", port=0),)))
            nursery.cancel_scope.cancel()

    trio.run(serve_a_while)
    # In the thread its loop ran in, outside that loop: not a server's broadcast (it used to
    # return 0, its members gone), a broadcast from a process that runs no server.
    with pytest.raises(BrokerError, match="no broker is configured"):
        Group(f"g-{uuid.uuid4().hex[:12]}").broadcast("x")


def test_the_broker_is_the_setting_else_the_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRIO_C10K_BROKER", raising=False)
    assert configured_broker() is None
    monkeypatch.setenv("TRIO_C10K_BROKER", "redis://from-env/1")
    assert configured_broker() == "redis://from-env/1"
    with override_settings(TRIO_C10K_BROKER="redis://from-settings/2"):
        assert configured_broker() == "redis://from-settings/2"
    with override_settings(TRIO_C10K_BROKER=None):
        assert configured_broker() == "redis://from-env/1"
    monkeypatch.setenv("TRIO_C10K_BROKER", "http://:s3cret@not-redis/")
    with pytest.raises(ConfigError) as raised:
        Group("g").broadcast("x")
    assert str(raised.value) == (
        "TRIO_C10K_BROKER: broker 'http://:***@not-redis/': expected a Redis URL "
        "(redis://HOST:PORT/DB, rediss://..., unix:///PATH, redis+sentinel://HOST:PORT,HOST:PORT/SERVICE/DB)"
    )
    with override_settings(TRIO_C10K_BROKER=6379), pytest.raises(ConfigError, match="a string, not a int"):
        Group("g").broadcast("x")
