"""The Game of Life's grid, for ``manage.py gameoflife``: pattern files, neighbours, the rules.

Pure: no I/O but reading a pattern file. The server (example_site/life/views.py) knows none of it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

#: the bundled patterns (``-p NAME``): ``O`` alive, ``.`` dead, one line per row
PATTERNS = Path(__file__).resolve().parent / "patterns"
#: the eight neighbours of a cell, as offsets
OFFSETS = tuple((dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0))


class PatternError(ValueError):
    """A pattern that cannot be played; the message says why, for the user."""


def pattern_path(spec: str) -> Path:
    """The file ``spec`` names: a path, or else the name of a bundled pattern."""
    path = Path(spec)
    if not path.exists() and "/" not in spec and (PATTERNS / spec).is_file():
        return PATTERNS / spec
    return path


def bundled_patterns() -> str:
    """The names of the bundled patterns, for help and error messages."""
    return ", ".join(sorted(path.name for path in PATTERNS.iterdir()))


def read_pattern(path: Path) -> list[str]:
    """The rows of a pattern file, trailing empty lines dropped.

    Raises:
        PatternError: the file is missing, unreadable, empty, or holds a character other than
            ``O``, ``.`` and line ends.
    """
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise PatternError(
            f"pattern {path}: no such file, nor a bundled pattern ({bundled_patterns()})"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PatternError(f"pattern {path}: cannot read it: {exc}") from exc
    rows = text.splitlines()
    while rows and not rows[-1]:
        rows.pop()
    if not rows:
        raise PatternError(f"pattern {path}: empty (expected rows of O for alive, . for dead)")
    for number, row in enumerate(rows, start=1):
        for column, char in enumerate(row, start=1):
            if char not in "O.":
                raise PatternError(
                    f"pattern {path}: line {number}, column {column}: {char!r} is not a cell "
                    "(O for alive, . for dead)"
                )
    return rows


def place(rows: list[str], size: int, center: bool, name: str) -> set[tuple[int, int]]:
    """The live cells of ``rows`` on the grid: centred, or from the top-left corner.

    Raises:
        PatternError: the pattern does not fit.
    """
    height, width = len(rows), max(len(row) for row in rows)
    if height > size or width > size:
        raise PatternError(
            f"pattern {name} is {height} x {width} cells: larger than the {size} x {size} grid"
        )
    top, left = ((size - height) // 2, (size - width) // 2) if center else (0, 0)
    return {(top + r, left + c) for r, row in enumerate(rows) for c, char in enumerate(row) if char == "O"}


def neighbours(row: int, col: int, size: int, wrap: bool) -> Counter[tuple[int, int]]:
    """How many times each cell is a neighbour of ``(row, col)``.

    On a torus smaller than 3 x 3 a cell sits at several of the eight neighbour positions (on
    a 1 x 1 torus it is its own neighbour eight times): its state counts once per position.
    Without wrap, positions past the edge are dead and absent.
    """
    found: Counter[tuple[int, int]] = Counter()
    for dr, dc in OFFSETS:
        r, c = row + dr, col + dc
        if wrap:
            found[r % size, c % size] += 1
        elif 0 <= r < size and 0 <= c < size:
            found[r, c] += 1
    return found


def next_state(alive: bool, live_neighbours: int) -> bool:
    """Conway's rules: a live cell with 2 or 3 live neighbours lives, a dead one with 3 is born."""
    return live_neighbours == 3 or (alive and live_neighbours == 2)
