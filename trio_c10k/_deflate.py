"""permessage-deflate (RFC 7692) that stops inflating at the message size limit (sans-I/O).

Rule 1: a compressed message is never inflated past ``max_size`` bytes: each chunk is inflated
with zlib's ``max_length`` set to what the message may still grow by (plus one byte, to see
it go over), so a small frame that would inflate to gigabytes (a "deflate bomb") costs at
most ``max_size`` bytes and the CPU to make them before the 1009. The ``websockets`` library
does the same (``max_length`` in its ``PerMessageDeflate.decode``).
Rule 2: everything else is wsproto's ``PerMessageDeflate``: negotiation, compression of what
we send, and the state of a message across its fragments (its private ``_inbound_*`` and
``_decompressor`` attributes, read here as its own methods read them).
"""

from __future__ import annotations

import zlib

from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol

#: the end of a message's compressed data, which RFC 7692 section 7.2.2 has the sender remove
_TAIL = b"\x00\x00\xff\xff"


class BoundedDeflate(PerMessageDeflate):
    """wsproto's permessage-deflate, with inflation bounded by ``max_size`` bytes per message.

    wsproto turns the ``CloseReason.MESSAGE_TOO_BIG`` returned past the limit into a close
    event with code 1009.
    """

    def __init__(self, max_size: int) -> None:
        super().__init__()
        #: bytes: the most a message may inflate to (the connection's ``max_message_size``)
        self.max_size = max_size
        # Bytes the message being received has inflated to so far.
        self._inflated = 0

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        return self._inflate(data)

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        if not (fin and self._inbound_compressed and self._inbound_is_compressible):
            return super().frame_inbound_complete(proto, fin)  # no inflating to do
        data = self._inflate(_TAIL)
        if isinstance(data, CloseReason):
            return data
        self._inflated = 0
        if self.server_no_context_takeover if proto.client else self.client_no_context_takeover:
            self._decompressor = None
        self._inbound_compressed = None
        return data

    def _inflate(self, data: bytes) -> bytes | CloseReason:
        assert self._decompressor is not None
        room = self.max_size - self._inflated
        try:
            inflated = self._decompressor.decompress(data, room + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        if len(inflated) > room:
            return CloseReason.MESSAGE_TOO_BIG
        self._inflated += len(inflated)
        return inflated
