"""``python manage.py runserver`` served by trio_c10k: HTTP views and ``@websocket`` handlers.

With ``"trio_c10k"`` in ``INSTALLED_APPS`` before ``"django.contrib.staticfiles"``, this command
replaces Django's. It *is* Django's command (the static files one when that app is installed):
the same arguments (``addrport``, ``--ipv6``, ``--noreload``, ``--nothreading``, ``--nostatic``,
``--insecure``, ``--skip-checks``), the same system checks, banner and migration warning, the
same autoreloader (a file changes, the process restarts), static files served when ``DEBUG``.
Only the server class differs: Django hands its WSGI handler to ``DevelopmentServer``, which
serves it with trio_c10k; and the options of ``python -m trio_c10k`` that set a ``Config``
field are added (generated as there), but ``--bind`` and ``--threads``; ``--graceful-timeout``
defaults to ``GRACEFUL_TIMEOUT`` here.

Rule 1: the socket is bound by the constructor, as Django's ``WSGIServer`` does, so the banner
shows the real port and a port in use is reported the Django way ("That port is already in
use.").
Rule 2: it stops as ``python -m trio_c10k`` does: SIGINT or SIGTERM starts a graceful shutdown
(no new connections, WebSockets closed with 1001, requests in flight given
``--graceful-timeout``), then the process exits 0; a second Ctrl-C stops at once. A reload
(a file changed) shuts down the same way before the process restarts. Without the
autoreloader the server runs in the main thread and takes the signals itself
(``serve_until_stopped``). Under it, the server runs in Django's "django-main-thread" of the
reloaded child process, whose main thread (Django's file watcher) takes the signals and the
reload's ``SystemExit(3)``, has the server's event loop shut down and waits for it
(``ServerControl``); the reloader's parent process passes SIGINT and SIGTERM on to the child as
SIGTERM and waits for it, where Django's kills it (``restart_on_changes``). A Ctrl-C in a
terminal reaches both, so the child gets SIGINT and that SIGTERM, in either order: the first
starts the shutdown, a SIGTERM during it is ignored, and only a second SIGINT stops at once.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import trio
from django.apps import apps
from django.conf import settings
from django.core.management.base import CommandError
from django.utils import autoreload

from ..._cli import add_config_options, config_from_args, serve_until_stopped
from ..._config import Bind, Config
from ..._exceptions import ConfigError
from ..._fanout import configured_broker
from ..._server import Server, broker_class, serve
from ..._tls_context import server_context

if apps.is_installed("django.contrib.staticfiles"):
    from django.contrib.staticfiles.management.commands.runserver import Command as DjangoRunserver
else:
    from django.core.management.commands.runserver import Command as DjangoRunserver

log = logging.getLogger("trio_c10k.server")

#: what Django's ``--nothreading`` means here: one worker thread for the views
NO_THREADING_THREADS = 1
#: the options of ``python -m trio_c10k`` this command leaves out: Django's ``addrport`` says
#: where to listen, ``--nothreading`` how many threads
LEFT_OUT = ("bind", "threads")
#: seconds requests in flight get to finish on a signal or a reload (``--graceful-timeout``):
#: short, as every reload waits for them (hypercorn's default is 3 s too; the command line's
#: 30 s suits a deployment)
GRACEFUL_TIMEOUT = 3.0
#: seconds the reloaded child's main thread waits for the server past ``graceful_timeout`` (its
#: cancellation) before the process exits without it
STOP_MARGIN = 2.0
#: the exit status by which Django's reloaded child asks its parent for a new one
RELOAD_STATUS = 3
#: seconds between two looks at the signals while the main thread waits for the server: Python
#: runs a handler in the main thread, which sees a signal another thread took (the kernel
#: picks any) only when its wait returns
SIGNAL_CHECK_INTERVAL = 0.1


class DevelopmentServer:
    """The server class Django's ``runserver`` expects (``server_cls``), serving with trio_c10k.

    Django calls ``DevelopmentServer((addr, port), handler_class, ipv6=...)``, reads
    ``server_port``, then ``set_app(handler)`` and ``serve_forever()``.
    """

    #: worker threads for the views (``--nothreading``: 1)
    threads = Config().threads
    #: the settings the command's options give (``--ws-ping-interval``...)
    config = Config()
    #: how the main thread of a reloaded child stops the server (set by ``Command.handle``)
    control: ServerControl

    def __init__(self, server_address: tuple[str, int], handler_class: object, ipv6: bool = False) -> None:
        self.socket = socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind(server_address)
            self.socket.listen(self.config.backlog)
        except OSError:
            self.socket.close()
            raise
        #: the port bound (Django's banner shows it)
        self.server_port: int = self.socket.getsockname()[1]
        self.app: Callable[..., Iterable[bytes]] | None = None

    def set_app(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def serve_forever(self) -> None:
        """Serve until a signal or a reload ends a graceful shutdown (Rule 2)."""
        assert self.app is not None
        _log_to_console()
        config = dataclasses.replace(
            self.config,
            binds=(Bind(fd=self.socket.fileno()),),
            threads=self.threads,
        )
        if threading.current_thread() is not threading.main_thread():  # under the autoreloader
            self.control.serve(self.app, config)
            return
        try:
            trio.run(serve_until_stopped, self.app, config, None)
        except* KeyboardInterrupt:  # Ctrl-C before the signals were taken: Django prints its goodbye
            raise KeyboardInterrupt from None


class ServerControl:
    """The server of a reloaded child process as its main thread sees it (Rule 2): the server
    runs in Django's thread, the signals and the reload come to the main thread."""

    def __init__(self) -> None:
        #: seconds requests in flight get (``Config.graceful_timeout``, set by ``serve()``)
        self.graceful_timeout = GRACEFUL_TIMEOUT
        #: True once a signal or a reload began the shutdown
        self.stopping = False
        #: SIGINTs received: the second one stops at once
        self._interrupts = 0
        #: the server, its event loop and the scope that cancels it, once it listens
        self._running: tuple[Server, trio.lowlevel.TrioToken, trio.CancelScope] | None = None
        #: set when the server's thread is done with the event loop
        self._ended = threading.Event()

    def serve(self, app: Callable[..., Iterable[bytes]], config: Config) -> None:
        """Serve in this thread (Django's) until a shutdown from the main thread is over."""
        self.graceful_timeout = config.graceful_timeout
        try:
            trio.run(self._serve, app, config)
        finally:
            self._ended.set()

    async def _serve(self, app: Callable[..., Iterable[bytes]], config: Config) -> None:
        async with trio.open_nursery() as nursery:
            server: Server = await nursery.start(serve, app, config)
            self._running = (server, trio.lowlevel.current_trio_token(), nursery.cancel_scope)

    def take_signals(self, sender: object, **kwargs: object) -> None:
        """Handle SIGINT and SIGTERM in this thread, the main one: an ``autoreload_started``
        receiver (Django's reloader sets its own SIGTERM handler before it sends that)."""
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        # A Ctrl-C reaches the reloader too, which passes it on as SIGTERM: this process gets
        # SIGINT and SIGTERM, in either order (each thread takes signals when it is scheduled).
        # So a SIGTERM during the shutdown is that copy, and only a second SIGINT stops at once.
        if signum == signal.SIGINT:
            self._interrupts += 1
        if not self.stopping:
            self.shut_down(signal.Signals(signum).name)
            raise KeyboardInterrupt  # ends Django's reloader loop; Command.run then waits
        if self._interrupts > 1 and self._running is not None:
            log.warning("SIGINT again: stopping now")
            self._call(self._running[2].cancel)

    def shut_down(self, reason: str) -> None:
        """Begin the graceful shutdown (once): WebSockets get 1001, requests in flight have
        ``graceful_timeout`` seconds, then ``serve()`` returns and the thread ends. Called in
        the main thread."""
        if self.stopping:
            return
        self.stopping = True
        if self._running is not None:
            timeout = self.graceful_timeout
            log.info("%s: shutting down, in-flight requests have %g s to finish", reason, timeout)
            self._call(self._running[0].shutdown)

    def stop(self, reason: str) -> None:
        """``shut_down(reason)``, then wait for the server's thread (``graceful_timeout``
        and ``STOP_MARGIN`` at most)."""
        self.shut_down(reason)
        if self._running is not None:
            deadline = time.monotonic() + self.graceful_timeout + STOP_MARGIN
            while not self._ended.wait(SIGNAL_CHECK_INTERVAL) and time.monotonic() < deadline:
                pass  # the handlers of the signals that came meanwhile run here
        # The reloader's copy of the first signal may come yet: ignored, not handled, as
        # Python resets its handlers while the process exits (but not SIG_IGN).
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def _call(self, fn: Callable[[], object]) -> None:
        """Have the server's event loop call ``fn`` soon (nothing if it is over)."""
        if self._running is not None:
            with contextlib.suppress(trio.RunFinishedError):
                self._running[1].run_sync_soon(fn)


def restart_on_changes() -> int:
    """The autoreloader's parent process: Django's ``restart_with_reloader`` (a new child each
    time one exits with ``RELOAD_STATUS``), but SIGINT and SIGTERM are passed on to the child as
    SIGTERM and the child is waited for, where Django's kills it (Rule 2). The child's exit
    status."""
    child: subprocess.Popen[bytes] | None = None
    stopping = False

    def pass_on(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child is not None:
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, pass_on)
    signal.signal(signal.SIGTERM, pass_on)
    environ = {**os.environ, autoreload.DJANGO_AUTORELOAD_ENV: "true"}
    while True:
        child = subprocess.Popen(autoreload.get_child_arguments(), env=environ, close_fds=False)
        status = child.wait()
        if stopping:  # a child that was reloading when the signal came is not replaced
            return 0 if status == RELOAD_STATUS else status
        if status != RELOAD_STATUS:
            return status


def _log_to_console() -> None:
    """Show the server's log from INFO up (one line per request, as Django's own server
    prints; a level the project's LOGGING gives ``trio_c10k`` stays), on the console unless
    that LOGGING already sends the ``trio_c10k`` loggers somewhere: to handlers of its own,
    or of the root logger, which would print each line a second time."""
    logger = logging.getLogger("trio_c10k")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    if logger.hasHandlers():
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", "%d/%b/%Y %H:%M:%S"))
    logger.addHandler(handler)


class Command(DjangoRunserver):  # type: ignore[misc]  # Django ships no type hints
    help = (
        "Starts trio-c10k for development: Django's views and @websocket handlers, with the "
        "autoreloader, and static files when DEBUG is on."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)
        add_config_options(parser, leave_out=LEFT_OUT, defaults={"graceful_timeout": GRACEFUL_TIMEOUT})

    def handle(self, *args: Any, **options: Any) -> None:
        try:  # checked here, before the autoreloader starts a thread
            config = config_from_args(argparse.Namespace(**options))
            # --broker, else TRIO_C10K_BROKER (the setting, else the environment variable)
            config = dataclasses.replace(config, broker=config.broker or configured_broker())
            if config.broker is not None:
                broker_class()  # the Redis client is installed
            if config.tls.enabled:
                server_context(config.tls)  # the certificate's files too
                self.protocol = "https"  # in Django's "Starting development server at" line
        except ConfigError as exc:
            raise CommandError(str(exc)) from None
        threads = config.threads if options["use_threading"] else NO_THREADING_THREADS
        #: how this process's main thread stops the server under the autoreloader
        self.control = ServerControl()
        attributes = {"threads": threads, "config": config, "control": self.control}
        self.server_cls = type("DevelopmentServer", (DevelopmentServer,), attributes)
        super().handle(*args, **options)

    def run(self, **options: Any) -> None:
        """Django's, but its autoreloader's processes stop the server gracefully (Rule 2)."""
        if not options["use_reloader"]:
            self.inner_run(None, **options)
        elif os.environ.get(autoreload.DJANGO_AUTORELOAD_ENV) == "true":
            self._run_reloaded(**options)
        else:
            raise SystemExit(restart_on_changes())

    def _run_reloaded(self, **options: Any) -> None:
        """The reloaded child: Django's file watcher in this thread, the server in another."""
        autoreload.autoreload_started.connect(self.control.take_signals)
        try:
            autoreload.run_with_reloader(self.inner_run, **options)  # a signal ends it (caught)
        except SystemExit as exc:  # a file changed (or Django's SIGTERM handler, before ours)
            self.control.stop("Reloading" if exc.code == RELOAD_STATUS else "SIGTERM")
            raise
        self.control.stop("SIGINT")  # Ctrl-C before our handlers (they began the shutdown already)

    def on_bind(self, server_port: int) -> None:
        super().on_bind(server_port)
        self.stdout.write(
            "Served by trio-c10k: views and WebSockets. In production: python -m trio_c10k "
            f"{(settings.WSGI_APPLICATION or '').rpartition('.')[0] or '<project>.wsgi'}"
        )
