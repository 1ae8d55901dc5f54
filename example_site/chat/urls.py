"""The chat app's URLs: a room's page and its socket."""

from django.urls import path

from . import views

urlpatterns = [
    path("chat/<slug:room>/", views.chat_page, name="chat"),
    path("chat/<slug:room>/ws/", views.chat_ws, name="chat-ws"),
]
