"""The worker threads (``_threads``), in the test's own trio run, without a socket."""

from __future__ import annotations

import weakref

import trio

from trio_c10k._threads import open_worker_threads


class Argument:
    """Something a job gets that must not outlive it (as a request's environ)."""


async def test_a_thread_keeps_nothing_of_a_finished_job() -> None:
    gone = trio.Event()
    token = trio.lowlevel.current_trio_token()

    def make() -> Argument:
        argument = Argument()
        # Called in whichever thread lets go of the last reference.
        weakref.finalize(argument, token.run_sync_soon, gone.set)
        return argument

    async with open_worker_threads(1) as workers:
        assert await workers.run_sync(lambda argument: type(argument).__name__, make()) == "Argument"
        with trio.fail_after(5):  # before: kept by the idle thread until its next job
            await gone.wait()
