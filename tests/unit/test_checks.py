"""The system checks of the ``trio_c10k`` app: each one firing on the setting it is about,
and silent on the test site's settings (which are the example site's).

Synchronous: the settings are overridden with ``override_settings`` and the checks run through
Django's registry (``run_checks``), as ``manage.py check`` runs them.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.checks import CheckMessage, run_checks
from django.test.utils import override_settings

from trio_c10k._checks import origin_entry_problem

ROOT = Path(__file__).parents[2]
SECRET = "s3cret-pw"


def trio_c10k_checks(*, deploy: bool = False) -> list[CheckMessage]:
    return list(run_checks(tags=["trio_c10k"], include_deployment_checks=deploy))


def ids(messages: list[CheckMessage]) -> list[str]:
    return [message.id for message in messages]


def only(messages: list[CheckMessage], id: str) -> CheckMessage:
    assert ids(messages) == [id], [str(message) for message in messages]
    return messages[0]


class AsyncOnlyMiddleware:
    """What ``django.utils.decorators.async_only_middleware`` marks."""

    sync_capable = False
    async_capable = True

    def __init__(self, get_response: Callable[..., Any]) -> None:
        self.get_response = get_response


def test_the_project_settings_pass_every_check() -> None:
    assert trio_c10k_checks(deploy=True) == []


def test_the_checks_are_registered_by_the_app() -> None:
    from django.core.checks import registry

    assert "trio_c10k" in registry.registry.tags_available(deployment_checks=True)


# -- E001: runserver ---------------------------------------------------------------------------


def test_trio_c10k_after_staticfiles_leaves_runserver_to_django() -> None:
    apps = [app for app in settings.INSTALLED_APPS if app != "trio_c10k"] + ["trio_c10k"]
    with override_settings(INSTALLED_APPS=apps):
        message = only(trio_c10k_checks(), "trio_c10k.E001")
    assert message.is_serious()
    assert "'manage.py runserver' is the command of 'django.contrib.staticfiles'" in message.msg
    assert "every @websocket view answers 500" in message.msg
    assert message.hint == "Put 'trio_c10k' before 'django.contrib.staticfiles' in INSTALLED_APPS."


def test_trio_c10k_before_staticfiles_or_without_it_serves_runserver() -> None:
    assert settings.INSTALLED_APPS.index("trio_c10k") < settings.INSTALLED_APPS.index(
        "django.contrib.staticfiles"
    )
    assert trio_c10k_checks() == []
    without = [app for app in settings.INSTALLED_APPS if app != "django.contrib.staticfiles"]
    with override_settings(INSTALLED_APPS=without):
        assert trio_c10k_checks() == []


# -- E002: types ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "message", "hint"),
    [
        (
            "TRIO_C10K_CHECK_ORIGIN",
            "False",
            "TRIO_C10K_CHECK_ORIGIN is 'False', a str: trio-c10k expects bool.",
            "True (the default) or False, without quotes.",
        ),
        ("TRIO_C10K_CHECK_ORIGIN", 0, "TRIO_C10K_CHECK_ORIGIN is 0, a int: trio-c10k expects bool.", None),
        (
            "TRIO_C10K_BROKER",
            ["redis://127.0.0.1:6379/0"],
            "TRIO_C10K_BROKER is ['redis://127.0.0.1:6379/0'], a list: trio-c10k expects str or None.",
            "A Redis URL as a string: TRIO_C10K_BROKER = 'redis://127.0.0.1:6379/0'.",
        ),
    ],
)
def test_a_setting_of_the_wrong_type_is_an_error(
    name: str, value: object, message: str, hint: str | None
) -> None:
    with override_settings(**{name: value}):
        found = only(trio_c10k_checks(), "trio_c10k.E002")
    assert found.msg == message
    assert hint is None or found.hint == hint


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TRIO_C10K_CHECK_ORIGIN", True),
        ("TRIO_C10K_BROKER", None),
        ("TRIO_C10K_BROKER", ""),  # "": no broker
    ],
)
def test_a_setting_of_the_right_type_passes(name: str, value: object) -> None:
    with override_settings(**{name: value}):
        assert trio_c10k_checks() == []


# -- E003, E004: the broker ------------------------------------------------------------------------


def test_a_broker_url_that_does_not_parse_is_an_error_without_its_password() -> None:
    with override_settings(TRIO_C10K_BROKER=f"redis://:{SECRET}@redis-host:63790/site1"):
        message = only(trio_c10k_checks(), "trio_c10k.E003")
    assert message.msg == (
        "TRIO_C10K_BROKER: broker 'redis://:***@redis-host:63790/site1': the database 'site1' "
        "is not a number (redis://HOST:PORT/DB)."
    )
    assert "redis://HOST:PORT/DB" in str(message.hint)


def test_a_broker_url_the_client_can_use_passes() -> None:
    with override_settings(TRIO_C10K_BROKER=f"redis://:{SECRET}@redis-host:6379/1"):
        assert trio_c10k_checks() == []


def test_a_broker_without_the_redis_client_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "coredis", None)  # an import of it raises ImportError
    monkeypatch.delitem(sys.modules, "trio_c10k._broker", raising=False)
    with override_settings(TRIO_C10K_BROKER="redis://redis-host:6379/0"):
        message = only(trio_c10k_checks(), "trio_c10k.E004")
    assert message.msg.startswith(
        "TRIO_C10K_BROKER is set, but the Redis client coredis cannot be imported ("
    )
    assert message.hint == "pip install 'trio-c10k[redis]'"
    with override_settings(TRIO_C10K_BROKER=None):
        assert trio_c10k_checks() == []  # no broker: coredis not needed


# -- W001: unknown settings ------------------------------------------------------------------------


def test_a_misspelt_setting_is_named_with_the_right_one() -> None:
    with override_settings(TRIO_C10K_CHECK_ORIGINS=False):
        message = only(trio_c10k_checks(), "trio_c10k.W001")
    assert message.msg == "TRIO_C10K_CHECK_ORIGINS is not a setting of trio-c10k: nothing reads it."
    assert message.hint == "Did you mean TRIO_C10K_CHECK_ORIGIN?"
    with override_settings(TRIO_C10K_BROKER_URL="redis://redis-host/0"):
        assert only(trio_c10k_checks(), "trio_c10k.W001").hint == "Did you mean TRIO_C10K_BROKER?"
    with override_settings(TRIO_C10K_WORKERS=4):
        message = only(trio_c10k_checks(), "trio_c10k.W001")
    assert (
        message.hint == "trio-c10k reads TRIO_C10K_BROKER and TRIO_C10K_CHECK_ORIGIN (docs/configuration.md)."
    )


# -- W002: trusted origins ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "problem", "written"),
    [
        ("https://example.com/", "an Origin has no path, query or fragment", "https://example.com"),
        ("https://example.com/app/", "an Origin has no path, query or fragment", "https://example.com"),
        ("https://user@example.com", "an Origin has no user", "https://example.com"),
        (
            "wss://example.com",
            "a WebSocket's Origin is its page's, http:// or https://",
            "https://example.com",
        ),
        (
            "ws://localhost:8000",
            "a WebSocket's Origin is its page's, http:// or https://",
            "http://localhost:8000",
        ),
        ("https://example.com:443", "browsers leave the default port 443 out", "https://example.com"),
        ("http://example.com:80", "browsers leave the default port 80 out", "http://example.com"),
        ("https://Example.com", "browsers send the scheme and host in lowercase", "https://example.com"),
        ("HTTPS://example.com", "browsers send the scheme and host in lowercase", "https://example.com"),
        (
            "https://bücher.example",
            "browsers send a non-ASCII host in its xn-- form",
            "https://xn--bcher-kva.example",
        ),
        (
            "https://*example.com",
            "a '*' works only at the start of the host, as in https://*.example.com",
            None,
        ),
        (
            "https://app.*.example.com",
            "a '*' works only at the start of the host, as in https://*.example.com",
            None,
        ),
        ("https://[::1:8000", "it does not parse (Invalid IPv6 URL)", None),
    ],
)
def test_a_trusted_origin_no_browser_sends_is_a_warning(
    entry: str, problem: str, written: str | None
) -> None:
    assert origin_entry_problem(entry) == (problem, written)
    with override_settings(CSRF_TRUSTED_ORIGINS=[entry]):
        message = only(trio_c10k_checks(), "trio_c10k.W002")
    assert message.msg == f"CSRF_TRUSTED_ORIGINS entry {entry!r} matches no browser's Origin: {problem}."
    if written is not None:
        assert message.hint == f"Write it {written!r}."


@pytest.mark.parametrize(
    "entry",
    [
        "https://example.com",
        "http://localhost:5173",
        "https://*.example.com",
        "https://*.Example.com",  # a wildcard is compared in lowercase
        "https://*.example.com:8443",
        "http://[::1]:8000",
        "https://xn--bcher-kva.example",
        "chrome-extension://abcdefghijklmnop",
        "example.org",  # no scheme: Django's own check (4_0.E001), not repeated
    ],
)
def test_a_trusted_origin_a_browser_may_send_passes(entry: str) -> None:
    with override_settings(CSRF_TRUSTED_ORIGINS=[entry]):
        assert trio_c10k_checks() == []


# -- W003: async-only middleware ---------------------------------------------------------------


def test_an_async_only_middleware_is_a_warning() -> None:
    path = f"{__name__}.AsyncOnlyMiddleware"
    with override_settings(MIDDLEWARE=[*settings.MIDDLEWARE, path]):
        message = only(trio_c10k_checks(), "trio_c10k.W003")
    assert message.msg.startswith(f"Middleware {path!r} is async-only (sync_capable = False)")


def test_sync_capable_middleware_passes() -> None:
    # Django's own are sync and async capable; one that cannot be imported is Django's to report.
    middleware = [*settings.MIDDLEWARE, "django.middleware.gzip.GZipMiddleware", "no.such.Middleware"]
    with override_settings(MIDDLEWARE=middleware):
        assert trio_c10k_checks() == []


# -- W004: logging --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "logging",
    [
        {"version": 1},
        {"version": 1, "disable_existing_loggers": True, "loggers": {"django": {"level": "INFO"}}},
    ],
)
def test_logging_that_disables_the_servers_loggers_is_a_warning(logging: dict[str, Any]) -> None:
    with override_settings(LOGGING=logging):
        message = only(trio_c10k_checks(), "trio_c10k.W004")
    assert "'disable_existing_loggers': False" in str(message.hint)


@pytest.mark.parametrize(
    "logging",
    [
        {},
        {"version": 1, "disable_existing_loggers": False},
        {"version": 1, "loggers": {"trio_c10k": {"level": "INFO"}}},
    ],
)
def test_logging_that_keeps_the_servers_loggers_passes(logging: dict[str, Any]) -> None:
    with override_settings(LOGGING=logging):
        assert trio_c10k_checks() == []


# -- W005: the origin check off, in production (check --deploy) -------------------------------------


def test_the_origin_check_off_is_a_deployment_warning() -> None:
    with override_settings(TRIO_C10K_CHECK_ORIGIN=False):
        assert trio_c10k_checks() == []  # in development it may be what you want
        message = only(trio_c10k_checks(deploy=True), "trio_c10k.W005")
    assert "cross-site WebSocket hijacking" in message.msg
    with override_settings(TRIO_C10K_CHECK_ORIGIN=True):
        assert trio_c10k_checks(deploy=True) == []


def test_every_check_id_is_documented_with_its_hint() -> None:
    source = (ROOT / "trio_c10k" / "_checks.py").read_text()
    documented = (ROOT / "docs" / "checks.md").read_text()
    found = re.findall(r'id="(trio_c10k\.[EW]\d{3})"', source)
    assert found == sorted(found)
    for id in found:
        assert re.search(rf"^\| `{re.escape(id)}` \| .+ \| .+ \|$", documented, re.MULTILINE), id
