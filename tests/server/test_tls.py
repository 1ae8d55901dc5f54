"""HTTPS and wss:// served directly, over real TLS sockets on 127.0.0.1.

The certificates are throwaway ones from ``trustme``. The clients are ones this project did not
write: trio's ``SSLStream`` (the stdlib's TLS) under an h11 client, and the ``websockets``
library's client in a thread.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import ssl
import uuid
from pathlib import Path

import pytest
import trio
import trio.testing
import trustme
from websockets.sync.client import connect as websockets_connect
from wsproto.events import CloseConnection, TextMessage
from wsproto.frame_protocol import CloseReason

from tests import views
from tests.helpers import Client, RawWebSocket, connect, port_of, read_until_closed
from trio_c10k import HandshakeRejected, Server, TLSConfig, WebSocketConfig
from trio_c10k.client import _handshake

from ..conftest import StartServer


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def certificate(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> TLSConfig:
    """The server's certificate for 127.0.0.1 and localhost, as PEM files, in a ``TLSConfig``."""
    directory = tmp_path_factory.mktemp("tls")
    issued = ca.issue_cert("127.0.0.1", "localhost")
    issued.cert_chain_pems[0].write_to_path(str(directory / "cert.pem"))
    issued.private_key_pem.write_to_path(str(directory / "key.pem"))
    return TLSConfig(certfile=str(directory / "cert.pem"), keyfile=str(directory / "key.pem"))


@pytest.fixture(scope="module")
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
async def tls_server(start_server: StartServer, certificate: TLSConfig) -> Server:
    return await start_server(header_timeout=1.0, tls=certificate)


async def https_client(server: Server, context: ssl.SSLContext) -> Client:
    raw = await connect(server)
    stream = trio.SSLStream(raw, context, server_hostname="127.0.0.1", https_compatible=True)
    await stream.do_handshake()
    return Client(stream)  # type: ignore[arg-type]  # any trio stream does


async def test_a_view_over_https_knows_it(tls_server: Server, client_context: ssl.SSLContext) -> None:
    client = await https_client(tls_server, client_context)
    for _ in range(2):  # keep-alive over TLS
        response, body = await client.get("/t/environ/")
        assert response.status_code == 200
        assert json.loads(body)["wsgi.url_scheme"] == "https"
    await client.aclose()


CONTENT = bytes(range(256)) * 12_000  # 3 MB: the kernel takes it in several writes


@pytest.mark.parametrize("path", ["/t/big/3000000/", "/t/big-file/0/", "/t/big-file/1000001/"])
async def test_large_bodies_arrive_whole(
    tls_server: Server,
    client_context: ssl.SSLContext,
    path: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Buffered bodies go through writev, files through the file path; over TLS both are
    # encrypted first.
    file = tmp_path / "big.bin"
    file.write_bytes(CONTENT)
    monkeypatch.setattr(views, "BIG_FILE", str(file))
    client = await https_client(tls_server, client_context)
    response, body = await client.get(path)
    assert response.status_code == 200
    if "big-file" in path:
        assert body == CONTENT[int(path.split("/")[3]) :]
    else:
        assert body == b"x" * 3_000_000
    await client.aclose()


@pytest.fixture
def websockets_client(tls_server: Server, client_context: ssl.SSLContext) -> tuple[str, ssl.SSLContext]:
    return f"wss://127.0.0.1:{port_of(tls_server)}/t/ws/echo/", client_context


async def test_wss_echo_with_the_websockets_client(websockets_client: tuple[str, ssl.SSLContext]) -> None:
    address, context = websockets_client
    messages: list[str | bytes] = ["héllo", b"\x00" * 200_000, *(f"message {i}" for i in range(500))]

    def exchange() -> list[str | bytes]:
        with websockets_connect(address, ssl=context, open_timeout=5, max_size=None) as ws:
            for message in messages:  # all sent before any is read: the server's queue and flusher work
                ws.send(message)
            return [ws.recv(timeout=10) for _ in messages]

    with trio.fail_after(30):
        assert await trio.to_thread.run_sync(exchange) == messages


async def test_plain_http_on_the_tls_port_gets_a_400(
    tls_server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "trio_c10k")
    stream = await connect(tls_server)
    await stream.send_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    with trio.fail_after(10):
        answer = await read_until_closed(stream)
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert answer.endswith(b"\r\n\r\nThis port speaks HTTPS: use an https:// URL.\n")
    assert [r.getMessage().split(": ", 1)[1] for r in caplog.records if r.name == "trio_c10k.tls"] == [
        "plain HTTP on a TLS port; answered 400"
    ]


async def test_a_stalled_handshake_is_dropped(tls_server: Server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "trio_c10k")
    stream = await connect(tls_server)
    await stream.send_all(b"\x16\x03\x01")  # the start of a ClientHello, then nothing
    with trio.fail_after(10):
        assert await read_until_closed(stream) == b""
    assert [r.getMessage().split(": ", 1)[1] for r in caplog.records if r.name == "trio_c10k.tls"] == [
        "no TLS handshake within 1 s"
    ]


async def test_a_failed_handshake_is_one_info_line(
    tls_server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "trio_c10k")
    raw = await connect(tls_server)
    untrusting = trio.SSLStream(raw, ssl.create_default_context(), server_hostname="127.0.0.1")
    with pytest.raises(trio.BrokenResourceError) as raised:
        await untrusting.do_handshake()  # it does not know the test CA
    assert isinstance(raised.value.__cause__, ssl.SSLCertVerificationError)
    await trio.aclose_forcefully(raw)
    await trio.testing.wait_all_tasks_blocked()  # the server has read the alert, or the end
    records = [r for r in caplog.records if r.name == "trio_c10k.tls"]
    assert len(records) == 1, records
    assert records[0].levelno == logging.INFO
    assert (
        "during the TLS handshake" in records[0].getMessage()
        or "TLS handshake failed" in records[0].getMessage()
    )
    assert not any(r.exc_info for r in caplog.records)


async def wss(server: Server, context: ssl.SSLContext, path: str, origin: str | None = None) -> RawWebSocket:
    """A wsproto client over trio's ``SSLStream``, reading events one by one."""
    stream = trio.SSLStream(await connect(server), context, server_hostname="127.0.0.1")
    connection, _, received = await _handshake(stream, f"127.0.0.1:{port_of(server)}", path, (), origin, ())  # type: ignore[arg-type]
    connection.receive_data(received)
    return RawWebSocket(stream, connection)  # type: ignore[arg-type]  # any trio stream does


async def test_the_handshake_request_is_secure(tls_server: Server, client_context: ssl.SSLContext) -> None:
    raw = await wss(tls_server, client_context, "/t/ws/info/1/")
    info = json.loads((await raw.next_event()).data)
    assert info["scheme"] == "https"


async def test_the_origin_check_compares_https_origins(
    tls_server: Server, client_context: ssl.SSLContext
) -> None:
    own = f"https://127.0.0.1:{port_of(tls_server)}"
    raw = await wss(tls_server, client_context, "/t/ws/hello/", origin=own)
    assert (await raw.next_event()).data == "Hello!"
    with pytest.raises(HandshakeRejected) as refused:  # the same host, in plain text: another origin
        await wss(
            tls_server, client_context, "/t/ws/hello/", origin=f"http://127.0.0.1:{port_of(tls_server)}"
        )
    assert refused.value.status == 403


async def test_a_broadcast_reaches_every_tls_member(
    tls_server: Server, client_context: ssl.SSLContext
) -> None:
    members = [await wss(tls_server, client_context, "/t/ws/relay/tls-room/") for _ in range(3)]
    await trio.testing.wait_all_tasks_blocked()  # every handler has joined the group
    for sender in members:
        await sender.send(TextMessage(data=f"from {members.index(sender)}" * 100))
        for member in members:  # one frame built once, encrypted for each member
            assert (await member.next_event()).data == f"from {members.index(sender)}" * 100


async def test_a_tls_client_that_does_not_read_is_reset(
    start_server: StartServer,
    certificate: TLSConfig,
    client_context: ssl.SSLContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = WebSocketConfig(send_queue_size=256 * 1024, close_timeout=1)
    server = await start_server(websocket=config, tls=certificate)
    key = uuid.uuid4().hex
    slow = await wss(server, client_context, f"/t/ws/flood/{key}/")  # never reads
    fast = await wss(server, client_context, "/t/ws/echo/")
    await trio.to_thread.run_sync(views.WS_EVENTS[key]["done"].wait, 10)
    assert views.WS_EVENTS[key]["close_code"] is CloseReason.POLICY_VIOLATION
    for i in range(100):  # the others are served as before
        await fast.send(TextMessage(data=f"message {i}"))
        assert (await fast.next_event()).data == f"message {i}"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(m.endswith("(the peer reads too slowly); resetting the TLS connection") for m in warnings)
    with trio.fail_after(10), pytest.raises(trio.BrokenResourceError):  # a reset, not a close frame
        await read_until_closed(slow.stream)  # type: ignore[arg-type]  # any trio stream does


@pytest.fixture(scope="module")
def client_certificate(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("client@example.com")


@pytest.fixture
async def mtls_server(
    start_server: StartServer,
    certificate: TLSConfig,
    tmp_path: Path,
    ca: trustme.CA,
) -> Server:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    required = dataclasses.replace(certificate, ca_certs=str(ca_file), cert_reqs="required")
    return await start_server(header_timeout=1.0, tls=required)


async def test_a_client_certificate_is_required(
    mtls_server: Server, ca: trustme.CA, client_context: ssl.SSLContext, client_certificate: trustme.LeafCert
) -> None:
    with_certificate = ssl.create_default_context()
    ca.configure_trust(with_certificate)
    client_certificate.configure_cert(with_certificate)
    client = await https_client(mtls_server, with_certificate)
    response, _ = await client.get("/t/hello/")
    assert response.status_code == 200
    await client.aclose()
    without = await https_client(mtls_server, client_context)  # TLS 1.3: refused after the handshake
    with pytest.raises(trio.BrokenResourceError):
        await without.get("/t/hello/")


async def test_a_certificate_from_another_ca_is_refused(mtls_server: Server, ca: trustme.CA) -> None:
    stranger = ssl.create_default_context()
    ca.configure_trust(stranger)
    trustme.CA().issue_cert("client@example.com").configure_cert(stranger)
    client = await https_client(mtls_server, stranger)
    with pytest.raises(trio.BrokenResourceError):
        await client.get("/t/hello/")


async def test_a_reloaded_certificate_is_served_to_new_connections(
    start_server: StartServer, ca: trustme.CA, tmp_path: Path, client_context: ssl.SSLContext
) -> None:
    def write(common_name: str) -> str:
        issued = ca.issue_cert("127.0.0.1", common_name)
        issued.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "both.pem"))
        return issued.cert_chain_pems[0].bytes().decode()

    first = write("first.example")
    server = await start_server(tls=TLSConfig(certfile=str(tmp_path / "both.pem")))
    before = await https_client(server, client_context)
    second = write("second.example")
    assert server.tls is not None
    assert await trio.to_thread.run_sync(server.tls.reload)
    after = await https_client(server, client_context)
    served = [ssl.DER_cert_to_PEM_cert(c.stream.getpeercert(binary_form=True)) for c in (before, after)]  # type: ignore[attr-defined]
    assert served == [first, second]
    for client in (before, after):  # the open connection keeps its own certificate, and works
        response, _ = await client.get("/t/hello/")
        assert response.status_code == 200
        await client.aclose()


async def test_a_response_ends_with_close_notify(tls_server: Server, client_context: ssl.SSLContext) -> None:
    # Not https_compatible: the client's TLS layer refuses a connection closed without the
    # close_notify alert as a truncation.
    stream = trio.SSLStream(await connect(tls_server), client_context, server_hostname="127.0.0.1")
    await stream.send_all(b"GET /t/hello/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    response = await read_until_closed(stream)  # type: ignore[arg-type]  # any trio stream does
    assert response.startswith(b"HTTP/1.1 200 ")
    assert response.endswith(b"Hello, world!\n")


async def test_an_error_answer_ends_with_close_notify(
    tls_server: Server, client_context: ssl.SSLContext
) -> None:
    stream = trio.SSLStream(await connect(tls_server), client_context, server_hostname="127.0.0.1")
    await stream.send_all(b"GET /t/hello/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX\x01: y\r\n\r\n")
    response = await read_until_closed(stream)  # type: ignore[arg-type]  # any trio stream does
    assert response.startswith(b"HTTP/1.1 400 ")


async def test_a_closed_wss_connection_ends_with_close_notify(
    tls_server: Server, client_context: ssl.SSLContext
) -> None:
    raw = await wss(tls_server, client_context, "/t/ws/echo/")
    await raw.send(TextMessage(data="last"))
    assert (await raw.next_event()).data == "last"
    await raw.send(CloseConnection(code=CloseReason.NORMAL_CLOSURE))
    assert (await raw.next_event()).code == CloseReason.NORMAL_CLOSURE
    assert await read_until_closed(raw.stream) == b""  # then TLS ends, not a truncation
