"""Reading the longest steps of servers' event loops (see ``sitecustomize.py`` here).

env = loop_steps_env(directory)          # the server's environment, started with it
start_window(pids)                       # at the start of the measured window
figures = read_steps(pids, directory)    # at its end: {pid: {"steps": ..., ...}}
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def loop_steps_env(directory: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) for a server whose loop steps are timed into ``directory``."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH", "")]))
    env["LOOP_STEPS_DIR"] = str(directory)
    return env


def start_window(pids: list[int]) -> None:
    """Forget the steps so far in each process."""
    for pid in pids:
        os.kill(pid, signal.SIGUSR1)


def read_steps(pids: list[int], directory: Path, timeout: float = 10) -> dict[int, dict[str, Any]]:
    """Each process's figures since ``start_window``; raises TimeoutError if one does not answer."""
    for pid in pids:
        (directory / f"{pid}.json").unlink(missing_ok=True)
        os.kill(pid, signal.SIGUSR2)
    deadline = time.monotonic() + timeout
    figures: dict[int, dict[str, Any]] = {}
    while len(figures) < len(pids):
        for pid in pids:
            path = directory / f"{pid}.json"
            if pid not in figures and path.exists():
                figures[pid] = json.loads(path.read_text())
        if time.monotonic() > deadline:
            raise TimeoutError(f"no loop-step figures from {sorted(set(pids) - set(figures))}")
        time.sleep(0.05)  # a file another process writes: nothing to wait on but its appearance
    return figures
