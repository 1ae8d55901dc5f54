"""A response's head and its body framing, as RFC 9112 says (pure: what the application answered
in; the head's bytes and how its body is sent out).

h11 parses the requests (``_http``); the answers are framed here, as the 101 of an upgrade
always was (``_handshake``): through h11's state machine, a small response's head cost more of
the event loop's time than the rest of its path in the server (about 70 us of about 300).

Rule 1: the status line says HTTP/1.1 (RFC 9112 section 2.5: a server sends its own version,
the highest it supports).
Rule 2: the status is final (200 and up: a 1xx from the application, a 101 outside an
upgrade, would leave the client waiting for another answer), the application's field names
are tokens and its values hold no control character but HTAB (RFC 9110 section 5.5), and a
Content-Length is one number; anything else is a
``ValueError`` before a byte of the head exists: a value that carried CR LF would split the
response in two. A Transfer-Encoding from the application is refused as well: it is a
hop-by-hop field, the server's to set (PEP 3333).
Rule 3: the body's framing (RFC 9112 section 6): a 204 or 304 answer and the answer to HEAD
have no body, and the head of HEAD's answer is GET's; otherwise the application's
Content-Length, else chunked for an HTTP/1.1 client, else the end of the connection (an
HTTP/1.0 client knows no chunks).
Rule 4: the connection persists when the request allows it (``persists``), the application
did not say ``Connection: close``, and the body does not end with the connection; otherwise
the head says ``Connection: close``.
"""

from __future__ import annotations

from dataclasses import dataclass

#: RFC 9110 section 5.6.2: the characters of a token (a field name, a method)
TOKEN = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
#: RFC 9110 section 5.5: the control characters a field value may not hold (all but HTAB)
_CTL = bytes([*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F])
_BODILESS = frozenset({204, 304})


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """A response's head, and how its body goes out."""

    #: the status line and the header section, through the empty line
    data: bytes
    #: the Content-Length the body must match; None when chunked or ended by the close
    length: int | None
    #: each piece of the body goes out as a chunk, and ``LAST_CHUNK`` ends it
    chunked: bool
    #: no body is sent (HEAD, 204, 304): what the application gives is dropped
    bodiless: bool
    #: the connection serves another request once the body is sent
    keep_alive: bool


#: the end of a chunked body: the last chunk, no trailer fields
LAST_CHUNK = b"0\r\n\r\n"


def chunk(data: bytes) -> tuple[bytes, bytes, bytes]:
    """``data`` as one chunk of a chunked body (RFC 9112 section 7.1), in pieces for
    ``writev`` (the data itself is not copied). ``data`` must not be empty: an empty chunk
    ends the body."""
    return b"%x\r\n" % len(data), data, b"\r\n"


def check_field(name: bytes, value: bytes) -> None:
    """Refuse a field a response may not carry (Rule 2): ``ValueError`` unless ``name`` is a
    token and ``value`` holds no control character but HTAB."""
    if not name or name.translate(None, TOKEN) or len(value.translate(None, _CTL)) != len(value):
        raise ValueError(f"invalid response header {name!r}: {value!r}")


def persists(http_version: bytes, connection: list[bytes]) -> bool:
    """Whether a request lets its connection serve another (RFC 9112 section 9.3): HTTP/1.1,
    and no ``close`` among the options of its ``connection`` header values."""
    return http_version == b"1.1" and not any(_says_close(value) for value in connection)


def _says_close(value: bytes) -> bool:
    """Whether a Connection value lists the ``close`` option (RFC 9110 section 7.6.1)."""
    lowered = value.lower()
    return b"close" in lowered and b"close" in [option.strip() for option in lowered.split(b",")]


def response_head(
    status: int,
    reason: bytes,
    headers: list[tuple[bytes, bytes]],
    *,
    head_request: bool,
    http_11: bool,
    keep_alive: bool,
) -> ResponseHead:
    """The head of a response and its framing (the rules in the module docstring).

    Args:
        status: the status code, a final one (200 to 999, as h11 took them).
        reason: the reason phrase.
        headers: the application's fields, as (name, value).
        head_request: the request is HEAD.
        http_11: the request is HTTP/1.1 (else 1.0).
        keep_alive: the request lets the connection persist and the server is not closing.

    Raises:
        ValueError: a field breaks Rule 2.
    """
    if not 200 <= status <= 999:  # a 1xx is not a final answer (a 101 is the upgrade's own)
        raise ValueError(f"the application answered {status}: not a final status")
    length: int | None = None
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
    for name, value in headers:
        check_field(name, value)
        lower = name.lower()
        if lower == b"content-length":
            if not value.isdigit() or (length is not None and int(value) != length):
                raise ValueError(f"invalid Content-Length in the response: {value!r}")
            if length is not None:
                continue  # the same number twice: sent once
            length = int(value)
        elif lower == b"connection":
            if _says_close(value):
                keep_alive = False
            continue  # hop-by-hop: the server says what it does with the connection
        elif lower == b"transfer-encoding":
            raise ValueError("the application may not set Transfer-Encoding (a hop-by-hop field)")
        lines += name, b": ", value, b"\r\n"
    bodiless = head_request or status in _BODILESS
    chunked = False
    if length is None and status not in _BODILESS:
        if http_11:
            chunked = not head_request
            lines.append(b"transfer-encoding: chunked\r\n")
        elif not head_request:
            keep_alive = False  # the body ends with the connection
    if not keep_alive:
        lines.append(b"connection: close\r\n")
    lines.append(b"\r\n")
    return ResponseHead(b"".join(lines), None if bodiless else length, chunked, bodiless, keep_alive)
