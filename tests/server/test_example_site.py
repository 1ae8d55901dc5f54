"""The example site end to end: its pages served over a real socket, read with httpx.

The WSGI test page (``/test/wsgi/``) is parsed with the stdlib HTML parser: its forms, their
inputs and the two ``<dl>`` lists that show what Django received.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from html.parser import HTMLParser

import httpx
import pytest
import trio
import trio.testing

from example_site.chat.models import ChatMessage
from example_site.chat.views import HISTORY
from tests.helpers import login, port_of
from trio_c10k import ConnectionClosed, Server, database_sync_to_thread
from trio_c10k.client import open_websocket

#: seconds each test is given as a whole
TEST_TIMEOUT = 15
PAGE = "/test/wsgi/"


@dataclass
class Form:
    method: str
    action: str
    #: name -> value of each <input>
    inputs: dict[str, str] = field(default_factory=dict)


class WSGIPage(HTMLParser):
    """The parts of the WSGI test page the tests look at."""

    def __init__(self, html: str) -> None:
        super().__init__()
        #: the page's forms, in order
        self.forms: list[Form] = []
        #: id of each <dl> -> its (dt, [dd, ...]) pairs; a <dd> without a <dt> goes under ""
        self.lists: dict[str, list[tuple[str, list[str]]]] = {}
        self._dl: list[tuple[str, list[str]]] | None = None
        self._tag: str | None = None
        self._text = ""
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.forms.append(Form(attributes.get("method", "get"), attributes.get("action", "")))
        elif tag == "input" and self.forms:
            self.forms[-1].inputs[attributes.get("name", "")] = attributes.get("value", "")
        elif tag == "dl":
            self._dl = self.lists.setdefault(attributes.get("id", ""), [])
        elif tag in ("dt", "dd") and self._dl is not None:
            self._tag, self._text = tag, ""

    def handle_data(self, data: str) -> None:
        if self._tag:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "dl":
            self._dl = None
        elif tag == self._tag and self._dl is not None:
            if tag == "dt":
                self._dl.append((self._text, []))
            else:
                if not self._dl:
                    self._dl.append(("", []))
                self._dl[-1][1].append(self._text)
            self._tag = None


def client_for(server: Server) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port_of(server)}")


async def test_get_shows_every_value(server: Server) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with client_for(server) as client:
            response = await client.get(PAGE, params=[("text", "hello"), ("text", "two")])
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    page = WSGIPage(response.text)
    assert page.lists["get"] == [("text", ["hello", "two"])]
    assert page.lists["post"] == [("", ["(no POST parameters)"])]
    assert "This GET request was served by Django through trio-c10k." in response.text


async def test_page_has_a_get_form_and_a_post_form(server: Server) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with client_for(server) as client:
            response = await client.get(PAGE)
    assert response.status_code == 200
    page = WSGIPage(response.text)
    assert [(form.method, form.action) for form in page.forms] == [("get", ""), ("post", "")]
    get_form, post_form = page.forms
    assert get_form.inputs == {"text": "hello"}
    assert set(post_form.inputs) == {"csrfmiddlewaretoken", "text"}
    assert post_form.inputs["text"] == "world"
    assert post_form.inputs["csrfmiddlewaretoken"]
    assert page.lists["get"] == [("", ["(no GET parameters)"])]
    # The page uses {% csrf_token %}, so Django sets the CSRF cookie with it.
    assert response.cookies.get("csrftoken")


async def test_post_without_csrf_cookie_or_token_is_forbidden(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with client_for(server) as client:
            response = await client.post(PAGE, data={"text": "world"})
    assert response.status_code == 403
    assert "CSRF verification failed" in response.text
    assert "CSRF cookie not set" in caplog.text


async def test_post_with_cookie_but_without_token_is_forbidden(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with client_for(server) as client:
            page = await client.get(PAGE)
            assert client.cookies.get("csrftoken")
            response = await client.post(PAGE, data={"text": "world"})
    assert page.status_code == 200
    assert response.status_code == 403
    assert "CSRF token missing" in caplog.text


async def test_post_with_csrf_token_from_the_page(server: Server) -> None:
    value = "wörld & <friends> ✓"
    with trio.fail_after(TEST_TIMEOUT):
        async with client_for(server) as client:
            page = await client.get(PAGE)
            # httpx keeps the csrftoken cookie the GET set and sends it back with the POST.
            token = WSGIPage(page.text).forms[1].inputs["csrfmiddlewaretoken"]
            response = await client.post(
                PAGE, data={"csrfmiddlewaretoken": token, "text": value, "more": "2"}
            )
    assert page.status_code == 200
    assert response.status_code == 200, response.text
    posted = WSGIPage(response.text)
    assert "This POST request was served by Django through trio-c10k." in response.text
    # Sorted by name; the token is not shown.
    assert posted.lists["post"] == [("more", ["2"]), ("text", [value])]
    assert posted.lists["get"] == [("", ["(no GET parameters)"])]


async def test_hello(server: Server) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with client_for(server) as client:
            response = await client.get("/hello/")
    assert response.status_code == 200
    assert response.text == "Hello, world!\n"


async def test_unknown_url_is_djangos_404(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="django.request")
    with trio.fail_after(TEST_TIMEOUT):
        async with client_for(server) as client:
            response = await client.get("/no/such/page/")
    assert response.status_code == 404
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    # Django's default 404 page (DEBUG is off).
    assert "<h1>Not Found</h1>" in response.text
    assert "The requested resource was not found on this server." in response.text
    assert "Not Found: /no/such/page/" in caplog.text


# -- the chat demo --------------------------------------------------------------------------


async def test_chat_page_names_the_room(server: Server) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with client_for(server) as client:
            response = await client.get("/chat/lobby/")
    assert response.status_code == 200
    assert "<h1>Chat: lobby</h1>" in response.text
    assert "/ws/`" in response.text  # the page opens the room's socket


def room() -> str:
    """A room no other test uses (a room keeps its history)."""
    return f"room-{uuid.uuid4().hex[:10]}"


async def test_chat_relays_to_the_whole_room_tagged_with_the_user(server: Server) -> None:
    base = f"ws://127.0.0.1:{port_of(server)}"
    cookies = await login(server, "grace")
    lab = room()
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            open_websocket(f"{base}/chat/{lab}/ws/", headers=[("Cookie", cookies)]) as grace,
            open_websocket(f"{base}/chat/{lab}/ws/") as anonymous,
            open_websocket(f"{base}/chat/{room()}/ws/") as outsider,
        ):
            # A client has its 101 before the server runs its handler, which joins the room:
            # every handler has joined once they all wait (for a message, or the history).
            await trio.testing.wait_all_tasks_blocked()
            grace.write_message("hello, lab")
            for ws in (grace, anonymous):  # the sender gets it too
                assert json.loads(await ws.read_message()) == {"user": "grace", "text": "hello, lab"}
            anonymous.write_message("hi grace")
            for ws in (grace, anonymous):
                assert json.loads(await ws.read_message()) == {"user": "anonymous", "text": "hi grace"}
            outsider.write_message("anyone?")
            # The first message the other room's member sees is its own: nothing leaked in.
            assert json.loads(await outsider.read_message()) == {"user": "anonymous", "text": "anyone?"}


async def test_chat_refuses_binary_messages_with_1003(server: Server) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with open_websocket(f"ws://127.0.0.1:{port_of(server)}/chat/{room()}/ws/") as ws:
            ws.write_message(b"\x00\x01")
            assert await ws.read_message() is None
            assert ws.close_code == 1003
            with pytest.raises(ConnectionClosed):
                ws.write_message("too late")


async def test_chat_history_survives_a_reconnect(server: Server) -> None:
    url = f"ws://127.0.0.1:{port_of(server)}/chat/{room()}/ws/"
    said = [f"message {i}" for i in range(HISTORY + 3)]
    with trio.fail_after(TEST_TIMEOUT):
        async with open_websocket(url) as ws:
            for text in said:
                ws.write_message(text)
                assert json.loads(await ws.read_message())["text"] == text
        # Stored by the handler after each broadcast: wait until the last one is in (polled:
        # the database has no event to wait on).
        while True:
            count = await database_sync_to_thread(ChatMessage.objects.filter(text=said[-1]).count)()
            if count:
                break
            await trio.sleep(0.01)
        async with open_websocket(url) as again:
            replayed = [json.loads(await again.read_message()) for _ in range(HISTORY)]
            again.write_message("live")
            live = json.loads(await again.read_message())
    # The last HISTORY messages, oldest first, marked as history; then the live ones.
    assert replayed == [{"user": "anonymous", "text": t, "history": True} for t in said[-HISTORY:]]
    assert live == {"user": "anonymous", "text": "live"}
