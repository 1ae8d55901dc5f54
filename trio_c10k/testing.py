"""Test helpers for a site's own ``@websocket`` handlers: a live server, a client, a login.

A pytest-trio test talks to a handler through the site's real URLconf and middleware, over a
real socket::

    import json

    import trio
    from django.contrib.auth.models import User

    from trio_c10k.testing import open_live_server


    async def test_chat_tags_messages_with_the_sender():
        alice = await trio.to_thread.run_sync(lambda: User.objects.create(username="alice"))
        async with open_live_server() as site:
            async with site.websocket("/chat/lobby/ws/", user=alice) as ws:
                ws.write_message("hi")
                assert json.loads(await ws.read_message()) == {"user": "alice", "text": "hi"}

Browser tests use Playwright's or Selenium's sync API, which cannot share a thread with trio:
``live_server_in_thread()`` runs the same server in a thread of its own, and the
``c10k_live_server`` fixture wraps it for pytest (add ``pytest_plugins = ["trio_c10k.testing"]``
to the project's ``conftest.py``)::

    def test_chat_page(c10k_live_server, page):  # page: pytest-playwright's fixture
        page.goto(c10k_live_server.url + "/chat/lobby/")
        ...

The server runs Django with the settings of the test run (``DJANGO_SETTINGS_MODULE``, or
pytest-django's), so ``ALLOWED_HOSTS`` must accept ``127.0.0.1`` as for any request. It
answers from its own threads, with their own database connections: what a test writes must
be committed to be seen (with pytest-django, ``transactional_db``, not ``db``, whose
transaction hides the test's rows from every other connection).

``tls=True`` serves HTTPS and ``wss://`` instead, with a throwaway certificate for
``127.0.0.1`` and ``localhost`` signed by a throwaway CA (one per process, made by the
``trustme`` package: ``pip install 'trio-c10k[testing]'``). The ``LiveServer`` hands the
client side what it needs to trust it: ``ssl_context`` for Python clients (``site.websocket()``
uses it), ``ca_cert_path`` for other programs, and ``spki_hash`` for Chromium, which takes no
CA file but accepts a certificate by the hash of its public key::

    with live_server_in_thread(tls=True) as site, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            args=[f"--ignore-certificate-errors-spki-list={site.spki_hash}"]
        )
        browser.new_page().goto(site.url + "/chat/lobby/")  # https://, and its wss://
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import functools
import hashlib
import queue
import shutil
import ssl
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import outcome
import trio
from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.test import Client

from ._config import Bind, Config
from ._django import database_sync_to_thread
from ._exceptions import lone_exception_unwrapped
from ._server import Server, serve
from ._tls_config import TLSConfig
from ._websocket import WebSocket
from .client import open_websocket

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser

__all__ = ["LiveServer", "live_server_in_thread", "open_live_server"]

#: seconds ``serve()`` is given, once a block ends, to finish gracefully (requests in flight
#: answered, WebSockets closed with 1001) before it is cancelled: a test has no use for the
#: command line's 30 s (``Config.graceful_timeout``, which also applies if shorter)
_SHUTDOWN_TIMEOUT = 5.0

_Application = Callable[..., Iterable[bytes]]
_Headers = list[tuple[str, str]] | tuple[tuple[str, str], ...]
#: what the thread of ``live_server_in_thread()`` hands back once the server listens
_Running = tuple["LiveServer", trio.lowlevel.TrioToken, trio.Event]


@dataclass(frozen=True)
class _Certificate:
    """The throwaway certificate of this process, and what each side needs of it."""

    #: the server's side: the certificate and its key, as PEM files
    tls: TLSConfig
    #: a client context trusting the CA
    client_context: ssl.SSLContext
    #: the CA's certificate, PEM
    ca_cert_path: Path
    #: base64 of the SHA-256 of the certificate's SubjectPublicKeyInfo
    spki_hash: str


class LiveServer:
    """A server running the site on 127.0.0.1, as the helpers of this module yield it."""

    def __init__(self, server: Server, certificate: _Certificate | None = None) -> None:
        host, port = server.addresses[0][:2]
        scheme = "" if certificate is None else "s"
        #: the running ``trio_c10k.Server`` (``config``, ``addresses``, ``statistics()``);
        #: from ``live_server_in_thread()`` it belongs to another thread: read it, do not call it
        self.server = server
        #: ``http://127.0.0.1:PORT`` (``https://`` with ``tls=True``), for HTTP clients and browsers
        self.url = f"http{scheme}://{host}:{port}"
        #: ``ws://127.0.0.1:PORT`` (``wss://`` with ``tls=True``), for WebSocket clients
        self.ws_url = f"ws{scheme}://{host}:{port}"
        #: with ``tls=True``, a client ``ssl.SSLContext`` trusting the server's certificate (for
        #: ``open_websocket(ssl_context=...)``, ``httpx``'s ``verify=``, ``urlopen(context=...)``);
        #: None otherwise
        self.ssl_context = None if certificate is None else certificate.client_context
        #: with ``tls=True``, the PEM file of the CA that signed the server's certificate (for
        #: ``curl --cacert``, ``SSL_CERT_FILE``, ``NODE_EXTRA_CA_CERTS``); None otherwise. It is
        #: removed when the process exits.
        self.ca_cert_path = None if certificate is None else certificate.ca_cert_path
        #: with ``tls=True``, the base64 SHA-256 of the server certificate's public key, for
        #: Chromium's ``--ignore-certificate-errors-spki-list`` (Chromium reads no CA file: it
        #: then accepts this certificate, and no other that does not verify); None otherwise
        self.spki_hash = None if certificate is None else certificate.spki_hash

    @contextlib.asynccontextmanager
    async def websocket(
        self,
        path: str,
        *,
        user: AbstractBaseUser | None = None,
        headers: _Headers = (),
        subprotocols: list[str] | tuple[str, ...] = (),
        origin: str | None = None,
    ) -> AsyncIterator[WebSocket]:
        """Connect to ``path`` (``"/chat/lobby/ws/"``) and yield the open client ``WebSocket``.

        For trio code only (any trio run, not only the server's).

        Args:
            path: the URL path, and query if any, on this server.
            user: a Django user to log in first (``login()``); its session cookie is sent,
                in one ``Cookie`` header with those in ``headers`` (replacing one of the same
                name).
            headers: more request headers.
            subprotocols: offered in ``Sec-WebSocket-Protocol``.
            origin: sent as ``Origin`` (none by default, as for a client that is not a browser).

        Raises:
            HandshakeRejected: the site answered with plain HTTP (a 403, a redirect, a 404).
            OSError: the server is not listening.

        With ``tls=True`` the connection is ``wss://``, trusting the server's certificate
        (``ssl_context``).

        Resource handling: leaving the block closes the connection with 1000 (1011 if the block
        raised), as ``trio_c10k.client.open_websocket()`` does; an exception from the block
        comes out as itself, not in an ``ExceptionGroup``.

        Cancellation: cancelling the block closes the connection at once, without a close
        frame.
        """
        if user is not None:
            headers = _with_cookie(headers, await self.login(user))
        with lone_exception_unwrapped():
            async with open_websocket(
                self.ws_url + path,
                subprotocols=subprotocols,
                origin=origin,
                headers=headers,
                ssl_context=self.ssl_context,
            ) as ws:
                yield ws

    async def login(self, user: AbstractBaseUser) -> str:
        """Log ``user`` in through Django's session machinery; return the ``Cookie`` value.

        ``django.test.Client().force_login(user)`` runs in a worker thread (it writes the
        session to the session store), with stale database connections closed around it, as
        ``trio_c10k.database_sync_to_thread`` does. For trio code only; ``login_sync()`` is the
        same for sync code.

        Returns:
            ``"sessionid=..."`` (the name is ``SESSION_COOKIE_NAME``), for a ``Cookie`` header.

        Raises:
            RuntimeError: no session cookie was produced. Logging in needs
                ``django.contrib.sessions`` (or another session engine), and the site needs
                ``SessionMiddleware`` and ``AuthenticationMiddleware`` to see the user.

        Cancellation: the thread is not abandoned: the call returns once it is done (a few
        database queries), and the cancellation takes effect at the caller's next checkpoint.
        """
        return await database_sync_to_thread(_session_cookie)(user)

    def login_sync(self, user: AbstractBaseUser) -> str:
        """``login()`` for sync code (a browser test): blocks, in the caller's thread.

        It uses, and leaves open, the calling thread's database connection.

        Raises:
            RuntimeError: no session cookie was produced (see ``login()``).
        """
        return _session_cookie(user)


@contextlib.asynccontextmanager
async def open_live_server(
    application: _Application | None = None, *, tls: bool = False, **config: Any
) -> AsyncIterator[LiveServer]:
    """Serve the site on 127.0.0.1 (a free port) in this trio run, for the block's duration.

    Args:
        application: the WSGI application; ``django.core.wsgi.get_wsgi_application()`` (the
            project's settings) by default.
        tls: serve HTTPS and ``wss://`` with the process's throwaway certificate (see the
            module's docstring and ``LiveServer.ssl_context``).
        **config: ``trio_c10k.Config`` fields to override (``threads=2``,
            ``websocket=WebSocketConfig(...)``); the bind address is fixed.

    Raises:
        ConfigError: a value in ``config`` is out of range.
        ImportError: ``tls=True`` without the ``trustme`` package.

    Resource handling: leaving the block starts a graceful ``server.shutdown()`` (no new
    connections; requests in flight finish, open WebSockets are closed with 1001) and waits
    for ``serve()`` to return, at most 5 seconds, then cancels it. Every
    socket of the server is closed when the block is left. Connections the test opened
    itself are its own to close.

    Error handling: if the block raises, the server is cancelled at once and the exception
    comes out as itself, not in an ``ExceptionGroup``.

    Cancellation: cancelling the block cancels the server at once (no graceful part).
    """
    app = application if application is not None else get_wsgi_application()
    certificate = _throwaway_certificate() if tls else None
    server_config = _config(config if certificate is None else {**config, "tls": certificate.tls})
    with lone_exception_unwrapped():
        async with trio.open_nursery() as nursery:
            server: Server = await nursery.start(serve, app, server_config)
            try:
                yield LiveServer(server, certificate)
            finally:
                server.shutdown()
                # The nursery waits for serve() to return until this deadline, then cancels it.
                nursery.cancel_scope.deadline = trio.current_time() + _SHUTDOWN_TIMEOUT


@contextlib.contextmanager
def live_server_in_thread(
    application: _Application | None = None, *, tls: bool = False, **config: Any
) -> Iterator[LiveServer]:
    """``open_live_server()`` for sync code: the server runs its own ``trio.run`` in a thread.

    For browser tests driven by Playwright's or Selenium's sync API. Returns once the server
    listens. ``websocket()`` and ``login()`` of the ``LiveServer`` it yields are for trio code
    only; ``login_sync()`` is for sync code.

    Args:
        application: the WSGI application; ``django.core.wsgi.get_wsgi_application()`` by
            default (loaded in the calling thread, so that its errors are raised here).
        tls: serve HTTPS and ``wss://``, as for ``open_live_server()``.
        **config: ``trio_c10k.Config`` fields to override, as for ``open_live_server()``.

    Raises:
        ConfigError: a value in ``config`` is out of range.
        ImportError: ``tls=True`` without the ``trustme`` package.
        OSError: the server could not listen.
        RuntimeError: the server's thread did not end in time on exit.

    Resource handling: leaving the block shuts the server down as ``open_live_server()``
    does (graceful, at most 5 seconds, then cancelled) and joins the thread
    (a daemon thread). An error that ended the server while the block ran is raised on exit.
    """
    app = application if application is not None else get_wsgi_application()
    _config(config)  # a ConfigError is raised here, in the caller's thread
    if tls:
        _throwaway_certificate()  # and an ImportError; the thread then finds it made
    started: queue.SimpleQueue[_Running | None] = queue.SimpleQueue()
    ended: list[outcome.Outcome[None]] = []

    async def serve_until_stopped() -> None:
        stop = trio.Event()
        async with open_live_server(app, tls=tls, **config) as site:
            started.put((site, trio.lowlevel.current_trio_token(), stop))
            await stop.wait()

    def run() -> None:
        ended.append(outcome.capture(trio.run, serve_until_stopped))
        started.put(None)  # wakes the caller if the server never started

    thread = threading.Thread(target=run, name="trio_c10k live server", daemon=True)
    thread.start()
    running = started.get()
    if running is None:  # trio.run ended before the server listened: raise why
        ended[0].unwrap()
        raise RuntimeError("the live server ended before it started")
    site, token, stop = running
    try:
        yield site
    finally:
        with contextlib.suppress(trio.RunFinishedError):  # it already ended, with an error
            trio.from_thread.run_sync(stop.set, trio_token=token)
        thread.join(_SHUTDOWN_TIMEOUT + 1)  # + 1: the cancellation after _SHUTDOWN_TIMEOUT
        if thread.is_alive():
            raise RuntimeError(f"the live server did not stop within {_SHUTDOWN_TIMEOUT + 1:g} s")
        ended[0].unwrap()


def _config(overrides: dict[str, Any]) -> Config:
    return Config(binds=(Bind(host="127.0.0.1", port=0),), **overrides)


@functools.cache
def _throwaway_certificate() -> _Certificate:
    """A CA and a certificate it signed for 127.0.0.1 and localhost, made once per process."""
    try:
        import trustme  # only here: only TLS servers need it
    except ImportError as exc:
        raise ImportError(
            "a live server with tls=True needs the trustme package: pip install 'trio-c10k[testing]'"
        ) from exc
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    authority = trustme.CA()
    issued = authority.issue_cert("127.0.0.1", "localhost")
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    directory = Path(tempfile.mkdtemp(prefix="trio_c10k-testing-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    ca_cert_path = directory / "ca.pem"
    authority.cert_pem.write_to_path(ca_cert_path)
    issued.private_key_and_cert_chain_pem.write_to_path(directory / "server.pem")
    server_tls = TLSConfig(certfile=str(directory / "server.pem"))
    public_key = x509.load_pem_x509_certificate(issued.cert_chain_pems[0].bytes()).public_key()
    spki = public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    spki_hash = base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")
    return _Certificate(server_tls, client_context, ca_cert_path, spki_hash)


def _session_cookie(user: AbstractBaseUser) -> str:
    client = Client()
    client.force_login(user)
    morsel = client.cookies.get(settings.SESSION_COOKIE_NAME)
    if morsel is None or not morsel.value:
        raise RuntimeError(
            f"logging in set no {settings.SESSION_COOKIE_NAME!r} cookie: it needs Django's sessions "
            "(django.contrib.sessions or another SESSION_ENGINE), and the site needs SessionMiddleware "
            "and AuthenticationMiddleware to see the user"
        )
    return f"{morsel.key}={morsel.coded_value}"


def _with_cookie(headers: _Headers, cookie: str) -> list[tuple[str, str]]:
    """``headers`` with ``cookie`` (``name=value``) added to their one ``Cookie`` header."""
    name = cookie.partition("=")[0]
    given = [part.strip() for key, value in headers if key.lower() == "cookie" for part in value.split(";")]
    kept = [part for part in given if part and part.partition("=")[0] != name]
    return [*[(k, v) for k, v in headers if k.lower() != "cookie"], ("Cookie", "; ".join([*kept, cookie]))]


try:
    import pytest
except ImportError:  # the fixture needs pytest; the helpers above do not
    pass
else:

    @pytest.fixture
    def c10k_live_server() -> Iterator[LiveServer]:
        """A ``live_server_in_thread()`` server for the test, for sync tests (browsers).

        Registered by ``pytest_plugins = ["trio_c10k.testing"]`` in a ``conftest.py``.
        """
        with live_server_in_thread() as site:
            yield site
