"""The Game of Life's data: the side of the grid for the current run."""

from django.db import models


class LifeGrid(models.Model):
    """The side of the Game of Life's grid for the current run: one row, set by ``/reset/``.

    In the database rather than in memory, so that every server process (``--workers``) and
    every machine sees the size the last reset set.
    """

    size = models.PositiveSmallIntegerField()

    def __str__(self) -> str:
        return f"{self.size} x {self.size}"
