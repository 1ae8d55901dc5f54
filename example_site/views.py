"""Views of the example site."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def hello(request: HttpRequest) -> HttpResponse:
    """The smallest Django view; the HTTP benchmark requests it."""
    return HttpResponse("Hello, world!\n", content_type="text/plain")


def wsgi_test(request: HttpRequest) -> HttpResponse:
    """A plain page with a GET and a POST form that show what the server passed to Django."""
    return render(
        request,
        "example_site/wsgi.html",
        {
            "method": request.method,
            "get": sorted(request.GET.lists()),
            "post": sorted((k, v) for k, v in request.POST.lists() if k != "csrfmiddlewaretoken"),
        },
    )
