"""The example site's ``DEBUG``: on under ``manage.py runserver`` unless ``DJANGO_DEBUG`` says
otherwise, off for everything else (``python -m trio_c10k``, the tests, the benchmarks)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

SETTINGS = Path(__file__).parents[2] / "example_site" / "settings.py"


@pytest.mark.parametrize(
    ("argv", "variable", "debug"),
    [
        (["manage.py", "runserver"], None, True),
        (["manage.py", "runserver", "0.0.0.0:8000"], None, True),
        (["manage.py", "runserver"], "0", False),
        (["manage.py", "migrate"], None, False),
        (["manage.py", "gameoflife"], None, False),
        (["/venv/lib/python3.11/site-packages/trio_c10k/__main__.py", "example_site.wsgi"], None, False),
        (["/venv/lib/python3.11/site-packages/trio_c10k/__main__.py", "example_site.wsgi"], "1", True),
        (["pytest"], None, False),
    ],
)
def test_debug_is_on_under_runserver_only_unless_the_environment_says(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], variable: str | None, debug: bool
) -> None:
    monkeypatch.setattr(sys, "argv", argv)
    if variable is None:
        monkeypatch.delenv("DJANGO_DEBUG", raising=False)
    else:
        monkeypatch.setenv("DJANGO_DEBUG", variable)
    assert runpy.run_path(str(SETTINGS))["DEBUG"] is debug
