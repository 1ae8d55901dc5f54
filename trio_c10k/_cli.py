"""The command line: ``python -m trio_c10k APP [options]``.

Rule 1: a bad option or an APP that cannot be imported prints one line and exits with 2,
without a traceback; an address that cannot be bound exits with 1.
Rule 2: SIGINT or SIGTERM starts a graceful shutdown (exit 0); a second one stops at once.
Rule 3: ``--workers N`` (N > 1) makes this process the supervisor of N server processes
(``_workers``); it loads no application itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

import trio

from ._config import Bind, Config, WebSocketConfig
from ._exceptions import ConfigError
from ._server import FD_RESERVE, Server, serve
from ._workers import supervise

log = logging.getLogger("trio_c10k.server")
_DEFAULT = Config()


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None: those options say their default in words."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; every option's help states its default."""
    parser = _Parser(
        prog="python -m trio_c10k",
        # No abbreviations: --workers passes this command line on to the workers, minus
        # --bind and --workers, which must be spelled out to be recognised there.
        allow_abbrev=False,
        description="Serve a WSGI application (a Django site) over HTTP/1.1 with trio.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument(
        "app",
        metavar="APP",
        help="the WSGI application: 'module' (its 'application' attribute) or 'module:attr', "
        "for example example_site.wsgi",
    )
    parser.add_argument(
        "-b",
        "--bind",
        action="append",
        metavar="ADDRESS",
        help="where to listen, repeatable: HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N "
        "(default: 127.0.0.1:8000)",
    )
    number = parser.add_argument
    number(
        "--workers",
        type=int,
        default=1,
        help="server processes sharing the listening sockets, supervised by this one (restarted "
        "if they die); 1 serves in this process. Groups span the processes only with --broker",
    )
    number(
        "--threads",
        type=int,
        default=_DEFAULT.threads,
        help="worker threads running the application: at most this many requests (and "
        "database_sync_to_thread calls) run at once, the others wait in arrival order",
    )
    number(
        "--backlog",
        type=int,
        default=_DEFAULT.backlog,
        help="listen() backlog (capped by the kernel's net.core.somaxconn)",
    )
    number(
        "--max-connections",
        type=int,
        default=None,
        help="open connections beyond which new ones get 503 and are closed "
        f"(default: the open-file limit, ulimit -n, minus {FD_RESERVE})",
    )
    number(
        "--keep-alive-timeout",
        type=float,
        default=_DEFAULT.keep_alive_timeout,
        metavar="SECONDS",
        help="close a connection idle this long between requests",
    )
    number(
        "--header-timeout",
        type=float,
        default=_DEFAULT.header_timeout,
        metavar="SECONDS",
        help="time allowed to send a request's headers, and between two reads of its body (408 past it)",
    )
    number(
        "--max-header-size",
        type=int,
        default=_DEFAULT.max_header_size,
        metavar="BYTES",
        help="largest request line plus headers (431 beyond it)",
    )
    number(
        "--max-body-size",
        type=int,
        default=_DEFAULT.max_body_size,
        metavar="BYTES",
        help="largest request body (413 beyond it)",
    )
    number(
        "--body-timeout",
        type=float,
        default=_DEFAULT.body_timeout,
        metavar="SECONDS",
        help="time allowed to send a whole request body (408 past it)",
    )
    number(
        "--send-timeout",
        type=float,
        default=_DEFAULT.send_timeout,
        metavar="SECONDS",
        help="abort a connection whose client takes no byte of the response for this long",
    )
    number(
        "--graceful-timeout",
        type=float,
        default=_DEFAULT.graceful_timeout,
        metavar="SECONDS",
        help="on SIGINT/SIGTERM, time in-flight requests get to finish before cancellation",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error", "critical"],
        help="logging level (of the root logger, so the application's log records at this level show too)",
    )
    parser.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=_DEFAULT.access_log,
        help="log one line per request (logger trio_c10k.access)",
    )
    parser.add_argument(
        "--pin-cpu",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the process on one CPU: the event loop and the worker threads take turns on "
        "the GIL many times per request, and each turn across two cores costs far more than on "
        "one (see docs/performance.md)",
    )
    ws = parser.add_argument_group("WebSocket")
    ws.add_argument(
        "--ws-max-message-size",
        type=int,
        default=_DEFAULT.websocket.max_message_size,
        metavar="BYTES",
        help="largest message accepted, in bytes whatever its shape (close 1009 beyond it); also the "
        "bytes of messages waiting for the handler",
    )
    ws.add_argument(
        "--ws-send-queue-size",
        type=int,
        default=_DEFAULT.websocket.send_queue_size,
        metavar="BYTES",
        help="bytes queued for a client that reads too slowly before it is closed with 1008",
    )
    ws.add_argument(
        "--ws-send-timeout",
        type=float,
        default=_DEFAULT.websocket.send_timeout,
        metavar="SECONDS",
        help="seconds an awaitable fan-out (Group.send_message) waits for a member whose send queue "
        "stays full before closing it with 1008",
    )
    ws.add_argument(
        "--ws-ping-interval",
        type=float,
        default=_DEFAULT.websocket.ping_interval,
        metavar="SECONDS",
        help="seconds of silence from the client before a keep-alive ping; 0 disables pings",
    )
    ws.add_argument(
        "--ws-ping-timeout",
        type=float,
        default=_DEFAULT.websocket.ping_timeout,
        metavar="SECONDS",
        help="seconds to wait, after a ping, for anything from the client before closing with 1011",
    )
    ws.add_argument(
        "--ws-close-timeout",
        type=float,
        default=_DEFAULT.websocket.close_timeout,
        metavar="SECONDS",
        help="seconds to wait for the peer's close frame",
    )
    ws.add_argument(
        "--ws-compression",
        action=argparse.BooleanOptionalAction,
        default=_DEFAULT.websocket.compression,
        help="agree to permessage-deflate when a client offers it (memory per connection: see the README)",
    )
    parser.add_argument(
        "--broker",
        metavar="URL",
        help="Redis URL (redis://HOST:PORT/DB) through which group broadcasts reach the members "
        "held by other processes and machines (default: the Django setting TRIO_C10K_BROKER, "
        "else none: groups are per process)",
    )
    parser.add_argument(
        "--proxy-headers",
        action="store_true",
        help="take the client address and scheme from X-Forwarded-For and "
        "X-Forwarded-Proto sent by a trusted proxy",
    )
    parser.add_argument(
        "--forwarded-allow-ips",
        default=",".join(_DEFAULT.forwarded_allow_ips),
        metavar="IPS",
        help="comma-separated addresses or networks of trusted proxies; '*' for any",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    """Build the ``Config`` the parsed options describe.

    Raises:
        ConfigError: a value is invalid.
    """
    binds = tuple(Bind.parse(text) for text in args.bind or ["127.0.0.1:8000"])
    return Config(
        binds=binds,
        threads=args.threads,
        backlog=args.backlog,
        max_connections=args.max_connections,
        keep_alive_timeout=args.keep_alive_timeout,
        header_timeout=args.header_timeout,
        max_header_size=args.max_header_size,
        max_body_size=args.max_body_size,
        body_timeout=args.body_timeout,
        send_timeout=args.send_timeout,
        graceful_timeout=args.graceful_timeout,
        access_log=args.access_log,
        proxy_headers=args.proxy_headers,
        websocket=WebSocketConfig(
            max_message_size=args.ws_max_message_size,
            send_queue_size=args.ws_send_queue_size,
            send_timeout=args.ws_send_timeout,
            ping_interval=args.ws_ping_interval or None,
            ping_timeout=args.ws_ping_timeout,
            close_timeout=args.ws_close_timeout,
            compression=args.ws_compression,
        ),
        forwarded_allow_ips=tuple(ip.strip() for ip in args.forwarded_allow_ips.split(",") if ip.strip()),
        broker=args.broker,
    )


def load_app(spec: str) -> Callable[..., Iterable[bytes]]:
    """Import ``module`` (attribute ``application``) or ``module:attr``.

    The current directory is searched first, as ``python -m`` users expect.

    Raises:
        ConfigError: the module cannot be imported, or has no such callable.
    """
    module_name, _, attr = spec.partition(":")
    attr = attr or "application"
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigError(f"cannot import {module_name!r}: no module named {exc.name!r}") from None
        raise ConfigError(f"importing {module_name!r} failed: {exc}") from None
    except Exception as exc:
        raise ConfigError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from None
    app = getattr(module, attr, None)
    if app is None:
        raise ConfigError(f"module {module_name!r} has no attribute {attr!r}")
    if not callable(app):
        raise ConfigError(f"{spec!r} is not a WSGI application (not callable)")
    return app  # type: ignore[no-any-return]  # checked callable above


#: allocations (net of frees) between two collections of the youngest generation; CPython's
#: default is 700, which with 10,000 open connections spends much of each handshake walking
#: them (measured: 837-1,128 handshakes/s with 700, 1,273-1,623 with 50,000; docs/performance.md)
GC_GEN0_THRESHOLD = 50_000


def tune_garbage_collector() -> None:
    """Keep the cyclic garbage collector off the hot path of a long-running server.

    The objects loaded so far (Django, the URLconf, settings: they live as long as the
    process) are frozen out of every future collection, and young collections run every
    ``GC_GEN0_THRESHOLD`` allocations instead of 700. Cycles are still collected.
    """
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def pin_to_one_cpu() -> int | None:
    """Restrict this thread, and the threads it starts later, to one of its allowed CPUs.

    Several processes on one machine spread over the CPUs by process id. Returns the CPU, or
    None where there is nothing to do (one CPU allowed, or no ``sched_setaffinity``).
    """
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None
    # A worker of --workers takes the CPU after its index, so that they spread evenly; a lone
    # process spreads by process id.
    worker = os.environ.get("TRIO_C10K_WORKER")
    cpu = allowed[(int(worker) if worker and worker.isdigit() else os.getpid()) % len(allowed)]
    os.sched_setaffinity(0, {cpu})
    return cpu


async def _serve_until_stopped(app: Callable[..., Iterable[bytes]], config: Config, cpu: int | None) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            server: Server = await nursery.start(_serve_then_stop, app, config, nursery.cancel_scope)
            if cpu is not None:
                log.info("Running on CPU %d (--no-pin-cpu lets the kernel move threads)", cpu)
            async for signum in signals:
                name = signal.Signals(signum).name
                if server.closing:
                    log.warning("%s again: stopping now", name)
                    nursery.cancel_scope.cancel()
                else:
                    log.info(
                        "%s: shutting down, in-flight requests have %g s to finish",
                        name,
                        config.graceful_timeout,
                    )
                    server.shutdown()


async def _serve_then_stop(
    app: Callable[..., Iterable[bytes]],
    config: Config,
    scope: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[Server],
) -> None:
    await serve(app, config, task_status=task_status)
    scope.cancel()


def main(argv: list[str] | None = None) -> NoReturn:
    """Run the command line; exits 0 after a graceful shutdown.

    Exit status 2: bad options or APP; 1: an address could not be bound.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    worker = os.environ.get("TRIO_C10K_WORKER")  # set by the supervisor of --workers
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s [%(levelname)s] "
        + (f"worker {worker} " if worker is not None else "")
        + "%(name)s: %(message)s",
    )
    if args.log_level != "debug":
        # The Redis client logs each lost connection at INFO, again and again during an
        # outage; the broker says it once (trio_c10k.broker), at WARNING.
        logging.getLogger("coredis").setLevel(logging.WARNING)
    try:
        config = config_from_args(args)
        if args.workers < 1:
            raise ConfigError("--workers must be at least 1")
        if args.workers > 1:
            _run_and_exit(parser, supervise, config, sys.argv[1:] if argv is None else argv, args.workers)
        app = load_app(args.app)
        if config.broker is None and (setting := django_setting("TRIO_C10K_BROKER")):
            config = dataclasses.replace(config, broker=setting)
    except ConfigError as exc:
        parser.error(str(exc))
    tune_garbage_collector()
    cpu = pin_to_one_cpu() if args.pin_cpu else None
    _run_and_exit(parser, _serve_until_stopped, app, config, cpu)


def django_setting(name: str) -> str | None:
    """A Django setting of the loaded application, if it is a configured Django site."""
    settings = sys.modules.get("django.conf")
    if settings is None or not settings.settings.configured:
        return None
    return getattr(settings.settings, name, None)


def _run_and_exit(parser: argparse.ArgumentParser, fn: Callable[..., Any], *args: Any) -> NoReturn:
    """``trio.run(fn, *args)``, then exit with what it returns (None: 0); a ConfigError exits
    with 2, an OSError (an address that cannot be bound) with 1, each as one line."""
    try:
        status = trio.run(fn, *args)
    except* ConfigError as group:
        parser.error(_first(group))
    except* OSError as group:
        parser.exit(1, f"{parser.prog}: error: {_first(group)}\n")
    sys.exit(status)


def _first(group: BaseExceptionGroup[Any]) -> str:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
