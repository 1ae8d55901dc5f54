"""trio_c10k: tens of thousands of live connections to a Django site, from one trio process.

Rule 1: the names below are imported when first used (PEP 562), not with the package:
``python -m trio_c10k --workers N``'s supervisor and Django's loading of the ``trio_c10k`` app
import ``trio_c10k`` without needing the server, wsproto or Django's request handling.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # The close codes by name: wsproto's enum itself, the type its events already carry.
    from wsproto.frame_protocol import CloseReason

    from ._config import Bind, Config, WebSocketConfig
    from ._django import database_sync_to_thread, websocket
    from ._exceptions import BrokerError, ConfigError, ConnectionClosed, HandshakeRejected, TrioC10kError
    from ._fanout import Group, broadcast, send_message
    from ._metrics import metrics_view
    from ._server import Server, ServerStatistics, serve
    from ._tls_config import TLSConfig
    from ._websocket import WebSocket

#: each public name -> the module it comes from
_WHERE = {
    "Bind": "._config",
    "BrokerError": "._exceptions",
    "CloseReason": "wsproto.frame_protocol",
    "Config": "._config",
    "ConfigError": "._exceptions",
    "ConnectionClosed": "._exceptions",
    "Group": "._fanout",
    "HandshakeRejected": "._exceptions",
    "Server": "._server",
    "ServerStatistics": "._server",
    "TLSConfig": "._tls_config",
    "TrioC10kError": "._exceptions",
    "WebSocket": "._websocket",
    "WebSocketConfig": "._config",
    "broadcast": "._fanout",
    "database_sync_to_thread": "._django",
    "metrics_view": "._metrics",
    "send_message": "._fanout",
    "serve": "._server",
    "websocket": "._django",
}

__all__ = [
    "Bind",
    "BrokerError",
    "CloseReason",
    "Config",
    "ConfigError",
    "ConnectionClosed",
    "Group",
    "HandshakeRejected",
    "Server",
    "ServerStatistics",
    "TLSConfig",
    "TrioC10kError",
    "WebSocket",
    "WebSocketConfig",
    "broadcast",
    "database_sync_to_thread",
    "metrics_view",
    "send_message",
    "serve",
    "websocket",
]


def __getattr__(name: str) -> Any:
    """Import the module a public name comes from, the first time the name is used (Rule 1)."""
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(where, __name__), name)
    globals()[name] = value  # the next use is a plain lookup
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
