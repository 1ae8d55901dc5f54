"""Fixtures: a trio_c10k server on 127.0.0.1 port 0, and raw-socket helpers."""

from __future__ import annotations

import os
import signal
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trio

# A background job of a non-interactive shell (``cmd &`` in a script, as a CI runner may start
# the suite) has SIGINT ignored, and the processes the tests start would inherit that: a
# ``manage.py runserver`` would then never see the Ctrl-C the tests send it. Python's own
# handler here is reset to the default action in every child, as under a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
os.environ["TRIO_C10K_TEST_DB"] = os.path.join(tempfile.mkdtemp(prefix="trio_c10k_tests_"), "db.sqlite3")

from django.core.management import call_command
from django.core.wsgi import get_wsgi_application

from tests.helpers import Redis, StartServer, _opened
from trio_c10k import Bind, Config, Server, serve

if TYPE_CHECKING:
    from tests.helpers import Supervised

DJANGO_APP = get_wsgi_application()
call_command("migrate", verbosity=0)
pytest_plugins = ["trio_c10k.testing"]  # the c10k_live_server fixture


@pytest.fixture
async def start_server(nursery: trio.Nursery) -> AsyncIterator[StartServer]:
    """``await start_server(app=None, **config)``: a server on 127.0.0.1 port 0 (unless
    ``binds`` says otherwise).

    ``app`` defaults to the Django test site; keyword arguments override ``Config`` fields.
    Client sockets the test opened with ``connect()`` are closed afterwards.
    """

    async def start(app: Any = None, **overrides: Any) -> Server:
        config = Config(**{"binds": (Bind(host="127.0.0.1", port=0),), **overrides})
        return await nursery.start(serve, app or DJANGO_APP, config)

    yield start
    while _opened:
        await trio.aclose_forcefully(_opened.pop())


@pytest.fixture
async def server(start_server: StartServer) -> Server:
    """A server for the Django test site, with default settings."""
    return await start_server()


@pytest.fixture
def supervised() -> Iterator[list[Supervised]]:
    """``python -m trio_c10k`` commands a test started (tests/system/test_workers.py's ``Supervised``);
    those still running afterwards are killed, workers included, and their log is printed."""
    started: list[Supervised] = []
    yield started
    for command in started:
        if command.proc.returncode is None:
            command.kill()
            command.proc.communicate(timeout=30)
        print(command.log)  # shown by pytest when the test failed


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[Redis]:
    """A redis-server of the test's own (``helpers.Redis``), stopped afterwards."""
    server = Redis(tmp_path)
    server.start()
    yield server
    server.stop()
