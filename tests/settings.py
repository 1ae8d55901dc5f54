"""Settings for the test suite: the example site plus views that exercise the server."""

import os

from example_site.settings import *  # noqa: F403

ROOT_URLCONF = "tests.urls"
# A file, not ":memory:": every worker thread opens its own connection, and each in-memory
# database would be a different, empty one. conftest.py points this at a temporary file.
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["TRIO_C10K_TEST_DB"]}}
