"""HTTP/1.1 framing checks h11 leaves out, as strict as RFC 9112 asks (pure: bytes in, refusals out).

h11 parses; these checks refuse what it lets through, where two parsers could read one message
two ways (request smuggling) or where RFC 9112 says a server MUST refuse:

- ``check_head()``: the raw bytes of a request head, before h11 parses them: control
  characters, CR or LF other than CRLF line ends, obsolete line folding, the Host header's
  syntax, and the framing headers (Transfer-Encoding other than exactly ``chunked``, beside
  Content-Length, or in HTTP/1.0).
- ``check_request()``: the parsed request line: the HTTP version and the request target's form.
- ``ChunkedBody``: the raw bytes of a chunked body, beside h11: chunk-size lines, chunk
  extensions and the trailer section, byte-exact.

Rule 1: no trio, no socket; every check is tested synchronously, byte-exact.
Rule 2: a refusal is an ``h11.RemoteProtocolError`` whose ``error_status_hint`` is the status
to answer (400, 501 or 505) and whose text is the short reason; the caller answers it and
closes the connection (RFC 9112 section 6.1: a message whose framing is in doubt ends the
connection).
Rule 3: a head that needs no closer look costs a few byte-string operations that run in C
(``translate``, ``count``, ``in``); the line-by-line work runs only when one of them finds
something.
"""

from __future__ import annotations

import re

import h11

from ._http_head import Head

# The bytes a request head may hold: VCHAR, obs-text, SP, HTAB, and CR LF as line ends (RFC 9112
# section 5, RFC 9110 section 5.5). h11 refuses NUL, but lets the other control characters
# through in field values (h11 issue 57); a CTL is refused here, as RFC 9110 section 5.5 allows.
_CTL = bytes([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])
_NOT_CTL = bytes(b for b in range(256) if b not in _CTL)
_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_QUOTED = rb'"(?:[\t !\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
# RFC 9112 section 7.1: chunk-size [ chunk-ext ] CRLF, where
# chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] ).
# h11 also takes "3 \r\n" and any bytes after a ";": whitespace or a CTL where another parser
# stops reading the size is how a chunked body is read two ways.
_CHUNK_SIZE_LINE = re.compile(
    rb"([0-9A-Fa-f]+)(?:[ \t]*;[ \t]*%s(?:[ \t]*=[ \t]*(?:%s|%s))?)*\r\n" % (_TOKEN, _TOKEN, _QUOTED)
)
# RFC 9112 section 5: field-name ":" OWS field-value OWS, for trailer fields too.
_FIELD_LINE = re.compile(rb"%s:[\t \x21-\x7e\x80-\xff]*\r\n" % _TOKEN)
# RFC 3986 section 3.2.2-3.2.3: host [ ":" port ], host an IP literal or a reg-name.
_HOST = re.compile(rb"(?:\[[0-9A-Za-z:.%_~-]+\]|[-0-9A-Za-z._~!$&'()*+,;=%]*)(?::[0-9]*)?")


#: bytes of a refused line quoted in the reason (the answer and the log line stay short)
_SHOWN = 40


def _refuse(reason: str, status: int = 400) -> h11.RemoteProtocolError:
    return h11.RemoteProtocolError(reason, error_status_hint=status)


def head_end(data: bytes | bytearray, start: int = 0) -> int:
    """The length of the request head at the start of ``data``, through its empty line; -1 if
    the head is not whole yet. As h11, the first empty line ends the head, CRLF or bare LF.

    Args:
        data: the bytes received for the next request.
        start: where to start looking (bytes already searched need not be searched again).
    """
    # Two searches in C are faster than the regular expression \n\r?\n.
    crlf, lf = data.find(b"\n\r\n", start), data.find(b"\n\n", start)
    if lf >= 0 and (crlf < 0 or lf < crlf):
        return lf + 2
    return -1 if crlf < 0 else crlf + 3


def check_head(head: bytes) -> bool:
    """Check a whole request head byte-exact, before h11 parses it.

    Args:
        head: the request line and header lines, through the empty line.

    Returns:
        True if the request has a Transfer-Encoding header (which is then exactly ``chunked``).

    Raises:
        h11.RemoteProtocolError: 400 for a control character, a CR or LF that is not part of
            a CRLF, obsolete line folding, a Host header that is not ``host[:port]``,
            Transfer-Encoding beside Content-Length or in an HTTP/1.0 request, or a transfer
            coding list whose last coding is not ``chunked``; 501 for another coding before
            ``chunked``.
    """
    if head.translate(None, _NOT_CTL):
        raise _refuse(f"control character {_first_ctl(head)!r} in the request head")
    crlf = head.count(b"\r\n")
    if head.count(b"\r") != crlf or head.count(b"\n") != crlf:
        # RFC 9112 section 2.2 lets a server take a bare LF as a line end; a server behind a
        # proxy that does not would see other headers than the proxy saw.
        raise _refuse("line ending other than CRLF in the request head")
    if b"\n " in head or b"\n\t" in head:
        # RFC 9112 section 5.2: reject obs-fold with 400, or replace it with SP (h11 does that,
        # so "Transfer-Encoding:\r\n chunked" would be chunked here and not to a proxy).
        raise _refuse("obsolete line folding in the request head")
    lower = head.lower()
    host = lower.find(b"\nhost:")
    if host >= 0 and _HOST.fullmatch(head[host + 6 : head.index(b"\r", host)].strip(b" \t")) is None:
        # RFC 9112 section 3.2: 400 for a Host header with an invalid field value (h11 refuses
        # a missing or repeated one).
        raise _refuse("invalid Host header")
    if b"transfer-encoding" not in lower:
        return False
    return _check_transfer_encoding(head.split(b"\r\n"))


def _first_ctl(data: bytes) -> bytes:
    return next(data[i : i + 1] for i in range(len(data)) if data[i] in _CTL)


def _check_transfer_encoding(lines: list[bytes]) -> bool:
    codings: list[bytes] = []
    content_length = present = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.lower()
        if name == b"transfer-encoding":
            present = True
            codings += [c.strip(b" \t").lower() for c in value.split(b",")]
        elif name == b"content-length":
            content_length = True
    if not present:
        return False
    if content_length:
        # RFC 9112 section 6.1: the server MAY reject such a request and MUST close after it.
        raise _refuse("both Transfer-Encoding and Content-Length")
    if lines[0].endswith(b" HTTP/1.0"):
        # RFC 9112 section 6.1: Transfer-Encoding in HTTP/1.0 means faulty framing.
        raise _refuse("Transfer-Encoding in an HTTP/1.0 request")
    if codings == [b"chunked"]:
        return True
    listed = b", ".join(codings)[:_SHOWN].decode("latin-1")
    if codings[-1] != b"chunked" or codings.count(b"chunked") != 1 or b"" in codings:
        # RFC 9112 section 6.3: chunked not last (or not once, section 7): the body's length
        # cannot be known.
        raise _refuse(f"Transfer-Encoding {listed!r}: the last coding must be chunked, once")
    # RFC 9112 section 6.1: a transfer coding the server does not understand: 501.
    raise _refuse(f"Transfer-Encoding {listed!r} not implemented (only chunked is)", 501)


def check_request(request: Head) -> None:
    """Check a parsed request line (from ``plain_head`` or h11).

    Raises:
        h11.RemoteProtocolError: 505 for an HTTP version other than 1.0 and 1.1; 400 for a
            request target that is not origin-form (``/path``), absolute-form with an ``http``
            or ``https`` URI, or ``*`` for OPTIONS.
    """
    version = request.http_version
    if version != b"1.1" and version != b"1.0":
        # h11 parses any DIGIT "." DIGIT; RFC 9110 section 15.6.6.
        raise _refuse(f"HTTP/{version.decode('ascii')} not supported (HTTP/1.1 and HTTP/1.0 are)", 505)
    target = request.target
    if target[:1] != b"/":
        _check_target(request.method, target)


def _check_target(method: bytes, target: bytes) -> None:
    """RFC 9112 section 3.2: a target other than origin-form."""
    if target == b"*":
        if method != b"OPTIONS":
            raise _refuse("request target * is for OPTIONS only")
        return
    scheme, sep, rest = target.partition(b"://")
    if not sep:
        raise _refuse("request target must start with /")
    if scheme.lower() not in (b"http", b"https"):
        raise _refuse("request target with a scheme other than http or https")
    authority = re.split(rb"[/?]", rest, maxsplit=1)[0]
    if b"@" in authority:
        # RFC 9110 section 4.2.4: userinfo in an http(s) URI is an error.
        raise _refuse("request target with userinfo")
    if not authority or _HOST.fullmatch(authority) is None:
        raise _refuse("request target with an invalid host")


class ChunkedBody:
    """Checks the framing of one chunked request body, fed the same bytes as h11.

    h11 reads the body; this reads its framing lines only (chunk data is skipped by count) and
    refuses what h11 takes but RFC 9112 section 7.1 does not: whitespace or control characters
    in a chunk-size line, chunk extensions that are not ``;name[=token or "quoted"]``, a trailer
    line that does not end in CRLF (a bare LF ending the trailer section), and trailer lines
    that are not ``name: value``. Bytes after the body (a pipelined request) are not looked at.
    """

    __slots__ = ("_line", "_max_line", "_remaining", "_state")

    def __init__(self, max_line: int) -> None:
        """Args: max_line: the longest framing line taken, CRLF included (a trailer's limit)."""
        #: the longest framing line taken, in bytes
        self._max_line = max_line
        #: what comes next: "size" line, chunk "data", its "crlf", "trailer" lines, or "done"
        self._state = "size"
        #: the framing line read so far
        self._line = bytearray()
        #: bytes of chunk data, or of the CRLF after it, still to come
        self._remaining = 0

    def feed(self, data: bytes) -> None:
        """Check the next bytes of the body (any split is fine).

        Raises:
            h11.RemoteProtocolError: 400 with the reason.
        """
        i, n = 0, len(data)
        while i < n and self._state != "done":
            if self._state == "data":
                take = min(self._remaining, n - i)
                self._remaining -= take
                i += take
                if self._remaining == 0:
                    self._state, self._remaining = "crlf", 2
                continue
            if self._state == "crlf":
                while i < n and self._remaining:
                    if data[i] != b"\r\n"[2 - self._remaining]:
                        raise _refuse("chunk data not followed by CRLF")
                    self._remaining -= 1
                    i += 1
                if not self._remaining:
                    self._state = "size"
                continue
            end = data.find(b"\n", i)
            if end < 0:
                self._line += data[i:]
                i = n
            else:
                self._line += data[i : end + 1]
                i = end + 1
            if len(self._line) > self._max_line:
                raise _refuse(f"chunk framing line longer than {self._max_line} bytes")
            if end >= 0:
                line = bytes(self._line)
                self._line.clear()
                self._end_of_line(line)

    def _end_of_line(self, line: bytes) -> None:
        if line[-2:-1] != b"\r":
            raise _refuse("line ending other than CRLF in the chunked body")
        if self._state == "size":
            match = _CHUNK_SIZE_LINE.fullmatch(line)
            if match is None:
                raise _refuse(f"invalid chunk-size line {line[:_SHOWN]!r}")
            size = int(match[1], 16)
            if size:
                self._state, self._remaining = "data", size
            else:
                self._state = "trailer"
        elif line == b"\r\n":
            self._state = "done"
        elif _FIELD_LINE.fullmatch(line) is None:
            raise _refuse(f"invalid trailer line {line[:_SHOWN]!r}")
