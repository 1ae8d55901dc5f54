"""``--broker redis+sentinel://...``: group broadcasts across processes survive a Redis failover.

Each test starts its own Redis primary, a replica of it (``--replicaof``) and a Redis Sentinel
(``redis-server --sentinel``, from Debian's redis-server package: ``nox -s tests`` installs it)
with a configuration file in ``tmp_path``, every one on a port outside the kernel's ephemeral range
(``service_ports()``), with passwords on the servers and on the sentinel. The sentinel is told to
act fast (``down-after-milliseconds`` 1000): the primary is SIGKILLed, the test waits for the
sentinel to name the replica (its ``+switch-master`` event, a line of its log), then for the
broadcasts to come through again (bounded), and reports how many were lost meanwhile (Redis pub/sub
is at most once).
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import coredis
import pytest
import trio

from tests.helpers import (
    BROKER_TIMEOUT,
    REDIS_READY,
    Supervised,
    next_text,
    service_ports,
    start_redis_on,
    wait_until_linked,
)
from trio_c10k import WebSocket
from trio_c10k._publisher import Publisher
from trio_c10k.client import open_websocket

PASSWORD = "s3cret-primary"
SENTINEL_PASSWORD = "s3cret-sentinel"
SERVICE = "trio-c10k-test"
#: seconds for the sentinel to promote the replica once the primary is killed (1 s to call it
#: down, then the election and the promotion; a busy machine is slower)
PROMOTION_BOUND = 30
#: seconds, after the promotion, for the broadcasts to come through again: the broker asks the
#: sentinels at least every second (``SENTINEL_MAX_BACKOFF``), with room for a busy machine
RESUME_BOUND = 10
#: seconds between two broadcasts of the failover test
SEND_EVERY = 0.02


class Node:
    """A redis-server (or sentinel) on a port of ``service_ports()``, with no persistence."""

    def __init__(self, workdir: Path, *args: str, sentinel: bool = False) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            pytest.fail("redis-server is not installed: apt-get install redis-server")

        def command(port: int) -> list[str]:
            if sentinel:  # its configuration is a file it rewrites as it learns
                config = workdir / f"sentinel-{port}.conf"
                config.write_text("\n".join([f"port {port}", "bind 127.0.0.1", *args, ""]))
                return [executable, str(config), "--sentinel"]
            command = [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
            command += ["--appendonly", "no", "--requirepass", PASSWORD, "--masterauth", PASSWORD]
            return [*command, *args]

        # What each logs once it listens: the events of a sentinel are lines of its log too.
        ready = "Sentinel ID is" if sentinel else REDIS_READY
        ports = service_ports()
        self.port, self.proc, self.output = start_redis_on(command, workdir, ready, BROKER_TIMEOUT, ports)

    def stop(self, signum: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        self.proc.communicate(timeout=BROKER_TIMEOUT)


@dataclass
class Setup:
    primary: Node
    replica: Node
    sentinel: Node
    #: the broker URL: a sentinel that is down (refuses connections), then the real one
    url: str
    #: the broker URL with the real sentinel only (in the tests' process: coredis leaves a
    #: failed connection's streams to the garbage collector, a ResourceWarning there)
    live_url: str

    def client(self) -> coredis.Redis[str]:
        """A client of the sentinel."""
        return coredis.Redis(port=self.sentinel.port, password=SENTINEL_PASSWORD, decode_responses=True)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    primary = Node(tmp_path)
    nodes = [primary]
    try:
        nodes.append(replica := Node(tmp_path, "--replicaof", "127.0.0.1", str(primary.port)))
        monitor = f"sentinel monitor {SERVICE} 127.0.0.1 {primary.port} 1"
        sentinel = Node(
            tmp_path,
            monitor,
            f"sentinel auth-pass {SERVICE} {PASSWORD}",
            f"sentinel down-after-milliseconds {SERVICE} 1000",
            f"sentinel failover-timeout {SERVICE} 5000",
            f"requirepass {SENTINEL_PASSWORD}",
            sentinel=True,
        )
        nodes.append(sentinel)
        with socket.socket() as down:  # bound, never listening: the sentinel that is down
            down.bind(("127.0.0.1", 0))
            url = "redis+sentinel://:{}@{}/{}/0?sentinel_password={}"
            live = f"127.0.0.1:{sentinel.port}"
            both = f"127.0.0.1:{down.getsockname()[1]},{live}"
            yield Setup(
                primary,
                replica,
                sentinel,
                url.format(PASSWORD, both, SERVICE, SENTINEL_PASSWORD),
                url.format(PASSWORD, live, SERVICE, SENTINEL_PASSWORD),
            )
    finally:
        for node in reversed(nodes):
            node.stop()


async def wait_until_ready(setup: Setup) -> None:
    """Until the sentinel has found the replica (its ``+slave`` event): it could not promote it
    otherwise."""
    replica = rf"\+slave slave 127\.0\.0\.1:{setup.replica.port} "
    await trio.to_thread.run_sync(setup.sentinel.output.wait_for, replica, 1, BROKER_TIMEOUT * 3)


async def wait_for_promotion(setup: Setup) -> float:
    """Until the sentinel names the replica as the primary (its ``+switch-master`` event);
    when it did, on ``time.monotonic()``'s clock (until then it named the dead primary)."""
    old, new = (rf"127\.0\.0\.1 {node.port}" for node in (setup.primary, setup.replica))
    switch = rf"(\d\d \w{{3}} \d{{4}} [\d:.]+) . \+switch-master {SERVICE} {old} {new}\n"
    [match] = await trio.to_thread.run_sync(setup.sentinel.output.wait_for, switch, 1, PROMOTION_BOUND)
    logged = datetime.strptime(match[1], "%d %b %Y %H:%M:%S.%f").timestamp()  # its local time
    return logged - (time.time() - time.monotonic())


def start_server(supervised: list[Supervised], url: str) -> int:
    """A server process with the sentinel broker, subscribed; its port."""
    command = Supervised("--bind", "127.0.0.1:0", "--broker", url)
    supervised.append(command)
    command.wait_for(r"trio_c10k\.broker: Broker: subscribed")
    return command.port()


async def test_broadcasts_reach_every_member_again_after_a_failover(
    setup: Setup, supervised: list[Supervised]
) -> None:
    await wait_until_ready(setup)
    one, two = start_server(supervised, setup.url), start_server(supervised, setup.url)
    first, second = f"127.0.0.1:{setup.primary.port}", f"127.0.0.1:{setup.replica.port}"
    for command in supervised:
        command.wait_for(rf"Broker: the sentinels at .* name the primary {first}\n")
    room = f"/t/ws/relay/failover-{uuid.uuid4().hex[:8]}/"
    sent: dict[int, float] = {}  # number -> when it was broadcast
    received: dict[int, float] = {}  # number -> when the other process's member got it
    async with (
        open_websocket(f"ws://127.0.0.1:{one}{room}") as here,
        open_websocket(f"ws://127.0.0.1:{two}{room}") as there,
    ):
        with trio.fail_after(BROKER_TIMEOUT):
            await wait_until_linked(here, there)
            await wait_until_linked(there, here)
        arrived, goal = trio.Event(), 10  # set once ``there`` got broadcast number ``goal``
        stop, drained = trio.Event(), trio.Event()  # the sender stops; its last one is in
        last = {here: -1, there: -1}  # the number each member got last
        final = -2  # the number of the last broadcast, once the sender stopped
        async with trio.open_nursery() as nursery:

            async def send() -> None:
                nonlocal final
                for number in range(int((PROMOTION_BOUND + RESUME_BOUND + BROKER_TIMEOUT) / SEND_EVERY)):
                    if stop.is_set():
                        final = number - 1
                        if set(last.values()) == {final}:
                            drained.set()
                        return
                    sent[number] = time.monotonic()
                    here.write_message(f"seq {number}")
                    await trio.sleep(SEND_EVERY)  # the pace of the broadcasts, not a wait for something

            async def receive(ws: WebSocket) -> None:
                while True:
                    number = last[ws] = int((await next_text(ws)).removeprefix("seq "))
                    if ws is there:
                        assert not received or number > max(received), "out of order, or twice"
                        received[number] = time.monotonic()
                        if number >= goal:
                            arrived.set()
                    if set(last.values()) == {final}:
                        drained.set()

            nursery.start_soon(receive, here)  # its own process's copies
            nursery.start_soon(receive, there)
            nursery.start_soon(send)
            with trio.fail_after(BROKER_TIMEOUT):
                await arrived.wait()
            setup.primary.stop(signal.SIGKILL)
            killed = time.monotonic()
            promoted = await wait_for_promotion(setup)
            arrived, goal = trio.Event(), max(sent) + 50  # the 50th after the promotion
            with trio.fail_after(RESUME_BOUND):
                await arrived.wait()
            stop.set()
            with trio.fail_after(BROKER_TIMEOUT):
                await drained.wait()
            nursery.cancel_scope.cancel()
        with trio.fail_after(BROKER_TIMEOUT):  # both ways, each link on the new primary
            await wait_until_linked(here, there)
            await wait_until_linked(there, here)
        # A process that runs no server publishes through the new primary: both servers get it.
        publisher = Publisher(setup.live_url)
        try:
            assert await trio.to_thread.run_sync(publisher.publish, room.split("/")[-2], "from afar") == 2
        finally:
            publisher.close()
        with trio.fail_after(BROKER_TIMEOUT):
            assert await next_text(here) == "from afar"
            assert await next_text(there) == "from afar"

    lost = sorted(set(range(min(received), max(received))) - set(received))
    resumed = min(received[n] for n in received if n > lost[-1]) if lost else promoted
    assert lost, "SIGKILL of the primary lost nothing: not a failover"
    assert lost == list(range(lost[0], lost[-1] + 1)), f"lost outside the failover: {lost}"
    # Nothing broadcast while no primary could be reached was sent late: until ``promoted``
    # the sentinel named the dead one (0.5 s: for a frame on its way to the server meanwhile).
    late = [n for n in received if killed < sent[n] < promoted - 0.5]
    assert not late, f"broadcast while there was no primary, yet delivered: {late}"
    window = sent[lost[-1]] - sent[lost[0]] + SEND_EVERY
    print(
        f"failover: promoted {promoted - killed:.2f} s after SIGKILL, broadcasts through again "
        f"{resumed - promoted:.2f} s after the promotion; {len(lost)} broadcasts lost "
        f"(one every {SEND_EVERY * 1000:g} ms: a window of {window:.2f} s)"
    )
    for command in supervised:
        assert command.stop() == 0
        assert re.search(
            rf"Broker: the sentinels at .* name a new primary: {second} \(was {first}\)", command.log
        )
        assert re.search(
            r"\[WARNING\] trio_c10k\.broker: Broker: Redis at redis\+sentinel://.* unreachable", command.log
        )
        assert "reachable again" in command.log
        assert PASSWORD not in command.log
        assert SENTINEL_PASSWORD not in command.log
        assert "Traceback" not in command.log


async def test_with_no_sentinel_to_ask_the_broker_says_so_and_keeps_asking(
    tmp_path: Path, supervised: list[Supervised]
) -> None:
    with socket.socket() as down:  # bound, never listening: the only sentinel is down
        down.bind(("127.0.0.1", 0))
        url = f"redis+sentinel://:{PASSWORD}@127.0.0.1:{down.getsockname()[1]}/{SERVICE}"
        shown = url.replace(PASSWORD, "***")
        command = Supervised("--bind", "127.0.0.1:0", "--broker", url)
        supervised.append(command)
        command.wait_for(
            r"\[WARNING\] trio_c10k\.broker: Broker: Redis at .* unreachable while (publishing|subscribing)"
        )
        assert command.stop() == 0
    assert f"No primary found for '{SERVICE}'" in command.log
    assert f"Redis at {shown} unreachable" in command.log
    assert PASSWORD not in command.log
