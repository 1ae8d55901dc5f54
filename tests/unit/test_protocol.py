"""The WebSocket protocol without I/O (``trio_c10k/_protocol.py``): bytes and time in, messages
and bytes out, synchronously, byte for byte.

Frames are built by hand (``tests.helpers.frame``), not with the code under test. Streams are fed whole,
split at every point and byte by byte: the messages, the bytes sent back and the close code
must not depend on how the bytes arrived.
"""

from __future__ import annotations

import zlib
from typing import Any

import pytest
from wsproto.connection import Connection, ConnectionType
from wsproto.frame_protocol import CloseReason

from tests.helpers import BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT, close_payload, feed, frame
from trio_c10k import ConnectionClosed
from trio_c10k._config import WebSocketConfig
from trio_c10k._handshake import accept_deflate
from trio_c10k._protocol import FRAGMENT_COST, FRAMES_PER_STEP, INCOMING_QUEUE, WebSocketProtocol


def server(**config: Any) -> WebSocketProtocol:
    """A server's protocol as an upgrade without extensions makes it: no wsproto connection
    until it needs one (Rule 7)."""
    return WebSocketProtocol(None, WebSocketConfig(**config))


def splits(data: bytes) -> list[tuple[bytes, ...]]:
    """``data`` whole, cut in two at every point, and byte by byte."""
    return [
        (data,),
        *((data[:i], data[i:]) for i in range(1, len(data))),
        tuple(data[i : i + 1] for i in range(len(data))),
    ]


# -- receiving -------------------------------------------------------------------------------

STREAM = (
    frame(TEXT, "héllo".encode())
    + frame(BINARY, bytes(range(200)))  # a 16-bit length
    + frame(TEXT)  # empty
    + frame(TEXT, b"fr", fin=False)  # fragmented, a ping between its fragments
    + frame(PING, b"are you there")
    + frame(CONTINUATION, b"ag", fin=False)
    + frame(CONTINUATION, "ment é".encode())
    + frame(BINARY, b"\x00\xff")
)
MESSAGES = ["héllo", bytes(range(200)), "", "fragment é", b"\x00\xff"]


def test_messages_and_pong_whatever_the_split() -> None:
    for chunks in splits(STREAM):
        protocol = server()
        assert feed(protocol, *chunks) == MESSAGES, chunks
        assert protocol._data_to_send() == frame(PONG, b"are you there", masked=False)
        assert protocol.open


@pytest.mark.parametrize("cut", [1, 2, 9, 10, 14, 15, 40_000, 70_013])
def test_a_64_bit_length_frame_split_anywhere(cut: int) -> None:
    payload = bytes(range(256)) * 273  # 69,888 bytes: an 8-byte length, longer than one read
    data = frame(BINARY, payload) + frame(TEXT, b"after")
    assert feed(server(), data[:cut], data[cut:]) == [payload, "after"]


def test_messages_received_before_the_close_are_handed_out_first() -> None:
    protocol = server()
    protocol._receive_data(frame(TEXT, b"last words") + frame(CLOSE, close_payload(1000, "bye")), 0.0)
    protocol._parse()
    assert protocol.closed
    assert (protocol.close_code, protocol.close_reason) == (1000, "bye")
    assert protocol._next_message() == "last words"
    assert protocol._next_message() is None


# -- closing ---------------------------------------------------------------------------------


def test_the_peer_closes_and_its_close_frame_is_answered() -> None:
    for chunks in splits(frame(CLOSE, close_payload(1001, "away"))):
        protocol = server()
        feed(protocol, *chunks)
        assert protocol._data_to_send() == frame(CLOSE, close_payload(1001, "away"), masked=False)
        assert protocol.closed
        assert (protocol.close_code, protocol.close_reason) == (
            CloseReason.GOING_AWAY,
            "away",
        )
        assert isinstance(protocol.close_code, CloseReason)


def test_an_empty_close_frame_is_answered_with_an_empty_one() -> None:
    protocol = server()
    feed(protocol, frame(CLOSE))
    assert protocol._data_to_send() == frame(CLOSE, masked=False)
    assert protocol.close_code == CloseReason.NO_STATUS_RCVD


def test_our_close_then_the_peers_answer() -> None:
    protocol = server()
    protocol._start_close(4000, "done")
    assert protocol._data_to_send() == frame(CLOSE, close_payload(4000, "done"), masked=False)
    assert not protocol.open
    assert not protocol.closed
    with pytest.raises(ConnectionClosed) as raised:
        protocol.write_message("late")
    assert (raised.value.code, raised.value.reason) == (4000, "done")
    # Data the peer sent before it saw our close is dropped (RFC 6455 section 1.4).
    assert feed(protocol, frame(TEXT, b"crossing"), frame(CLOSE, close_payload(4000))) == []
    assert protocol.closed
    assert protocol.close_code == 4000
    assert protocol._data_to_send() == b""  # nothing after a close frame


def test_the_end_of_the_stream_is_1006_and_sends_nothing() -> None:
    protocol = server()
    protocol._receive_data(b"", 0.0)
    assert protocol.closed
    assert protocol.close_code == CloseReason.ABNORMAL_CLOSURE
    assert protocol._data_to_send() == b""
    with pytest.raises(ConnectionClosed):
        protocol.ping()


def invalid_utf8_fragments() -> bytes:
    return frame(TEXT, b"ok \xe2", fin=False) + frame(CONTINUATION, b"\x28\xa1")


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (frame(TEXT, b"unmasked", masked=False), CloseReason.PROTOCOL_ERROR),
        (frame(3, b"reserved opcode"), CloseReason.PROTOCOL_ERROR),
        (frame(TEXT, b"rsv1", rsv=4), CloseReason.PROTOCOL_ERROR),
        (frame(PING, b"unfinished", fin=False), CloseReason.PROTOCOL_ERROR),
        (frame(PING, bytes(126)), CloseReason.PROTOCOL_ERROR),
        (frame(CONTINUATION, b"nothing to continue"), CloseReason.PROTOCOL_ERROR),
        (frame(TEXT, b"a", fin=False) + frame(TEXT, b"b"), CloseReason.PROTOCOL_ERROR),
        (frame(CLOSE, close_payload(999)), CloseReason.PROTOCOL_ERROR),
        (frame(CLOSE, b"\x03"), CloseReason.PROTOCOL_ERROR),
        (frame(TEXT, b"\xff not UTF-8"), CloseReason.INVALID_FRAME_PAYLOAD_DATA),
        (invalid_utf8_fragments(), CloseReason.INVALID_FRAME_PAYLOAD_DATA),
        (frame(CLOSE, b"\x03\xe8\xff"), CloseReason.INVALID_FRAME_PAYLOAD_DATA),
        (frame(BINARY, bytes(1001)), CloseReason.MESSAGE_TOO_BIG),
        (frame(TEXT, "é".encode() * 501), CloseReason.MESSAGE_TOO_BIG),  # 1,002 UTF-8 bytes
        (frame(BINARY, bytes(600), fin=False) + frame(CONTINUATION, bytes(401)), CloseReason.MESSAGE_TOO_BIG),
        (frame(BINARY, fin=False) + frame(CONTINUATION, fin=False) * 16, CloseReason.MESSAGE_TOO_BIG),
    ],
    ids=[
        "unmasked",
        "reserved opcode",
        "rsv1 without extension",
        "fragmented ping",
        "long ping",
        "lone continuation",
        "new message inside one",
        "close code 999",
        "one-byte close",
        "invalid UTF-8",
        "invalid UTF-8 across fragments",
        "invalid UTF-8 close reason",
        "binary too big",
        "text too big in UTF-8 bytes",
        "fragments too big",
        "too many empty fragments",
    ],
)
def test_a_broken_rule_closes_with_its_code(data: bytes, code: CloseReason) -> None:
    for chunks in ((data,), tuple(data[i : i + 1] for i in range(len(data)))):
        protocol = server(max_message_size=1000)
        assert feed(protocol, *chunks) == []
        assert protocol.closed
        assert protocol.close_code == code
        sent = protocol._data_to_send()  # one close frame with that code, a short reason after it
        assert (sent[0], sent[1] + 2, sent[2:4]) == (0x88, len(sent), close_payload(code)), sent


def test_a_fragment_counts_for_its_cost() -> None:
    # 15 empty continuations cost 15 * FRAGMENT_COST = 960 bytes: within 1000; a 16th is not.
    assert FRAGMENT_COST == 64
    within = frame(BINARY, fin=False) + frame(CONTINUATION, fin=False) * 14 + frame(CONTINUATION, bytes(40))
    assert feed(server(max_message_size=1000), within) == [bytes(40)]


def test_a_compressed_message_is_inflated_no_further_than_the_limit() -> None:
    agreed = accept_deflate("permessage-deflate")
    assert agreed is not None
    connection = Connection(ConnectionType.SERVER, [agreed[0]])
    protocol = WebSocketProtocol(connection, WebSocketConfig(max_message_size=10_000), extensions=[agreed[0]])
    compress = zlib.compressobj(wbits=-15)
    small = compress.compress(b"x" * 5000) + compress.flush(zlib.Z_SYNC_FLUSH)
    bomb = compress.compress(b"x" * 10_001) + compress.flush(zlib.Z_SYNC_FLUSH)
    assert len(bomb) < 100
    messages = feed(protocol, frame(BINARY, small[:-4], rsv=4), frame(BINARY, bomb[:-4], rsv=4))
    assert messages == [b"x" * 5000]
    assert protocol.close_code == CloseReason.MESSAGE_TOO_BIG


# -- limits on what waits --------------------------------------------------------------------


def test_the_inbox_holds_a_bounded_number_of_messages() -> None:
    protocol = server()
    protocol._receive_data(b"".join(frame(TEXT, b"%d" % i) for i in range(INCOMING_QUEUE + 4)), 0.0)
    protocol._parse()
    assert len(protocol._inbox) == INCOMING_QUEUE
    assert protocol._inbox_full()
    assert protocol._unparsed == b"".join(
        frame(TEXT, b"%d" % i) for i in range(INCOMING_QUEUE, INCOMING_QUEUE + 4)
    )
    assert protocol._next_message() == "0"
    protocol._parse()  # room for one more
    assert protocol._inbox[-1] == str(INCOMING_QUEUE)
    assert protocol._inbox_full()


def test_the_inbox_holds_a_bounded_number_of_bytes() -> None:
    protocol = server(max_message_size=1000)
    protocol._receive_data(frame(BINARY, bytes(300)) * 5, 0.0)
    protocol._parse()
    assert (len(protocol._inbox), protocol._inboxed) == (4, 1200)  # the fourth took it over the limit
    assert protocol._inbox_full()
    assert protocol._unparsed == frame(BINARY, bytes(300))


def test_a_step_hands_wsproto_a_bounded_number_of_frames_and_pongs_once() -> None:
    protocol = server()
    protocol._receive_data(b"".join(frame(PING, b"%d" % i) for i in range(FRAMES_PER_STEP + 4)), 0.0)
    protocol._parse()
    assert protocol._tired
    assert protocol._data_to_send() == frame(PONG, b"%d" % (FRAMES_PER_STEP - 1), masked=False)
    protocol._tired = False
    protocol._parse()
    assert not protocol._tired
    assert protocol._unparsed == b""
    assert protocol._data_to_send() == frame(PONG, b"%d" % (FRAMES_PER_STEP + 3), masked=False)


def test_a_peer_that_leaves_too_much_unread_is_closed_with_1008() -> None:
    protocol = server(send_queue_size=100)
    protocol.write_message(bytes(60))
    protocol.write_message(bytes(60))  # 62 queued: within the bound, so this one goes in whole
    assert protocol._queued == 124
    assert protocol.open
    protocol.write_message(bytes(60))  # 124 over 100: the backlog is dropped
    assert protocol.closed
    assert protocol.close_code == CloseReason.POLICY_VIOLATION
    expected = frame(CLOSE, close_payload(1008, "send queue full: the client reads too slowly"), masked=False)
    assert protocol._data_to_send() == expected


# -- writing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "opcode", "sent"),
    [
        ("héllo", None, frame(TEXT, "héllo".encode(), masked=False)),
        (b"\x00\x01", None, frame(BINARY, b"\x00\x01", masked=False)),
        (bytes(300), None, frame(BINARY, bytes(300), masked=False)),
        (bytes(70_000), None, frame(BINARY, bytes(70_000), masked=False)),
        ("as binary", 2, frame(BINARY, b"as binary", masked=False)),
        ("é".encode(), 1, frame(TEXT, "é".encode(), masked=False)),
        ("", None, frame(TEXT, masked=False)),
    ],
)
def test_a_message_is_sent_as_one_frame(data: str | bytes, opcode: int | None, sent: bytes) -> None:
    protocol = server()
    protocol.write_message(data, opcode)
    assert protocol._data_to_send() == sent


def test_bad_writes_are_refused() -> None:
    protocol = server()
    with pytest.raises(ValueError, match="opcode"):
        protocol.write_message("x", opcode=9)
    with pytest.raises(UnicodeDecodeError):
        protocol.write_message(b"\xff", opcode=1)
    assert protocol._data_to_send() == b""
    assert protocol.open


def test_a_client_masks_and_a_server_reads_it() -> None:
    client = WebSocketProtocol(Connection(ConnectionType.CLIENT), WebSocketConfig())
    client.write_message("from the client")
    client.write_message(bytes(range(256)) * 300)
    client.ping(b"p")
    sent = client._data_to_send()
    assert sent[1] & 0x80  # masked
    peer = server()
    assert feed(peer, sent) == ["from the client", bytes(range(256)) * 300]
    answer = peer._data_to_send()
    assert answer == frame(PONG, b"p", masked=False)
    assert feed(client, frame(TEXT, b"from the server", masked=False), answer) == ["from the server"]
    assert feed(client, frame(TEXT, b"masked by a server")) == []
    assert client.close_code == CloseReason.PROTOCOL_ERROR


def test_writing_from_another_thread_needs_the_io_layer() -> None:
    import threading

    protocol, errors = server(), []

    def write() -> None:
        try:
            protocol.write_message("x")
        except RuntimeError as exc:
            errors.append(str(exc))

    thread = threading.Thread(target=write)
    thread.start()
    thread.join()
    assert errors == ["a WebSocket is used only from the thread that owns it"]


# -- keep-alive ------------------------------------------------------------------------------


def test_keep_alive_pings_after_silence_and_closes_without_an_answer() -> None:
    protocol = WebSocketProtocol(None, WebSocketConfig(ping_interval=10, ping_timeout=5), now=100.0)
    protocol._keep_alive(109.9)
    assert protocol._data_to_send() == b""
    protocol._keep_alive(110.0)
    assert protocol._data_to_send() == frame(PING, b"keepalive", masked=False)
    protocol._keep_alive(114.9)
    assert protocol._data_to_send() == b""
    assert protocol.open
    protocol._keep_alive(115.0)
    assert protocol.closed
    assert protocol.close_code == CloseReason.INTERNAL_ERROR
    assert protocol._data_to_send() == frame(
        CLOSE, close_payload(1011, "keepalive ping timeout"), masked=False
    )


def test_keep_alive_counts_silence_from_the_last_bytes_heard() -> None:
    protocol = WebSocketProtocol(None, WebSocketConfig(ping_interval=10, ping_timeout=5), now=0.0)
    protocol._keep_alive(10.0)
    assert protocol._data_to_send() == frame(PING, b"keepalive", masked=False)
    feed(protocol, frame(PONG, b"keepalive"), now=12.0)  # any bytes answer it
    protocol._keep_alive(21.9)
    assert protocol._data_to_send() == b""
    assert protocol.open
    protocol._keep_alive(22.0)
    assert protocol._data_to_send() == frame(PING, b"keepalive", masked=False)


def test_no_keep_alive_without_an_interval() -> None:
    protocol = server(ping_interval=None)
    protocol._keep_alive(1e9)
    assert protocol._data_to_send() == b""
    assert protocol.open


# -- wsproto made when needed (Rule 7) -------------------------------------------------------


def test_messages_pings_and_pongs_go_without_wsproto() -> None:
    protocol = WebSocketProtocol(None, WebSocketConfig(ping_interval=10, ping_timeout=5), now=0.0)
    assert feed(protocol, frame(TEXT, b"hi"), frame(BINARY, b"\x00"), frame(PONG, b"keepalive")) == [
        "hi",
        b"\x00",
    ]
    protocol.write_message("out")
    assert protocol._keep_alive(now=20.0)
    assert protocol._data_to_send() == b"\x81\x03out" + b"\x89\x09keepalive"
    assert protocol._ws is None


@pytest.mark.parametrize(
    ("data", "messages", "sent"),
    [
        pytest.param(frame(TEXT, b"a", fin=False) + frame(CONTINUATION, b"b"), ["ab"], b"", id="fragments"),
        pytest.param(frame(PING, b"p"), [], b"\x8a\x01p", id="ping"),
        pytest.param(frame(CLOSE, close_payload(1000)), [], b"\x88\x02\x03\xe8", id="close"),
    ],
)
def test_wsproto_is_made_for_the_frames_it_parses(data: bytes, messages: list[str], sent: bytes) -> None:
    protocol = server()
    assert feed(protocol, data) == messages
    assert protocol._data_to_send() == sent
    assert protocol._ws is not None


def test_closing_makes_wsproto_to_send_the_close_frame() -> None:
    protocol = server()
    protocol._start_close(CloseReason.GOING_AWAY, "bye")
    assert protocol._data_to_send() == b"\x88\x05\x03\xe9bye"
    assert protocol._ws is not None
    with pytest.raises(ConnectionClosed):
        protocol.write_message("late")
