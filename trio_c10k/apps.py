"""The Django app ``"trio_c10k"``: its ``runserver`` (``management/commands``) and its system
checks (``_checks``)."""

from __future__ import annotations

from django.apps import AppConfig


class TrioC10kConfig(AppConfig):  # type: ignore[misc]  # Django ships no type hints
    """``"trio_c10k"`` in ``INSTALLED_APPS`` (Django finds this class by itself)."""

    name = "trio_c10k"
    verbose_name = "trio-c10k"

    def ready(self) -> None:
        from ._checks import register_checks

        register_checks()
