"""``manage.py runserver`` with ``"trio_c10k"`` installed: Django's command, served by trio_c10k.

Each test writes a small project to a temporary directory (a view, a ``@websocket`` echo, a
static file), starts ``manage.py runserver`` in a subprocess of its own session, and talks to
it over real sockets. The subprocess (the autoreloader and its child) is stopped by signalling
its process group.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio

from trio_c10k.client import open_websocket

ROOT = Path(__file__).resolve().parents[2]

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

    urlpatterns = [path("", views.page), path("echo/", views.echo)]
"""
VIEWS = """
    from django.http import HttpResponse

    from trio_c10k import websocket


    def page(request):
        return HttpResponse("{answer}")


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_project(tmp_path, "version 1")
    return tmp_path


def start(project: Path, *args: str) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(project), str(ROOT)])}
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
        os.killpg(proc.pid, signal.SIGINT)
        try:
            output, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
        print(output)  # shown by pytest when the test failed


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


async def test_ctrl_c_without_the_reloader_exits_cleanly(
    project: Path, runserver: list[tuple[subprocess.Popen[str], int]]
) -> None:
    proc, port = start(project, "--noreload")
    assert (await get(port, "/")).text == "version 1"
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, output
    assert "Traceback" not in output


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
        (["--graceful-timeout", "3"], "unrecognized arguments: --graceful-timeout"),
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
