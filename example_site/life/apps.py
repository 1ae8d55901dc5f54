"""The Game of Life app's configuration."""

from django.apps import AppConfig


class LifeConfig(AppConfig):
    name = "example_site.life"
    verbose_name = "Game of Life"
