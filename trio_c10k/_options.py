"""``option()``: how a config field declares the command-line option that sets it.

Rule 1: nothing here imports trio, Django or another module of the package: ``_config`` and
the nested configs it holds (``_tls_config``) declare their fields with it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Option:
    """How ``python -m trio_c10k`` sets one field (``field.metadata["option"]``)."""

    #: the option strings, as ``("-b", "--bind")``; the last one names the parsed value
    flags: tuple[str, ...]
    #: the ``--help`` text; ``(default: ...)`` is added after it, unless the field's default
    #: is None: then the text says in words what None means
    help: str
    #: the value's placeholder in ``--help`` (None: the option's name in capitals)
    metavar: str | None = None
    #: the ``--help`` section (None: the main one)
    group: str | None = None
    #: text -> value, where the field's type (int, float, str, bool) does not say it; a
    #: ``ConfigError`` it raises is reported as a bad value of this option
    parse: Callable[[str], Any] | None = None
    #: the option may be given several times, each adding one item to the field's tuple
    #: (replacing the default)
    repeat: bool = False

    @property
    def dest(self) -> str:
        """The attribute of the parsed arguments holding the value (``--ws-ping-interval``:
        ``ws_ping_interval``)."""
        return self.flags[-1].lstrip("-").replace("-", "_")


def option(
    default: _T,
    *flags: str,
    help: str,
    metavar: str | None = None,
    group: str | None = None,
    parse: Callable[[str], Any] | None = None,
    repeat: bool = False,
) -> _T:
    """A dataclass field with this ``default``, set on the command line by ``flags``."""
    return field(default=default, metadata={"option": Option(flags, help, metavar, group, parse, repeat)})
