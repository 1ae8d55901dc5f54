"""The command line: ``python -m trio_c10k APP [options]``.

Rule 1: a bad option or an APP that cannot be imported prints one line and exits with 2,
without a traceback; an address that cannot be bound exits with 1.
Rule 2: SIGINT or SIGTERM starts a graceful shutdown (exit 0); a second one stops at once.
With TLS, SIGHUP reloads the certificate and key (``ServerContext.reload``), and is ignored
from the moment the options are read until serving begins (the files are read again then);
without TLS it keeps its default action.
Rule 3: ``--workers N`` (N > 1) makes this process the supervisor of N server processes
(``_workers``); it loads no application itself, and does not import the server (``_server``,
``_fanout``, ``_metrics``: imported where a process serves) nor Django (``_workers`` Rule 5).
Rule 4: an option that sets a ``Config`` field is generated from the field's ``option()``
(Rule 3 of ``_config``), never declared here; only those about the process are (APP,
``--workers``, ``--log-level``, ``--pin-cpu``).
Rule 5: where a platform lacks what an option needs, an option asked for is refused with one
line (``--workers`` and ``unix:``/``fd://`` binds off POSIX: ``_sockets`` Rule 4; ``--pin-cpu``
without ``sched_setaffinity``: Linux only), and a default goes without, saying so at INFO
(not pinned; with TLS and no SIGHUP, no certificate reload).
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
import typing
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, NoReturn

import trio

from ._config import Config, Option
from ._exceptions import ConfigError
from ._multiprocess import MULTIPROC_ENV
from ._sockets import require_posix
from ._tls_context import server_context
from ._workers import supervise

if TYPE_CHECKING:
    from ._server import Server

log = logging.getLogger("trio_c10k.server")

#: the signal that reloads the certificate (Rule 2); None where there is none (Windows: Rule 5)
RELOAD_SIGNAL: signal.Signals | None = getattr(signal, "SIGHUP", None)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; every option's help states its default.

    The options that set a ``Config`` field come from the fields' ``option()`` metadata
    (``config_options``); those about the process are declared here.
    """
    parser = _Parser(
        prog="python -m trio_c10k",
        # No abbreviations: --workers passes this command line on to the workers, minus
        # --bind and --workers, which must be spelled out to be recognised there.
        allow_abbrev=False,
        description="Serve a WSGI application (a Django site) over HTTP/1.1 with trio.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "app",
        metavar="APP",
        help="the WSGI application: 'module' (its 'application' attribute) or 'module:attr', "
        "for example example_site.wsgi",
    )
    add_config_options(parser)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes sharing the listening sockets, supervised by this one (restarted "
        "if they die); 1 serves in this process. Groups span the processes only with --broker",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error", "critical"],
        help="logging level (of the root logger, so the application's log records at this level show too)",
    )
    parser.add_argument(
        "--pin-cpu",
        action=argparse.BooleanOptionalAction,
        default=argparse.SUPPRESS,  # not given: pinned where the platform can (Rule 5)
        help="run the process on one CPU (default: on where the platform can, Linux): the event "
        "loop and the worker threads take turns on the GIL many times per request, and each turn "
        "across two cores costs far more than on one (see docs/performance.md)",
    )
    return parser


def config_options(cls: type[Any] = Config) -> Iterator[tuple[Option, Any, type[Any]]]:
    """``(option, field default, value type)`` for each field of ``cls`` declared with
    ``option()``, in field order, with the fields of a nested config (``Config.websocket``)
    in its place. The value type is the field's, without ``| None``."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        option = field.metadata.get("option")
        if option is not None:
            kind = hints[field.name]
            if type(None) in typing.get_args(kind):
                (kind,) = (arg for arg in typing.get_args(kind) if arg is not type(None))
            yield option, field.default, kind
        elif dataclasses.is_dataclass(field.default):
            yield from config_options(type(field.default))


def add_config_options(
    parser: argparse.ArgumentParser,
    *,
    leave_out: Collection[str] = (),
    defaults: Mapping[str, Any] | None = None,
) -> None:
    """Add the option of each field declared with ``option()`` (``config_options``), but those
    whose ``dest`` is in ``leave_out``, each in its ``--help`` group. ``defaults`` (by ``dest``)
    gives a field another default than its own (``runserver``'s ``--graceful-timeout``)."""
    groups: dict[str | None, argparse._ActionsContainer] = {None: parser}
    defaults = defaults or {}
    for option, default, kind in config_options():
        if option.dest not in leave_out:
            if option.group not in groups:
                groups[option.group] = parser.add_argument_group(option.group)
            own = option.dest in defaults
            _add_option(groups[option.group], option, defaults.get(option.dest, default), kind, own)


def _add_option(
    group: argparse._ActionsContainer, option: Option, default: Any, kind: type[Any], own: bool = False
) -> None:
    """Add ``option`` to ``group``. An option not given leaves the field at its default
    (argparse sets no attribute for it), or sets it to ``default`` if that is the command's
    ``own``; the help states it."""
    if default is None:
        text = option.help  # it says what None means
    else:
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else str(default)
        text = f"{option.help} (default: {shown})"
    kwargs: dict[str, Any] = {
        "dest": option.dest,
        "default": default if own else argparse.SUPPRESS,
        "help": text.replace("%", "%%"),
    }
    if kind is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif option.parse is None and kind not in (int, float, str):
        raise TypeError(f"{option.flags[-1]}: the option of a {kind} field needs parse=")
    else:
        kwargs["metavar"] = option.metavar
        kwargs["type"] = kind if option.parse is None else _reported(option.parse)
        if option.repeat:
            kwargs["action"] = "append"
    group.add_argument(*option.flags, **kwargs)


def _reported(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse``, its ``ConfigError`` shown as the reason the option's value is bad (argparse
    would otherwise say "invalid parse value")."""

    def parse_or_report(text: str) -> Any:
        try:
            return parse(text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse_or_report


def config_from_args(args: argparse.Namespace) -> Config:
    """Build the ``Config`` the parsed options describe: each field an option was given for
    takes its value, the others keep their default.

    Raises:
        ConfigError: a value is invalid.
    """
    config: Config = _from_args(Config, vars(args))
    return config


def _from_args(cls: type[Any], given: dict[str, Any]) -> Any:
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        option = field.metadata.get("option")
        if option is not None and option.dest in given:
            values[field.name] = tuple(given[option.dest]) if option.repeat else given[option.dest]
        elif option is None and dataclasses.is_dataclass(field.default):
            values[field.name] = _from_args(type(field.default), given)
    return cls(**values)


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


async def serve_until_stopped(app: Callable[..., Iterable[bytes]], config: Config, cpu: int | None) -> None:
    """Serve until SIGINT or SIGTERM ends a graceful shutdown, or a second one stops it at once
    (Rule 2); with TLS, SIGHUP reloads the certificate. Runs in the main thread (the signals)."""
    from ._metrics import keep_synced  # the server, imported only where one runs (Rule 3)

    reload = (RELOAD_SIGNAL,) if config.tls.enabled and RELOAD_SIGNAL is not None else ()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, *reload) as signals:
        async with trio.open_nursery() as nursery:
            server: Server = await nursery.start(_serve_then_stop, app, config, nursery.cancel_scope)
            if os.environ.get(MULTIPROC_ENV):  # --workers, or set by the user: docs/metrics.md
                nursery.start_soon(keep_synced)
            if cpu is not None:
                log.info("Running on CPU %d (--no-pin-cpu lets the kernel move threads)", cpu)
            async for signum in signals:
                if signum == RELOAD_SIGNAL and server.tls is not None:
                    # It reads files: in a thread, so a slow disk does not stall connections.
                    await trio.to_thread.run_sync(server.tls.reload)  # logs what came of it
                    continue
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
    from ._server import serve  # (Rule 3)

    await serve(app, config, task_status=task_status)
    scope.cancel()


def main(argv: list[str] | None = None) -> NoReturn:
    """Run the command line; exits 0 after a graceful shutdown.

    Exit status 2: bad options or APP; 1: an address could not be bound.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    log_to_stderr(args.log_level, os.environ.get("TRIO_C10K_WORKER"))  # set by the supervisor of --workers
    if args.log_level != "debug":
        # The Redis client logs each lost connection at INFO, again and again during an
        # outage; the broker says it once (trio_c10k.broker), at WARNING.
        logging.getLogger("coredis").setLevel(logging.WARNING)
    try:
        config = config_from_args(args)
        if config.tls.enabled:
            # A renewal's SIGHUP while starting ends nothing (Rule 2); a certificate that
            # cannot be used is reported now, before --workers starts anything.
            if RELOAD_SIGNAL is None:
                log.info("No SIGHUP on %s: restart the server to load a renewed certificate", sys.platform)
            else:
                signal.signal(RELOAD_SIGNAL, signal.SIG_IGN)
            server_context(config.tls)
        if args.workers < 1:
            raise ConfigError("--workers must be at least 1")
        pin = getattr(args, "pin_cpu", None)  # None: not given (Rule 5)
        if pin and not hasattr(os, "sched_setaffinity"):
            raise ConfigError(f"--pin-cpu: not available on {sys.platform} (needs sched_setaffinity: Linux)")
        if args.workers > 1:
            require_posix("--workers")
            _run_and_exit(parser, supervise, config, sys.argv[1:] if argv is None else argv, args.workers)
        # The server is imported only where one runs (Rule 3), and before the garbage
        # collector is tuned: its modules are then frozen with Django's (imported after it,
        # they cost a process 0.45 MB more RSS before any connection).
        from . import _metrics, _server  # noqa: F401
        from ._fanout import configured_broker

        app = load_app(args.app)
        if config.broker is None and (url := configured_broker()):  # the setting, else the variable
            config = dataclasses.replace(config, broker=url)
    except ConfigError as exc:
        parser.error(str(exc))
    tune_garbage_collector()
    if pin is None and not hasattr(os, "sched_setaffinity"):
        log.info("Not pinned to one CPU: %s has no sched_setaffinity", sys.platform)
    cpu = pin_to_one_cpu() if pin is not False else None
    _run_and_exit(parser, serve_until_stopped, app, config, cpu)


def log_to_stderr(level: str, worker: str | None) -> None:
    """Print the log at ``level`` and above to stderr (the root logger's handler, so the
    application's records too), each line once: a record that a console handler on its way
    to the root printed already (Django's ``console`` handler prints ``django`` records
    under ``DEBUG``, a project's ``LOGGING`` may add its own) is not printed again."""
    prefix = f"worker {worker} " if worker is not None else ""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(f"%(asctime)s [%(levelname)s] {prefix}%(name)s: %(message)s"))
    handler.addFilter(_not_printed_yet)
    logging.basicConfig(level=level.upper(), handlers=[handler])


def _not_printed_yet(record: logging.LogRecord) -> bool:
    """Whether no handler between ``record``'s logger and the root wrote it to the console."""
    consoles = (sys.stderr, sys.stdout)
    logger: logging.Logger | None = logging.getLogger(record.name)
    while logger is not None and logger is not logging.root:
        for handler in logger.handlers:
            if (
                isinstance(handler, logging.StreamHandler)
                and handler.stream in consoles
                and record.levelno >= handler.level
                and handler.filter(record)
            ):
                return False
        logger = logger.parent if logger.propagate else None
    return True


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
