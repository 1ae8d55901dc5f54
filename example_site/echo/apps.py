"""The echo app's configuration."""

from django.apps import AppConfig


class EchoConfig(AppConfig):
    name = "example_site.echo"
    verbose_name = "Echo"
