"""The pure half of the WSGI bridge: environ building, proxy headers, ``wsgi.file_wrapper``.

Plain synchronous tests: no trio, no socket. Requests are ``h11.Request`` objects built
directly, as h11 hands them to the server, which reads them as a ``Head``.
"""

from __future__ import annotations

import io
import sys

import h11
import pytest

from trio_c10k._config import Config
from trio_c10k._http_head import Head
from trio_c10k._wsgi import (
    FileWrapper,
    apply_proxy_headers,
    build_environ,
    connection_environ,
    is_trusted,
)

CLIENT = ("192.0.2.7", 54321)
LOCAL = ("127.0.0.1", 8000)


def environ_for(
    target: bytes = b"/",
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    method: bytes = b"GET",
    http_version: bytes = b"1.1",
    body: bytes = b"",
    length: int | None = None,
    base: dict[str, object] | None = None,
) -> dict[str, object]:
    """The environ of one request on a TCP connection from CLIENT to LOCAL."""
    if headers is None:
        headers = [(b"Host", b"example.com")]
    request = Head.of(h11.Request(method=method, target=target, headers=headers, http_version=http_version))
    if base is None:
        base = connection_environ(CLIENT, LOCAL)
    return build_environ(base, request, io.BytesIO(body), len(body) if length is None else length)


# --- connection_environ -------------------------------------------------------------------------


def test_connection_environ_tcp_addresses() -> None:
    environ = connection_environ(CLIENT, LOCAL)
    assert environ["REMOTE_ADDR"] == "192.0.2.7"
    assert environ["REMOTE_PORT"] == "54321"
    assert environ["SERVER_NAME"] == "127.0.0.1"
    assert environ["SERVER_PORT"] == "8000"
    assert environ["SCRIPT_NAME"] == ""


def test_connection_environ_ipv6_addresses() -> None:
    environ = connection_environ(("::1", 40000), ("::1", 8443))
    assert environ["REMOTE_ADDR"] == "::1"
    assert environ["REMOTE_PORT"] == "40000"
    assert environ["SERVER_NAME"] == "::1"
    assert environ["SERVER_PORT"] == "8443"


def test_connection_environ_unix_socket() -> None:
    environ = connection_environ(None, None)
    assert "REMOTE_ADDR" not in environ
    assert "REMOTE_PORT" not in environ
    # PEP 3333 requires SERVER_NAME and SERVER_PORT even without a TCP address.
    assert isinstance(environ["SERVER_NAME"], str)
    assert environ["SERVER_NAME"]
    assert environ["SERVER_PORT"] == "80"


def test_connection_environ_wsgi_keys() -> None:
    environ = connection_environ(CLIENT, LOCAL)
    assert environ["wsgi.version"] == (1, 0)
    assert environ["wsgi.url_scheme"] == "http"
    assert environ["wsgi.errors"] is sys.stderr
    assert environ["wsgi.multithread"] is True
    assert environ["wsgi.multiprocess"] is False
    assert environ["wsgi.run_once"] is False
    assert environ["wsgi.file_wrapper"] is FileWrapper


def test_connection_environ_https_scheme() -> None:
    assert connection_environ(CLIENT, LOCAL, "https")["wsgi.url_scheme"] == "https"


# --- build_environ: request line ---------------------------------------------------------------


def test_method_and_protocol_http11() -> None:
    environ = environ_for(method=b"POST")
    assert environ["REQUEST_METHOD"] == "POST"
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.1"


def test_protocol_http10() -> None:
    environ = environ_for(headers=[], http_version=b"1.0")
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.0"


def test_path_is_percent_decoded_as_latin1() -> None:
    # PEP 3333: PATH_INFO carries the decoded bytes, one character per byte (latin-1);
    # Django re-encodes it as latin-1 and decodes it as UTF-8.
    environ = environ_for(b"/caf%C3%A9")
    assert environ["PATH_INFO"] == "/caf\xc3\xa9"
    assert environ["PATH_INFO"].encode("latin-1").decode("utf-8") == "/café"


def test_path_decodes_reserved_characters() -> None:
    assert environ_for(b"/a%2Fb%20c")["PATH_INFO"] == "/a/b c"


def test_path_without_escapes_is_unchanged() -> None:
    assert environ_for(b"/hello/")["PATH_INFO"] == "/hello/"


def test_query_string_is_raw() -> None:
    environ = environ_for(b"/search?q=caf%C3%A9&x=a+b&empty=")
    assert environ["PATH_INFO"] == "/search"
    assert environ["QUERY_STRING"] == "q=caf%C3%A9&x=a+b&empty="


def test_query_string_absent_is_empty() -> None:
    assert environ_for(b"/hello/")["QUERY_STRING"] == ""


@pytest.mark.parametrize(
    ("target", "path_info", "query_string"),
    [
        (b"/p?a=1?b=2", "/p", "a=1?b=2"),  # later question marks belong to the query
        # RFC 9112 section 3.2.2: absolute-form targets are served by their path and query.
        (b"http://example.com/a?b=1", "/a", "b=1"),
        (b"http://example.com", "/", ""),
        (b"http://example.com?b=1", "/", "b=1"),
        (b"http://example.com?x=/y", "/", "x=/y"),
        (b"https://example.com:8443/caf%C3%A9?x=%20", "/caf\xc3\xa9", "x=%20"),
    ],
)
def test_targets(target: bytes, path_info: str, query_string: str) -> None:
    environ = environ_for(target)
    assert (environ["PATH_INFO"], environ["QUERY_STRING"]) == (path_info, query_string)


@pytest.mark.parametrize(
    ("target", "host"),
    [
        (b"http://other.example/a?b=1", "other.example"),
        (b"https://other.example:8443?b=1", "other.example:8443"),
    ],
)
def test_absolute_form_host_replaces_the_host_header(target: bytes, host: str) -> None:
    # RFC 9112 section 3.2.2: the server MUST ignore Host and use the target's host.
    assert environ_for(target, [(b"Host", b"example.com")])["HTTP_HOST"] == host


def test_asterisk_target() -> None:
    environ = environ_for(b"*", method=b"OPTIONS")
    assert environ["REQUEST_METHOD"] == "OPTIONS"
    assert environ["PATH_INFO"] == "*"
    assert environ["QUERY_STRING"] == ""


def test_script_name_is_empty() -> None:
    assert environ_for(b"/a/b")["SCRIPT_NAME"] == ""


# --- build_environ: headers --------------------------------------------------------------------


def test_content_type_and_length_have_no_http_prefix() -> None:
    environ = environ_for(
        b"/form",
        [(b"Host", b"example.com"), (b"Content-Type", b"text/plain"), (b"Content-Length", b"5")],
        method=b"POST",
        body=b"hello",
    )
    assert environ["CONTENT_TYPE"] == "text/plain"
    assert environ["CONTENT_LENGTH"] == "5"
    assert "HTTP_CONTENT_TYPE" not in environ
    assert "HTTP_CONTENT_LENGTH" not in environ


def test_content_length_comes_from_length_argument() -> None:
    # A chunked body has no Content-Length header; the server read it whole and says how long.
    environ = environ_for(
        b"/upload",
        [(b"Host", b"example.com"), (b"Transfer-Encoding", b"chunked")],
        method=b"POST",
        body=b"0123456789",
    )
    assert environ["CONTENT_LENGTH"] == "10"
    assert environ["HTTP_TRANSFER_ENCODING"] == "chunked"


def test_content_length_header_is_not_used() -> None:
    environ = environ_for(
        b"/upload",
        [(b"Host", b"example.com"), (b"Content-Length", b"3")],
        method=b"POST",
        body=b"abc",
        length=7,
    )
    assert environ["CONTENT_LENGTH"] == "7"


def test_content_length_absent_when_length_is_zero() -> None:
    environ = environ_for(
        b"/upload", [(b"Host", b"example.com"), (b"Content-Length", b"0")], method=b"POST", length=0
    )
    assert "CONTENT_LENGTH" not in environ
    assert "HTTP_CONTENT_LENGTH" not in environ


def test_content_type_absent_when_not_sent() -> None:
    assert "CONTENT_TYPE" not in environ_for()


def test_common_and_custom_headers() -> None:
    environ = environ_for(
        b"/",
        [
            (b"Host", b"example.com:8000"),
            (b"User-Agent", b"test/1.0"),
            (b"X-Custom-Thing", b"v"),
            (b"X-Latin", b"caf\xe9"),
        ],
    )
    assert environ["HTTP_HOST"] == "example.com:8000"
    assert environ["HTTP_USER_AGENT"] == "test/1.0"
    assert environ["HTTP_X_CUSTOM_THING"] == "v"
    assert environ["HTTP_X_LATIN"] == "caf\xe9"


def test_repeated_headers_join_with_comma() -> None:
    environ = environ_for(
        b"/",
        [
            (b"Host", b"example.com"),
            (b"Accept", b"text/html"),
            (b"Accept", b"application/json"),
            (b"X-Thing", b"a"),
            (b"X-Thing", b"b"),
            (b"X-Thing", b"c"),
        ],
    )
    assert environ["HTTP_ACCEPT"] == "text/html, application/json"
    assert environ["HTTP_X_THING"] == "a, b, c"


def test_repeated_cookie_headers_join_with_semicolon() -> None:
    environ = environ_for(b"/", [(b"Host", b"example.com"), (b"Cookie", b"a=1"), (b"Cookie", b"b=2; c=3")])
    assert environ["HTTP_COOKIE"] == "a=1; b=2; c=3"


def test_headers_with_underscore_are_dropped() -> None:
    environ = environ_for(
        b"/",
        [(b"Host", b"example.com"), (b"X-Auth_User", b"mallory"), (b"X-Auth-User", b"alice")],
    )
    assert environ["HTTP_X_AUTH_USER"] == "alice"
    assert not any("mallory" in str(value) for value in environ.values())


def test_underscore_header_alone_leaves_no_key() -> None:
    environ = environ_for(b"/", [(b"Host", b"example.com"), (b"X_Forwarded_For", b"6.6.6.6")])
    assert "HTTP_X_FORWARDED_FOR" not in environ


def test_wsgi_input_is_the_body() -> None:
    body = io.BytesIO(b"payload")
    fields = [(b"Host", b"h"), (b"Content-Length", b"7")]
    request = Head.of(h11.Request(method=b"POST", target=b"/", headers=fields))
    environ = build_environ(connection_environ(CLIENT, LOCAL), request, body, 7)
    assert environ["wsgi.input"] is body
    assert environ["wsgi.input"].read() == b"payload"


def test_build_environ_keeps_connection_keys() -> None:
    environ = environ_for()
    assert environ["REMOTE_ADDR"] == "192.0.2.7"
    assert environ["REMOTE_PORT"] == "54321"
    assert environ["SERVER_NAME"] == "127.0.0.1"
    assert environ["SERVER_PORT"] == "8000"
    assert environ["wsgi.version"] == (1, 0)
    assert environ["wsgi.url_scheme"] == "http"
    assert environ["wsgi.errors"] is sys.stderr
    assert environ["wsgi.multithread"] is True
    assert environ["wsgi.multiprocess"] is False
    assert environ["wsgi.run_once"] is False
    assert environ["wsgi.file_wrapper"] is FileWrapper


def test_build_environ_on_unix_socket() -> None:
    environ = environ_for(base=connection_environ(None, None))
    assert "REMOTE_ADDR" not in environ
    assert "REMOTE_PORT" not in environ
    assert environ["SERVER_PORT"] == "80"
    assert environ["PATH_INFO"] == "/"


def test_build_environ_does_not_mutate_base() -> None:
    base = connection_environ(CLIENT, LOCAL)
    snapshot = dict(base)
    first = environ_for(
        b"/one?x=1",
        [(b"Host", b"example.com"), (b"Cookie", b"a=1"), (b"Content-Type", b"text/plain")],
        method=b"POST",
        body=b"abc",
        base=base,
    )
    assert base == snapshot
    # A second request on the same connection sees none of the first one's keys.
    second = environ_for(b"/two", [(b"Host", b"example.com"), (b"Cookie", b"b=2")], base=base)
    assert base == snapshot
    assert first["HTTP_COOKIE"] == "a=1"
    assert second["HTTP_COOKIE"] == "b=2"
    assert "CONTENT_TYPE" not in second
    assert "CONTENT_LENGTH" not in second
    assert second["QUERY_STRING"] == ""


# --- proxy headers -----------------------------------------------------------------------------

TRUSTED = Config(forwarded_allow_ips=("10.0.0.0/8",)).trusted_proxies


def proxied(headers: list[tuple[bytes, bytes]]) -> dict[str, object]:
    """The environ of a request from the proxy 10.0.0.1, after apply_proxy_headers()."""
    environ = environ_for(
        b"/", [(b"Host", b"example.com"), *headers], base=connection_environ(("10.0.0.1", 40000), LOCAL)
    )
    apply_proxy_headers(environ, TRUSTED)
    return environ


def test_forwarded_for_single_client() -> None:
    environ = proxied([(b"X-Forwarded-For", b"203.0.113.9")])
    assert environ["REMOTE_ADDR"] == "203.0.113.9"
    assert "REMOTE_PORT" not in environ


def test_forwarded_for_rightmost_untrusted_hop() -> None:
    # The client sent "1.1.1.1" itself (spoofable); 203.0.113.9 is what the first trusted
    # proxy saw; 10.0.0.2 is a second trusted proxy.
    environ = proxied([(b"X-Forwarded-For", b"1.1.1.1, 203.0.113.9, 10.0.0.2")])
    assert environ["REMOTE_ADDR"] == "203.0.113.9"
    assert "REMOTE_PORT" not in environ


def test_forwarded_for_repeated_headers() -> None:
    environ = proxied([(b"X-Forwarded-For", b"1.1.1.1"), (b"X-Forwarded-For", b"203.0.113.9, 10.0.0.2")])
    assert environ["REMOTE_ADDR"] == "203.0.113.9"


def test_forwarded_for_all_hops_trusted_takes_leftmost() -> None:
    environ = proxied([(b"X-Forwarded-For", b"10.1.1.1, 10.2.2.2,10.3.3.3")])
    assert environ["REMOTE_ADDR"] == "10.1.1.1"
    assert "REMOTE_PORT" not in environ


def test_forwarded_for_empty_keeps_peer() -> None:
    environ = proxied([(b"X-Forwarded-For", b",, ,")])
    assert environ["REMOTE_ADDR"] == "10.0.0.1"
    assert environ["REMOTE_PORT"] == "40000"


def test_no_proxy_headers_keeps_peer_and_scheme() -> None:
    environ = proxied([])
    assert environ["REMOTE_ADDR"] == "10.0.0.1"
    assert environ["REMOTE_PORT"] == "40000"
    assert environ["wsgi.url_scheme"] == "http"


def test_forwarded_proto_https() -> None:
    environ = proxied([(b"X-Forwarded-Proto", b"https")])
    assert environ["wsgi.url_scheme"] == "https"
    assert environ["REMOTE_ADDR"] == "10.0.0.1"


def test_forwarded_proto_first_value_case_insensitive() -> None:
    assert proxied([(b"X-Forwarded-Proto", b"HTTPS, http")])["wsgi.url_scheme"] == "https"


@pytest.mark.parametrize("value", [b"javascript", b"ftp", b"https://evil", b""])
def test_forwarded_proto_garbage_is_ignored(value: bytes) -> None:
    assert proxied([(b"X-Forwarded-Proto", value)])["wsgi.url_scheme"] == "http"


def test_forwarded_proto_http_downgrades_https_connection() -> None:
    environ = environ_for(
        b"/",
        [(b"Host", b"example.com"), (b"X-Forwarded-Proto", b"http")],
        base=connection_environ(("10.0.0.1", 40000), LOCAL, "https"),
    )
    apply_proxy_headers(environ, TRUSTED)
    assert environ["wsgi.url_scheme"] == "http"


def test_apply_proxy_headers_trust_all() -> None:
    environ = environ_for(
        b"/", [(b"Host", b"example.com"), (b"X-Forwarded-For", b"198.51.100.1, 198.51.100.2")]
    )
    apply_proxy_headers(environ, None)
    # Every hop is trusted, so the left-most one is the client.
    assert environ["REMOTE_ADDR"] == "198.51.100.1"


def test_is_trusted_with_networks() -> None:
    assert TRUSTED is not None
    assert is_trusted("10.0.0.1", TRUSTED)
    assert is_trusted("10.255.255.255", TRUSTED)
    assert not is_trusted("11.0.0.1", TRUSTED)
    assert not is_trusted("127.0.0.1", TRUSTED)
    assert not is_trusted("::1", TRUSTED)


def test_is_trusted_default_config_is_loopback() -> None:
    trusted = Config().trusted_proxies
    assert is_trusted("127.0.0.1", trusted)
    assert is_trusted("::1", trusted)
    assert not is_trusted("127.0.0.2", trusted)
    assert not is_trusted("192.0.2.1", trusted)


def test_is_trusted_none_trusts_everything() -> None:
    assert Config(forwarded_allow_ips=("*",)).trusted_proxies is None
    assert is_trusted("192.0.2.1", None)
    assert is_trusted("2001:db8::1", None)
    assert is_trusted("not-an-ip", None)


@pytest.mark.parametrize("address", ["not-an-ip", "", "10.0.0.1:80", "unknown", "10.0.0"])
def test_is_trusted_rejects_non_ip(address: str) -> None:
    assert not is_trusted(address, TRUSTED)


# --- FileWrapper -------------------------------------------------------------------------------


class TrackedFile(io.BytesIO):
    """A file that records the sizes asked of read()."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.sizes: list[int] = []

    def read(self, size: int | None = -1) -> bytes:
        self.sizes.append(-1 if size is None else size)
        return super().read(size)


def test_file_wrapper_reads_at_least_64_kib() -> None:
    data = bytes(range(256)) * 1000  # 256,000 bytes
    filelike = TrackedFile(data)
    chunks = list(FileWrapper(filelike, 4096))
    assert b"".join(chunks) == data
    assert [len(chunk) for chunk in chunks] == [65536, 65536, 65536, 256000 - 3 * 65536]
    assert all(size >= 65536 for size in filelike.sizes)


def test_file_wrapper_keeps_larger_blocks() -> None:
    data = b"x" * 300_000
    chunks = list(FileWrapper(io.BytesIO(data), 200_000))
    assert [len(chunk) for chunk in chunks] == [200_000, 100_000]


def test_file_wrapper_empty_file() -> None:
    assert list(FileWrapper(io.BytesIO(b""))) == []


def test_file_wrapper_close_closes_file() -> None:
    filelike = io.BytesIO(b"data")
    wrapper = FileWrapper(filelike)
    assert not filelike.closed
    wrapper.close()
    assert filelike.closed


def test_file_wrapper_close_without_close_method() -> None:
    class Reader:
        def read(self, size: int) -> bytes:
            return b""

    FileWrapper(Reader()).close()  # type: ignore[arg-type]  # a file-like without close()
