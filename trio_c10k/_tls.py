"""One TLS connection without I/O: the stdlib's ``ssl.SSLObject`` over two memory BIOs.

Ciphertext in, plaintext out (``decrypt``); plaintext in, ciphertext out (``encrypt``). The
I/O layers move the ciphertext themselves, with the same non-blocking writes and reads as in
plain text (``_tls_stream``, ``_websocket``, ``_http_send``): TLS adds a step before the write
and after the read, not a task or a buffer of its own between the socket and the protocol.

Rule 1: ``encrypt`` returns every record the TLS layer has to send, in order: those the
handshake or a read left behind (session tickets, a key update, an alert) first, then the
data's. Sent in the order returned, the records never interleave.
Rule 2: ``decrypt`` returns every byte of plaintext the records received so far hold, so none
waits inside the ``SSLObject``: the rest of a partial record waits in the incoming BIO for the
next bytes. None means no plaintext yet; b"" that the peer ended TLS (close_notify).
Rule 3: a broken record or handshake raises ``ssl.SSLError`` (an ``OSError``), which the I/O
layers treat as a lost connection.
Rule 4: our side of TLS ends with the close_notify alert (``close_notify``), sent after the last
record of data, never after a record cut short; the peer's is not waited for (RFC 8446 section
6.1 allows closing at once).
"""

from __future__ import annotations

import ssl

#: the first byte of a TLS record carrying a handshake message (RFC 8446 section 5.1): what a
#: TLS client sends first; anything else on a TLS port is not TLS (plain HTTP, most often)
HANDSHAKE_RECORD = 0x16
#: plaintext bytes taken from the ``SSLObject`` per ``read`` call
READ_SIZE = 65536


class TLS:
    """The TLS state of one connection, server or client side."""

    __slots__ = ("_incoming", "_outgoing", "_ssl")

    def __init__(
        self, context: ssl.SSLContext, *, server_side: bool, server_hostname: str | None = None
    ) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(
            self._incoming, self._outgoing, server_side=server_side, server_hostname=server_hostname
        )

    def handshake(self, data: bytes) -> bool:
        """Feed the handshake the peer's ``data`` (b"" to start it on the client side); return
        whether it is complete. What to send back is in ``data_to_send()``.

        Raises:
            ssl.SSLError: the handshake failed (a bad certificate, no common version...).
        """
        if data:
            self._incoming.write(data)
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            return False
        return True

    def encrypt(self, data: bytes) -> bytes:
        """The records carrying ``data``, after any the TLS layer still had to send (Rule 1)."""
        if data:
            self._ssl.write(data)
        return self._outgoing.read()

    def decrypt(self, data: bytes) -> bytes | None:
        """The plaintext ``data`` completes (Rule 2): None if none yet; b"" once the peer has
        ended TLS with close_notify.

        Raises:
            ssl.SSLError: a record does not decrypt or verify.
        """
        self._incoming.write(data)
        chunks: list[bytes] = []
        while True:
            try:
                chunk = self._ssl.read(READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                return b"".join(chunks) or b""
            if not chunk:  # the peer's close_notify (the stdlib reads it as b"")
                return b"".join(chunks) or b""
            chunks.append(chunk)
        return b"".join(chunks) if chunks else None

    def close_notify(self) -> bytes:
        """The records ending TLS on our side (Rule 4): the close_notify alert, after any the
        TLS layer still had to send; b"" if TLS has ended already or is broken."""
        try:
            self._ssl.unwrap()
        except ssl.SSLWantReadError:
            pass  # the alert is written; the peer's answer is not awaited
        except ssl.SSLError:
            return b""
        return self._outgoing.read()

    def data_to_send(self) -> bytes:
        """The records waiting to be sent (the handshake's, session tickets)."""
        return self._outgoing.read()

    @property
    def version(self) -> str | None:
        """The TLS version agreed, as ``"TLSv1.3"``; None before the handshake."""
        return self._ssl.version()

    @property
    def alpn_protocol(self) -> str | None:
        """The application protocol agreed through ALPN, if any."""
        return self._ssl.selected_alpn_protocol()

    def peer_certificate(self) -> dict[str, object] | None:
        """The peer's certificate, checked, as ``ssl.SSLSocket.getpeercert()`` gives it; None if
        it sent none."""
        certificate = self._ssl.getpeercert()
        return dict(certificate) if certificate else None
