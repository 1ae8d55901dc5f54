"""The worker threads that run Django (and any other blocking code) for the event loop.

Why not ``trio.to_thread.run_sync``: measured here with 50 concurrent callers, one hop through it
costs about 120 us (limiter, thread-cache hand-off, naming the OS thread through ctypes on every
call), as much as the Django hello view itself; a fixed set of threads fed by one
``queue.SimpleQueue`` costs about 20-25 us. Every request makes one hop, so this is the
server's largest single overhead.

Rule 1: ``size`` threads, started by ``open_worker_threads()`` and stopped when it exits; at most
``size`` jobs run at once, the others wait in the queue in arrival order.
Rule 2: a job whose caller was cancelled is abandoned: if it has not started it never runs; if
it runs, it finishes in its thread and its result is dropped.
Rule 3: code in a worker thread reaches the event loop with ``trio.from_thread.run(...,
trio_token=workers.token)``.
Rule 4: a thread keeps nothing of a job once it handed over the result: not its arguments,
not its result.
"""

from __future__ import annotations

import contextlib
import contextvars
import queue
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import outcome
import trio

T = TypeVar("T")

#: the worker threads of the server the current task belongs to (set by the server, inherited
#: by every task it starts); None outside a server
current_workers: contextvars.ContextVar[WorkerThreads | None] = contextvars.ContextVar(
    "trio_c10k_workers", default=None
)


class _Job:
    __slots__ = ("abandoned", "args", "fn", "task")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], task: trio.lowlevel.Task) -> None:
        self.fn = fn
        self.args = args
        self.task = task
        self.abandoned = False


class WorkerThreads:
    """A fixed set of threads that run blocking calls for trio tasks."""

    def __init__(self, size: int, token: trio.lowlevel.TrioToken) -> None:
        #: how many jobs may run at once
        self.size = size
        #: the event loop these threads report to; pass it to ``trio.from_thread.run``
        self.token = token
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._done: list[tuple[_Job, outcome.Outcome[Any]]] = []
        self._drain_scheduled = False
        # Whether each thread runs a job now (each writes only its own item: no lock).
        self._busy = [False] * size
        self._threads = [
            threading.Thread(target=self._work, args=(i,), name=f"trio_c10k worker {i}", daemon=True)
            for i in range(size)
        ]

    def busy_and_waiting(self) -> tuple[int, int]:
        """``(busy, waiting)``: the threads running a job now, and the jobs waiting for one
        (abandoned ones among them until a thread skips them). Callable from any thread."""
        return sum(self._busy), self._jobs.qsize()

    async def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in a worker thread and return (or raise) what it does.

        Cancellation abandons the call (see the module's Rule 2) and raises ``Cancelled`` at
        once.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        job = _Job(fn, args, trio.lowlevel.current_task())
        self._jobs.put(job)

        def abort(_: Any) -> trio.lowlevel.Abort:
            job.abandoned = True
            return trio.lowlevel.Abort.SUCCEEDED

        return await trio.lowlevel.wait_task_rescheduled(abort)  # type: ignore[no-any-return]  # the job's result

    def _work(self, index: int) -> None:
        get = self._jobs.get
        while (job := get()) is not None:
            if not job.abandoned and not self._run(job, index):
                return
            # Not kept while the thread waits for the next one: its arguments (a request's
            # environ and body, its connection) would live on until then.
            del job

    def _run(self, job: _Job, index: int) -> bool:
        """Run ``job`` and hand its result to the loop; False once the loop is over."""
        busy = self._busy
        busy[index] = True
        result = outcome.capture(job.fn, *job.args)
        busy[index] = False
        with self._lock:
            self._done.append((job, result))
            if self._drain_scheduled:
                return True
            self._drain_scheduled = True
        try:
            self.token.run_sync_soon(self._drain)
        except trio.RunFinishedError:
            return False
        return True

    def _drain(self) -> None:
        # Runs in the event loop. Results that arrive while a drain is pending join it, so a
        # busy server wakes its loop once per batch of results, not once per result.
        with self._lock:
            self._drain_scheduled = False
            done, self._done = self._done, []
        for job, result in done:
            if not job.abandoned:
                trio.lowlevel.reschedule(job.task, result)


@contextlib.asynccontextmanager
async def open_worker_threads(size: int) -> AsyncIterator[WorkerThreads]:
    """Start ``size`` worker threads for the current event loop; stop them on exit.

    On exit, idle threads end at once; a thread still running a job ends after it (the
    threads are daemons, so a job that never returns does not keep the process alive).
    """
    workers = WorkerThreads(size, trio.lowlevel.current_trio_token())
    for thread in workers._threads:
        thread.start()
    try:
        yield workers
    finally:
        for _ in workers._threads:
            workers._jobs.put(None)


def call_in_loop(token: trio.lowlevel.TrioToken, fn: Callable[..., T], *args: Any) -> T:
    """Call ``fn(*args)`` in ``token``'s event loop from another thread, and return (or raise)
    what it does; the calling thread waits meanwhile.

    Raises:
        trio.RunFinishedError: that loop is over.
    """
    if not trio.lowlevel.in_trio_run():  # a worker thread (a Django view), any plain thread
        return trio.from_thread.run_sync(fn, *args, trio_token=token)
    # A thread running a trio loop of its own: ``trio.from_thread`` refuses it (it cannot tell
    # it from the loop's own thread, where waiting would never end); it waits the same way.
    done: queue.SimpleQueue[outcome.Outcome[T]] = queue.SimpleQueue()
    token.run_sync_soon(lambda: done.put(outcome.capture(fn, *args)))
    return done.get().unwrap()
