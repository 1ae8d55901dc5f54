"""The echo app's URLs: the plain test pages and the echo sockets."""

from django.urls import path

from . import views

urlpatterns = [
    path("hello/", views.hello, name="hello"),
    path("test/wsgi/", views.wsgi_test, name="wsgi-test"),
    path("test/", views.echo_page, name="echo-page"),
    path("test/ws/", views.echo_ws, name="echo-ws"),
    path("test/echo/", views.echo_forever, name="echo-forever"),
]
