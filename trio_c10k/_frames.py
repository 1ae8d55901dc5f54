"""WebSocket frames without wsproto, for the common case (sans-I/O: no trio, no socket).

Rule 1: a *common* frame is a whole text or binary message in one frame (RFC 6455 section
5.2): FIN set, no reserved bit, opcode 1 or 2, masked by a client and not by a server, its
length in the shortest of the three encodings. Only those are built and recognised here;
every other frame is wsproto's (trio_c10k/_protocol.py, Rule 2).
Rule 2: masking and unmasking are one XOR of the payload with the repeated 4-byte key, done
on whole integers; a client's keys come from ``os.urandom`` (section 5.3: "a strong source of
entropy"), drawn 1,024 at a time.
"""

from __future__ import annotations

import os

#: the first byte of a common frame: FIN and the opcode (text, binary)
COMMON_TEXT, COMMON_BINARY = 0x81, 0x82
#: the mask bit of the second byte (set in every frame a client sends)
MASKED = 0x80


def encode_frame(data: str | bytes, masked: bool = False) -> bytes:
    """A common frame: text for str, binary for bytes; unmasked as a server sends it, or
    ``masked`` with a random key as a client must."""
    if isinstance(data, str):
        payload, first = data.encode("utf-8"), COMMON_TEXT
    else:
        payload, first = bytes(data), COMMON_BINARY
    length = len(payload)
    mask_bit = MASKED if masked else 0
    if length < 126:
        header = bytes((first, mask_bit | length))
    elif length < 65536:
        header = bytes((first, mask_bit | 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((first, mask_bit | 127)) + length.to_bytes(8, "big")
    if not masked:
        return header + payload
    key = masking_key()
    return header + key + unmask(payload, key)


def frame_header(data: bytes, at: int, mask_bit: int | None) -> tuple[int, int, int, bool] | None:
    """The frame that starts at ``data[at]``, from its header alone.

    Args:
        data: received bytes.
        at: where the frame starts.
        mask_bit: ``MASKED`` if common frames are masked on this connection (a server's), 0 if
            not (a client's), None if no frame is common (an extension was agreed).

    Returns:
        ``(first byte, payload start, payload stop, common)``, offsets in ``data`` (the stop
        may lie beyond its end: the rest has not arrived); None if the header itself is not
        all there yet.
    """
    if len(data) - at < 2:
        return None
    first, second = data[at], data[at + 1]
    length, start = second & 0x7F, at + 2
    common = first in (COMMON_TEXT, COMMON_BINARY) and second & MASKED == mask_bit
    if length > 125:  # a 2- or 8-byte length follows, which must need that many bytes
        size = 2 if length == 126 else 8
        if len(data) - start < size:
            return None
        length = int.from_bytes(data[start : start + size], "big")
        start += size
        common = common and (126 if size == 2 else 65536) <= length < 1 << 63
    if second & MASKED:
        start += 4  # the masking key
    return first, start, start + length, common


_keys: list[bytes] = []  # masking keys not used yet


def masking_key() -> bytes:
    """4 random bytes for a client frame, cut from one ``os.urandom`` call per 1,024 keys: a
    system call per frame cost as much as building the frame. Safe from several threads."""
    while True:
        try:
            return _keys.pop()
        except IndexError:  # used up (by this thread or another)
            pool = os.urandom(4096)
            _keys.extend(pool[i : i + 4] for i in range(0, 4096, 4))


def unmask(payload: bytes, key: bytes) -> bytes:
    """``payload`` XOR the repeated 4-byte ``key`` (masking and unmasking are the same)."""
    length = len(payload)
    if not length:
        return b""
    keys = (key * (length // 4 + 1))[:length]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(keys, "little")).to_bytes(length, "little")
