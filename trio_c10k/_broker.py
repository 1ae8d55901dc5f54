"""Group broadcasts across processes and machines, through Redis pub/sub (``--broker``).

Rule 1: one Redis channel (``channel_name``) carries the broadcasts of every process of a
site: the processes whose broker URLs name the same database. A process
delivers a broadcast to its own members at once, then publishes it; every process receives
every message and delivers it to the members of that group it holds, skipping its own
(recognised by a random ``origin`` per process). One channel rather than one per group: no
subscription to manage as members come and go, at the cost of every process seeing every
broadcast (fine for the few processes of one site; a very large deployment would want a
channel per group).
Rule 2: Redis pub/sub delivers at most once. While a process cannot reach Redis, what it
broadcasts reaches only its own members, and what others broadcast does not reach it: those
messages are lost, not replayed, and what waited to be published when the publishing link
broke, or while it was down, is dropped, not sent late. The outage is logged once (WARNING),
the connection is tried again after 0.1 s, doubling up to ``MAX_BACKOFF``, and the recovery
is logged (INFO).
Rule 3: a broadcast never waits for Redis: messages to publish wait in a bounded queue
(``PUBLISH_QUEUE``) for the publishing task. When it is full, or Redis is unreachable, new
messages are dropped, and the drop is logged once per episode.
Rule 4: with a ``redis+sentinel://`` URL, each connection (``open_client``) first asks the
sentinels, in the URL's order, for the current primary of the service, and checks that the
server it reaches says it is the primary (``ROLE``). A lost connection is tried again as in
Rule 2, asking the sentinels again each time, with the wait capped at
``SENTINEL_MAX_BACKOFF``: once they have promoted a replica, each link is back within that
time (and the time to ask and connect). The first primary, and each new one, is logged
(INFO) with its address.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from urllib.parse import parse_qs, urlsplit, urlunsplit

import anyio
import coredis
import trio
from coredis.connection import TCPLocation
from coredis.retry import NoRetryPolicy

from ._broker_url import SENTINEL_SCHEME, parse_sentinel_url, redacted

log = logging.getLogger("trio_c10k.broker")

#: the Redis channel of the processes using database N is this, followed by N
CHANNEL_PREFIX = "trio_c10k.groups."
#: broadcasts waiting to be published; beyond it they are dropped (Redis too slow, or down)
PUBLISH_QUEUE = 10_000
#: seconds between two attempts to reach Redis: the first wait, then doubling up to the last
MIN_BACKOFF, MAX_BACKOFF = 0.1, 5.0
#: the last wait with sentinels: asking them is cheap, and they know when the new primary is up
SENTINEL_MAX_BACKOFF = 1.0
#: seconds to reach a sentinel or a primary it names, and for a sentinel to answer: a host that
#: is down may drop packets, and the next sentinel should be asked long before TCP gives up
SENTINEL_TIMEOUT = 2.0
_TEXT, _BINARY = b"t", b"b"
_ORIGIN_SIZE = 8

Deliver = Callable[[str, str | bytes], object]


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """The exceptions in ``group`` and its nested groups (coredis nests nurseries)."""
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


def checked_url(url: str) -> str:
    """``url``, with the server's host name checked against its certificate for ``rediss://``
    unless the URL says otherwise (``ssl_check_hostname=false``): the Redis client checks
    the certificate by default, but not the name, so any certificate from a trusted authority
    would do."""
    parts = urlsplit(url)
    if parts.scheme != "rediss" or "ssl_check_hostname" in parse_qs(parts.query):
        return url
    query = f"{parts.query}&ssl_check_hostname=true" if parts.query else "ssl_check_hostname=true"
    return urlunsplit(parts._replace(query=query))


def channel_name(url: str) -> bytes:
    """The channel of the processes whose broker URL names the same database as ``url``.

    Redis pub/sub ignores database numbers: the number is in the channel's name, so that two
    sites on one Redis server, each with a database of its own (``/1``, ``/2``), do not get
    each other's broadcasts. A URL without one names database 0.
    """
    if _is_sentinel(url):
        database = parse_sentinel_url(url).db
    else:
        database = coredis.ConnectionPool.from_url(url).connection_kwargs.get("db") or 0
    return f"{CHANNEL_PREFIX}{database}".encode()


def _is_sentinel(url: str) -> bool:
    return url.startswith(f"{SENTINEL_SCHEME}://")


@asynccontextmanager
async def open_client(url: str) -> AsyncIterator[coredis.Redis[bytes]]:
    """A Redis client for ``url`` (a checked URL, ``checked_url``), without retries of its own:
    a failure reaches the caller, which tells it and decides when to try again. For a
    ``redis+sentinel://`` URL, the client of the primary the sentinels name (Rule 4); nothing
    is connected before its first command."""
    if not _is_sentinel(url):
        async with coredis.Redis.from_url(url, retry_policy=NoRetryPolicy()) as client:
            yield client
        return
    parsed = parse_sentinel_url(url)
    sentinels = coredis.Sentinel(
        [TCPLocation(host, port) for host, port in parsed.sentinels],
        sentinel_kwargs={
            "username": parsed.sentinel_username,
            "password": parsed.sentinel_password,
            "connect_timeout": SENTINEL_TIMEOUT,
            "stream_timeout": SENTINEL_TIMEOUT,
        },
        retry_policy=NoRetryPolicy(),
        db=parsed.db,
        username=parsed.username,
        password=parsed.password,
        connect_timeout=SENTINEL_TIMEOUT,
    )
    async with sentinels, sentinels.primary_for(parsed.service) as client:
        yield client


def primary_of(client: coredis.Redis[bytes]) -> str | None:
    """``HOST:PORT`` of the primary a sentinel client reached last; None for other clients."""
    pool = client.connection_pool
    if isinstance(pool, coredis.SentinelConnectionPool) and pool.location is not None:
        return str(pool.location)
    return None


def encode(origin: bytes, group: str, data: str | bytes) -> bytes:
    """One broadcast as published: origin, kind, group name length and name, then the data."""
    name = group.encode("utf-8")
    if isinstance(data, str):
        kind, body = _TEXT, data.encode("utf-8")
    else:
        kind, body = _BINARY, bytes(data)
    return origin + kind + len(name).to_bytes(4, "big") + name + body


def decode(payload: bytes) -> tuple[bytes, str, str | bytes]:
    """``(origin, group, data)`` of a published broadcast.

    Raises:
        ValueError: the payload is not one of ours.
    """
    head = _ORIGIN_SIZE + 1 + 4
    if len(payload) < head:
        raise ValueError("too short")
    origin, kind = payload[:_ORIGIN_SIZE], payload[_ORIGIN_SIZE : _ORIGIN_SIZE + 1]
    size = int.from_bytes(payload[_ORIGIN_SIZE + 1 : head], "big")
    if kind not in (_TEXT, _BINARY) or len(payload) < head + size:
        raise ValueError("malformed")
    group = payload[head : head + size].decode("utf-8")
    body = payload[head + size :]
    return origin, group, body.decode("utf-8") if kind == _TEXT else body


class RedisBroker:
    """The link of one process to the others: it publishes this process's broadcasts and
    delivers theirs. ``run()`` keeps it connected until cancelled."""

    def __init__(self, url: str, deliver: Deliver) -> None:
        #: the Redis URL (``redis://host:port/db``, ``rediss://`` for TLS, ``unix://path``,
        #: ``redis+sentinel://``), as used (``checked_url``)
        self.url = checked_url(url)
        #: the URL as logged: without its password (every log line shows this one)
        self.shown = redacted(url)
        #: the pub/sub channel, shared by the processes using the same database
        self.channel = channel_name(url)
        #: this process's mark on what it publishes
        self.origin = os.urandom(_ORIGIN_SIZE)
        self._deliver = deliver
        self._send, self._receive = trio.open_memory_channel[bytes](PUBLISH_QUEUE)
        self._dropping = False
        self._dropped = 0
        self._reachable = True
        self._first_subscription = True
        #: the last wait between two attempts (Rule 2, Rule 4)
        self._max_backoff = SENTINEL_MAX_BACKOFF if _is_sentinel(url) else MAX_BACKOFF
        #: ``HOST:PORT`` of the primary the sentinels named last (Rule 4)
        self._primary: str | None = None
        #: the publishing task had a connection before (whatever the subscribing one had)
        self._published_before = False

    @property
    def up(self) -> bool:
        """False from a failure to reach Redis until it is reached again (for the metrics)."""
        return self._reachable

    @property
    def backlog(self) -> int:
        """Broadcasts waiting to be published (for the metrics)."""
        return self._receive.statistics().current_buffer_used

    def publish(self, group: str, data: str | bytes) -> None:
        """Queue a broadcast for the other processes; never blocks (Rule 3)."""
        try:
            self._send.send_nowait(encode(self.origin, group, data))
        except trio.WouldBlock:
            self._dropped += 1
            if not self._dropping:
                self._dropping = True
                log.warning(
                    "Broker: %d broadcasts already wait to be published (Redis slow or unreachable): "
                    "dropping new ones, which reach this process's members only",
                    PUBLISH_QUEUE,
                )

    async def run(self) -> None:
        """Publish and subscribe, reconnecting as needed, until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._keep_connected, self._publish_queued, "publishing")
            nursery.start_soon(self._keep_connected, self._subscribe, "subscribing")

    async def _keep_connected(
        self, work: Callable[[coredis.Redis[bytes]], Awaitable[None]], what: str
    ) -> None:
        backoff = MIN_BACKOFF
        while True:
            # coredis would retry by itself, quietly and for ever: here a failure is reported
            # (Rule 2), so that it is logged once and the next attempt waits the backoff.
            problem = "the connection ended"
            try:
                async with open_client(self.url) as client:
                    await work(client)
            except* (coredis.exceptions.RedisError, OSError, anyio.ClosedResourceError) as group:
                # (coredis reports some losses, and its teardown when cancelled, as anyio's)
                problem = "; ".join(str(exc) or type(exc).__name__ for exc in _leaves(group))
            if self._reachable:
                backoff = MIN_BACKOFF  # it worked until now: try again soon
                self._reachable = False
                log.warning(
                    "Broker: Redis at %s unreachable while %s (%s); broadcasts reach this "
                    "process's members only until it is back; retrying",
                    self.shown,
                    what,
                    problem,
                )
            self._drop_queued()
            await trio.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff)

    def _connected(self, client: coredis.Redis[bytes]) -> None:
        primary = primary_of(client)
        if primary is not None and primary != self._primary:
            if self._primary is None:
                log.info("Broker: the sentinels at %s name the primary %s", self.shown, primary)
            else:
                log.info(
                    "Broker: the sentinels at %s name a new primary: %s (was %s)",
                    self.shown,
                    primary,
                    self._primary,
                )
            self._primary = primary
        if not self._reachable:
            self._reachable = True
            log.info("Broker: Redis at %s reachable again", self.shown)

    async def _publish_queued(self, client: coredis.Redis[bytes]) -> None:
        await client.ping()
        if self._published_before:  # a new connection, so the last one broke:
            self._drop_queued()  # what was broadcast meanwhile is lost (Rule 2), not sent late
        self._published_before = True
        self._connected(client)
        async for payload in self._receive:
            await client.publish(self.channel, payload)
            if self._dropping and self._receive.statistics().current_buffer_used == 0:
                log.info("Broker: publishing again; %d broadcasts were dropped", self._dropped)
                self._dropping, self._dropped = False, 0

    async def _subscribe(self, client: coredis.Redis[bytes]) -> None:
        async with client.pubsub(channels=[self.channel], retry_policy=NoRetryPolicy()) as pubsub:
            async for message in pubsub:
                if message["type"] == "subscribe":
                    if self._first_subscription:
                        self._first_subscription = False
                        log.info("Broker: subscribed to %r at %s", self.channel.decode(), self.shown)
                    self._connected(client)
                elif message["type"] == "message":
                    self._on_message(message["data"])

    def _on_message(self, payload: object) -> None:
        if not isinstance(payload, bytes):
            return
        try:
            origin, group, data = decode(payload)
        except ValueError as exc:
            log.warning(
                "Broker: ignoring a message on %r that is not a broadcast (%s)", self.channel.decode(), exc
            )
            return
        if origin != self.origin:
            self._deliver(group, data)

    def _drop_queued(self) -> None:
        """What waited to be published when the link broke is lost (Rule 2), not sent late."""
        while True:
            try:
                self._receive.receive_nowait()
            except trio.WouldBlock:
                return
            self._dropped += 1
