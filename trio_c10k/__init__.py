"""trio_c10k: tens of thousands of live connections to a Django site, from one trio process."""

from __future__ import annotations

from ._config import Bind, Config
from ._exceptions import ConfigError, TrioC10kError
from ._server import Server, ServerStatistics, serve

__all__ = [
    "Bind",
    "Config",
    "ConfigError",
    "Server",
    "ServerStatistics",
    "TrioC10kError",
    "serve",
]
