"""The pure HTTP/1.1 framing checks: byte-exact, synchronous, no socket."""

from __future__ import annotations

import h11
import pytest

from trio_c10k._http_rules import ChunkedBody, check_head, check_request, head_end

HEAD = b"POST / HTTP/1.1\r\nHost: a\r\n"


def refusal(excinfo: pytest.ExceptionInfo[h11.RemoteProtocolError]) -> tuple[int, str]:
    return excinfo.value.error_status_hint, str(excinfo.value)


# --- head_end -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "start", "end"),
    [
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody", 0, 27),
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody", 24, 27),  # the search resumes where it was
        (b"GET / HTTP/1.1\nHost: a\n\n", 0, 24),  # h11 ends a head at a bare-LF empty line too
        (b"GET / HTTP/1.1\r\nHost: a\r\n", 0, -1),
    ],
)
def test_head_end(data: bytes, start: int, end: int) -> None:
    assert head_end(data, start) == end


# --- check_head ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "chunked"),
    [
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: tab\there, obs-text \xe9\r\n\r\n", False),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX-Transfer-Encoding-Note: gzip\r\n\r\n", False),
        (HEAD + b"Transfer-Encoding: chunked\r\n\r\n", True),
        (HEAD + b"transfer-encoding:  Chunked \r\n\r\n", True),
        (HEAD + b"Content-Length: 5\r\n\r\n", False),
        *(
            (b"GET / HTTP/1.1\r\nX: 1\r\nhOST:\t" + host + b" \r\n\r\n", False)
            for host in (b"example.com:8000", b"[2001:db8::1]:443", b"xn--caf-dma.example", b"a_b.c~d")
        ),
        # RFC 9112 section 3.2: empty when the target has no authority
        (b"GET / HTTP/1.1\r\nHost:\r\n\r\n", False),
    ],
)
def test_check_head_accepts(head: bytes, chunked: bool) -> None:
    assert check_head(head) is chunked


@pytest.mark.parametrize(
    ("head", "status", "reason"),
    [
        (HEAD + b"X: a\x01b\r\n\r\n", 400, r"control character b'\x01' in the request head"),
        (HEAD + b"X: a\x7f\r\n\r\n", 400, r"control character b'\x7f' in the request head"),
        (HEAD + b"X: \x00\r\n\r\n", 400, r"control character b'\x00' in the request head"),
        (b"GET / HTTP/1.1\nHost: a\n\n", 400, "line ending other than CRLF in the request head"),
        (HEAD + b"X: a\rb\r\n\r\n", 400, "line ending other than CRLF in the request head"),
        (HEAD + b"X: a\r\n\n", 400, "line ending other than CRLF in the request head"),
        (HEAD + b"X: a\r\n b\r\n\r\n", 400, "obsolete line folding in the request head"),
        *(
            (b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n", 400, "invalid Host header")
            for host in (b"a/b", b"a b", b"a:b", b"a@b", b"caf\xc3\xa9.example", b"[::1")
        ),
        (HEAD + b"X: a\r\n\tb\r\n\r\n", 400, "obsolete line folding in the request head"),
        (
            HEAD + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
            "both Transfer-Encoding and Content-Length",
        ),
        (
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
            "Transfer-Encoding in an HTTP/1.0 request",
        ),
        *(
            (
                HEAD + b"Transfer-Encoding: " + value + b"\r\n\r\n",
                400,
                f"Transfer-Encoding {listed!r}: the last coding must be chunked, once",
            )
            for value, listed in [
                (b"xchunked", "xchunked"),
                (b"gzip", "gzip"),
                (b"chunked, gzip", "chunked, gzip"),
                (b"chunked, chunked", "chunked, chunked"),
                (b"chunked,", "chunked, "),
                (b", chunked", ", chunked"),
                (b"", ""),
            ]
        ),
        (
            HEAD + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
            "Transfer-Encoding 'chunked, chunked': the last coding must be chunked, once",
        ),
        (
            HEAD + b"Transfer-Encoding: GZIP, chunked\r\n\r\n",
            501,
            "Transfer-Encoding 'gzip, chunked' not implemented (only chunked is)",
        ),
        (
            HEAD + b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
            501,
            "Transfer-Encoding 'gzip, chunked' not implemented (only chunked is)",
        ),
    ],
)
def test_check_head_refuses(head: bytes, status: int, reason: str) -> None:
    with pytest.raises(h11.RemoteProtocolError) as excinfo:
        check_head(head)
    assert refusal(excinfo) == (status, reason)


# --- check_request ------------------------------------------------------------------------------


def request(
    target: bytes = b"/", host: bytes = b"example.com", method: bytes = b"GET", version: bytes = b"1.1"
) -> h11.Request:
    return h11.Request(method=method, target=target, headers=[(b"Host", host)], http_version=version)


@pytest.mark.parametrize(
    "req",
    [
        request(),
        request(version=b"1.0"),
        request(b"/a?b=/c"),
        request(b"*", method=b"OPTIONS"),
        request(b"http://other.example/path?q"),
        request(b"HTTPS://other.example:8443"),
        request(b"http://[::1]:8000/"),
    ],
)
def test_check_request_accepts(req: h11.Request) -> None:
    check_request(req)


@pytest.mark.parametrize(
    ("req", "status", "reason"),
    [
        *(
            (request(version=v), 505, f"HTTP/{v.decode()} not supported (HTTP/1.1 and HTTP/1.0 are)")
            for v in (b"2.0", b"1.2", b"3.0", b"0.9")
        ),
        (request(b"index.html"), 400, "request target must start with /"),
        (request(b"example.com:443", method=b"CONNECT"), 400, "request target must start with /"),
        (request(b"*"), 400, "request target * is for OPTIONS only"),
        (request(b"ftp://example.com/"), 400, "request target with a scheme other than http or https"),
        (request(b"http://user:pw@example.com/"), 400, "request target with userinfo"),
        (request(b"http:///path"), 400, "request target with an invalid host"),
        (request(b'http://a"b/'), 400, "request target with an invalid host"),
    ],
)
def test_check_request_refuses(req: h11.Request, status: int, reason: str) -> None:
    with pytest.raises(h11.RemoteProtocolError) as excinfo:
        check_request(req)
    assert refusal(excinfo) == (status, reason)


# --- ChunkedBody ------------------------------------------------------------------------------


def feed(checker: ChunkedBody, pieces: list[bytes]) -> None:
    for piece in pieces:
        checker.feed(piece)


@pytest.mark.parametrize(
    "body",
    [
        b"0\r\n\r\n",
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        b"000A\r\n0123456789\r\n0\r\n\r\n",
        b"3;name\r\nabc\r\n0;last\r\n\r\n",
        b"3 ; name = value ;x=1\r\nabc\r\n0\r\n\r\n",  # BWS around ";" and "="
        b'3;q="a \\" \\\\ \t\xe9"\r\nabc\r\n0\r\n\r\n',
        b"3\r\n\n\r\n\r\n0\r\nX-Trailer: 1\r\nX-Empty:\r\n\r\n",  # chunk data is not looked at
        # After the body, a pipelined request (even invalid bytes) is not this checker's.
        b"0\r\n\r\nGET / HTTP/1.1\n\x01",
    ],
)
def test_chunked_body_accepts(body: bytes) -> None:
    feed(ChunkedBody(1024), [body])
    feed(ChunkedBody(1024), [body[i : i + 1] for i in range(len(body))])


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"3 \r\nabc\r\n0\r\n\r\n", r"invalid chunk-size line b'3 \r\n'"),
        (b" 3\r\nabc\r\n0\r\n\r\n", r"invalid chunk-size line b' 3\r\n'"),
        (b"0x3\r\nabc\r\n0\r\n\r\n", r"invalid chunk-size line b'0x3\r\n'"),
        (b"\r\n", r"invalid chunk-size line b'\r\n'"),
        (b"3;a=\x01\r\nabc\r\n0\r\n\r\n", r"invalid chunk-size line b'3;a=\x01\r\n'"),
        (b"3;a\rb\r\nabc\r\n0\r\n\r\n", r"invalid chunk-size line b'3;a\rb\r\n'"),
        (b"3;=b\r\nabc\r\n0\r\n\r\n", r"invalid chunk-size line b'3;=b\r\n'"),
        (b'3;a="b\r\nabc\r\n0\r\n\r\n', "invalid chunk-size line " + repr(b'3;a="b\r\n')),
        (b"3\nabc\r\n0\r\n\r\n", "line ending other than CRLF in the chunked body"),
        (b"3\r\nabc\n0\r\n\r\n", "chunk data not followed by CRLF"),
        (b"3\r\nabcd\r\n0\r\n\r\n", "chunk data not followed by CRLF"),
        (b"0\r\n\n", "line ending other than CRLF in the chunked body"),
        (b"0\r\nX: 1\n\r\n", "line ending other than CRLF in the chunked body"),
        (b"0\r\nX: \x01\r\n\r\n", r"invalid trailer line b'X: \x01\r\n'"),
        (b"0\r\nX : 1\r\n\r\n", r"invalid trailer line b'X : 1\r\n'"),
        (b"0\r\nX: 1\r\n folded\r\n\r\n", r"invalid trailer line b' folded\r\n'"),
        (b"3;" + b"a" * 30 + b"\r\n", "chunk framing line longer than 32 bytes"),
        (b"0\r\nX: " + b"a" * 30, "chunk framing line longer than 32 bytes"),
    ],
)
@pytest.mark.parametrize("bytewise", [False, True])
def test_chunked_body_refuses(body: bytes, reason: str, bytewise: bool) -> None:
    pieces = [body[i : i + 1] for i in range(len(body))] if bytewise else [body]
    with pytest.raises(h11.RemoteProtocolError) as excinfo:
        feed(ChunkedBody(32), pieces)
    assert refusal(excinfo) == (400, reason)
