"""The example site's data: the chat's recent messages, the Game of Life's grid size."""

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


class LifeGrid(models.Model):
    """The side of the Game of Life's grid for the current run: one row, set by ``/reset/``.

    In the database rather than in memory, so that every server process (``--workers``) and
    every machine sees the size the last reset set.
    """

    size = models.PositiveSmallIntegerField()

    def __str__(self) -> str:
        return f"{self.size} x {self.size}"
