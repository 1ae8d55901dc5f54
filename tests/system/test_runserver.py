"""``manage.py runserver`` with ``"trio_c10k"`` installed: Django's command, served by trio_c10k.

Each test writes a small project to a temporary directory (a view, a ``@websocket`` echo, a
static file), starts ``manage.py runserver`` in a subprocess of its own session, and talks to
it over real sockets. The subprocess (the autoreloader and its child) is stopped by signalling
its process group, as Ctrl-C in a terminal signals the foreground process group.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import trio

from tests import helpers
from trio_c10k.client import open_websocket

ROOT = Path(__file__).resolve().parents[2]
#: seconds a runserver process gets to start (twice: the reloader, then its child) on a busy
#: machine, and to stop
START_TIMEOUT = 30

SETTINGS = """
    SECRET_KEY = "runserver-test"
    DEBUG = True
    ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
    INSTALLED_APPS = [
        "django.contrib.contenttypes",
        "django.contrib.auth",
        "trio_c10k",
        "django.contrib.staticfiles",
        "app",
    ]
    MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
    ROOT_URLCONF = "urls"
    STATIC_URL = "static/"
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
    USE_TZ = True
"""
URLS = """
    from django.urls import path

    from app import views

    urlpatterns = [path("", views.page), path("echo/", views.echo), path("slow/", views.slow)]
"""
VIEWS = """
    import time

    from django.http import HttpResponse

    from trio_c10k import websocket


    def page(request):
        return HttpResponse("{answer}")


    def slow(request):
        print("slow view started", flush=True)
        time.sleep(60)
        return HttpResponse("slow")


    @websocket
    async def echo(ws):
        async for message in ws:
            ws.write_message(message)
"""
MANAGE = """
    import os
    import sys

    from django.core.management import execute_from_command_line

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
    execute_from_command_line(sys.argv)
"""


def write_project(root: Path, answer: str) -> None:
    files = {
        "manage.py": MANAGE,
        "settings.py": SETTINGS,
        "urls.py": URLS,
        "app/__init__.py": "",
        "app/views.py": VIEWS.format(answer=answer),
        "app/static/app/hello.txt": "static hello\n",
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_project(tmp_path, "version 1")
    return tmp_path


def start(project: Path, *args: str) -> tuple[subprocess.Popen[str], int]:
    port = helpers.service_port()  # the reloader's child binds it again after each change
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(project), str(ROOT)]), "PYTHONUNBUFFERED": "1"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", *args],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the reloader and its child stop together
    )
    return proc, port


@pytest.fixture
def runserver(project: Path) -> Iterator[list[tuple[subprocess.Popen[str], int]]]:
    """Started servers; each is stopped, and its output shown if the test failed."""
    started: list[tuple[subprocess.Popen[str], int]] = []
    yield started
    for proc, _port in started:
        if proc.returncode is not None:  # the test stopped it and read its output itself
            continue
        os.killpg(proc.pid, signal.SIGINT)
        try:
            output, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
        print(output)  # shown by pytest when the test failed


class Output(helpers.Output):
    """What a runserver process printed so far, read as it comes (its stdout and stderr)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        super().__init__(proc.stdout, START_TIMEOUT)
        self.proc = proc

    def until_exit(self) -> int:
        """Read the rest of the output until the process (the reloader too) exits; its status."""
        rest, _ = self.proc.communicate(timeout=START_TIMEOUT)
        self.text += rest
        return self.proc.returncode


async def get(port: int, path: str) -> httpx.Response:
    """GET, retrying while the server is not listening yet (it starts, or restarts).

    A poll: the server is another process, whose output is read only once it has stopped.
    """
    with trio.fail_after(20):
        while True:
            try:
                async with httpx.AsyncClient() as client:
                    return await client.get(f"http://127.0.0.1:{port}{path}")
            except httpx.TransportError:
                await trio.sleep(0.1)


async def test_runserver_serves_views_websockets_and_static_files(
    project: Path, runserver: list[tuple[subprocess.Popen[str], int]]
) -> None:
    proc, port = start(project)
    runserver.append((proc, port))
    response = await get(port, "/")
    assert (response.status_code, response.text) == (200, "version 1")
    static = await get(port, "/static/app/hello.txt")
    assert (static.status_code, static.text) == (200, "static hello\n")
    async with open_websocket(f"ws://127.0.0.1:{port}/echo/") as ws:
        ws.write_message("through runserver")
        assert await ws.read_message() == "through runserver"


async def test_editing_a_view_restarts_the_server_with_the_new_code(
    project: Path, runserver: list[tuple[subprocess.Popen[str], int]]
) -> None:
    proc, port = start(project)
    runserver.append((proc, port))
    assert (await get(port, "/")).text == "version 1"
    views = project / "app" / "views.py"
    views.write_text(textwrap.dedent(VIEWS.format(answer="version 2")).lstrip())
    # Django's reloader notes each file's modification time at its first look, then polls once
    # a second; that first look logs nothing at the default level, so there is no event to
    # wait for. An edit made before it would be taken as the starting point, so each round
    # moves the modification time on again: whichever round comes after the first look is
    # seen. Polled until the new code answers (the old process answers until it is replaced).
    with trio.fail_after(20):
        for round_ in itertools.count(1):
            later = time.time() + 2 + round_  # always newer than the last one the reloader saw
            os.utime(views, (later, later))
            if (await get(port, "/")).text == "version 2":
                break
            await trio.sleep(0.2)


async def test_nostatic_and_noreload_are_honoured(
    project: Path, runserver: list[tuple[subprocess.Popen[str], int]]
) -> None:
    proc, port = start(project, "--nostatic", "--noreload")
    runserver.append((proc, port))
    assert (await get(port, "/")).text == "version 1"
    assert (await get(port, "/static/app/hello.txt")).status_code == 404


def test_a_port_in_use_is_reported_the_django_way(project: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(project), str(ROOT)])}
        env.pop("DJANGO_SETTINGS_MODULE", None)
        result = subprocess.run(
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert "Error: That port is already in use." in result.stderr


async def test_the_config_options_of_python_m_trio_c10k_are_honoured(
    project: Path, runserver: list[tuple[subprocess.Popen[str], int]]
) -> None:
    proc, port = start(project, "--noreload", "--max-body-size", "10", "--ws-ping-interval", "0")
    runserver.append((proc, port))
    assert (await get(port, "/")).text == "version 1"
    async with httpx.AsyncClient() as client:
        small = await client.post(f"http://127.0.0.1:{port}/", content=b"x" * 10)
        large = await client.post(f"http://127.0.0.1:{port}/", content=b"x" * 11)
    assert (small.status_code, large.status_code) == (200, 413)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--max-header-size", "10"], "CommandError: max_header_size must be at least 1024 bytes"),
        (["--bind", "127.0.0.1:0"], "unrecognized arguments: --bind"),
        (["--threads", "3"], "unrecognized arguments: --threads"),
        (["--graceful-timeout", "0"], "CommandError: graceful_timeout must be a positive number of seconds"),
        (
            ["--ssl-certfile", "/nonexistent/cert.pem"],
            "CommandError: --ssl-certfile /nonexistent/cert.pem: No such file or directory",
        ),
    ],
)
def test_a_bad_or_left_out_config_option_stops_runserver(project: Path, args: list[str], error: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(project), str(ROOT)])}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "runserver", "127.0.0.1:0", "--noreload", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert error in result.stderr
    assert "Traceback" not in result.stderr


async def echo_then_closed(port: int, stop: Callable[[], object]) -> int | None:
    """Open a WebSocket to the echo handler, check it echoes, call ``stop()``; the close code
    the server closed it with."""
    with trio.fail_after(START_TIMEOUT):
        async with open_websocket(f"ws://127.0.0.1:{port}/echo/") as ws:
            ws.write_message("before")
            assert await ws.read_message() == "before"
            stop()
            assert await ws.read_message() is None  # until the server closes
            return ws.close_code


@pytest.mark.parametrize(
    ("args", "signum", "target"),
    [
        pytest.param(["--noreload"], signal.SIGINT, "group", id="noreload-SIGINT"),
        pytest.param(["--noreload"], signal.SIGTERM, "group", id="noreload-SIGTERM"),
        # Ctrl-C in a terminal: the reloader and its child both get SIGINT.
        pytest.param([], signal.SIGINT, "group", id="reloader-SIGINT-group"),
        # kill PID (a container's stop, a script): only the reloader gets it.
        pytest.param([], signal.SIGTERM, "parent", id="reloader-SIGTERM-parent"),
        pytest.param([], signal.SIGINT, "parent", id="reloader-SIGINT-parent"),
        # A process manager that signals the whole group.
        pytest.param([], signal.SIGTERM, "group", id="reloader-SIGTERM-group"),
    ],
)
async def test_a_signal_closes_websockets_with_1001_and_exits_cleanly(
    project: Path,
    runserver: list[tuple[subprocess.Popen[str], int]],
    args: list[str],
    signum: signal.Signals,
    target: str,
) -> None:
    proc, port = start(project, *args)
    runserver.append((proc, port))  # stopped by the fixture if this test fails
    output = Output(proc)
    output.wait_for("Listening on")

    def stop() -> None:
        if target == "group":
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)

    code = await echo_then_closed(port, stop)
    assert code == 1001, output.text
    assert output.until_exit() == 0, output.text
    # Under the reloader, the child gets the reloader's copy (SIGTERM), and the signal itself
    # if it went to the group, in either order: the first one is named.
    shown = signum.name if args else "(SIGINT|SIGTERM)"
    assert re.search(f"{shown}: shutting down, in-flight requests have 3 s to finish", output.text)
    assert "Traceback" not in output.text


async def test_a_second_ctrl_c_stops_at_once_under_the_reloader(
    project: Path, runserver: list[tuple[subprocess.Popen[str], int]]
) -> None:
    proc, port = start(project, "--graceful-timeout", "60")  # longer than the test waits
    runserver.append((proc, port))
    output = Output(proc)
    output.wait_for("Listening on")

    async def slow_request() -> None:  # in flight until the second Ctrl-C cancels it
        with pytest.raises(httpx.TransportError):
            async with httpx.AsyncClient(timeout=None) as client:
                await client.get(f"http://127.0.0.1:{port}/slow/")

    with trio.fail_after(START_TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_request)
            await trio.to_thread.run_sync(output.wait_for, "slow view started")
            os.killpg(proc.pid, signal.SIGINT)
            await trio.to_thread.run_sync(output.wait_for, "shutting down")
            os.killpg(proc.pid, signal.SIGINT)
            assert await trio.to_thread.run_sync(output.until_exit) == 0, output.text
    assert "SIGINT again: stopping now" in output.text
    assert "Traceback" not in output.text


async def test_a_reload_closes_websockets_with_1001_before_the_restart(
    project: Path, runserver: list[tuple[subprocess.Popen[str], int]]
) -> None:
    proc, port = start(project)
    runserver.append((proc, port))
    output = Output(proc)
    output.wait_for("Listening on")
    views = project / "app" / "views.py"
    views.write_text(textwrap.dedent(VIEWS.format(answer="version 2")).lstrip())
    with trio.fail_after(START_TIMEOUT):
        async with open_websocket(f"ws://127.0.0.1:{port}/echo/") as ws:
            # As in test_editing_a_view_restarts_the_server_with_the_new_code: the reloader's
            # first look at the file logs nothing, so each round moves the modification time
            # on again, and waits a poll interval and more for the close.
            for round_ in itertools.count(1):
                later = time.time() + 2 + round_
                os.utime(views, (later, later))
                with trio.move_on_after(2):
                    assert await ws.read_message() is None
                    break
            assert ws.close_code == 1001, output.text
    assert (await get(port, "/")).text == "version 2"
    output.wait_for("Reloading: shutting down")
    assert "Traceback" not in output.text
