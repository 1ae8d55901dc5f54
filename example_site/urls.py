"""URLconf of the example site."""

from django.urls import path

from . import views

urlpatterns = [
    path("hello/", views.hello, name="hello"),
    path("test/wsgi/", views.wsgi_test, name="wsgi-test"),
]
