"""Each log line printed once: the server's lines beside Django's and a project's ``LOGGING``.

Synchronous: log records are counted as handlers receive them (``caplog``, or handlers the
test attaches); ``tests/system/test_logging.py`` counts the lines of a real process.
"""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator

import pytest
from django.test import Client

from trio_c10k._cli import _not_printed_yet
from trio_c10k.management.commands.runserver import _log_to_console


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_refused_upgrade_is_logged_once_with_its_reason(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    response = Client().get("/t/ws/echo/")  # a plain GET to a WebSocket URL
    assert response.status_code == 426
    lines = [(r.name, r.levelname, r.getMessage()) for r in caplog.records if "/t/ws/echo/" in r.getMessage()]
    # not also django.request's "Upgrade Required: /t/ws/echo/"
    assert lines == [
        (
            "trio_c10k.websocket",
            "INFO",
            "GET /t/ws/echo/: 426 This URL only speaks WebSocket; send an Upgrade: websocket request",
        )
    ]


def test_a_record_a_console_handler_printed_on_its_way_is_not_printed_again() -> None:
    debug = [True]
    logger = logging.getLogger("tests.unit.test_logging.django")
    console = logging.StreamHandler(sys.stderr)  # as Django's "console" handler
    console.addFilter(lambda record: debug[0])  # its require_debug_true
    logger.addHandler(console)
    try:
        record = logger.makeRecord(logger.name, logging.WARNING, __file__, 1, "Not Found: /x", (), None)
        assert _not_printed_yet(record) is False
        child = logger.getChild("request")
        assert (
            _not_printed_yet(child.makeRecord(child.name, logging.WARNING, __file__, 1, "x", (), None))
            is False
        )
        debug[0] = False  # DEBUG off: Django's handler prints nothing, the server's handler does
        assert _not_printed_yet(record) is True
        debug[0] = True
        console.setLevel(logging.ERROR)
        assert _not_printed_yet(record) is True
        console.setLevel(logging.NOTSET)
        console.setStream(io.StringIO())  # a file, not the console
        assert _not_printed_yet(record) is True
    finally:
        logger.removeHandler(console)


@pytest.fixture
def bare_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[logging.Logger]:
    """The ``trio_c10k`` logger as Django's default logging leaves it: no handler, no level;
    the root logger's handlers are a list of the test's own (pytest adds its capture handlers
    to it for the test's call: ``bare_root()`` removes them)."""
    logger = logging.getLogger("trio_c10k")
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "level", logging.NOTSET)
    monkeypatch.setattr(logging.root, "handlers", [])
    logging.Logger.manager._clear_cache()
    yield logger
    logging.Logger.manager._clear_cache()


def bare_root() -> None:
    logging.root.handlers.clear()


def test_runserver_prints_the_server_log_when_nothing_else_does(bare_logging: logging.Logger) -> None:
    bare_root()
    _log_to_console()
    assert [type(handler) for handler in bare_logging.handlers] == [logging.StreamHandler]
    assert bare_logging.level == logging.INFO
    _log_to_console()  # at each start: still one handler
    assert len(bare_logging.handlers) == 1


def test_runserver_leaves_the_server_log_to_a_root_handler_of_the_project(
    bare_logging: logging.Logger,
) -> None:
    bare_root()
    root = Records()  # LOGGING = {..., "root": {"handlers": ["console"], "level": "WARNING"}}
    logging.root.addHandler(root)
    _log_to_console()
    assert bare_logging.handlers == []
    logging.getLogger("trio_c10k.access").info("one line per request")
    assert [record.getMessage() for record in root.records] == ["one line per request"]


def test_runserver_keeps_the_level_the_project_gives(bare_logging: logging.Logger) -> None:
    bare_root()
    bare_logging.setLevel(logging.WARNING)
    _log_to_console()
    assert bare_logging.level == logging.WARNING
