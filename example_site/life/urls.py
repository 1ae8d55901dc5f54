"""The Game of Life app's URLs: the watch page and its socket, the reset, the cells' socket."""

from django.urls import path

from . import views

urlpatterns = [
    path("", views.page, name="life"),
    path("watcher/", views.watcher, name="life-watcher"),
    path("reset/", views.reset, name="life-reset"),
    path("worker/", views.worker, name="life-worker"),
]
