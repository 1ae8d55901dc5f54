"""Keep-alive without I/O: the protocol's ping and pong (``trio_c10k/_protocol.py``, Rule 5)
and the pacing of pings over time (``trio_c10k/_ws_tasks.py``'s ``Sweep``), with times passed
in, synchronously.

The sweep is driven as the keep-alive task drives it: step at the time it asks for, always
later than the step (the task sleeps until then).
"""

from __future__ import annotations

import bisect
import random

import pytest
from wsproto.connection import Connection, ConnectionType
from wsproto.frame_protocol import CloseReason

from tests.helpers import CLOSE, PING, PONG, TEXT, close_payload, feed, frame
from trio_c10k._config import WebSocketConfig
from trio_c10k._protocol import FRAMES_PER_STEP, KEEPALIVE_PING, WebSocketProtocol
from trio_c10k._ws_tasks import LOOKS_PER_STEP, PINGS_PER_STEP, Sweep


def protocol(
    config: WebSocketConfig, now: float = 0.0, side: ConnectionType = ConnectionType.SERVER
) -> WebSocketProtocol:
    return WebSocketProtocol(Connection(side), config, now=now)


# -- the ping and the pong ---------------------------------------------------------------------


def test_a_server_ping_is_the_prebuilt_frame() -> None:
    ws = protocol(WebSocketConfig(ping_interval=10, ping_timeout=5))
    assert frame(PING, b"keepalive", masked=False) == KEEPALIVE_PING
    assert ws._keep_alive(9.9) is False
    assert ws._keep_alive(10.0) is True
    assert ws._data_to_send() == KEEPALIVE_PING
    assert ws._keep_alive(14.9) is False
    assert ws._keep_alive(15.0) is True  # the 1011 close
    assert ws._data_to_send() == frame(CLOSE, close_payload(1011, "keepalive ping timeout"), masked=False)
    assert ws._keep_alive(100.0) is False  # closed: nothing more


def test_a_client_ping_is_masked() -> None:
    ws = protocol(WebSocketConfig(ping_interval=10, ping_timeout=5), side=ConnectionType.CLIENT)
    assert ws._keep_alive(10.0) is True
    sent = ws._data_to_send()
    assert sent[:2] == bytes((0x89, 0x80 | 9))
    key = sent[2:6]
    assert bytes(b ^ key[i % 4] for i, b in enumerate(sent[6:])) == b"keepalive"


def test_a_pong_answers_the_ping_and_sends_nothing() -> None:
    ws = protocol(WebSocketConfig(ping_interval=10, ping_timeout=5))
    ws._keep_alive(10.0)
    ws._data_to_send()
    assert feed(ws, frame(PONG, b"keepalive"), now=11.0) == []
    assert (ws._pinged_at, ws._heard, ws._unparsed, ws._data_to_send()) == (None, 11.0, b"", b"")
    assert ws._keep_alive(20.9) is False
    assert ws._keep_alive(21.0) is True


@pytest.mark.parametrize("payload", [b"", b"keepalive", b"x" * 125])
def test_a_pong_between_fragments_leaves_the_message_whole(payload: bytes) -> None:
    ws = protocol(WebSocketConfig())
    data = frame(TEXT, b"frag", fin=False) + frame(PONG, payload) + frame(0, b"ment")
    assert feed(ws, data) == ["fragment"]
    assert ws._data_to_send() == b""
    # Split at every point: the pong is skipped only once whole.
    for cut in range(1, len(data)):
        ws = protocol(WebSocketConfig())
        assert feed(ws, data[:cut], data[cut:]) == ["fragment"]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(frame(PONG, b"keepalive", masked=False), id="unmasked"),
        pytest.param(frame(PONG, b"x" * 126), id="too-long"),
        pytest.param(b"\x8a\xfe\x00\x05" + bytes(4) + b"short", id="long-length-encoding"),
        pytest.param(b"\xca\x80" + bytes(4), id="reserved-bit"),
        pytest.param(b"\x0a\x80" + bytes(4), id="fragmented"),
    ],
)
def test_a_pong_wsproto_refuses_still_closes_with_1002(data: bytes) -> None:
    ws = protocol(WebSocketConfig())
    feed(ws, data)
    assert ws.close_code == CloseReason.PROTOCOL_ERROR


def test_a_pong_flood_is_one_step_s_frames_at_a_time() -> None:
    ws = protocol(WebSocketConfig())
    ws._receive_data(frame(PONG) * (FRAMES_PER_STEP + 5), 0.0)
    ws._parse()
    assert ws._tired
    assert len(ws._unparsed) == 5 * len(frame(PONG))


def test_a_client_skips_the_server_s_unmasked_pong() -> None:
    ws = protocol(WebSocketConfig(), side=ConnectionType.CLIENT)
    assert feed(ws, frame(PONG, b"p", masked=False) + frame(TEXT, b"hi", masked=False)) == ["hi"]
    assert ws.open


# -- pacing ------------------------------------------------------------------------------------


class Peer(WebSocketProtocol):
    """A connection that notes what the sweep sent it: its pings (when it had been silent
    since, when pinged) and its 1011 close."""

    sent: list[Peer]  # every peer sent something, in order (the class's, set by ``run``)

    def __init__(self, config: WebSocketConfig, now: float, answers: bool) -> None:
        super().__init__(Connection(ConnectionType.SERVER), config, now=now)
        self.answers = answers
        self.pings: list[tuple[float, float]] = []
        self.closed_at: float | None = None

    def _send_frame(self, frame: bytes) -> None:
        Peer.sent.append(self)
        if frame == KEEPALIVE_PING:
            self.pings.append((self._heard, self.now))
        else:
            assert frame == CLOSE_1011
            self.closed_at = self.now

    now = 0.0


CLOSE_1011 = frame(CLOSE, close_payload(1011, "keepalive ping timeout"), masked=False)


def run(sweep: Sweep, peers: list[Peer], until: float, rtt: float = 0.0005) -> list[tuple[float, int, int]]:
    """Step ``sweep`` over ``peers`` until ``until``; peers that answer do so ``rtt`` after a
    ping. Returns each step's (time, connections looked at, pings and closes sent)."""
    websockets = set(peers)
    steps: list[tuple[float, int, int]] = []
    answers: list[tuple[float, Peer]] = []
    now = 0.0
    while now < until:
        due = [peer for when, peer in answers if when <= now]
        answers = [(when, peer) for when, peer in answers if when > now]
        for peer in due:
            feed(peer, frame(PONG, b"keepalive"), now=now)
        looked, Peer.sent, Peer.now = sweep._looked, [], now
        when = sweep.step(websockets, now)
        answers += [(now + rtt, peer) for peer in Peer.sent if peer.answers and peer.closed_at is None]
        steps.append((now, (sweep._looked - looked) % (len(sweep._snapshot) or 1 << 62), len(Peer.sent)))
        assert when > now
        now = when
    return steps


@pytest.mark.parametrize("connections", [1, 3, 10_000])
@pytest.mark.parametrize("spread", [0.0, 2.0], ids=["connected-at-once", "connected-over-2s"])
def test_pings_go_out_in_bounded_steps_and_in_time(connections: int, spread: float) -> None:
    config = WebSocketConfig(ping_interval=2, ping_timeout=2)
    sweep = Sweep(config)
    random.seed(connections)
    peers = [Peer(config, random.uniform(0, spread), answers=True) for _ in range(connections)]
    steps = run(sweep, peers, until=10.0)
    assert max(sent for _, _, sent in steps) <= PINGS_PER_STEP
    assert max(looked for _, looked, _ in steps) <= LOOKS_PER_STEP
    # Every connection silent for ping_interval is pinged within a sweep period, two where
    # the pings of every connection fall due at once and are spread over a period more.
    for peer in peers:
        assert peer.closed_at is None
        assert len(peer.pings) >= 3
        for silent_since, pinged_at in peer.pings:
            assert config.ping_interval <= pinged_at - silent_since <= 2 + 2 * sweep.period
    # Pings never go out faster than one per connection per period (in 1/8 of a period,
    # an eighth of them at most), and the steps are spread: as many per period as
    # LOOKS_PER_STEP demands, and one more per PINGS_PER_STEP pings left over.
    times = [when for when, _, _ in steps]
    for i, (now, _, _) in enumerate(steps):
        window = steps[i : bisect.bisect_left(times, now + sweep.period / 8)]
        assert sum(sent for _, _, sent in window) <= connections / 8 + PINGS_PER_STEP
    per_period = max(1, -(-connections // LOOKS_PER_STEP))
    assert len(steps) <= 10.0 / sweep.period * per_period + connections * 5 / PINGS_PER_STEP


def test_pings_spread_over_the_period_when_connections_fell_silent_apart() -> None:
    # Connections that fell silent at different times get their pings in different steps:
    # the steady state of 10,000 connections answering their pings, none burst.
    config = WebSocketConfig(ping_interval=2, ping_timeout=2)
    sweep = Sweep(config)
    peers = [Peer(config, i * 2 / 10_000, answers=True) for i in range(10_000)]
    steps = run(sweep, peers, until=10.0)
    busy = [sent for now, _, sent in steps if now > 4]
    # Some 4,000 pings a second (each connection's every ~2.3 s), in steps of ~18 on average:
    # 79 steps per period, one more now and then where a step had more than its share due.
    assert sum(busy) >= 10_000 * 2
    assert max(busy) <= PINGS_PER_STEP
    assert sum(busy) / len(busy) < PINGS_PER_STEP * 2 / 3
    assert len(busy) < 6 / sweep.period * -(-10_000 // LOOKS_PER_STEP) * 1.5


def test_silent_peers_are_closed_with_1011_in_time() -> None:
    config = WebSocketConfig(ping_interval=1, ping_timeout=2)
    sweep = Sweep(config)
    peers = [Peer(config, 0.0, answers=i % 2 == 0) for i in range(2_000)]
    steps = run(sweep, peers, until=6.0)
    assert max(sent for _, _, sent in steps) <= PINGS_PER_STEP
    for peer in peers:
        if peer.answers:
            assert peer.closed_at is None
            continue
        [(_, pinged_at)] = peer.pings
        assert peer.closed_at is not None
        assert 2 <= peer.closed_at - pinged_at <= 2 + 2 * sweep.period


def test_a_sweep_sees_connections_added_after_it_started_in_the_next() -> None:
    config = WebSocketConfig(ping_interval=1, ping_timeout=1)
    sweep = Sweep(config)
    # One fewer than two steps' worth: with the late one, the next sweep is two steps too, and
    # looks at every connection whatever the set's order.
    websockets = {protocol(config) for _ in range(LOOKS_PER_STEP * 2 - 1)}
    assert sweep.step(websockets, 0.0) == pytest.approx(sweep.period / 2)
    late = protocol(config, now=-5.0)  # silent for long
    websockets.add(late)
    assert sweep.step(websockets, sweep.period / 2) == pytest.approx(sweep.period)  # the sweep's end
    assert late._data_to_send() == b""
    sweep.step(websockets, sweep.period)
    sweep.step(websockets, sweep.period * 1.5)  # the next sweep, both its steps
    assert late._data_to_send() == KEEPALIVE_PING


def test_closed_connections_cost_no_ping() -> None:
    config = WebSocketConfig(ping_interval=1, ping_timeout=1)
    sweep = Sweep(config)
    websockets = [protocol(config) for _ in range(PINGS_PER_STEP * 2)]
    for ws in websockets[:PINGS_PER_STEP]:
        ws._start_close(1000)
        ws._data_to_send()
    assert sweep.step(websockets, 5.0) == pytest.approx(5.0 + sweep.period)  # all done in one step
    assert [bool(ws._data_to_send()) for ws in websockets] == [False] * PINGS_PER_STEP + [
        True
    ] * PINGS_PER_STEP
    assert sweep._snapshot == []  # nothing kept between sweeps
