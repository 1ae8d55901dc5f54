"""The chat app's configuration."""

from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "example_site.chat"
    verbose_name = "Chat"
