"""The echo app: the plain test pages (``/hello/``, ``/test/wsgi/``), the echo page and its sockets,
and ``manage.py testecho``."""
