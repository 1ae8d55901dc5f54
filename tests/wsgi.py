"""The test site as a WSGI module, for tests that run ``python -m trio_c10k`` in a subprocess."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

application = get_wsgi_application()
