"""The longest steps of a server's event loop, for the benchmarks (not part of trio-c10k).

A process started with this directory on ``PYTHONPATH`` and ``LOOP_STEPS_DIR`` set in its
environment (a ``python -m trio_c10k`` server and, with ``--workers``, every worker process,
which inherits both) runs ``trio.run`` with one more instrument: it times each step of trio's
run loop, from the end of one wait for I/O to the start of the next (every task that was ready
ran once in between), in wall time and in the loop thread's CPU time. A step whose wall time
is much longer than its CPU time waited for a CPU (the machine was busy), not on the loop.

Signals (to each process): ``SIGUSR1`` starts a window (forgets the steps so far), ``SIGUSR2``
writes the window's figures to ``LOOP_STEPS_DIR/<pid>.json``: the steps counted, the longest
in wall and in CPU time (seconds), and the steps over 10 ms of each. ``read_steps()`` in
``benchmarks/lib/loop_steps/__init__.py`` sends them and reads the files.
"""

from __future__ import annotations

import json
import os
import signal
import time

_DIR = os.environ.get("LOOP_STEPS_DIR")
#: seconds: a step longer than this is counted
LONG = 0.010

if _DIR:
    import trio

    class _LoopSteps(trio.abc.Instrument):
        def __init__(self) -> None:
            self.reset()
            self._wall = self._cpu = 0.0

        def reset(self) -> None:
            self.steps = 0
            self.longest_wall = self.longest_cpu = 0.0
            self.long_wall = self.long_cpu = 0

        def after_io_wait(self, timeout: float) -> None:
            self._wall, self._cpu = time.perf_counter(), time.thread_time()

        def before_io_wait(self, timeout: float) -> None:
            if not self._wall:
                return
            wall, cpu = time.perf_counter() - self._wall, time.thread_time() - self._cpu
            self.steps += 1
            if wall > self.longest_wall:
                self.longest_wall = wall
            if cpu > self.longest_cpu:
                self.longest_cpu = cpu
            self.long_wall += wall > LONG
            self.long_cpu += cpu > LONG

        def write(self) -> None:
            figures = {
                "steps": self.steps,
                "longest_wall": self.longest_wall,
                "longest_cpu": self.longest_cpu,
                "over_10ms_wall": self.long_wall,
                "over_10ms_cpu": self.long_cpu,
            }
            path = os.path.join(_DIR, f"{os.getpid()}.json")
            with open(path + ".tmp", "w") as out:
                json.dump(figures, out)
            os.replace(path + ".tmp", path)

    _steps = _LoopSteps()
    signal.signal(signal.SIGUSR1, lambda *_: _steps.reset())
    signal.signal(signal.SIGUSR2, lambda *_: _steps.write())
    _run = trio.run

    def _run_with_steps(*args, instruments=(), **kwargs):  # type: ignore[no-untyped-def]
        return _run(*args, instruments=(*instruments, _steps), **kwargs)

    trio.run = _run_with_steps
