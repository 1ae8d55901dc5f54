"""Plain request heads read by hand (``_http_head``): byte-exact, and always as h11 reads them."""

from __future__ import annotations

import h11
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from trio_c10k._http_head import Head, plain_head
from trio_c10k._http_rules import check_head

HANDSHAKE = (
    b"GET /chat/lobby/ws/?x=1 HTTP/1.1\r\nHost: example.com:8000\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\nOrigin: http://example.com:8000\r\n\r\n"
)


def by_h11(head: bytes) -> tuple[Head, object] | str:
    """What h11 makes of ``head``: the request and the event after it, or "refused"."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(head)
    try:
        request = conn.next_event()
        assert isinstance(request, h11.Request), request
        return Head.of(request), conn.next_event()
    except h11.RemoteProtocolError:
        return "refused"


def test_a_handshake_head_is_read_field_by_field_as_received() -> None:
    assert plain_head(HANDSHAKE) == Head(
        b"GET",
        b"/chat/lobby/ws/?x=1",
        b"1.1",
        [
            (b"Host", b"example.com:8000"),
            (b"Upgrade", b"websocket"),
            (b"Connection", b"Upgrade"),
            (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
            (b"Sec-WebSocket-Version", b"13"),
            (b"Origin", b"http://example.com:8000"),
        ],
    )


def test_values_lose_the_whitespace_around_them_and_keep_the_inside() -> None:
    head = b"GET / HTTP/1.1\r\nhost:h\r\nX-A: \t a \t b\t \r\nX-B:\r\nX-C: \xe9t\xe9 \r\n\r\n"
    assert plain_head(head) == Head(
        b"GET", b"/", b"1.1", [(b"host", b"h"), (b"X-A", b"a \t b"), (b"X-B", b""), (b"X-C", b"\xe9t\xe9")]
    )


def test_an_http_1_0_request_needs_no_host() -> None:
    assert plain_head(b"HEAD /x HTTP/1.0\r\n\r\n") == Head(b"HEAD", b"/x", b"1.0", [])


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", id="content-length"),
        pytest.param(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n", id="chunked"),
        pytest.param(b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n", id="expect"),
        pytest.param(b"GET / HTTP/1.1\r\nX: y\r\n\r\n", id="no-host"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", id="two-hosts"),
        pytest.param(b"GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n", id="two-hosts-1.0"),
        pytest.param(b"\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", id="empty-line-first"),
        pytest.param(b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n", id="two-spaces"),
        pytest.param(b"GET / HTTP/1.1 \r\nHost: h\r\n\r\n", id="space-after-version"),
        pytest.param(b"GET /a\tb HTTP/1.1\r\nHost: h\r\n\r\n", id="tab-in-target"),
        pytest.param(b"GET /\xe9 HTTP/1.1\r\nHost: h\r\n\r\n", id="obs-text-in-target"),
        pytest.param(b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n", id="method-not-a-token"),
        pytest.param(b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", id="http-2.0"),
        pytest.param(b"GET / http/1.1\r\nHost: h\r\n\r\n", id="lowercase-version"),
        pytest.param(b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", id="space-before-colon"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: h\r\nNo colon\r\n\r\n", id="no-colon"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: h\r\n: v\r\n\r\n", id="empty-name"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: h\r\nX\xe9: v\r\n\r\n", id="name-not-a-token"),
    ],
)
def test_other_heads_go_to_h11(head: bytes) -> None:
    check_head(head)  # each passed the raw check: plain_head is asked
    assert plain_head(head) is None


# What requests are made of: the usual (listed more than once, to be drawn more often), and
# the pieces where two parsers could disagree.
USUAL = 8
METHODS = [b"GET"] * USUAL + [b"HEAD", b"OPTIONS", b"get", b"G@T", b"", b"CONNECT", b"POST"]
TARGETS = [b"/", b"/a/b?c=d&e"] * USUAL + [b"*", b"http://h:1/x", b"/\x80\xff", b"", b"/a b", b"/a\tb"]
VERSIONS = [b"HTTP/1.1", b"HTTP/1.0"] * USUAL + [b"HTTP/2.0", b"HTTP/1.1 ", b"http/1.1", b"HTTP/1.10"]
HOSTS = [b"Host: h\r\n"] * USUAL + [b"host:\t[::1]:80 \r\n", b"", b"Host: a\r\nhost: a\r\n", b"Host : h\r\n"]
NAMES = [b"X-A", b"Upgrade", b"Connection", b"Origin"] * USUAL + [b"Content-Length", b"Transfer-Encoding"]
NAMES += [b"Expect", b"Host", b"", b"X A", b"X-A ", b"X\x80", b"X_A", b"HOST"]
SEPARATORS = [b": "] * USUAL + [b":", b":\t", b" :", b"", b"::"]
VALUES = [b"v", b"a b", b"\tx\t", b"\x80\xff", b"0", b"chunked", b"100-continue", b"h:80", b"", b"\x00"]

lines = st.builds(
    lambda name, separator, value, tail: name + separator + value + tail + b"\r\n",
    st.sampled_from(NAMES),
    st.sampled_from(SEPARATORS),
    st.sampled_from(VALUES),
    st.sampled_from([b"", b"", b" ", b"\t"]),
)
heads = st.builds(
    lambda blank, method, gap, target, version, host, fields: (
        blank + method + gap + target + b" " + version + b"\r\n" + host + b"".join(fields) + b"\r\n"
    ),
    st.sampled_from([b""] * USUAL + [b"\r\n"]),
    st.sampled_from(METHODS),
    st.sampled_from([b" "] * USUAL + [b"  ", b"\t"]),
    st.sampled_from(TARGETS),
    st.sampled_from(VERSIONS),
    st.sampled_from(HOSTS),
    st.lists(lines, max_size=4),
)


@settings(max_examples=1000, deadline=None)  # no per-example deadline: CI machines are busy
@given(heads)
@example(HANDSHAKE)
@example(b"GET / HTTP/1.0\r\n\r\n")
def test_a_plain_head_is_what_h11_reads_then_the_end_of_the_request(head: bytes) -> None:
    try:
        check_head(head)
    except h11.RemoteProtocolError:
        return  # refused before any parser sees it
    plain = plain_head(head)
    if plain is not None:
        assert by_h11(head) == (plain, h11.EndOfMessage())
