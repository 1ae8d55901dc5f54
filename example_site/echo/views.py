"""The echo app's views: the smallest page, a page showing what Django received, the echo page
and its two sockets (three numbered answers; echo everything, for the benchmarks)."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from trio_c10k import WebSocket, websocket


def hello(request: HttpRequest) -> HttpResponse:
    """The smallest Django view; the HTTP benchmark requests it."""
    return HttpResponse("Hello, world!\n", content_type="text/plain")


def wsgi_test(request: HttpRequest) -> HttpResponse:
    """A plain page with a GET and a POST form that show what the server passed to Django."""
    return render(
        request,
        "echo/wsgi.html",
        {
            "method": request.method,
            "get": sorted(request.GET.lists()),
            "post": sorted((k, v) for k, v in request.POST.lists() if k != "csrfmiddlewaretoken"),
        },
    )


def echo_page(request: HttpRequest) -> HttpResponse:
    """The echo page: it opens /test/ws/ and shows what is said."""
    return render(request, "echo/echo.html")


@websocket
async def echo_ws(ws: WebSocket) -> None:
    """Say Hello!, answer three messages as "1. ...", "2. ...", "3. ...", say Goodbye!."""
    ws.write_message("Hello!")
    for n in range(1, 4):
        message = await ws.read_message()
        if message is None:
            return
        ws.write_message(f"{n}. {message}")
    ws.write_message("Goodbye!")


@websocket
async def echo_forever(ws: WebSocket) -> None:
    """Echo every message, text or binary, until the client closes."""
    async for message in ws:
        ws.write_message(message)
