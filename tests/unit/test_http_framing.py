"""Response heads and their framing (``_http_framing``), byte-exact, without a socket."""

from __future__ import annotations

import pytest

from trio_c10k._http_framing import LAST_CHUNK, ResponseHead, chunk, persists, response_head

TYPE = (b"Content-Type", b"text/plain")


def head(
    headers: list[tuple[bytes, bytes]],
    status: int = 200,
    *,
    head_request: bool = False,
    http_11: bool = True,
    keep_alive: bool = True,
) -> ResponseHead:
    reason = {200: b"OK", 204: b"No Content", 304: b"Not Modified"}[status]
    return response_head(
        status, reason, headers, head_request=head_request, http_11=http_11, keep_alive=keep_alive
    )


def test_a_response_with_a_content_length_keeps_the_connection() -> None:
    assert head([TYPE, (b"Content-Length", b"5")]) == ResponseHead(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n",
        length=5,
        chunked=False,
        bodiless=False,
        keep_alive=True,
    )


def test_without_a_length_an_http_1_1_client_gets_chunks() -> None:
    assert head([TYPE]) == ResponseHead(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n",
        length=None,
        chunked=True,
        bodiless=False,
        keep_alive=True,
    )


def test_without_a_length_an_http_1_0_client_gets_the_body_until_the_close() -> None:
    assert head([TYPE], http_11=False, keep_alive=True) == ResponseHead(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nconnection: close\r\n\r\n",
        length=None,
        chunked=False,
        bodiless=False,
        keep_alive=False,
    )


def test_the_answer_to_head_has_the_head_of_get_and_no_body() -> None:
    # RFC 9110 section 9.3.2: the same fields as GET, Transfer-Encoding included.
    assert head([TYPE], head_request=True) == ResponseHead(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n",
        length=None,
        chunked=False,
        bodiless=True,
        keep_alive=True,
    )
    with_length = head([(b"Content-Length", b"14")], head_request=True)
    assert (with_length.length, with_length.bodiless) == (None, True)
    assert b"Content-Length: 14\r\n" in with_length.data


@pytest.mark.parametrize("status", [204, 304])
def test_204_and_304_have_no_body_and_no_framing_added(status: int) -> None:
    answer = head([TYPE], status)
    assert answer.data == b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\n\r\n" % (
        status,
        {204: b"No Content", 304: b"Not Modified"}[status],
    )
    assert (answer.bodiless, answer.chunked, answer.keep_alive) == (True, False, True)


def test_a_connection_that_does_not_persist_says_close() -> None:
    answer = head([(b"Content-Length", b"0")], keep_alive=False)
    assert answer.data == b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nconnection: close\r\n\r\n"
    assert not answer.keep_alive


def test_the_applications_connection_field_is_the_servers_to_write() -> None:
    closing = head([(b"Connection", b"Close"), (b"Content-Length", b"0")])
    assert closing.data == b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nconnection: close\r\n\r\n"
    assert not closing.keep_alive
    other = head([(b"Connection", b"keep-alive"), (b"Content-Length", b"0")])
    assert other.data == b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    assert other.keep_alive


def test_the_same_content_length_twice_is_sent_once() -> None:
    answer = head([(b"Content-Length", b"3"), (b"content-length", b"3")])
    assert answer.data == b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n"
    assert answer.length == 3


@pytest.mark.parametrize(
    "headers",
    [
        [(b"X-Bad", b"line\r\nbreak")],
        [(b"X-Bad", b"nul\x00")],
        [(b"X-Bad", b"bare\nlf")],
        [(b"X Bad", b"space in the name")],
        [(b"X-Bad:", b"colon in the name")],
        [(b"", b"no name")],
        [(b"Content-Length", b"-1")],
        [(b"Content-Length", b"1, 1")],
        [(b"Content-Length", b"3"), (b"Content-Length", b"4")],
        [(b"Transfer-Encoding", b"chunked")],
    ],
    ids=["crlf", "nul", "lf", "space-name", "colon-name", "empty-name", "negative", "list", "two", "te"],
)
def test_a_field_that_cannot_be_sent_is_refused(headers: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(ValueError, match=r"response|Content-Length|Transfer-Encoding"):
        head(headers)


@pytest.mark.parametrize("status", [100, 101, 103, 1000])
def test_a_status_that_is_not_a_final_answer_is_refused(status: int) -> None:
    with pytest.raises(ValueError, match="not a final status"):
        response_head(status, b"X", [], head_request=False, http_11=True, keep_alive=True)


def test_the_applications_connection_field_says_close_only_as_an_option() -> None:
    assert head([(b"Connection", b"closed-captions"), (b"Content-Length", b"0")]).keep_alive


def test_a_value_may_hold_tabs_and_obs_text() -> None:
    assert b"X-Ok: a\tb \xe9\r\n" in head([(b"X-Ok", b"a\tb \xe9")]).data


def test_a_chunk_is_its_hex_size_line_the_data_and_crlf() -> None:
    data = b"x" * 26
    assert chunk(data) == (b"1a\r\n", data, b"\r\n")
    assert chunk(data)[1] is data  # not copied
    assert LAST_CHUNK == b"0\r\n\r\n"


@pytest.mark.parametrize(
    ("version", "connection", "expected"),
    [
        (b"1.1", [], True),
        (b"1.1", [b"keep-alive"], True),
        (b"1.1", [b"close"], False),
        (b"1.1", [b"Upgrade, Close"], False),
        (b"1.1", [b"closed-captions"], True),  # an option that is not close
        (b"1.1", [b"keep-alive", b"close"], False),
        (b"1.0", [], False),
        (b"1.0", [b"keep-alive"], False),
    ],
)
def test_a_request_persists_if_http_1_1_without_close(
    version: bytes, connection: list[bytes], expected: bool
) -> None:
    assert persists(version, connection) is expected
