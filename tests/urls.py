"""The example site's URLs plus the test views."""

from django.urls import include, path

from . import views

urlpatterns = [
    path("", include("example_site.urls")),
    path("t/environ/", views.environ),
    path("t/echo-body/", views.echo_body),
    path("t/stream/<str:key>/", views.stream),
    path("t/wait/<str:key>/", views.wait),
    path("t/file/", views.file),
    path("t/error/", views.error),
]
