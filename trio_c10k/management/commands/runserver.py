"""``python manage.py runserver`` served by trio_c10k: HTTP views and ``@websocket`` handlers.

With ``"trio_c10k"`` in ``INSTALLED_APPS`` before ``"django.contrib.staticfiles"``, this command
replaces Django's. It *is* Django's command (the static files one when that app is installed):
the same arguments (``addrport``, ``--ipv6``, ``--noreload``, ``--nothreading``, ``--nostatic``,
``--insecure``, ``--skip-checks``), the same system checks, banner and migration warning, the
same autoreloader (a file changes, the process restarts), static files served when ``DEBUG``.
Only the server class differs: Django hands its WSGI handler to ``DevelopmentServer``, which
serves it with trio_c10k; and the options of ``python -m trio_c10k`` that set a ``Config``
field are added (generated as there), but ``--bind``, ``--threads`` and ``--graceful-timeout``.

Rule 1: the socket is bound by the constructor, as Django's ``WSGIServer`` does, so the banner
shows the real port and a port in use is reported the Django way ("That port is already in
use.").
Rule 2: under the autoreloader the server runs in Django's "main" thread, not the process's
main thread: it has no signal handlers; Ctrl-C and restarts end the process, and open
WebSockets with it (the example pages reconnect).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import socket
from collections.abc import Callable, Iterable
from typing import Any

import trio
from django.apps import apps
from django.conf import settings
from django.core.management.base import CommandError

from ..._cli import add_config_options, config_from_args
from ..._config import Bind, Config
from ..._exceptions import ConfigError
from ..._server import serve
from ..._tls_context import server_context

if apps.is_installed("django.contrib.staticfiles"):
    from django.contrib.staticfiles.management.commands.runserver import Command as DjangoRunserver
else:
    from django.core.management.commands.runserver import Command as DjangoRunserver

#: what Django's ``--nothreading`` means here: one worker thread for the views
NO_THREADING_THREADS = 1
#: the options of ``python -m trio_c10k`` this command leaves out: Django's ``addrport`` says
#: where to listen, ``--nothreading`` how many threads, and there is no graceful shutdown (Rule 2)
LEFT_OUT = ("bind", "threads", "graceful_timeout")


class DevelopmentServer:
    """The server class Django's ``runserver`` expects (``server_cls``), serving with trio_c10k.

    Django calls ``DevelopmentServer((addr, port), handler_class, ipv6=...)``, reads
    ``server_port``, then ``set_app(handler)`` and ``serve_forever()``.
    """

    #: worker threads for the views (``--nothreading``: 1)
    threads = Config().threads
    #: the settings the command's options give (``--ws-ping-interval``...)
    config = Config()

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
        """Serve until the process ends (Ctrl-C, or the autoreloader restarting it)."""
        assert self.app is not None
        _log_to_console()
        config = dataclasses.replace(
            self.config,
            binds=(Bind(fd=self.socket.fileno()),),
            threads=self.threads,
            broker=self.config.broker or getattr(settings, "TRIO_C10K_BROKER", None) or None,  # "": none
        )
        try:
            trio.run(serve, self.app, config)
        except* KeyboardInterrupt:  # Ctrl-C with --noreload: Django's command prints its goodbye
            raise KeyboardInterrupt from None


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
        add_config_options(parser, leave_out=LEFT_OUT)

    def handle(self, *args: Any, **options: Any) -> None:
        try:  # checked here, before the autoreloader starts a thread
            config = config_from_args(argparse.Namespace(**options))
            if config.tls.enabled:
                server_context(config.tls)  # the certificate's files too
                self.protocol = "https"  # in Django's "Starting development server at" line
        except ConfigError as exc:
            raise CommandError(str(exc)) from None
        threads = config.threads if options["use_threading"] else NO_THREADING_THREADS
        attributes = {"threads": threads, "config": config}
        self.server_cls = type("DevelopmentServer", (DevelopmentServer,), attributes)
        super().handle(*args, **options)

    def on_bind(self, server_port: int) -> None:
        super().on_bind(server_port)
        self.stdout.write(
            "Served by trio-c10k: views and WebSockets. In production: python -m trio_c10k "
            f"{(settings.WSGI_APPLICATION or '').rpartition('.')[0] or '<project>.wsgi'}"
        )
