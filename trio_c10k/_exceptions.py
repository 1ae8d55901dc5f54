"""The exception tree of trio_c10k.

::

    TrioC10kError
    └── ConfigError (also a ValueError): a bad option or setting

Errors of the peer (malformed HTTP, oversized requests) are not raised to users: the
server answers them with an HTTP error status and logs the reason.
"""

from __future__ import annotations


class TrioC10kError(Exception):
    """Base class of every exception trio_c10k raises."""


class ConfigError(TrioC10kError, ValueError):
    """A configuration value is invalid; the message names the option and the problem."""
