"""The chat demo: one room per URL, every message to everyone in the room.

``/chat/<room>/`` is the page; its socket ``/chat/<room>/ws/`` joins the room's fan-out group.
Each text message goes to every member, the sender included, as JSON
``{"user": ..., "text": ...}``: the Django username when the handshake's session is logged
in, else ``"anonymous"``. Binary messages are refused with 1003 (RFC 6455: a data type the
endpoint does not accept).
"""

import json

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from trio_c10k import Group, WebSocket, websocket

#: RFC 6455 section 7.4.1: the endpoint received a type of data it cannot accept
UNSUPPORTED_DATA = 1003


def chat_page(request: HttpRequest, room: str) -> HttpResponse:
    """The room's page: it opens the room's socket and shows what is said there."""
    return render(request, "example_site/chat.html", {"room": room})


@websocket
async def chat_ws(ws: WebSocket, room: str) -> None:
    """Relay every text message of the room to all its members, tagged with the sender."""
    user = ws.request.user
    name = user.get_username() if user.is_authenticated else "anonymous"
    group = Group(f"chat.{room}")
    group.add(ws)
    async for message in ws:
        if not isinstance(message, str):
            await ws.close(UNSUPPORTED_DATA, "this chat accepts text messages only")
            return
        group.broadcast(json.dumps({"user": name, "text": message}))
