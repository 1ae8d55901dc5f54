"""The chat's views: one room per URL, every message to everyone in the room.

``/chat/<room>/`` is the page; its socket ``/chat/<room>/ws/`` joins the room's fan-out group.
Each text message goes to every member, the sender included, as JSON
``{"user": ..., "text": ...}``: the Django username when the handshake's session is logged
in, else ``"anonymous"``. Binary messages are refused with 1003 (RFC 6455: a data type the
endpoint does not accept).

The last ``HISTORY`` messages of a room are stored (``ChatMessage``, through
``database_sync_to_thread``: the ORM never runs in the event loop) and replayed to whoever
joins, marked ``"history": true``. A newcomer joins the room before its history is read, so
that nothing said meanwhile is missed; a message said in that moment (a database query)
may then come before the history.
"""

import json

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from trio_c10k import Group, WebSocket, database_sync_to_thread, websocket

from .models import ChatMessage

#: RFC 6455 section 7.4.1: the endpoint received a type of data it cannot accept
UNSUPPORTED_DATA = 1003
#: messages replayed to a newcomer
HISTORY = 20


@database_sync_to_thread
def recent_messages(room: str) -> list[tuple[str, str]]:
    """The room's last ``HISTORY`` messages, oldest first, as (user, text)."""
    latest = ChatMessage.objects.filter(room=room).order_by("-id")[:HISTORY]
    return [(message.user, message.text) for message in reversed(latest)]


@database_sync_to_thread
def store_message(room: str, user: str, text: str) -> None:
    ChatMessage.objects.create(room=room, user=user, text=text)


def chat_page(request: HttpRequest, room: str) -> HttpResponse:
    """The room's page: it opens the room's socket and shows what is said there."""
    return render(request, "chat/chat.html", {"room": room})


@websocket
async def chat_ws(ws: WebSocket, room: str) -> None:
    """Relay every text message of the room to all its members, tagged with the sender."""
    user = ws.request.user
    name = user.get_username() if user.is_authenticated else "anonymous"
    group = Group(f"chat.{room}")
    group.add(ws)  # first: what is said while the history loads is not missed
    for user_name, text in await recent_messages(room):
        ws.write_message(json.dumps({"user": user_name, "text": text, "history": True}))
    async for message in ws:
        if not isinstance(message, str):
            await ws.close(UNSUPPORTED_DATA, "this chat accepts text messages only")
            return
        group.broadcast(json.dumps({"user": name, "text": message}))  # first: the room waits for no disk
        await store_message(room, name, message)
