"""The WebSocket opening handshake (RFC 6455 section 4.2), sans-I/O.

Rule 1: no trio, no Django, no socket: functions of a WSGI environ and plain values, tested
with plain sync tests.
Rule 2: a request that is not an acceptable upgrade gives a ``Rejection`` (status, reason,
headers) that the caller answers as plain HTTP; an acceptable one gives an ``Accept`` with
everything the 101 answer and the ``wsproto`` connection need.
Rule 3: the 101 answer's head is built here (``switching_protocols``), not by h11: the server
drops h11 once the protocol is switched, and h11's response machinery (an event object,
every header through its regular expressions, its state machine) cost more than the rest of
the event loop's share of a handshake. The same checks stand: each name a token, no CR, LF
or NUL in a value.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from wsproto.connection import Connection, ConnectionType
from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.utilities import generate_accept_token

from ._deflate import BoundedDeflate
from ._http_framing import check_field

#: the only version RFC 6455 defines; anything else gets 426 with this version advertised
WEBSOCKET_VERSION = "13"
#: the environ key under which the server offers the upgrade slot (see ``_django``)
UPGRADE_SLOT = "trio_c10k.upgrade"


@dataclass(frozen=True, slots=True)
class Rejection:
    """An upgrade request that is refused with plain HTTP."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Accept:
    """An acceptable upgrade request, negotiated."""

    #: the 101 answer's headers
    headers: tuple[tuple[str, str], ...]
    #: the subprotocol chosen, or None
    subprotocol: str | None
    #: the extensions agreed (permessage-deflate or none)
    extensions: list[Extension] = field(default_factory=list)


def _header_tokens(value: str) -> list[str]:
    return [token.strip().lower() for token in value.split(",") if token.strip()]


def check_upgrade(
    environ: dict[str, Any], subprotocols: tuple[str, ...] = (), compression: bool = False
) -> Accept | Rejection:
    """Validate an upgrade request and negotiate its subprotocol and extensions.

    Args:
        environ: the request's WSGI environ (Django's ``request.META``).
        subprotocols: the subprotocols the handler speaks, in order of preference.
        compression: whether permessage-deflate (RFC 7692) may be agreed.
    """
    upgrade = _header_tokens(environ.get("HTTP_UPGRADE", ""))
    if "websocket" not in upgrade:
        return Rejection(
            426,
            "This URL only speaks WebSocket; send an Upgrade: websocket request",
            (("Upgrade", "websocket"), ("Connection", "Upgrade")),
        )
    if environ.get("REQUEST_METHOD") != "GET":
        return Rejection(400, "A WebSocket handshake must use GET")
    if environ.get("SERVER_PROTOCOL") != "HTTP/1.1":
        return Rejection(400, "A WebSocket handshake needs HTTP/1.1")
    if "upgrade" not in _header_tokens(environ.get("HTTP_CONNECTION", "")):
        return Rejection(400, "Missing 'Connection: Upgrade' header")
    version = environ.get("HTTP_SEC_WEBSOCKET_VERSION", "").strip()
    if version != WEBSOCKET_VERSION:
        return Rejection(
            426,
            f"Unsupported Sec-WebSocket-Version {version!r}; this server speaks 13",
            (("Sec-WebSocket-Version", WEBSOCKET_VERSION),),
        )
    key = environ.get("HTTP_SEC_WEBSOCKET_KEY", "").strip()
    try:
        valid_key = len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        valid_key = False
    if not valid_key:
        return Rejection(400, "Sec-WebSocket-Key must be 16 bytes in base64")
    headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", generate_accept_token(key.encode("ascii")).decode("ascii")),
    ]
    subprotocol = choose_subprotocol(environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL", ""), subprotocols)
    if subprotocol is not None:
        headers.append(("Sec-WebSocket-Protocol", subprotocol))
    extensions: list[Extension] = []
    offers = environ.get("HTTP_SEC_WEBSOCKET_EXTENSIONS", "")
    if compression and offers:
        accepted = accept_deflate(offers)
        if accepted is not None:
            extension, response = accepted
            extensions.append(extension)
            headers.append(("Sec-WebSocket-Extensions", response))
    return Accept(tuple(headers), subprotocol, extensions)


def choose_subprotocol(offered: str, supported: tuple[str, ...]) -> str | None:
    """The first of ``supported`` that the client offered (server preference), or None."""
    tokens = {token.strip() for token in offered.split(",") if token.strip()}
    return next((protocol for protocol in supported if protocol in tokens), None)


def accept_deflate(offers: str, max_size: int = 1024 * 1024) -> tuple[BoundedDeflate, str] | None:
    """Agree to the first permessage-deflate offer wsproto accepts; its response header value.

    The extension inflates a message to ``max_size`` bytes at most (``BoundedDeflate``); the
    ``WebSocket`` it is given to sets that to its own ``max_message_size``.
    """
    for offer in offers.split(","):
        offer = offer.strip()
        if offer.split(";")[0].strip() != PerMessageDeflate.name:
            continue
        extension = BoundedDeflate(max_size)
        response = extension.accept(offer)
        if isinstance(response, str):
            return extension, f"{PerMessageDeflate.name}; {response}" if response else PerMessageDeflate.name
        if response is True:
            return extension, PerMessageDeflate.name
    return None


def origin_allowed(origin: str | None, scheme: str, host: str | None, trusted_origins: list[str]) -> bool:
    """Whether a browser's ``Origin`` may open a WebSocket (cross-site WebSocket hijacking).

    Decided as Django's ``CsrfViewMiddleware`` decides for a POST: an origin is allowed when
    it is the request's own ``scheme://host[:port]``, exactly, or an entry of
    ``CSRF_TRUSTED_ORIGINS``, or matches one of its ``scheme://*.domain`` wildcards (same
    scheme; the domain or any subdomain, with the entry's port if it has one). A request
    without ``Origin`` comes from a non-browser client and is allowed.

    Args:
        origin: the ``Origin`` header, or None.
        scheme: the request's scheme, ``"https"`` or ``"http"`` (Django's ``is_secure()``).
        host: the request's host and port as Django's ``get_host()`` gives it, or None when
            ``ALLOWED_HOSTS`` refuses it (then only trusted origins are allowed).
        trusted_origins: ``CSRF_TRUSTED_ORIGINS``.
    """
    if origin is None:
        return True
    if host is not None and origin == f"{scheme}://{host}":
        return True
    if any(origin == trusted for trusted in trusted_origins if "*" not in trusted):
        return True
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    wildcards = (urlsplit(trusted) for trusted in trusted_origins if "*" in trusted)
    return any(
        trusted.scheme == parts.scheme and _same_domain(parts.netloc, trusted.netloc.lstrip("*"))
        for trusted in wildcards
    )


def _same_domain(host: str, pattern: str) -> bool:
    """Django's ``is_same_domain``: a pattern ``.example.com`` also matches subdomains."""
    pattern = pattern.lower()
    if pattern.startswith("."):
        return host == pattern[1:] or host.endswith(pattern)
    return bool(pattern) and host == pattern


# A 101 has no body (RFC 9110 section 15.2): the application's framing headers are dropped.
_NOT_IN_101 = frozenset({b"content-length", b"content-type", b"transfer-encoding"})


def switching_protocols(headers: list[tuple[bytes, bytes]]) -> bytes:
    """The head of the 101 answer: ``HTTP/1.1 101 Switching Protocols`` and ``headers`` (the
    handshake's, ``Accept.headers``, then those of the application's 101 response: what
    Django's middleware added), but Content-Length, Content-Type and Transfer-Encoding.

    Raises:
        ValueError: a name is not a token, or a value holds a control character but HTAB (CR
            LF would be a header injection): ``_http_framing.check_field``.
    """
    lines = [b"HTTP/1.1 101 Switching Protocols\r\n"]
    for name, value in headers:
        if name.lower() not in _NOT_IN_101:
            check_field(name, value)
            lines += name, b": ", value, b"\r\n"
    lines.append(b"\r\n")
    return b"".join(lines)


def server_connection(accept: Accept) -> Connection | None:
    """The ``wsproto`` frame-level connection for an accepted upgrade (the bytes the client
    sent after its handshake go to the ``WebSocket``, which splits them into frames); None
    without extensions: the WebSocket then makes it when it first needs it."""
    return Connection(ConnectionType.SERVER, accept.extensions) if accept.extensions else None


@dataclass(slots=True)
class UpgradeSlot:
    """What the server offers a view in ``environ[UPGRADE_SLOT]``, and what the view leaves.

    The server puts an empty slot in the environ of every request that asks for an
    upgrade; ``@websocket`` fills it in; after Django answered 101, the server reads it.
    """

    #: whether the server may agree to permessage-deflate
    compression: bool = False
    #: set by the view: the handler and the arguments the URLconf captured
    handler: Any = None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: set by the view: the Django request and the negotiated handshake
    request: Any = None
    accept: Accept | None = None
