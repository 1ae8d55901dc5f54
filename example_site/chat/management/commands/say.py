"""``python manage.py say ROOM TEXT``: say something in a chat room from outside the server.

The message goes to every member of the room, whichever server process holds them, as the
room's own messages do (``{"user": ..., "text": ...}``, from ``--user``, ``system`` by
default), and joins the room's history. No server runs in this process: ``Group.broadcast``
publishes through the broker (the setting or environment variable ``TRIO_C10K_BROKER``, the
same Redis as the servers' ``--broker``) and returns once Redis took it, with the number of
server processes it went to.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.validators import validate_slug

from example_site.chat.models import ChatMessage
from trio_c10k import BrokerError, Group


class Command(BaseCommand):
    help = "Say TEXT in the chat room ROOM, to its members in every server process (needs a broker)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("room", help="the room, as in /chat/ROOM/")
        parser.add_argument("text", help="what to say")
        parser.add_argument("--user", default="system", help="the name shown as the sender (system)")

    def handle(self, *args: Any, room: str, text: str, user: str, **options: Any) -> None:
        try:
            validate_slug(room)
        except ValidationError:
            raise CommandError(f"{room!r} is not a room name: letters, digits, - and _") from None
        try:
            processes = Group(f"chat.{room}").broadcast(json.dumps({"user": user, "text": text}))
        except BrokerError as exc:
            raise CommandError(str(exc)) from None
        ChatMessage.objects.create(room=room, user=user, text=text)
        self.stdout.write(f"Said in {room}: sent to {processes} server processes")
