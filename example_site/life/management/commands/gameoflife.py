"""``python manage.py gameoflife``: the distributed Game of Life, one WebSocket client per cell.

Every cell of the grid is a trio task of this process with its own connection to
``/worker/?row=R&col=C``; the server only relays states (example_site/life/views.py). The command
sets the size with ``POST /reset/``, opens every connection, waits until all are open, has
every cell subscribe to its neighbours and confirm with ``ready``, waits until all have, then
lets the cells play: at each step a cell sends its state, collects its neighbours' states of
that step and applies Conway's rules. The waits are here, not in the server, because this
process is the one that knows every cell (docs/gameoflife.md).

Exit status: 0 after the last step, 1 if a cell failed (connection refused, handshake
rejected, closed early, stalled), 2 for a bad option or pattern.
"""

from __future__ import annotations

import gc
import re
import resource
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import trio
from django.core.management.base import BaseCommand, CommandError, CommandParser

from example_site.life.grid import (
    PatternError,
    bundled_patterns,
    neighbours,
    next_state,
    pattern_path,
    place,
    read_pattern,
)
from trio_c10k import ConnectionClosed, HandshakeRejected, WebSocket, WebSocketConfig
from trio_c10k.client import open_websocket

#: the largest side the server accepts (example_site.life.views.MAX_SIZE)
MAX_SIZE = 200
#: handshakes in flight at once: enough to keep the server's worker threads busy, few enough
#: that no handshake queues long behind the others
HANDSHAKES_IN_FLIGHT = 200
#: seconds for one TCP connection and its handshake
CONNECT_TIMEOUT = 30.0
#: seconds a cell waits for its neighbours' states of one step (or for ``ready``) before the
#: run fails (``--stall-timeout``): far more than a step takes, so only a lost message or a
#: stuck peer reaches it
STALL_TIMEOUT = 60.0
#: descriptors kept for everything but the cells' sockets
SPARE_FILES = 50
#: 10,000 client connections each running a keep-alive ping would be 10,000 timers for nothing:
#: every cell talks at each step
CLIENT_CONFIG = WebSocketConfig(ping_interval=None)
#: allocations between two young garbage collections while the cells play (CPython's default,
#: 700, has the collector walk the 10,000 connections' objects over and over: at 2,500 cells,
#: 1.6 steps/s with it, 2.4 with this)
GC_GEN0_THRESHOLD = 50_000
#: a cell as the server names it in a state: row and column
_CELL = re.compile("[0-9]+ [0-9]+")


class CellFailed(Exception):
    """A cell could not play its part; the message says why, for the user."""


# -- the cells --------------------------------------------------------------------------------


class Barrier:
    """Lets tasks through once ``total`` of them have arrived; counts them for progress lines."""

    def __init__(self, total: int) -> None:
        #: the tasks to wait for
        self.total = total
        #: the tasks arrived so far
        self.count = 0
        #: ``trio.current_time()`` when the last one arrived
        self.released_at: float | None = None
        self._event = trio.Event()

    async def wait(self) -> None:
        """Arrive, then wait for the others. Cancellation leaves this task counted."""
        self.count += 1
        if self.count == self.total:
            self.released_at = trio.current_time()
            self._event.set()
        await self._event.wait()

    async def passed(self) -> None:
        """Wait until every task has arrived, without arriving."""
        await self._event.wait()


@dataclass
class Run:
    """What every cell task shares: the options, the barriers, the tallies and the outcome."""

    url: str
    size: int
    wrap: bool
    steps: int
    speed: float
    stall_timeout: float
    connected: Barrier
    subscribed: Barrier
    cancel_scope: trio.CancelScope
    #: the handshakes in flight
    handshakes: trio.CapacityLimiter = field(
        default_factory=lambda: trio.CapacityLimiter(HANDSHAKES_IN_FLIGHT)
    )
    #: ``trio.current_time()`` when the cells were started
    started: float = field(default_factory=trio.current_time)
    #: states sent by all the cells
    sent: int = 0
    #: cells that sent their last state, and how many of them were alive
    finished: int = 0
    live: int = 0
    finished_at: float | None = None
    #: what the first failure was, and how many cells failed
    failure: str | None = None
    failures: int = 0
    #: every cell of the run
    cells: list[Cell] = field(default_factory=list)

    def seconds(self) -> tuple[float, float, float]:
        """How long connecting, subscribing and playing the steps took (0 for a phase not done)."""
        connected = self.connected.released_at or self.started
        subscribed = self.subscribed.released_at or connected
        return connected - self.started, subscribed - connected, (self.finished_at or subscribed) - subscribed

    def fail(self, row: int, col: int, reason: str) -> None:
        """Record a cell's failure and stop the run: without it, its neighbours cannot go on."""
        self.failures += 1
        if self.failure is None:
            self.failure = f"cell {row},{col}: {reason}"
        self.cancel_scope.cancel()

    def check_stalls(self) -> None:
        """Fail the cell that has waited longest for its neighbours' states, if that is over
        ``stall_timeout``: only a lost message or a stuck peer takes that long."""
        waiting = [cell for cell in self.cells if cell.waiting_since is not None]
        if not waiting:
            return
        cell = min(waiting, key=lambda cell: cell.waiting_since or 0.0)
        if trio.current_time() - (cell.waiting_since or 0.0) > self.stall_timeout:
            reason = f"no states from all its neighbours for step {cell.step} within {self.stall_timeout:g} s"
            self.fail(cell.row, cell.col, reason)


class Cell:
    """One cell: its place, its neighbours and the states it heard of, for this step and the next."""

    def __init__(self, row: int, col: int, alive: bool, run: Run) -> None:
        self.row, self.col, self.alive, self.run = row, col, alive, run
        #: neighbour -> the number of neighbour positions it occupies
        self.neighbours = neighbours(row, col, run.size, run.wrap)
        #: the step whose neighbours' states the cell waits for, and since when (None while
        #: it is not waiting for states); the run's reporter looks at both for stalls
        self.step = 0
        self.waiting_since: float | None = None
        # The neighbours as the server names them in a state (``"R C"``), with their weight.
        self._weights = {f"{r} {c}": count for (r, c), count in self.neighbours.items()}
        # [neighbours heard from, live neighbour positions] at ``step``, and at ``step + 1``: a
        # neighbour may already be one step ahead.
        self._now = [0, 0]
        self._next = [0, 0]

    async def play(self) -> None:
        """Connect, subscribe, play every step; a failure is reported to the run."""
        run = self.run
        try:
            await self._play()
        except CellFailed as exc:
            run.fail(self.row, self.col, str(exc))
        except HandshakeRejected as exc:
            body = exc.body.decode("utf-8", "replace").strip()[:100]
            run.fail(self.row, self.col, f"handshake rejected: HTTP {exc.status} {body}".rstrip())
        except ConnectionClosed as exc:
            run.fail(self.row, self.col, f"closed early: {exc}")
        except trio.TooSlowError:
            run.fail(self.row, self.col, f"no handshake within {CONNECT_TIMEOUT:g} s")
        except OSError as exc:
            run.fail(self.row, self.col, f"connection failed: {exc.strerror or exc}")

    async def _play(self) -> None:
        run = self.run
        async with AsyncExitStack() as stack:
            async with run.handshakes:
                url = f"{run.url}/worker/?row={self.row}&col={self.col}"
                ws = await stack.enter_async_context(
                    open_websocket(url, config=CLIENT_CONFIG, connect_timeout=CONNECT_TIMEOUT)
                )
            await run.connected.wait()
            await self._subscribe(ws)
            await run.subscribed.wait()
            await self._steps(ws)
            self._finish()

    async def _subscribe(self, ws: WebSocket) -> None:
        """Subscribe to each neighbour once, then wait for ``ready``: all are in place."""
        for row, col in self.neighbours:
            ws.write_message(f"subscribe {row} {col}")
        ws.write_message("ready")
        with trio.move_on_after(self.run.stall_timeout) as scope:
            message = await ws.read_message()
        if scope.cancelled_caught:
            raise CellFailed(f"no answer to ready within {self.run.stall_timeout:g} s")
        if message != "ready":
            raise CellFailed(f"expected ready, got {self._describe(ws, message)}")

    async def _steps(self, ws: WebSocket) -> None:
        """Send the state of each step; between two, compute the next from the neighbours'.

        No cancel scope per step (with 10,000 cells, moving a deadline at each step costs more
        than the rules do): the run's reporter fails a cell that has waited too long.
        """
        run = self.run
        start = trio.current_time()
        expected = len(self._weights)
        for step in range(run.steps + 1):
            if run.speed > 0:
                await trio.sleep_until(start + step / run.speed)
            ws.write_message(f"state {step} {int(self.alive)}")
            run.sent += 1
            if step == run.steps:
                return
            self.step, self.waiting_since = step, trio.current_time()
            now, this, following = self._now, str(step), str(step + 1)
            while now[0] < expected:
                message = await ws.read_message()
                if not isinstance(message, str):
                    raise CellFailed(f"expected a state, got {self._describe(ws, message)}")
                self._record(message, this, following)
            self.waiting_since = None
            self.alive = next_state(self.alive, now[1])
            self._now, self._next = self._next, [0, 0]

    def _record(self, message: str, this: str, following: str) -> None:
        """Note a relayed ``R C STEP ALIVE`` of step ``this`` or ``following`` (as text)."""
        try:
            cell, step, alive = message.rsplit(" ", 2)
        except ValueError:
            raise CellFailed(f"expected a state, got {message[:80]!r}") from None
        weight = self._weights.get(cell)
        if weight is None and _CELL.fullmatch(cell):
            raise CellFailed(f"got the state of {cell.replace(' ', ',')}, which is not a neighbour")
        if weight is None or alive not in ("0", "1"):
            raise CellFailed(f"expected a state, got {message[:80]!r}")
        if step == this:
            heard = self._now
        elif step == following:
            heard = self._next
        else:
            where = cell.replace(" ", ",")
            raise CellFailed(f"got the state of {where} at step {step[:20]} while at step {this}")
        heard[0] += 1
        if alive == "1":
            heard[1] += weight

    def _finish(self) -> None:
        run = self.run
        run.finished += 1
        run.live += self.alive
        if run.finished == run.size * run.size:
            run.finished_at = trio.current_time()

    @staticmethod
    def _describe(ws: WebSocket, message: str | bytes | None) -> str:
        """An unexpected message, or the close that came instead, for an error message."""
        if message is None:
            return f"the close of the connection (code {ws.close_code}: {ws.close_reason or 'no reason'})"
        return repr(message[:80])


# -- the command ------------------------------------------------------------------------------


class Command(BaseCommand):
    help = "Run the distributed Game of Life: one WebSocket client per cell; the server relays."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("-s", "--size", type=int, default=32, help="cells on a side (32)")
        parser.add_argument(
            "-p",
            "--pattern",
            default="glider",
            help=f"pattern file (O alive, . dead), or a bundled pattern: {bundled_patterns()} (glider)",
        )
        parser.add_argument(
            "-C", "--no-center", action="store_true", help="put the pattern at the top-left corner"
        )
        parser.add_argument(
            "-W", "--no-wrap", action="store_true", help="cells past the edge are dead (default: a torus)"
        )
        parser.add_argument(
            "-n", "--steps", type=int, default=100, help="steps computed after the initial state (100)"
        )
        parser.add_argument(
            "-l", "--speed", type=float, default=1.0, help="most steps per second; 0 for no limit (1.0)"
        )
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="the site (http://127.0.0.1:8000)")
        parser.add_argument(
            "--stall-timeout",
            type=float,
            default=STALL_TIMEOUT,
            help=f"seconds a cell may wait for its neighbours' states ({STALL_TIMEOUT:g})",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        size, steps, speed = options["size"], options["steps"], options["speed"]
        if not 1 <= size <= MAX_SIZE or steps < 0 or not speed >= 0 or not options["stall_timeout"] > 0:
            raise CommandError(
                f"--size must be from 1 to {MAX_SIZE}, --steps and --speed at least 0, "
                "--stall-timeout over 0",
                returncode=2,
            )
        site = options["url"].rstrip("/")
        if urllib.parse.urlsplit(site).scheme != "http":
            raise CommandError(f"--url must be an http:// URL, not {site!r}", returncode=2)
        path = pattern_path(options["pattern"])
        try:
            alive = place(read_pattern(path), size, not options["no_center"], path.name)
        except PatternError as exc:
            raise CommandError(str(exc), returncode=2) from exc
        _raise_file_limit(size * size)
        _reset(site, size)
        gc.freeze()  # Django and the settings: no collection needs to walk them again
        gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
        started = time.monotonic()
        url = "ws" + site.removeprefix("http")
        run = trio.run(
            self._play, url, alive, size, not options["no_wrap"], steps, speed, options["stall_timeout"]
        )
        if run.failure is not None:
            others = f" ({run.failures - 1} more cells failed)" if run.failures > 1 else ""
            raise CommandError(run.failure + others)
        self._summary(run, path.name, len(alive))
        self.stdout.write(f"elapsed: {time.monotonic() - started:.1f} s")

    async def _play(
        self,
        url: str,
        alive: set[tuple[int, int]],
        size: int,
        wrap: bool,
        steps: int,
        speed: float,
        stall_timeout: float,
    ) -> Run:
        """Run every cell to the end (or the first failure); report progress meanwhile."""
        total = size * size
        async with trio.open_nursery() as outer:
            run = Run(
                url,
                size,
                wrap,
                steps,
                speed,
                stall_timeout,
                Barrier(total),
                Barrier(total),
                outer.cancel_scope,
            )
            outer.start_soon(self._report, run)
            outer.start_soon(self._freeze_connections, run)
            async with trio.open_nursery() as cells:
                for row in range(size):
                    for col in range(size):
                        run.cells.append(Cell(row, col, (row, col) in alive, run))
                        cells.start_soon(run.cells[-1].play)
            outer.cancel_scope.cancel()  # the reporter
        self.stderr.write(self._progress(run))
        return run

    @staticmethod
    async def _freeze_connections(run: Run) -> None:
        """Once every cell is connected and subscribed, keep the garbage collector off their
        objects (connections, tasks): collections that walked them all cost a sixth of the
        steps per second with 10,000 cells. What the steps allocate is still collected."""
        await run.subscribed.passed()
        gc.freeze()

    async def _report(self, run: Run) -> None:
        """Once a second: the progress on stderr, and a look for stalled cells."""
        while True:
            await trio.sleep(1)
            self.stderr.write(self._progress(run))
            run.check_stalls()

    @staticmethod
    def _progress(run: Run) -> str:
        total = run.size * run.size
        if run.connected.released_at is None:
            where = f"connected {run.connected.count}/{total}"
        elif run.subscribed.released_at is None:
            where = f"subscribed {run.subscribed.count}/{total}"
        else:
            where = f"step {max(0, run.sent // total - 1)}/{run.steps}"
        return f"{trio.current_time() - run.started:6.1f} s  {where}"

    def _summary(self, run: Run, pattern: str, initial: int) -> None:
        connecting, subscribing, playing = run.seconds()
        wrap = "wrapped" if run.wrap else "not wrapped"
        self.stdout.write(f"grid: {run.size} x {run.size} = {run.size * run.size} cells ({wrap})")
        self.stdout.write(f"pattern: {pattern}, {initial} live cells")
        self.stdout.write(f"time to connect all: {connecting:.2f} s")
        self.stdout.write(f"time to subscribe all: {subscribing:.2f} s")
        self.stdout.write(f"steps: {run.steps}")
        self.stdout.write(f"seconds: {playing:.2f}")
        self.stdout.write(f"steps/s: {run.steps / playing if playing > 0 else 0:.2f}")
        self.stdout.write(f"live cells at step {run.steps}: {run.live}")


def _reset(site: str, size: int) -> None:
    """``POST /reset/``: the server and the watch pages learn the size of this run.

    Raises:
        CommandError: (status 1) the site cannot be reached or refuses.
    """
    data = urllib.parse.urlencode({"size": size}).encode()
    try:
        with urllib.request.urlopen(f"{site}/reset/", data=data, timeout=CONNECT_TIMEOUT):
            pass
    except urllib.error.HTTPError as exc:
        reason = exc.read().decode("utf-8", "replace").strip()[:200]
        raise CommandError(f"POST {site}/reset/ answered {exc.code}: {reason}") from exc
    except urllib.error.URLError as exc:
        raise CommandError(f"cannot reach {site}: {exc.reason}") from exc
    except OSError as exc:  # a timeout or a reset after the connection was made
        raise CommandError(f"POST {site}/reset/ failed: {exc}") from exc


def _raise_file_limit(sockets: int) -> None:
    """Raise the open-file limit to its ceiling; refuse a grid that would still not fit.

    Raises:
        CommandError: (status 1) one socket per cell is more than the limit allows.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if sockets + SPARE_FILES > hard:
        raise CommandError(
            f"{sockets} cells need {sockets + SPARE_FILES} open files, over this process's limit "
            f"of {hard}: raise it (ulimit -n) or choose a smaller --size"
        )
