"""Settings for the test suite: the example site plus views that exercise the server."""

from example_site.settings import *  # noqa: F403

ROOT_URLCONF = "tests.urls"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
