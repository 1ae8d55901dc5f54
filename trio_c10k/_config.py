"""Every limit and timeout of the server, in one frozen dataclass.

Rule 1: nothing here imports trio or Django; a ``Config`` is a plain value.
Rule 2: a bad value raises ``ConfigError`` (a ``ValueError``) when the ``Config`` is built,
never later inside the event loop.
Rule 3: a field the command line sets is declared with ``option()`` (``_options``): its flags,
help, metavar and ``--help`` group live in the field's metadata, and ``_cli`` generates the
option from them; no option of ``python -m trio_c10k`` that sets a field is written anywhere else.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from ._broker_url import check_broker_url
from ._exceptions import ConfigError
from ._options import Option as Option  # re-exported: _cli reads it from here
from ._options import option
from ._sockets import require_posix
from ._tls_config import TLSConfig

_HOST_PORT = re.compile(r"^(?:\[(?P<ipv6>[0-9A-Fa-f:.%a-zA-Z]+)\]|(?P<host>[^:\[\]]*)):(?P<port>\d+)$")


@dataclass(frozen=True, slots=True)
class Bind:
    """One address to listen on, parsed from a ``--bind`` value.

    Exactly one of ``(host, port)``, ``path`` or ``fd`` is set (``host`` may be left out: every
    interface).

    Raises:
        ConfigError: none or several of them are set, or the port is out of range.
    """

    #: host name or IP address for TCP (``""`` means every interface)
    host: str | None = None
    #: TCP port (0 lets the kernel pick one)
    port: int | None = None
    #: filesystem path of a Unix domain socket
    path: str | None = None
    #: a socket inherited from the parent process: listening, or bound with SO_REUSEPORT for a
    #: listening socket of this process beside it (``--workers``, see ``_listeners``)
    fd: int | None = None

    def __post_init__(self) -> None:
        kinds = [self.port is not None, self.path is not None, self.fd is not None]
        if sum(kinds) != 1 or (self.host is not None and self.port is None):
            raise ConfigError(
                "a Bind needs exactly one of port (with host), path or fd, as in "
                "Bind(host='127.0.0.1', port=8000), Bind(path='/run/app.sock') or Bind(fd=3)"
            )
        if self.port is not None and not 0 <= self.port <= 65535:
            raise ConfigError(f"bind port {self.port} is out of range 0-65535")

    @classmethod
    def parse(cls, text: str) -> Bind:
        """Parse ``HOST:PORT``, ``[IPv6]:PORT``, ``unix:PATH`` or ``fd://N``.

        Raises:
            ConfigError: the text is none of these forms, or ``unix:`` or ``fd://`` off POSIX.
        """
        if text.startswith(("unix:", "fd://")):
            require_posix(f"bind {text!r}")
        if text.startswith("unix:"):
            path = text[len("unix:") :]
            if not path:
                raise ConfigError(f"bind {text!r}: unix: needs a path, as in unix:/run/app.sock")
            return cls(path=path)
        if text.startswith("fd://"):
            number = text[len("fd://") :]
            if not number.isdigit():
                raise ConfigError(f"bind {text!r}: fd:// needs a file descriptor number, as in fd://3")
            return cls(fd=int(number))
        match = _HOST_PORT.match(text)
        if match is None:
            raise ConfigError(f"bind {text!r}: expected HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N")
        port = int(match["port"])
        if port > 65535:
            raise ConfigError(f"bind {text!r}: port {port} is out of range 0-65535")
        host = match["ipv6"] if match["ipv6"] is not None else match["host"]
        return cls(host=host, port=port)

    def __str__(self) -> str:
        if self.path is not None:
            return f"unix:{self.path}"
        if self.fd is not None:
            return f"fd://{self.fd}"
        return f"[{self.host}]:{self.port}" if ":" in (self.host or "") else f"{self.host}:{self.port}"


def _parse_networks(
    items: tuple[str, ...],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None:
    if "*" in items:
        return None
    try:
        return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in items)
    except ValueError as exc:
        raise ConfigError(f"forwarded_allow_ips: {exc}") from None


def _comma_separated(text: str) -> tuple[str, ...]:
    """``a, b,c`` -> ``("a", "b", "c")`` (``--forwarded-allow-ips``)."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _seconds_or_none(text: str) -> float | None:
    """A number of seconds where 0 stands for None (``--ws-ping-interval 0``: no pings)."""
    try:
        seconds = float(text)
    except ValueError:
        raise ConfigError(f"{text!r} is not a number of seconds (0 for none)") from None
    return seconds or None


@dataclass(frozen=True, slots=True)
class WebSocketConfig:
    """The limits of each WebSocket connection (``Config.websocket``)."""

    #: bytes: the largest message accepted, after reassembly (close 1009 beyond it); the
    #: ``websockets`` library's default. Counted in bytes whatever the shape (UTF-8 for text,
    #: a cost per continuation frame, inflation stopped at it); it also bounds the bytes of
    #: messages waiting for the handler before the reader stops reading.
    max_message_size: int = option(
        1024 * 1024,
        "--ws-max-message-size",
        metavar="BYTES",
        group="WebSocket",
        help="largest message accepted, in bytes whatever its shape (close 1009 beyond it); also the "
        "bytes of messages waiting for the handler",
    )
    #: bytes queued for a peer that reads too slowly before it is closed with 1008: a frame is
    #: refused once the backlog exceeds it, so one larger message still goes out whole. The
    #: batch being written is not counted: a connection holds at most about twice this, plus
    #: the message being sent
    send_queue_size: int = option(
        1024 * 1024,
        "--ws-send-queue-size",
        metavar="BYTES",
        group="WebSocket",
        help="bytes queued for a client that reads too slowly before it is closed with 1008",
    )
    #: seconds an awaitable fan-out (``Group.send_message``) waits for a member whose send
    #: queue stays over half full before closing it with 1008: a reader that keeps up loses
    #: nothing, and one stuck peer stalls the room no longer than this (``close_timeout``'s
    #: order of magnitude: a dead peer is found by pings after about 45 s)
    send_timeout: float = option(
        10.0,
        "--ws-send-timeout",
        metavar="SECONDS",
        group="WebSocket",
        help="seconds an awaitable fan-out (Group.send_message) waits for a member whose send queue "
        "stays full before closing it with 1008",
    )
    #: seconds without a byte from the peer after which a keep-alive ping goes out (None: no
    #: pings); pings keep NAT and proxies from dropping idle connections and find dead peers
    ping_interval: float | None = option(
        20.0,
        "--ws-ping-interval",
        metavar="SECONDS",
        group="WebSocket",
        parse=_seconds_or_none,
        help="seconds of silence from the client before a keep-alive ping; 0 disables pings",
    )
    #: seconds to wait, after a ping, for anything from the peer before closing with 1011
    ping_timeout: float = option(
        20.0,
        "--ws-ping-timeout",
        metavar="SECONDS",
        group="WebSocket",
        help="seconds to wait, after a ping, for anything from the client before closing with 1011",
    )
    #: seconds to wait for the peer's close frame, and for the last frames to leave
    close_timeout: float = option(
        10.0,
        "--ws-close-timeout",
        metavar="SECONDS",
        group="WebSocket",
        help="seconds to wait for the peer's close frame",
    )
    #: agree to permessage-deflate (RFC 7692) when a client offers it. Off by default: each
    #: compressed connection keeps two zlib streams (about 300 KB at the default window),
    #: 3 GB for 10,000 clients; a compressed frame must be made for each recipient of a
    #: broadcast instead of once; and small real-time messages barely shrink.
    compression: bool = option(
        False,
        "--ws-compression",
        group="WebSocket",
        help="agree to permessage-deflate when a client offers it (memory per connection: see the README)",
    )

    def __post_init__(self) -> None:
        for name in ("max_message_size", "send_queue_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"websocket {name} must be at least 1 byte")
        if self.ping_interval is not None and not self.ping_interval > 0:
            raise ConfigError("websocket ping_interval must be positive (None disables pings)")
        for name in ("ping_timeout", "close_timeout", "send_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"websocket {name} must be a positive number of seconds")


@dataclass(frozen=True, slots=True)
class Config:
    """The server's settings. Every field has the default the CLI documents.

    Raises:
        ConfigError: a value is out of range (raised by the constructor).
    """

    #: addresses to listen on
    binds: tuple[Bind, ...] = option(
        (Bind(host="127.0.0.1", port=8000),),
        "-b",
        "--bind",
        metavar="ADDRESS",
        parse=Bind.parse,
        repeat=True,
        help="where to listen, repeatable: HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N",
    )
    #: worker threads that run the WSGI application and ``database_sync_to_thread`` calls
    threads: int = option(
        10,
        "--threads",
        help="worker threads running the application: at most this many requests (and "
        "database_sync_to_thread calls) run at once, the others wait in arrival order",
    )
    #: listen(2) backlog; the kernel caps it at net.core.somaxconn
    backlog: int = option(
        2048, "--backlog", help="listen() backlog (capped by the kernel's net.core.somaxconn)"
    )
    #: open connections beyond which a new one gets 503 and is closed; None means the
    #: soft RLIMIT_NOFILE minus a reserve of 100 descriptors for the application's own files
    max_connections: int | None = option(
        None,
        "--max-connections",
        help="open connections beyond which new ones get 503 and are closed "
        "(default: the open-file limit, ulimit -n, minus 100)",
    )
    #: seconds an idle keep-alive connection is kept open between requests
    keep_alive_timeout: float = option(
        5.0,
        "--keep-alive-timeout",
        metavar="SECONDS",
        help="close a connection idle this long between requests",
    )
    #: seconds a client has to send a complete header section (and between two reads of a
    #: request body); past it the connection is closed, with 408 if a request had begun
    header_timeout: float = option(
        10.0,
        "--header-timeout",
        metavar="SECONDS",
        help="time allowed to send a request's headers, and between two reads of its body (408 past it)",
    )
    #: bytes: the largest request line plus header section (431 beyond it). h11's default,
    #: 16 KiB, is also what most servers and proxies accept (nginx: 8-32 KiB).
    max_header_size: int = option(
        16 * 1024,
        "--max-header-size",
        metavar="BYTES",
        help="largest request line plus headers (431 beyond it)",
    )
    #: bytes: the largest request body (413 beyond it); bodies are read before the
    #: application runs, in memory up to 64 KiB and in a temporary file beyond.
    max_body_size: int = option(
        10 * 1024 * 1024,
        "--max-body-size",
        metavar="BYTES",
        help="largest request body (413 beyond it)",
    )
    #: seconds a client has to send a whole request body, however steadily it sends (408
    #: past it), against uploads that trickle to hold a connection. 60 s takes the default
    #: ``max_body_size`` (10 MiB) at 1.4 Mbit/s; raise both together for large uploads.
    body_timeout: float = option(
        60.0,
        "--body-timeout",
        metavar="SECONDS",
        help="time allowed to send a whole request body (408 past it)",
    )
    #: seconds a write to a client may make no progress (the client reads nothing) before
    #: the connection is aborted, releasing the worker thread of a streamed response;
    #: nginx's ``send_timeout`` is 60 s, 30 s frees a stuck thread sooner
    send_timeout: float = option(
        30.0,
        "--send-timeout",
        metavar="SECONDS",
        help="abort a connection whose client takes no byte of the response for this long",
    )
    #: seconds in-flight requests are given to finish after SIGINT/SIGTERM
    graceful_timeout: float = option(
        30.0,
        "--graceful-timeout",
        metavar="SECONDS",
        help="on SIGINT/SIGTERM, time in-flight requests get to finish before cancellation",
    )
    #: log one line per request to the ``trio_c10k.access`` logger
    access_log: bool = option(True, "--access-log", help="log one line per request (logger trio_c10k.access)")
    #: trust X-Forwarded-For / X-Forwarded-Proto from the peers in ``forwarded_allow_ips``
    proxy_headers: bool = option(
        False,
        "--proxy-headers",
        help="take the client address and scheme from X-Forwarded-For and "
        "X-Forwarded-Proto sent by a trusted proxy",
    )
    #: addresses or networks of trusted proxies; ``"*"`` trusts every peer
    forwarded_allow_ips: tuple[str, ...] = option(
        ("127.0.0.1", "::1"),
        "--forwarded-allow-ips",
        metavar="IPS",
        parse=_comma_separated,
        help="comma-separated addresses or networks of trusted proxies; '*' for any",
    )
    #: limits of WebSocket connections
    websocket: WebSocketConfig = WebSocketConfig()
    #: the certificate and the rest of TLS (off unless ``tls.certfile`` is set)
    tls: TLSConfig = TLSConfig()  # noqa: RUF009 (a frozen dataclass, as WebSocketConfig)
    #: Redis URL through which group broadcasts reach other processes and machines
    #: (``redis://host:port/db``, ``rediss://`` with TLS, ``unix:///path``); None: groups are
    #: per process
    broker: str | None = option(
        None,
        "--broker",
        metavar="URL",
        help="Redis URL (redis://HOST:PORT/DB, or redis+sentinel://HOST:PORT,HOST:PORT/SERVICE/DB for "
        "the primary that Redis Sentinel names) through which group broadcasts reach the members "
        "held by other processes and machines (default: the Django setting TRIO_C10K_BROKER, else the "
        "environment variable TRIO_C10K_BROKER, "
        "else none: groups are per process)",
    )
    #: parsed form of ``forwarded_allow_ips`` (None: every peer is trusted)
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not self.binds:
            raise ConfigError("at least one bind address is needed")
        for name in ("threads", "backlog"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.max_connections is not None and self.max_connections < 1:
            raise ConfigError(f"max_connections must be at least 1, not {self.max_connections}")
        for name in (
            "keep_alive_timeout",
            "header_timeout",
            "body_timeout",
            "send_timeout",
            "graceful_timeout",
        ):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be a positive number of seconds")
        if self.max_header_size < 1024:
            raise ConfigError("max_header_size must be at least 1024 bytes")
        if self.max_body_size < 0:
            raise ConfigError("max_body_size must not be negative")
        if self.broker is not None:
            check_broker_url(self.broker)
        object.__setattr__(self, "trusted_proxies", _parse_networks(self.forwarded_allow_ips))
