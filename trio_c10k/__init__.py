"""trio_c10k: tens of thousands of live connections to a Django site, from one trio process."""

from __future__ import annotations

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
