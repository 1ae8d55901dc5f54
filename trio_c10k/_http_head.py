"""A request's line and fields (``Head``), read by hand when the head is plain (pure: bytes in).

h11 is the HTTP parser; its state machine and two regular expressions per field cost ~60-100 us
of Python per request here, the largest item of a WebSocket handshake in the event loop
(docs/performance.md, Decision 4). Most heads are plain: a request line, one Host, a few
fields, no body (every handshake, most GETs). ``plain_head`` reads those with a few byte-string
operations that run in C; every other head goes to h11, as before.

Rule 1: ``plain_head`` returns a ``Head`` only where h11 would parse the same bytes into the
same request (method, target, version, the fields as received with the whitespace around their
values stripped) followed by its end; else None, and h11 parses the head, or refuses it with
its own answer. tests/unit/test_http_head.py checks this against h11 on generated heads.
Rule 2: it is called on a head that passed ``_http_rules.check_head`` (only CRLF line ends, no
control character but HTAB, no obsolete line folding), which is what makes it this short.
Rule 3: a head with a body (Content-Length, Transfer-Encoding), with Expect (100-continue), with
a Host missing (HTTP/1.1) or repeated, or a request line other than ``token SP target SP
HTTP/1.1`` (or ``HTTP/1.0``), is not plain.
"""

from __future__ import annotations

from dataclasses import dataclass

import h11

from ._http_framing import TOKEN

#: the versions a plain head may have (h11 parses any DIGIT "." DIGIT; ``check_request``
#: answers the others with 505)
_VERSIONS = (b"HTTP/1.1", b"HTTP/1.0")
#: fields that make a head not plain: a body's framing, and Expect (Rule 3)
_NOT_PLAIN = frozenset((b"content-length", b"transfer-encoding", b"expect"))


@dataclass(frozen=True, slots=True)
class Head:
    """A request's line and fields, as the server uses them."""

    #: the method, e.g. ``b"GET"``
    method: bytes
    #: the request target, e.g. ``b"/chat/?room=1"``
    target: bytes
    #: ``b"1.1"`` or ``b"1.0"`` (h11 parses others, which ``check_request`` refuses)
    http_version: bytes
    #: (name as received, value without surrounding whitespace), in order
    fields: list[tuple[bytes, bytes]]

    @classmethod
    def of(cls, request: h11.Request) -> Head:
        """The head of a request h11 parsed."""
        return cls(request.method, request.target, request.http_version, request.headers.raw_items())


def plain_head(head: bytes) -> Head | None:
    """The request of a plain head (Rule 3), None for any other.

    Args:
        head: a whole request head through its empty line, which passed ``check_head``.
    """
    lines = head.split(b"\r\n")  # the head ends with CRLF CRLF: two empty items at the end
    method, _, rest = lines[0].partition(b" ")
    target, _, version = rest.partition(b" ")
    if version not in _VERSIONS or not method or method.translate(None, TOKEN):
        return None
    if not target or not target.isascii() or b"\t" in target:  # h11: VCHAR only (RFC 9112 3.2)
        return None
    fields = []
    hosts = 0
    for line in lines[1:-2]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name.translate(None, TOKEN):
            return None  # h11 refuses it: its answer, its reason
        lower = name.lower()
        if lower in _NOT_PLAIN:
            return None
        if lower == b"host":
            hosts += 1
        fields.append((name, value.strip(b" \t")))
    if hosts > 1 or (not hosts and version == b"HTTP/1.1"):
        return None  # h11 refuses it (RFC 9112 section 3.2)
    return Head(method, target, version[5:], fields)
