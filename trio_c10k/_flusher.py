"""One task per trio run that writes, once a scheduling round is over, what each connection
queued during it (``_websocket``, Rule 2): one write per connection per round, however many
frames it got.

Rule 1: a connection is added at most once per round (its ``_flush_due`` says so) and flushed
in the order added; the task parks while there is nothing to flush and costs nothing then.
Rule 2: it is a system task of the run: it serves every connection of the run, whichever
nursery holds them, and ends with the run. An exception from one connection closes that one
(1006) and is logged; it never ends the run.
"""

from __future__ import annotations

import logging
from typing import Protocol

import trio
from wsproto.frame_protocol import CloseReason

log = logging.getLogger("trio_c10k.websocket")


class Flushable(Protocol):
    """What the flusher needs of a connection (``WebSocket`` has it)."""

    def _flush(self) -> None:
        """Write what was queued this round."""

    @property
    def _peer(self) -> str:
        """The peer, for the log."""

    def _mark_closed(self, code: int, reason: str) -> None:
        """The connection is over."""


class _Flusher:
    """The connections that got a frame this scheduling round, for one trio run.

    One task writes, once the round is over, what each of them queued after its first
    frame: one write per connection per round, however many frames it got.
    """

    __slots__ = ("_pending", "_task")

    def __init__(self) -> None:
        self._pending: list[Flushable] = []
        self._task: trio.lowlevel.Task | None = None  # the flusher's task, while it is parked

    def add(self, ws: Flushable) -> None:
        """Flush ``ws`` after this round."""
        self._pending.append(ws)
        if self._task is not None:
            task, self._task = self._task, None
            trio.lowlevel.reschedule(task)

    async def run(self) -> None:
        while True:
            if not self._pending:
                self._task = trio.lowlevel.current_task()
                await trio.lowlevel.wait_task_rescheduled(self._abort)
            pending, self._pending = self._pending, []
            for ws in pending:
                try:
                    ws._flush()
                except Exception:  # a system task: an exception here would end the whole run
                    log.exception("%s: unexpected error writing a WebSocket", ws._peer)
                    ws._mark_closed(CloseReason.ABNORMAL_CLOSURE, "")

    def _abort(self, _: object) -> trio.lowlevel.Abort:
        self._task = None
        return trio.lowlevel.Abort.SUCCEEDED


_FLUSHER: trio.lowlevel.RunVar[_Flusher] = trio.lowlevel.RunVar("trio_c10k_flusher")


def flusher() -> _Flusher:
    """This trio run's flusher, started on first use (a system task: it serves every
    connection of the run, whichever nursery holds them, and ends with the run)."""
    try:
        return _FLUSHER.get()
    except LookupError:
        flusher = _Flusher()
        _FLUSHER.set(flusher)
        trio.lowlevel.spawn_system_task(flusher.run, name="trio_c10k websocket flusher")
        return flusher
