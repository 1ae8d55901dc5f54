"""prometheus_client's multiprocess directory, as ``--workers`` sets it up (``_metrics`` Rule 3).

Rule 1: the supervisor of ``--workers`` makes the directory its children write their numbers
into (``metrics_directory``) and clears a dead child's gauges (``process_gone``); it imports
prometheus_client only for the latter, and nothing of the server.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator

#: the environment variable prometheus_client reads for its multiprocess mode
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@contextlib.contextmanager
def metrics_directory() -> Iterator[dict[str, str]]:
    """For the supervisor of ``--workers``: the environment its children need so that a
    scrape counts them all, or nothing without prometheus_client.

    ``PROMETHEUS_MULTIPROC_DIR`` if set (its ``*.db`` files, a previous run's, are removed
    first), else a temporary directory, removed on exit.
    """
    if importlib.util.find_spec("prometheus_client") is None:
        yield {}
        return
    given = os.environ.get(MULTIPROC_ENV)
    path = given or tempfile.mkdtemp(prefix="trio_c10k-metrics-")
    try:
        if given:
            for name in os.listdir(path):
                if name.endswith(".db"):
                    os.unlink(os.path.join(path, name))
        yield {MULTIPROC_ENV: path}
    finally:
        if not given:
            shutil.rmtree(path, ignore_errors=True)


def process_gone(environment: dict[str, str], pid: int) -> None:
    """For the supervisor: a child ``pid`` exited, so its gauges no longer count (its
    counters still do)."""
    if MULTIPROC_ENV in environment:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, environment[MULTIPROC_ENV])  # type: ignore[no-untyped-call]  # untyped there
