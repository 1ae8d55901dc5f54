"""``metrics_view``: the server's numbers moving under a scripted load over real sockets, read
from the view's answer as Prometheus parses it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families
from wsproto.frame_protocol import CloseReason

from tests import views
from tests.helpers import Client, RawWebSocket, StartServer, header, url
from trio_c10k import Server, WebSocket, WebSocketConfig
from trio_c10k._frames import encode_frame
from trio_c10k.client import open_websocket

Values = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(server: Server, path: str = "/t/metrics/") -> Values:
    """The samples of one scrape: (name, labels) -> value."""
    client = await Client.open(server)
    response, body = await client.get(path)
    await client.aclose()
    assert response.status_code == 200
    assert (header(response, b"content-type") or b"").startswith(b"text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def value(values: Values, name: str, **labels: str) -> float:
    return values.get((name, tuple(sorted(labels.items()))), 0)


async def handshake(server: Server, **headers: str) -> int:
    """A WebSocket handshake to the echo handler, with ``headers`` replacing the valid ones;
    the answer's status."""
    valid = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    client = await Client.open(server)
    response, _ = await client.get("/t/ws/echo/", list({**valid, **headers}.items()))
    await client.aclose()
    return response.status_code


async def test_the_counters_move_with_requests_handshakes_and_messages(start_server: StartServer) -> None:
    server = await start_server()
    with trio.fail_after(20):
        before = await scrape(server)
        assert value(before, "trio_c10k_worker_threads") == server.config.threads
        assert ("trio_c10k_broker_up", ()) not in before  # no --broker
        # Requests of each status class (the scrape itself is one more 2xx each time).
        client = await Client.open(server)
        assert (await client.get("/t/hello/"))[0].status_code == 200
        assert (await client.get("/t/no-such-page/"))[0].status_code == 404
        await client.aclose()
        client = await Client.open(server)
        assert (await client.get("/t/error/"))[0].status_code == 500
        await client.aclose()
        # Refused handshakes: a foreign origin, a bad key, another version.
        assert await handshake(server, Origin="https://elsewhere.example") == 403
        assert await handshake(server, **{"Sec-WebSocket-Key": "short"}) == 400
        assert await handshake(server, **{"Sec-WebSocket-Version": "8"}) == 426
        # Echo messages: 3 in, 3 out, while the connection is open.
        async with open_websocket(url(server, "/t/ws/echo/")) as ws:
            for text in ("one", "two", "three"):
                ws.write_message(text)
                assert await ws.read_message() == text
            during = await scrape(server)
        after = await scrape(server)

    def moved(values: Values, name: str, **labels: str) -> float:
        return value(values, name, **labels) - value(before, name, **labels)

    assert moved(after, "trio_c10k_http_responses_total", status_class="2xx") == 3  # hello, 2 scrapes
    assert moved(after, "trio_c10k_http_responses_total", status_class="4xx") == 4  # 404, 403, 400, 426
    assert moved(after, "trio_c10k_http_responses_total", status_class="5xx") == 1
    assert moved(after, "trio_c10k_http_responses_total", status_class="1xx") == 1  # the 101
    for status in ("403", "400", "426"):
        assert moved(after, "trio_c10k_websocket_handshakes_refused_total", status=status) == 1
    assert moved(after, "trio_c10k_websocket_messages_received_total") == 3
    assert moved(after, "trio_c10k_websocket_messages_sent_total") == 3
    # Each message is a 2-byte header, a 4-byte mask and the text; each echo a 2-byte header.
    assert moved(during, "trio_c10k_websocket_received_bytes_total") == 3 * 6 + len("onetwothree")
    assert moved(during, "trio_c10k_websocket_sent_bytes_total") == 3 * 2 + len("onetwothree")
    assert value(during, "trio_c10k_websockets") == 1
    assert value(during, "trio_c10k_connections") == 2  # the WebSocket and the scrape's
    assert value(during, "trio_c10k_worker_threads_busy") == 1  # the scrape's view
    assert value(after, "trio_c10k_websockets") == 0


async def test_a_slow_consumer_closed_is_counted(start_server: StartServer) -> None:
    server = await start_server(websocket=WebSocketConfig(send_queue_size=256 * 1024, close_timeout=1))
    key = uuid.uuid4().hex
    with trio.fail_after(20):
        slow = await RawWebSocket.open(server, f"/t/ws/flood/{key}/")  # never reads
        await trio.to_thread.run_sync(views.WS_EVENTS[key]["done"].wait, 10)
        assert views.WS_EVENTS[key]["close_code"] is CloseReason.POLICY_VIOLATION
        values = await scrape(server)
        await slow.stream.aclose()
    assert value(values, "trio_c10k_websocket_slow_consumers_closed_total") == 1
    # The flood's messages were sent (64 KiB each) until the queue overflowed; the bytes count
    # what the socket took, not what was queued and dropped.
    sent = value(values, "trio_c10k_websocket_messages_sent_total")
    assert sent >= 4
    assert 65536 < value(values, "trio_c10k_websocket_sent_bytes_total") < sent * 65536


async def backlogged(server: Server) -> tuple[RawWebSocket, WebSocket, int]:
    """A client of the echo handler that does not read, and its server-side WebSocket written
    to (60,000-byte messages, one per scheduling round, each straight to the socket) until the
    kernel refuses bytes and the writer task is stuck sending the rest; the bytes written."""
    raw = await RawWebSocket.open(server, "/t/ws/echo/")
    await trio.testing.wait_all_tasks_blocked()
    (ws,) = server.websockets
    written = 0
    while not ws._writer_running:
        ws.write_message(b"x" * 60000)
        written += len(encode_frame(b"x" * 60000))
        await trio.testing.wait_all_tasks_blocked()  # a new round: the next frame goes straight out
    assert ws._queued == 0  # the writer task took the rest of the frame
    return raw, ws, written


async def test_the_send_queue_bytes_count_what_waits_for_a_peer_that_does_not_read(
    start_server: StartServer,
) -> None:
    """The bytes a client that does not read leaves waiting, as the view reads them: what the
    kernel has not taken (written less sent, both read in the same step), the rest of the
    batch the writer task is writing and the frames queued behind it; 0 again once the client
    read everything."""
    server = await start_server(websocket=WebSocketConfig(send_queue_size=64 * 1024 * 1024))
    with trio.fail_after(20):
        raw, ws, written = await backlogged(server)
        for _ in range(3):  # queued: the writer task runs
            ws.write_message(b"y" * 1000)
        written += 3 * len(encode_frame(b"y" * 1000))
        assert list(server.counters.backlogged) == [ws]
        stuck = await scrape(server)
        received = 0
        while received < written:  # the client reads everything: the writer task ends
            received += len(await raw.stream.receive_some(1 << 20))
        await trio.testing.wait_all_tasks_blocked()
        assert not server.counters.backlogged
        drained = await scrape(server)
        await raw.stream.aclose()
    waiting = value(stuck, "trio_c10k_websocket_send_queue_bytes")
    assert waiting == written - value(stuck, "trio_c10k_websocket_sent_bytes_total")
    assert waiting > 3 * 1004  # the rest of the frame the kernel took only part of counts too
    assert value(drained, "trio_c10k_websocket_send_queue_bytes") == 0
    assert value(drained, "trio_c10k_websocket_sent_bytes_total") == received == written


async def test_the_send_queue_bytes_of_a_connection_lost_go_back_to_zero(start_server: StartServer) -> None:
    server = await start_server(websocket=WebSocketConfig(send_queue_size=64 * 1024 * 1024))
    with trio.fail_after(20):
        raw, ws, written = await backlogged(server)
        ws.write_message(b"y" * 1000)
        written += len(encode_frame(b"y" * 1000))
        stuck = await scrape(server)
        await trio.aclose_forcefully(raw.stream)  # unread bytes: a reset
        await ws.wait_closed()
        await trio.testing.wait_all_tasks_blocked()  # the writer task ended
        assert not server.counters.backlogged
        lost = await scrape(server)
    waiting = value(stuck, "trio_c10k_websocket_send_queue_bytes")
    assert waiting == written - value(stuck, "trio_c10k_websocket_sent_bytes_total") > 1004
    assert value(lost, "trio_c10k_websocket_send_queue_bytes") == 0


class _Unwalkable(set[WebSocket]):
    def __iter__(self) -> Iterator[WebSocket]:
        raise AssertionError("a scrape walked the connections")


async def test_a_scrape_walks_no_idle_connection(start_server: StartServer) -> None:
    """The numbers of a server with idle WebSockets are read without visiting them: a read
    costs the same at 100,000 connections as at none."""
    server = await start_server()
    with trio.fail_after(20):
        raws = [await RawWebSocket.open(server, "/t/ws/echo/") for _ in range(3)]
        await trio.testing.wait_all_tasks_blocked()
        websockets = server.websockets
        server.websockets = _Unwalkable(websockets)
        try:
            values = await scrape(server)
        finally:
            server.websockets = websockets
        for raw in raws:
            await raw.stream.aclose()
    assert value(values, "trio_c10k_websockets") == 3
    assert value(values, "trio_c10k_websocket_send_queue_bytes") == 0


async def test_mounted_behind_staff_member_required_it_sends_anonymous_users_to_log_in(
    server: Server,
) -> None:
    client = await Client.open(server)
    with trio.fail_after(10):
        response, _ = await client.get("/t/metrics-staff/")
    await client.aclose()
    assert response.status_code == 302
    assert header(response, b"location") == b"/t/login/?next=/t/metrics-staff/"
