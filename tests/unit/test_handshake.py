"""The opening handshake as pure functions (no server, no Django request)."""

from __future__ import annotations

import base64

import pytest

from trio_c10k._handshake import (
    Accept,
    Rejection,
    check_upgrade,
    choose_subprotocol,
    origin_allowed,
    switching_protocols,
)

KEY = base64.b64encode(b"0123456789abcdef").decode()


def environ(**headers: str) -> dict[str, str]:
    base = {
        "REQUEST_METHOD": "GET",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_UPGRADE": "websocket",
        "HTTP_CONNECTION": "keep-alive, Upgrade",
        "HTTP_SEC_WEBSOCKET_KEY": KEY,
        "HTTP_SEC_WEBSOCKET_VERSION": "13",
    }
    base.update(headers)
    return {k: v for k, v in base.items() if v}


def test_valid_handshake_gives_the_rfc_accept_token() -> None:
    result = check_upgrade(environ())
    assert isinstance(result, Accept)
    headers = dict(result.headers)
    # RFC 6455 section 1.3: base64(SHA-1(key + GUID)); this key's value, computed independently
    import hashlib

    expected = base64.b64encode(
        hashlib.sha1((KEY + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
    ).decode()
    assert headers["Sec-WebSocket-Accept"] == expected
    assert headers["Upgrade"] == "websocket"
    assert result.subprotocol is None
    assert result.extensions == []


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"HTTP_UPGRADE": ""}, 426),
        ({"HTTP_UPGRADE": "h2c"}, 426),
        ({"REQUEST_METHOD": "POST"}, 400),
        ({"SERVER_PROTOCOL": "HTTP/1.0"}, 400),
        ({"HTTP_CONNECTION": "keep-alive"}, 400),
        ({"HTTP_SEC_WEBSOCKET_VERSION": ""}, 426),
        ({"HTTP_SEC_WEBSOCKET_VERSION": "8"}, 426),
        ({"HTTP_SEC_WEBSOCKET_KEY": ""}, 400),
        ({"HTTP_SEC_WEBSOCKET_KEY": base64.b64encode(b"15 bytes only!!").decode()}, 400),
    ],
)
def test_rejections(headers: dict[str, str], status: int) -> None:
    result = check_upgrade(environ(**headers))
    assert isinstance(result, Rejection)
    assert result.status == status
    assert result.reason


def test_header_tokens_are_case_insensitive() -> None:
    assert isinstance(check_upgrade(environ(HTTP_UPGRADE="WebSocket", HTTP_CONNECTION="upgrade")), Accept)


def test_subprotocol_follows_server_preference() -> None:
    assert choose_subprotocol("a, b", ("b", "a")) == "b"
    assert choose_subprotocol("a", ("b",)) is None
    assert choose_subprotocol("", ("a",)) is None
    result = check_upgrade(environ(HTTP_SEC_WEBSOCKET_PROTOCOL="chat.v1, chat.v2"), ("chat.v2",))
    assert isinstance(result, Accept)
    assert result.subprotocol == "chat.v2"
    assert ("Sec-WebSocket-Protocol", "chat.v2") in result.headers


@pytest.mark.parametrize("compression", [True, False])
def test_permessage_deflate_only_when_enabled(compression: bool) -> None:
    offer = "permessage-deflate; client_max_window_bits"
    result = check_upgrade(environ(HTTP_SEC_WEBSOCKET_EXTENSIONS=offer), compression=compression)
    assert isinstance(result, Accept)
    extensions = dict(result.headers).get("Sec-WebSocket-Extensions")
    if compression:
        assert extensions is not None
        assert extensions.startswith("permessage-deflate")
        assert len(result.extensions) == 1
    else:
        assert extensions is None
        assert result.extensions == []


TRUSTED = ["https://trusted.test", "https://*.wild.test", "http://*.wild.test:8080"]


@pytest.mark.parametrize(
    ("origin", "scheme", "host", "allowed"),
    [
        (None, "http", "site.test:8000", True),  # not a browser
        ("http://site.test:8000", "http", "site.test:8000", True),  # the request's own origin
        ("http://site.test:9999", "http", "site.test:8000", False),  # port differs
        ("http://site.test", "http", "site.test:8000", False),  # default port, site on 8000
        ("http://site.test:8000", "http", "site.test", False),
        ("https://site.test:8000", "http", "site.test:8000", False),  # scheme differs
        ("http://site.test:8000", "https", "site.test:8000", False),
        ("https://site.test", "https", "site.test", True),  # default ports: none on either side
        ("https://site.test:443", "https", "site.test", False),  # compared as written, as Django does
        ("http://evil.test", "http", "site.test", False),
        ("http://evil.test", "http", None, False),  # the Host is not in ALLOWED_HOSTS
        ("http://SITE.test", "http", "site.test", False),  # browsers send it lowercase
        ("http://[::1]:8000", "http", "[::1]:8000", True),  # IPv6
        ("http://[::1]:8001", "http", "[::1]:8000", False),
        ("http://[::2]:8000", "http", "[::1]:8000", False),
        ("null", "http", "site.test", False),  # sandboxed pages, file: URLs, redirects
        ("file://", "http", "site.test", False),
        ("https://trusted.test", "http", None, True),  # CSRF_TRUSTED_ORIGINS, exact entry
        ("https://trusted.test:8443", "http", "site.test", False),
        ("http://trusted.test", "http", "site.test", False),
        ("https://app.trusted.test", "http", "site.test", False),  # no wildcard: no subdomains
        ("https://app.wild.test", "http", "site.test", True),  # "https://*.wild.test"
        ("https://a.b.wild.test", "http", "site.test", True),
        ("https://wild.test", "http", "site.test", True),  # the domain itself, as in Django
        ("https://evilwild.test", "http", "site.test", False),
        ("https://app.wild.test:8443", "http", "site.test", False),  # the wildcard has no port
        ("http://app.wild.test", "http", "site.test", False),  # "http://*.wild.test:8080" has one
        ("http://app.wild.test:8080", "http", "site.test", True),
        ("https://app.wild.test:8080", "http", "site.test", False),
    ],
)
def test_origin_allowed(origin: str | None, scheme: str, host: str | None, allowed: bool) -> None:
    assert origin_allowed(origin, scheme, host, TRUSTED) is allowed


@pytest.mark.parametrize("trusted", [["https://*"], ["*"], []])
def test_origin_allowed_ignores_empty_wildcards(trusted: list[str]) -> None:
    assert not origin_allowed("https://", "http", "site.test", trusted)
    assert not origin_allowed("https://evil.test", "http", "site.test", trusted)


def test_switching_protocols_head_is_byte_exact() -> None:
    headers = [
        (b"Content-Type", b"text/html; charset=utf-8"),
        (b"Upgrade", b"websocket"),
        (b"Connection", b"Upgrade"),
        (b"Sec-WebSocket-Accept", b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        (b"X-Frame-Options", b"DENY"),
        (b"Content-Length", b"0"),
        (b"transfer-encoding", b"chunked"),
        (b"Vary", b"Cookie"),
    ]
    assert switching_protocols(headers) == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nX-Frame-Options: DENY\r\n"
        b"Vary: Cookie\r\n\r\n"
    )


@pytest.mark.parametrize(
    "header",
    [
        (b"X-Evil", b"a\r\nSet-Cookie: x=1"),
        (b"X-Evil", b"a\nb"),
        (b"X-Evil", b"a\rb"),
        (b"X-Evil: a\r\nSet-Cookie", b"x=1"),
        (b"X-Evil", b"a\x00b"),
        (b"X Evil", b"a"),
        (b"X-Evil:", b"a"),
        (b"", b"a"),
    ],
)
def test_switching_protocols_refuses_header_injection(header: tuple[bytes, bytes]) -> None:
    with pytest.raises(ValueError, match="invalid response header"):
        switching_protocols([(b"Upgrade", b"websocket"), header])
