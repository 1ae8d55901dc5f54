"""A real browser on the Game of Life watch page while ``manage.py gameoflife`` runs.

As in test_browser.py, Playwright drives headless Chromium from a worker thread while the
server runs on trio. The page is opened first; once it says "connected", the thread tells the
event loop to start the command (a pulsar on a 16 x 16 grid, 4 steps per second), then reads
the grid at three moments: every cell's colour, class and step, checked against the reference
Life once back on the event loop.

``SAVE_SCREENSHOTS=1 python3 -m pytest tests/system/test_browser_life.py`` also saves the page at the
last step as ``docs/gameoflife.png``; otherwise the test writes no file in the repository.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from tests.helpers import (
    BROWSER_TEST_TIMEOUT,
    GAMEOFLIFE_ENV,
    ROOT,
    cells,
    gameoflife_command,
    life,
    open_page,
    port_of,
    require_browser,
)
from trio_c10k import Server

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "gameoflife.png"
SIZE, STEPS, SPEED = 16, 16, 4
PULSAR = (ROOT / "example_site" / "life" / "patterns" / "pulsar").read_text()
#: the pulsar (13 x 13) centred on the grid
INITIAL = cells(PULSAR, (SIZE - 13) // 2, (SIZE - 13) // 2)
#: the step counter and every cell of the grid, read in one go (one script runs between two
#: messages, so the page cannot move on between the counter and the cells):
#: {step, grid: [[row, col, step, class, background colour], ...]}
READ_MOMENT = """() => ({
    step: Number(document.getElementById("step").textContent),
    grid: [...document.querySelectorAll("#grid tr")].flatMap((tr, row) =>
        [...tr.cells].map((td, col) =>
            [row, col, Number(td.dataset.step), td.className, getComputedStyle(td).backgroundColor])),
})"""
#: true once the step counter is at ``step`` or beyond and every cell has shown a state (with
#: ``every``: every cell has shown its state at ``step``)
STEP_REACHED = """([step, every]) => Number(document.getElementById("step").textContent) >= step
    && [...document.querySelectorAll("#grid td")].every(
        (td) => td.dataset.step !== undefined && (!every || Number(td.dataset.step) === step))"""


@dataclass
class Moment:
    """The grid as the page showed it at one moment."""

    #: the step counter
    step: int
    #: (row, col, step, class, background colour) of every cell
    grid: list[tuple[int, int, int, str, str]]

    def dark(self) -> set[tuple[int, int]]:
        return {(row, col) for row, col, _, name, _ in self.grid if name == "alive"}


@dataclass
class Visit:
    """What the browser saw while the run went on."""

    #: the page's connection state before the run
    connection: str
    #: the grid at three moments: early, a few steps later, at the last step
    moments: list[Moment]
    #: uncaught page errors, and console messages of type "error" with their source URL
    errors: list[str]


def watch_the_run(url: str, start_run: Callable[[], None], screenshot: Path | None) -> Visit:
    """Open the watch page, start the run once it is connected, read the grid at three moments."""
    from playwright.sync_api import Page, expect

    def moment(page: Page, step: int, every: bool = False) -> Moment:
        page.wait_for_function(STEP_REACHED, arg=[step, every])
        read = page.evaluate(READ_MOMENT)
        return Moment(read["step"], [tuple(cell) for cell in read["grid"]])

    with open_page() as (page, errors):
        page.goto(url)
        expect(page.locator("#connection")).to_have_text("connected")
        connection = page.locator("#connection").inner_text()
        start_run()
        expect(page.locator("#grid td")).to_have_count(SIZE * SIZE)
        early = moment(page, 1)
        later = moment(page, early.step + 2)
        last = moment(page, STEPS, every=True)
        if screenshot is not None:
            page.screenshot(path=screenshot)
        return Visit(connection, [early, later, last], errors)


def rgb(colour: str) -> tuple[int, ...]:
    match = re.fullmatch(r"rgb\((\d+), (\d+), (\d+)\)", colour)
    assert match, colour
    return tuple(map(int, match.groups()))


async def test_watch_page_shows_the_run_in_chromium(server: Server) -> None:
    require_browser()
    port = port_of(server)
    screenshot = SCREENSHOT if os.environ.get("SAVE_SCREENSHOTS") == "1" else None
    command = gameoflife_command(port, "-s", str(SIZE), "-n", str(STEPS), "-l", str(SPEED), "-p", "pulsar")
    page_connected = trio.Event()
    result: dict[str, Any] = {}

    async def run_when_the_page_is_connected() -> None:
        await page_connected.wait()
        result["run"] = await trio.run_process(
            command, cwd=ROOT, env=GAMEOFLIFE_ENV, capture_stdout=True, capture_stderr=True, check=False
        )

    def start_run() -> None:  # called from the browser's thread
        trio.from_thread.run_sync(page_connected.set)

    with trio.fail_after(BROWSER_TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_when_the_page_is_connected)
            try:
                visit = await trio.to_thread.run_sync(
                    watch_the_run, f"http://127.0.0.1:{port}/", start_run, screenshot
                )
            except BaseException:
                nursery.cancel_scope.cancel()  # a run that never started, or no longer watched
                raise
    run = result["run"]
    assert run.returncode == 0, run.stdout + run.stderr

    assert visit.connection == "connected"
    early, later, last = visit.moments
    assert later.step > early.step
    assert later.dark() != early.dark()  # cells changed colour
    assert last.step == STEPS
    expected = life(INITIAL, SIZE, STEPS, wrap=True)
    for moment in visit.moments:
        assert len(moment.grid) == SIZE * SIZE
        for row, col, step, name, colour in moment.grid:
            assert step <= moment.step  # a cell may lag behind the counter, never run ahead
            assert name == ("alive" if (row, col) in expected[step] else "dead")
            if name == "alive":
                assert max(rgb(colour)) < 128, colour  # dark
            else:
                assert min(rgb(colour)) > 200, colour  # light
    assert {step for _, _, step, _, _ in last.grid} == {STEPS}
    assert last.dark() == expected[STEPS]
    # The example site has no favicon: Django's 404 for it is the only error the page may log.
    assert [error for error in visit.errors if not error.endswith("/favicon.ico)")] == []
