"""``--workers N``: N server processes on the same listening sockets, and their supervisor.

Rule 1: the parent opens every ``--bind`` address (``open_shared_sockets``) and starts N
children, each ``python -m trio_c10k`` with the same options but ``--bind fd://N`` for the
sockets it inherits. A TCP address is bound by the parent without listening, and each child
listens beside it with ``SO_REUSEPORT``: the kernel spreads new connections evenly over the
children (``_listeners`` Rule 2). A Unix socket or an inherited ``fd://`` listening socket is
opened by the parent and the children accept on it, the first to wake taking each connection
(``_listeners`` Rule 3). The parent serves nothing itself.
Rule 2: a child that exits while the parent is not stopping is logged (its exit status or
signal) and started again, after ``RESTART_DELAY`` if it lived less than that. A child that
exits with status 2 (bad options or APP) stops everything: starting it again would not help.
Rule 3: SIGINT or SIGTERM to the parent sends SIGTERM to every child, which shuts down
gracefully (WebSockets get 1001, requests in flight finish within ``--graceful-timeout``);
the parent exits 0 once they are gone. A second signal kills the children. Children run in a
session of their own, so a terminal's Ctrl-C reaches only the parent, which forwards it once.
Rule 4: with TLS, SIGHUP to the parent is passed on to every child, which reloads its
certificate and key; a child being restarted reads the files as it starts.
Rule 5: the parent imports what it needs to bind, start, watch and signal (trio, the config,
``_listeners``, ``_multiprocess``), not the server, wsproto or Django: it holds no connection,
so it stays near the interpreter's and trio's own memory.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence

import trio

from ._config import Config
from ._listeners import is_shared, open_shared_sockets, remove_unix_sockets
from ._multiprocess import metrics_directory, process_gone

log = logging.getLogger("trio_c10k.workers")

#: seconds a child must live to be restarted at once; one that dies sooner waits this long
#: first, so that a child failing at startup does not spin
RESTART_DELAY = 1.0
#: the exit status of a child whose options or APP are bad (as for the command line)
USAGE_ERROR = 2


def child_arguments(argv: Sequence[str], fds: Sequence[int]) -> list[str]:
    """The command line of a child: ``argv`` without ``--bind`` and ``--workers``, plus one
    ``--bind fd://N`` per inherited socket."""
    args: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--bind", "-b", "--workers"):
            skip = True  # its value follows
        elif not arg.startswith(("--bind=", "--workers=", "-b")):
            args.append(arg)
    for fd in fds:
        args += ["--bind", f"fd://{fd}"]
    return [sys.executable, "-m", "trio_c10k", *args]


class Supervisor:
    """Starts the children, starts them again when they die, stops them on a signal."""

    def __init__(self, command: list[str], fds: list[int], count: int, *, forward_sighup: bool) -> None:
        self.command = command
        self.fds = fds
        self.count = count
        #: pass SIGHUP on to the children (with TLS: they reload the certificate)
        self.forward_sighup = forward_sighup
        #: True once a signal (or a child's usage error) began the shutdown
        self.stopping = False
        #: exit status for the parent
        self.status = 0
        self._running: dict[int, trio.Process] = {}
        #: what the children's environment gets beside ours (``_multiprocess.metrics_directory``)
        self.environment: dict[str, str] = {}

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._forward_signals)
            async with trio.open_nursery() as children:
                for index in range(self.count):
                    children.start_soon(self._keep_running, index)
            nursery.cancel_scope.cancel()  # every child is gone: nothing left to signal

    async def _keep_running(self, index: int) -> None:
        while not self.stopping:
            started = trio.current_time()
            process = await trio.lowlevel.open_process(
                self.command,
                pass_fds=self.fds,
                start_new_session=True,
                env={**os.environ, **self.environment, "TRIO_C10K_WORKER": str(index)},
            )
            self._running[index] = process
            log.info("Worker %d started (pid %d)", index, process.pid)
            status = await process.wait()
            del self._running[index]
            process_gone(self.environment, process.pid)
            if self.stopping:
                log.info("Worker %d (pid %d) %s", index, process.pid, _describe(status))
                return
            if status == USAGE_ERROR:
                log.error("Worker %d (pid %d) exited with status 2 (bad options or APP)", index, process.pid)
                self.status = USAGE_ERROR
                self._stop(signal.SIGTERM)
                return
            log.warning("Worker %d (pid %d) %s; starting it again", index, process.pid, _describe(status))
            if trio.current_time() - started < RESTART_DELAY:
                await trio.sleep(RESTART_DELAY)

    async def _forward_signals(self) -> None:
        reload = (signal.SIGHUP,) if self.forward_sighup else ()
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, *reload) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if signum == signal.SIGHUP:
                    log.info("SIGHUP: passing it on to the %d workers", len(self._running))
                    for process in self._running.values():
                        process.send_signal(signal.SIGHUP)
                elif not self.stopping:
                    log.info("%s: stopping the %d workers gracefully", name, len(self._running))
                    self._stop(signal.SIGTERM)
                else:
                    log.warning("%s again: killing the workers", name)
                    self._stop(signal.SIGKILL)

    def _stop(self, signum: signal.Signals) -> None:
        self.stopping = True
        for process in self._running.values():
            process.send_signal(signum)


def _describe(status: int) -> str:
    if status < 0:
        return f"was killed by {signal.Signals(-status).name}"
    return f"exited with status {status}"


async def supervise(config: Config, argv: Sequence[str], count: int) -> int:
    """Serve with ``count`` child processes until a signal stops them; the exit status.

    Raises:
        OSError: an address cannot be bound.
        ConfigError: an ``fd://`` descriptor is not a listening socket.
    """
    sockets = await open_shared_sockets(config)
    try:
        for sock in sockets:
            if is_shared(sock):
                how = "each listens with SO_REUSEPORT: the kernel spreads connections evenly"
            else:
                how = "one listening socket: the first worker to accept takes each connection"
            log.info("%d workers share %s (%s)", count, _shown(sock), how)
        fds = [sock.fileno() for sock in sockets]
        supervisor = Supervisor(child_arguments(argv, fds), fds, count, forward_sighup=config.tls.enabled)
        with metrics_directory() as supervisor.environment:
            await supervisor.run()
        return supervisor.status
    finally:
        for sock in sockets:
            sock.close()
        remove_unix_sockets(config)


def _shown(sock: socket.socket) -> str:
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"unix:{name}"
    return f"[{name[0]}]:{name[1]}" if sock.family == socket.AF_INET6 else f"{name[0]}:{name[1]}"
