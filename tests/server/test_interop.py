"""Clients we did not write against a real server: stdlib ``http.client`` and ``httpx``.

``http.client`` is blocking, so each test runs one whole conversation in a thread
(``trio.to_thread.run_sync``) and checks what it collected once back on the event loop.
``httpx.AsyncClient`` runs on trio through anyio. Every server is the ``server`` fixture:
127.0.0.1, port 0, the Django test site.
"""

from __future__ import annotations

import http.client
import json
import uuid

import httpx
import trio

from tests import views
from tests.helpers import port_of
from trio_c10k import Server

#: seconds each test is given as a whole
TEST_TIMEOUT = 15
#: seconds an http.client socket waits, so a hung server fails the thread instead of leaking it
SOCKET_TIMEOUT = 10
HELLO = b"Hello, world!\n"


def base_url(server: Server) -> str:
    return f"http://127.0.0.1:{port_of(server)}"


def http_client(server: Server) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", port_of(server), timeout=SOCKET_TIMEOUT)


# --- stdlib http.client ------------------------------------------------------------------------


async def test_http_client_keep_alive_reuses_one_connection(server: Server) -> None:
    def run() -> list[tuple[int, str | None, bytes, tuple[str, int]]]:
        conn = http_client(server)
        try:
            answers = []
            for target in ("/t/hello/", "/t/environ/?n=1", "/t/hello/", "/t/environ/?n=2"):
                conn.request("GET", target)
                response = conn.getresponse()
                body = response.read()
                assert conn.sock is not None, f"http.client closed the connection after {target}"
                answers.append(
                    (response.status, response.getheader("Connection"), body, conn.sock.getsockname())
                )
            return answers
        finally:
            conn.close()

    with trio.fail_after(TEST_TIMEOUT):
        answers = await trio.to_thread.run_sync(run)
    assert [status for status, _, _, _ in answers] == [200, 200, 200, 200]
    assert [connection for _, connection, _, _ in answers] == [None, None, None, None]
    assert answers[0][2] == HELLO
    assert answers[2][2] == HELLO
    assert json.loads(answers[1][2])["QUERY_STRING"] == "n=1"
    assert json.loads(answers[3][2])["QUERY_STRING"] == "n=2"
    # One socket for every request: the same local address each time, and the server saw the
    # same client port as well.
    local_addresses = {local for _, _, _, local in answers}
    assert len(local_addresses) == 1
    assert json.loads(answers[1][2])["REMOTE_PORT"] == str(local_addresses.pop()[1])
    assert server.statistics().requests == 4


async def test_http_client_post_body_is_echoed(server: Server) -> None:
    body = b"name=value&bytes=\x00\xff" * 100

    def run() -> tuple[int, str | None, bytes]:
        conn = http_client(server)
        try:
            conn.request(
                "POST", "/t/echo-body/", body=body, headers={"Content-Type": "application/octet-stream"}
            )
            response = conn.getresponse()
            return response.status, response.getheader("Content-Length"), response.read()
        finally:
            conn.close()

    with trio.fail_after(TEST_TIMEOUT):
        status, length, echoed = await trio.to_thread.run_sync(run)
    assert status == 200
    assert length == str(len(body))
    assert echoed == body


async def test_http_client_head_has_length_but_no_body(server: Server) -> None:
    def run() -> tuple[int, str | None, bytes, int, bytes]:
        conn = http_client(server)
        try:
            conn.request("HEAD", "/t/hello/")
            head = conn.getresponse()
            head_body = head.read()
            # If the server had sent the 14 body bytes anyway, they would be read as the start
            # of the next response: a GET on the same connection proves nothing was left over.
            conn.request("GET", "/t/hello/")
            get = conn.getresponse()
            return head.status, head.getheader("Content-Length"), head_body, get.status, get.read()
        finally:
            conn.close()

    with trio.fail_after(TEST_TIMEOUT):
        status, length, head_body, get_status, get_body = await trio.to_thread.run_sync(run)
    assert status == 200
    assert length == str(len(HELLO)) == "14"
    assert head_body == b""
    assert (get_status, get_body) == (200, HELLO)


async def test_http_client_chunked_upload(server: Server) -> None:
    def run() -> list[tuple[int, bytes, tuple[str, int]]]:
        conn = http_client(server)
        try:
            answers = []
            for chunks in ([b"ab", b"cd"], [b"x" * 70000, b"y" * 3, b"z" * 100000]):
                conn.request(
                    "POST",
                    "/t/echo-body/",
                    body=iter(chunks),
                    encode_chunked=True,
                    headers={"Transfer-Encoding": "chunked"},
                )
                response = conn.getresponse()
                body = response.read()
                assert conn.sock is not None, "http.client closed the connection"
                answers.append((response.status, body, conn.sock.getsockname()))
            return answers
        finally:
            conn.close()

    with trio.fail_after(TEST_TIMEOUT):
        (status, body, local), (big_status, big_body, big_local) = await trio.to_thread.run_sync(run)
    assert (status, body) == (200, b"abcd")
    assert big_status == 200
    assert big_body == b"x" * 70000 + b"y" * 3 + b"z" * 100000
    # The chunked body was read to its end, so the connection served the next request.
    assert local == big_local


async def test_http_client_large_download(server: Server) -> None:
    def run() -> tuple[int, str | None, bytes]:
        conn = http_client(server)
        try:
            conn.request("GET", "/t/file/")
            response = conn.getresponse()
            return response.status, response.getheader("Content-Length"), response.read()
        finally:
            conn.close()

    with trio.fail_after(TEST_TIMEOUT):
        status, length, body = await trio.to_thread.run_sync(run)
    assert status == 200
    assert length == str(len(views.FILE_CONTENT))
    assert len(body) == len(views.FILE_CONTENT)
    assert body == views.FILE_CONTENT


# --- httpx.AsyncClient -------------------------------------------------------------------------


async def test_httpx_get(server: Server) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with httpx.AsyncClient(base_url=base_url(server)) as client:
            response = await client.get("/t/hello/")
    assert response.status_code == 200
    assert response.http_version == "HTTP/1.1"
    assert response.headers["content-type"] == "text/plain"
    assert response.content == HELLO


async def test_httpx_post_echo(server: Server) -> None:
    body = "ünïcode ✓\n".encode() * 50
    with trio.fail_after(TEST_TIMEOUT):
        async with httpx.AsyncClient(base_url=base_url(server)) as client:
            response = await client.post("/t/echo-body/", content=body)
    assert response.status_code == 200
    assert response.content == body


async def test_httpx_concurrent_requests_get_their_own_answers(server: Server) -> None:
    count = 50
    answers: dict[int, httpx.Response] = {}

    async def get(client: httpx.AsyncClient, i: int) -> None:
        answers[i] = await client.get("/t/environ/", params={"i": i})

    with trio.fail_after(TEST_TIMEOUT):
        async with httpx.AsyncClient(base_url=base_url(server)) as client, trio.open_nursery() as nursery:
            for i in range(count):
                nursery.start_soon(get, client, i)
    assert sorted(answers) == list(range(count))
    for i, response in answers.items():
        assert response.status_code == 200
        assert response.json()["QUERY_STRING"] == f"i={i}"
    assert server.statistics().requests == count


async def test_httpx_streamed_response_arrives_while_the_view_runs(server: Server) -> None:
    key = uuid.uuid4().hex
    events = views.EVENTS[key]
    with trio.fail_after(TEST_TIMEOUT):
        try:
            async with (
                httpx.AsyncClient(base_url=base_url(server)) as client,
                client.stream("GET", f"/t/stream/{key}/") as response,
            ):
                assert response.status_code == 200
                assert response.headers["transfer-encoding"] == "chunked"
                chunks = response.aiter_raw()
                assert await anext(chunks) == b"first\n"
                # The first chunk reached the client before the view produced the second one.
                assert not events["finished"].is_set()
                events["release"].set()
                rest = b"".join([chunk async for chunk in chunks])
        finally:
            # Even when an assertion failed: do not leave the view blocking a worker thread.
            events["release"].set()
    assert rest == b"second\n"
    # The body's generator was exhausted (its finally ran) before the response ended.
    assert events["finished"].is_set()
