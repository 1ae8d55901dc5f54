"""The Game of Life's views, the server side: a relay that knows nothing of the rules.

Every cell of the grid is a WebSocket client of its own (``manage.py gameoflife`` runs them
all) on ``/worker/?row=R&col=C``. A cell subscribes to its neighbours, then sends its state at
each step; the server relays each state to the cell's subscribers and to the watch pages
(``/``, whose socket is ``/watcher/``). docs/gameoflife.md describes the protocol.

Rule 1: the server counts no cells and keeps no barrier. "Every cell is connected" and "every
cell is subscribed" are known to the command, which runs all the cells as tasks of one
process; here each connection is handled on its own.
Rule 2: a connection's messages are handled in order, so the ``ready`` answer tells a cell
that every ``subscribe`` it sent before is in place.
Rule 3: a state goes out as ``R C STEP ALIVE`` through ``Group.broadcast``, which builds the
frame once for all the recipients; the server never parses or checks a step beyond its form.
"""

from __future__ import annotations

import re

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, QueryDict
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from trio_c10k import Group, WebSocket, database_sync_to_thread, websocket

from .models import LifeGrid

#: the side of the grid until a run sets it
DEFAULT_SIZE = 32
#: the largest side a run may set: 200 x 200 = 40,000 cells, already two client processes'
#: worth of sockets at this machine's open-file limit (20,000)
MAX_SIZE = 200
#: the watch pages, which receive every relayed state and every new size
WATCHERS = Group("life.watchers")

# ASCII digits only (str.isdigit() accepts "²"), no leading zeros, so that a relayed number
# is written one way; at most 18 digits, far from the limit of int() on long strings.
_INT = "(0|[1-9][0-9]{0,17})"
_STATE = re.compile(rf"state {_INT} ([01])")
_SUBSCRIBE = re.compile(rf"subscribe {_INT} {_INT}")
_NUMBER = re.compile(_INT)
_UNKNOWN = "unknown message: expected subscribe R C, ready or state STEP 0|1"


def _grid_size() -> int:
    """The size the last /reset/ set (in the database: every server process sees it)."""
    grid = LifeGrid.objects.filter(pk=1).first()
    return grid.size if grid is not None else DEFAULT_SIZE


grid_size = database_sync_to_thread(_grid_size)


def page(request: HttpRequest) -> HttpResponse:
    """The watch page: the grid, coloured live from ``/watcher/``."""
    return render(request, "life/life.html")


@csrf_exempt  # called by the gameoflife command, which has no CSRF token
@require_POST
def reset(request: HttpRequest) -> HttpResponse:
    """Set the size of the next run from the form field ``size`` and tell the watchers.

    Answers 200 with the size, 400 with the reason if ``size`` is not an integer from 1 to
    MAX_SIZE, 405 to any method but POST.
    """
    text = request.POST.get("size", "")
    if not _NUMBER.fullmatch(text) or not 1 <= int(text) <= MAX_SIZE:
        return HttpResponseBadRequest(
            f"size must be an integer from 1 to {MAX_SIZE}\n", content_type="text/plain"
        )
    size = int(text)
    LifeGrid.objects.update_or_create(pk=1, defaults={"size": size})
    WATCHERS.broadcast(f"size {size}")
    return HttpResponse(str(size), content_type="text/plain")


@websocket
async def watcher(ws: WebSocket) -> None:
    """A watch page: it gets ``size N`` now and on every reset, and every relayed state."""
    ws.write_message(f"size {await grid_size()}")
    WATCHERS.add(ws)
    async for _ in ws:
        pass  # a watch page only listens; reading is how its close is noticed


@websocket
async def worker(ws: WebSocket) -> None:
    """One cell, ``?row=R&col=C``: subscriptions, ``ready``, and its states relayed.

    Closes with 1008 for a cell outside the grid or a message outside the protocol, 1003 for
    a binary message.
    """
    size = await grid_size()
    cell = _cell(ws.request.GET, size)
    if cell is None:
        await ws.close(1008, f"row and col must be integers from 0 to {size - 1}")
        return
    subscribers = Group(f"life.{cell[0]}.{cell[1]}")
    prefix = f"{cell[0]} {cell[1]} "
    async for message in ws:
        if isinstance(message, bytes):
            await ws.close(1003, "binary messages are not part of the protocol")
            return
        if state := _STATE.fullmatch(message):
            relayed = f"{prefix}{state[1]} {state[2]}"
            subscribers.broadcast(relayed)
            WATCHERS.broadcast(relayed)
        elif message == "ready":
            ws.write_message("ready")
        elif (subscription := _SUBSCRIBE.fullmatch(message)) is None:
            await ws.close(1008, _UNKNOWN)
            return
        elif max(int(subscription[1]), int(subscription[2])) >= size:
            await ws.close(1008, f"no cell {subscription[1]},{subscription[2]} in a grid of {size}")
            return
        else:
            Group(f"life.{subscription[1]}.{subscription[2]}").add(ws)


def _cell(query: QueryDict, size: int) -> tuple[int, int] | None:
    """``(row, col)`` from the query string, or None if either is not a cell of the grid."""
    row, col = query.get("row", ""), query.get("col", "")
    if not (_NUMBER.fullmatch(row) and _NUMBER.fullmatch(col)):
        return None
    if int(row) >= size or int(col) >= size:
        return None
    return int(row), int(col)
