"""URLconf of the example site."""

from django.urls import path

from . import chat, life, views

urlpatterns = [
    path("hello/", views.hello, name="hello"),
    path("test/wsgi/", views.wsgi_test, name="wsgi-test"),
    path("test/", views.echo_page, name="echo-page"),
    path("test/ws/", views.echo_ws, name="echo-ws"),
    path("test/echo/", views.echo_forever, name="echo-forever"),
    path("chat/<slug:room>/", chat.chat_page, name="chat"),
    path("chat/<slug:room>/ws/", chat.chat_ws, name="chat-ws"),
    path("", life.page, name="life"),
    path("watcher/", life.watcher, name="life-watcher"),
    path("reset/", life.reset, name="life-reset"),
    path("worker/", life.worker, name="life-worker"),
]
