"""Django system checks for the settings trio-c10k depends on (``manage.py check``).

Registered under the tag ``trio_c10k`` when the app is ready (``apps.py``), so they run with
Django's own checks: at ``runserver``'s start, ``migrate``, ``manage.py check``; the one
about production runs with ``check --deploy``. docs/checks.md lists every id with its hint.

Rule 1: a check looks at settings only: it opens no connection and starts nothing. The one
about the Redis client imports it, as the server will.
Rule 2: an error (``E``) is a setting that breaks what it configures (every WebSocket under
``runserver``, the broker); a warning (``W``) one that works, but not as its author meant
(an origin no browser sends, a setting nobody reads, a log silenced).
Rule 3: what Django checks itself (``CSRF_TRUSTED_ORIGINS`` entries without a scheme,
``ALLOWED_HOSTS`` with ``DEBUG`` off) is not checked again here.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.utils.module_loading import import_string

from ._broker_url import check_broker_url
from ._exceptions import ConfigError

Check = Callable[..., list[CheckMessage]]

#: the tag of every check here: ``manage.py check --tag trio_c10k`` runs them alone
TAG = "trio_c10k"
#: the settings trio-c10k reads, and the types each may have
SETTINGS: dict[str, tuple[type, ...]] = {
    "TRIO_C10K_BROKER": (str, type(None)),
    "TRIO_C10K_CHECK_ORIGIN": (bool,),
}
#: how each is written (E002's hint)
_TYPE_HINTS = {
    "TRIO_C10K_BROKER": "A Redis URL as a string: TRIO_C10K_BROKER = 'redis://127.0.0.1:6379/0'.",
    "TRIO_C10K_CHECK_ORIGIN": "True (the default) or False, without quotes.",
}
#: the port a browser leaves out of an ``Origin``, by scheme
DEFAULT_PORTS = {"http": 80, "https": 443}


def register_checks() -> None:
    """Register the checks (``TrioC10kConfig.ready``; registering twice is harmless)."""
    for check in CHECKS:
        register(check, TAG)
    register(check_origin_check_on, TAG, Tags.security, deploy=True)


def check_runserver(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """E001: ``manage.py runserver`` is another app's command (``"trio_c10k"`` placed after
    ``"django.contrib.staticfiles"``, or after another server's app, in ``INSTALLED_APPS``)."""
    from django.core.management import get_commands

    owner = get_commands().get("runserver")
    if owner == "trio_c10k":
        return []
    return [
        Error(
            f"'manage.py runserver' is the command of {owner!r}, not trio_c10k's: that server cannot "
            "upgrade connections, so every @websocket view answers 500.",
            hint=f"Put 'trio_c10k' before {owner!r} in INSTALLED_APPS.",
            id="trio_c10k.E001",
        )
    ]


def check_setting_types(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """E002: a ``TRIO_C10K_*`` setting of the wrong type (``TRIO_C10K_CHECK_ORIGIN = "False"``
    is a true value: the check stays on)."""
    messages: list[CheckMessage] = []
    for name, types in SETTINGS.items():
        value = getattr(settings, name, None)
        if hasattr(settings, name) and not isinstance(value, types):
            expected = " or ".join("None" if kind is type(None) else kind.__name__ for kind in types)
            messages.append(
                Error(
                    f"{name} is {value!r}, a {type(value).__name__}: trio-c10k expects {expected}.",
                    hint=_TYPE_HINTS[name],
                    id="trio_c10k.E002",
                )
            )
    return messages


def check_broker(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """E003: ``TRIO_C10K_BROKER`` is not a URL the Redis client can use; E004: it is set but
    the Redis client (coredis) cannot be imported."""
    url = getattr(settings, "TRIO_C10K_BROKER", None)
    if not url or not isinstance(url, str):  # "": no broker; another type: E002
        return []
    try:
        check_broker_url(url)
    except ConfigError as exc:
        return [
            Error(
                f"TRIO_C10K_BROKER: {exc}.",
                hint="redis://HOST:PORT/DB, rediss://HOST:PORT/DB (TLS), unix:///PATH?db=DB or "
                "redis+sentinel://HOST:PORT,HOST:PORT/SERVICE/DB (Redis Sentinel); "
                "a password as redis://:PASSWORD@HOST:PORT/DB.",
                id="trio_c10k.E003",
            )
        ]
    try:
        from ._broker import RedisBroker  # noqa: F401  (as the server imports it: coredis, anyio)
    except ImportError as exc:
        return [
            Error(
                f"TRIO_C10K_BROKER is set, but the Redis client coredis cannot be imported ({exc}).",
                hint="pip install 'trio-c10k[redis]'",
                id="trio_c10k.E004",
            )
        ]
    return []


def check_unknown_settings(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """W001: a ``TRIO_C10K_*`` setting trio-c10k does not read (a misspelt name)."""
    messages: list[CheckMessage] = []
    # Compared without the prefix they share (with it, any two names look alike).
    known = {name.removeprefix("TRIO_C10K_"): name for name in SETTINGS}
    for name in sorted(dir(settings)):
        if name.startswith("TRIO_C10K_") and name not in SETTINGS:
            close = difflib.get_close_matches(name.removeprefix("TRIO_C10K_"), known, n=1, cutoff=0.7)
            messages.append(
                Warning(
                    f"{name} is not a setting of trio-c10k: nothing reads it.",
                    hint=f"Did you mean {known[close[0]]}?"
                    if close
                    else f"trio-c10k reads {' and '.join(SETTINGS)} (docs/configuration.md).",
                    id="trio_c10k.W001",
                )
            )
    return messages


def check_trusted_origins(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """W002: an entry of ``CSRF_TRUSTED_ORIGINS`` no browser's ``Origin`` can equal, so the
    origin check refuses the WebSockets of the pages it was meant to allow (Django's CSRF
    check refuses their POSTs alike)."""
    messages: list[CheckMessage] = []
    for entry in settings.CSRF_TRUSTED_ORIGINS:
        if not isinstance(entry, str) or "://" not in entry:
            continue  # Django's own check (4_0.E001)
        problem, written = origin_entry_problem(entry)
        if problem:
            messages.append(
                Warning(
                    f"CSRF_TRUSTED_ORIGINS entry {entry!r} matches no browser's Origin: {problem}.",
                    hint=f"Write it {written!r}."
                    if written
                    else "An Origin is scheme://host[:port]; a wildcard is scheme://*.domain.",
                    id="trio_c10k.W002",
                )
            )
    return messages


def origin_entry_problem(entry: str) -> tuple[str, str | None]:
    """Why no browser sends ``entry`` as its ``Origin`` (``""``: it may), and the entry as a
    browser would send that origin (None: no such form). An origin is serialized with the
    scheme and the host in lowercase, a non-ASCII host in its ``xn--`` form, no default
    port, no user, path, query or fragment (RFC 6454 section 6.2)."""
    try:
        parts = urlsplit(entry)
        port = parts.port
    except ValueError as exc:
        return f"it does not parse ({exc})", None
    wildcard = "*" in parts.netloc
    if wildcard and not (parts.netloc.startswith("*.") and "*" not in parts.netloc[2:]):
        return "a '*' works only at the start of the host, as in https://*.example.com", None
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme.lower(), parts.scheme.lower())
    host = parts.hostname or ""
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return "its host is not a valid domain name", None
    host = f"[{host}]" if ":" in host else host
    written = f"{scheme}://{host}" + ("" if port in (None, DEFAULT_PORTS.get(scheme)) else f":{port}")
    if parts.path or parts.query or parts.fragment:
        problem = "an Origin has no path, query or fragment"
    elif parts.username is not None:
        problem = "an Origin has no user"
    elif scheme != parts.scheme.lower():
        problem = "a WebSocket's Origin is its page's, http:// or https://"
    elif port is not None and port == DEFAULT_PORTS.get(scheme):
        problem = f"browsers leave the default port {port} out"
    elif not entry.isascii():
        problem = "browsers send a non-ASCII host in its xn-- form"
    elif entry != entry.lower() and not wildcard:  # a wildcard is compared in lowercase
        problem = "browsers send the scheme and host in lowercase"
    else:
        return "", written
    return problem, written


def check_middleware(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """W003: a middleware that runs only in async mode (``sync_capable = False``): under a
    WSGI server Django adapts it with ``async_to_sync``, which starts an asyncio event loop,
    in a thread of its own, for every request."""
    messages: list[CheckMessage] = []
    for path in settings.MIDDLEWARE:
        try:
            middleware = import_string(path)
        except ImportError:
            continue  # Django reports it when it loads the middleware
        if getattr(middleware, "sync_capable", True) is False:
            messages.append(
                Warning(
                    f"Middleware {path!r} is async-only (sync_capable = False): trio-c10k serves "
                    "Django over WSGI, where Django runs it in an asyncio event loop started, in "
                    "a thread of its own, for every request.",
                    hint="Use a version of it that can run synchronously (sync_capable = True), or "
                    "leave it out.",
                    id="trio_c10k.W003",
                )
            )
    return messages


def check_logging(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """W004: ``LOGGING`` disables the loggers that exist when Django reads it (dictConfig's
    default, ``disable_existing_loggers``), and ``python -m trio_c10k`` has created its own
    by then: the server would log nothing, not even where it listens."""
    config = settings.LOGGING
    if settings.LOGGING_CONFIG != "logging.config.dictConfig" or not isinstance(config, dict) or not config:
        return []
    named = config.get("loggers", {})
    if not config.get("disable_existing_loggers", True) or "trio_c10k" in named:
        return []
    return [
        Warning(
            "LOGGING disables the loggers that exist when Django reads it (disable_existing_loggers "
            "is true, or left out): under python -m trio_c10k, the server's own, which then logs "
            "nothing.",
            hint="Set 'disable_existing_loggers': False in LOGGING, or configure the 'trio_c10k' "
            "logger there.",
            id="trio_c10k.W004",
        )
    ]


def check_origin_check_on(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """W005 (``check --deploy``): ``TRIO_C10K_CHECK_ORIGIN = False``: any web page can open a
    WebSocket to the site with its visitors' cookies (cross-site WebSocket hijacking)."""
    if getattr(settings, "TRIO_C10K_CHECK_ORIGIN", True) is not False:
        return []
    return [
        Warning(
            "TRIO_C10K_CHECK_ORIGIN is False: any web page can open a WebSocket to this site "
            "with its visitors' cookies (cross-site WebSocket hijacking).",
            hint="Remove the setting (the check is on by default) and list the other origins "
            "your pages come from in CSRF_TRUSTED_ORIGINS.",
            id="trio_c10k.W005",
        )
    ]


#: the checks run with every ``manage.py check`` (``check_origin_check_on``: with --deploy)
CHECKS: tuple[Check, ...] = (
    check_runserver,
    check_setting_types,
    check_broker,
    check_unknown_settings,
    check_trusted_origins,
    check_middleware,
    check_logging,
)
