"""The chat's data: the messages said in each room."""

from django.db import models


class ChatMessage(models.Model):
    """One message said in a chat room, kept so that newcomers see the last ones."""

    room = models.SlugField(max_length=50)
    user = models.CharField(max_length=150)
    text = models.TextField()
    sent = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["room", "-id"])]

    def __str__(self) -> str:
        return f"{self.room}: {self.user}: {self.text[:40]}"
