"""The distributed Game of Life: ``manage.py gameoflife`` against a real server, checked cell by cell.

The server runs in the test's event loop (``start_server``); the command runs as a subprocess,
one WebSocket client per cell. A watcher connected to ``/watcher/`` receives every relayed
state, and every cell at every step is compared with a reference Life computed here.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import trio

from tests.helpers import (
    GAMEOFLIFE_ENV,
    GLIDER,
    ROOT,
    Cells,
    Client,
    StartServer,
    cells,
    gameoflife_command,
    life,
    port_of,
    run_gameoflife,
    states_by_step,
)
from trio_c10k import Server
from trio_c10k.client import open_websocket

#: seconds one run of the command may take, the reading of its last states included
RUN_TIMEOUT = 20

# -- running the command ----------------------------------------------------------------------


def run_gameoflife_offline(*args: str) -> subprocess.CompletedProcess[str]:
    """The command where it fails before it reaches the server (nothing listens on port 1)."""
    return subprocess.run(
        gameoflife_command(1, *args), cwd=ROOT, env=GAMEOFLIFE_ENV, capture_output=True, text=True, timeout=60
    )


async def watched_run(server: Server, size: int, steps: int, *args: str) -> tuple[str, list[str]]:
    """Run the command with a watcher attached; its output, and what the watcher received after
    the size it had on connecting: the new size, then one state per cell per step, and no more."""
    port = port_of(server)
    received: list[str] = []
    async with open_websocket(f"ws://127.0.0.1:{port}/watcher/") as ws:
        first = await ws.read_message()
        assert isinstance(first, str)
        assert re.fullmatch(r"size [0-9]+", first)

        async def watch() -> None:
            for _ in range(1 + size * size * (steps + 1)):
                message = await ws.read_message()
                assert isinstance(message, str), message
                received.append(message)

        with trio.fail_after(RUN_TIMEOUT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                result = await run_gameoflife(port, "-s", str(size), "-n", str(steps), "-l", "0", *args)
                if result.returncode != 0:
                    nursery.cancel_scope.cancel()
        assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
        # Nothing more than one state per cell per step: the next message is a new reset's.
        assert await reset(server, f"size={size}".encode()) == (200, str(size).encode())
        assert await ws.read_message() == f"size {size}"
    return result.stdout.decode(), received


CASES = [
    # name, size, steps, options, live cells at step 0, wrap
    pytest.param(5, 4, ["-p", "blinker"], cells("OOO", 2, 1), True, id="blinker-5x5"),
    # A glider moves one cell diagonally every 4 steps: on a 6 x 6 torus it is back after 24.
    pytest.param(6, 24, [], cells(GLIDER, 1, 1), True, id="glider-6x6-torus"),
    # Without wrap the glider runs into the corner and turns into a block.
    pytest.param(8, 16, ["-W"], cells(GLIDER, 2, 2), False, id="glider-8x8-no-wrap"),
    pytest.param(6, 6, ["-C", "-p", "toad"], cells(".OOO OOO.", 0, 0), True, id="toad-corner-torus"),
]


@pytest.mark.parametrize(("size", "steps", "options", "initial", "wrap"), CASES)
async def test_every_relayed_state_matches_the_reference(
    server: Server, size: int, steps: int, options: list[str], initial: Cells, wrap: bool
) -> None:
    stdout, received = await watched_run(server, size, steps, *options)
    assert received[0] == f"size {size}"  # the command's reset, told to the watchers
    expected = life(initial, size, steps, wrap)
    assert states_by_step(received[1:], size, steps) == expected
    assert f"steps: {steps}\n" in stdout
    assert f"live cells at step {steps}: {len(expected[-1])}\n" in stdout


def test_the_cases_tell_wrap_from_no_wrap() -> None:
    """Each case would fail if the command wrapped when it should not, or the other way round."""
    assert life(cells(GLIDER, 1, 1), 6, 24, True)[24] == cells(GLIDER, 1, 1)
    for size, steps, _, initial, wrap in (
        case.values for case in CASES[1:]
    ):  # the blinker keeps off the edges
        assert life(initial, size, steps, wrap) != life(initial, size, steps, not wrap)


@pytest.mark.parametrize(
    ("size", "pattern", "steps"),
    [
        # On a 2 x 2 torus each neighbour sits at two or four of the eight positions: counted
        # once per cell, (0, 0) would have 2 live neighbours and live; counted per position, 4.
        pytest.param(2, "OO\nO.\n", 2, id="2x2"),
        # On a 1 x 1 torus the cell is its own neighbour, eight times over.
        pytest.param(1, "O\n", 2, id="1x1"),
    ],
)
async def test_tiny_torus_counts_a_neighbour_once_per_position(
    server: Server, tmp_path: Path, size: int, pattern: str, steps: int
) -> None:
    path = tmp_path / "pattern"
    path.write_text(pattern)
    _, received = await watched_run(server, size, steps, "-p", str(path))
    expected = life(cells(pattern), size, steps, True)
    assert states_by_step(received[1:], size, steps) == expected
    assert expected[1] != cells(pattern)  # the step the counting decides is in the check


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(b"OO.\nO X\n", "line 2, column 2: ' ' is not a cell", id="space"),
        pytest.param(b"OO\n*\n", "line 2, column 1: '*' is not a cell", id="star"),
        pytest.param(b"", "empty", id="empty"),
        pytest.param(b"\n\n", "empty", id="blank-lines"),
        pytest.param(b"O\xff\n", "cannot read it", id="not-utf8"),
    ],
)
def test_bad_pattern_file_exits_2(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad"
    path.write_bytes(content)
    result = run_gameoflife_offline("-p", str(path))
    assert result.returncode == 2, result.stderr
    assert f"pattern {path}: " in result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1  # one line, no traceback


def test_missing_pattern_exits_2(tmp_path: Path) -> None:
    result = run_gameoflife_offline("-p", str(tmp_path / "nothing-here"))
    assert result.returncode == 2
    assert "no such file, nor a bundled pattern" in result.stderr


def test_pattern_larger_than_the_grid_exits_2() -> None:
    result = run_gameoflife_offline("-s", "20", "-p", "gosper")
    assert result.returncode == 2
    assert "pattern gosper is 9 x 36 cells: larger than the 20 x 20 grid" in result.stderr


@pytest.mark.parametrize(
    "args",
    [["-s", "0"], ["-s", "201"], ["-n", "-1"], ["-l", "-1"], ["--stall-timeout", "0"]],
    ids=["size-0", "size-201", "negative-steps", "negative-speed", "no-stall-timeout"],
)
def test_bad_options_exit_2(args: list[str]) -> None:
    result = run_gameoflife_offline(*args)
    assert result.returncode == 2, result.stderr
    assert "--size must be from 1 to 200" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


async def test_a_stalled_run_names_a_waiting_cell(server: Server) -> None:
    # A relay that answers ready and drops every state: each cell waits for its neighbours.
    port = port_of(server)
    silent = f"http://127.0.0.1:{port}/t/silent"  # the last --url given is the one used
    with trio.fail_after(RUN_TIMEOUT):
        result = await run_gameoflife(
            port, "-s", "3", "-n", "2", "-l", "0", "--stall-timeout", "0.5", "--url", silent
        )
    assert result.returncode == 1
    stderr = result.stderr.decode()
    assert re.search(
        r"cell [0-2],[0-2]: no states from all its neighbours for step 0 within 0.5 s", stderr
    ), stderr


def test_unreachable_server_exits_1() -> None:
    result = run_gameoflife_offline("-s", "4")
    assert result.returncode == 1
    assert "cannot reach http://127.0.0.1:1" in result.stderr


async def test_a_cell_turned_away_fails_the_run(start_server: StartServer) -> None:
    # 36 cells, room for 10 connections: the server answers the others 503.
    server = await start_server(max_connections=10)
    assert await reset(server, b"size=6") == (200, b"6")  # see reset()
    result = await run_gameoflife(port_of(server), "-s", "6", "-n", "2", "-l", "0")
    assert result.returncode == 1
    assert re.search(rb"cell [0-9]+,[0-9]+: handshake rejected: HTTP 503", result.stderr), result.stderr


# -- the server side alone --------------------------------------------------------------------


async def reset(server: Server, body: bytes, method: str = "POST") -> tuple[int, bytes]:
    """``/reset/`` with a form body; once it answers 200, a watcher must have been told."""
    # A watcher joins first: from a worker thread, Group.broadcast reaches the event loop of the
    # first socket that ever joined a group in the process, and each test runs a loop of its own.
    async with open_websocket(f"ws://127.0.0.1:{port_of(server)}/watcher/") as watcher:
        await watcher.read_message()  # the size it had
        client = await Client.open(server)
        headers = [("Content-Type", "application/x-www-form-urlencoded")]
        await client.request(method, "/reset/", headers, body)
        response, content = await client.response()
        if response.status_code == 200:
            assert await watcher.read_message() == f"size {content.decode()}"
    return response.status_code, content


async def test_reset_sets_the_size_for_new_watchers(server: Server) -> None:
    assert await reset(server, b"size=7") == (200, b"7")
    async with open_websocket(f"ws://127.0.0.1:{port_of(server)}/watcher/") as ws:
        assert await ws.read_message() == "size 7"


@pytest.mark.parametrize("body", [b"size=0", b"size=201", b"size=abc", b"size=", b"other=5", b"size=%C2%B2"])
async def test_reset_with_a_bad_size_is_400(server: Server, body: bytes) -> None:
    status, content = await reset(server, body)
    assert status == 400
    assert content == b"size must be an integer from 1 to 200\n"


async def test_reset_answers_other_methods_with_405(server: Server) -> None:
    status, _ = await reset(server, b"", method="GET")
    assert status == 405


@pytest.mark.parametrize("query", ["row=5&col=0", "row=0&col=5", "row=-1&col=0", "row=a&col=0", "row=0", ""])
async def test_worker_outside_the_grid_is_closed_1008(server: Server, query: str) -> None:
    assert await reset(server, b"size=5") == (200, b"5")
    async with open_websocket(f"ws://127.0.0.1:{port_of(server)}/worker/?{query}") as ws:
        assert await ws.read_message() is None
    assert ws.close_code == 1008
    assert ws.close_reason == "row and col must be integers from 0 to 4"


@pytest.mark.parametrize(
    ("message", "code", "reason"),
    [
        ("hello", 1008, "unknown message"),
        ("state 1 2", 1008, "unknown message"),
        ("state -1 1", 1008, "unknown message"),
        ("subscribe 1", 1008, "unknown message"),
        ("subscribe 5 0", 1008, "no cell 5,0 in a grid of 5"),
        (b"state 0 1", 1003, "binary messages"),
    ],
)
async def test_worker_closes_on_a_message_outside_the_protocol(
    server: Server, message: str | bytes, code: int, reason: str
) -> None:
    assert await reset(server, b"size=5") == (200, b"5")
    async with open_websocket(f"ws://127.0.0.1:{port_of(server)}/worker/?row=1&col=1") as ws:
        ws.write_message(message)
        assert await ws.read_message() is None
    assert ws.close_code == code
    assert ws.close_reason is not None
    assert ws.close_reason.startswith(reason)


async def test_worker_relays_states_to_subscribers_and_watchers(server: Server) -> None:
    assert await reset(server, b"size=3") == (200, b"3")
    base = f"ws://127.0.0.1:{port_of(server)}"
    async with (
        open_websocket(f"{base}/watcher/") as watcher,
        open_websocket(f"{base}/worker/?row=0&col=0") as a,
        open_websocket(f"{base}/worker/?row=2&col=1") as b,
    ):
        assert await watcher.read_message() == "size 3"
        a.write_message("subscribe 2 1")
        a.write_message("ready")
        assert await a.read_message() == "ready"
        b.write_message("state 7 1")
        assert await a.read_message() == "2 1 7 1"
        assert await watcher.read_message() == "2 1 7 1"
        a.write_message("state 8 0")  # nobody subscribed to 0,0: only the watcher hears it
        assert await watcher.read_message() == "0 0 8 0"
        b.write_message("ready")
        assert await b.read_message() == "ready"
