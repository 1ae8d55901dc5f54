"""URLconf of the example site: the echo, chat and Game of Life apps' URLs, side by side.

Included without a namespace, so that every path and URL name is the one the apps define
(``{% url "chat" room %}``, ``reverse("life-reset")``).
"""

from django.urls import include, path

urlpatterns = [
    path("", include("example_site.echo.urls")),
    path("", include("example_site.chat.urls")),
    path("", include("example_site.life.urls")),
]
