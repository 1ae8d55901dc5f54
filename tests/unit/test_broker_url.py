"""The broker URL (``--broker``, ``TRIO_C10K_BROKER``): checked when the ``Config`` is built,
shown without its password, and a missing Redis client named with the extra that installs it;
``redis+sentinel://`` URLs parsed into sentinels, service, database and credentials.

Pure and synchronous: ``check_broker_url`` and ``redacted`` are string functions; the missing
client is simulated with ``None`` in ``sys.modules``.
"""

from __future__ import annotations

import sys

import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test.utils import override_settings

from trio_c10k import Config, ConfigError
from trio_c10k._broker import channel_name
from trio_c10k._broker_url import SENTINEL_PORT, SentinelURL, check_broker_url, parse_sentinel_url, redacted
from trio_c10k._server import broker_class
from trio_c10k.management.commands.runserver import DjangoRunserver


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@redis-host:6379/0", "redis://:***@redis-host:6379/0"),
        ("rediss://user:s3cret@redis-host/0", "rediss://user:***@redis-host/0"),
        ("redis://:p@ss@redis-host/0", "redis://:***@redis-host/0"),
        ("redis://:s3cret@redis-host:6379/0?password=s3cret", "redis://:***@redis-host:6379/0?password=***"),
        ("redis://redis-host/0?db=1&password=s3cret&x=y", "redis://redis-host/0?db=1&password=***&x=y"),
        ("unix://:s3cret@/run/redis.sock?db=2", "unix://:***@/run/redis.sock?db=2"),
        ("redis://:s3cret@[::1:6379/0", "redis://:***@[::1:6379/0"),  # does not parse: masked still
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://user@redis-host/0", "redis://user@redis-host/0"),
        # a password with a "/", "?" or "#" that was not percent-encoded: masked all the same
        ("redis://:s3c/ret@redis-host/0", "redis://:***@redis-host/0"),
        ("redis://:s3c?ret@redis-host/0", "redis://:***@redis-host/0"),
        ("redis://redis-host/0?password=s3c@ret", "redis://redis-host/0?password=***"),
        (
            "redis+sentinel://:s3cret@s1:26379,s2:26380/mymaster/0",
            "redis+sentinel://:***@s1:26379,s2:26380/mymaster/0",
        ),
        (
            "redis+sentinel://app:s3cret@s1,s2/mymaster?sentinel_password=s3cret&db=1",
            "redis+sentinel://app:***@s1,s2/mymaster?sentinel_password=***&db=1",
        ),
        ("redis+sentinel://s1/mymaster?password=s3cret", "redis+sentinel://s1/mymaster?password=***"),
    ],
)
def test_a_password_is_masked_in_the_user_information_and_the_query(url: str, shown: str) -> None:
    assert redacted(url) == shown


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "redis://redis-host",
        "redis://:s3cret@redis-host:6380/15",
        "rediss://redis-host/0?ssl_check_hostname=false",
        "redis://[::1]:6379/3",
        "redis://redis-host?db=2",
        "unix:///run/redis/redis.sock",
        "unix:///run/redis/redis.sock?db=1",
        "redis+sentinel://s1:26379,s2:26379,s3:26379/mymaster/0",
        "redis+sentinel://:s3cret@s1/mymaster",
        "redis+sentinel://[::1]:26379,127.0.0.1/my-service/15?sentinel_password=x",
    ],
)
def test_a_url_the_redis_client_can_use_is_accepted(url: str) -> None:
    check_broker_url(url)
    assert Config(broker=url).broker == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://:s3cret@redis-host/0", "broker 'http://:***@redis-host/0': expected a Redis URL"),
        (
            "redis://:s3cret@redis-host:notaport/0",
            "broker 'redis://:***@redis-host:notaport/0': the port is not",
        ),
        ("redis://redis-host:99999/0", "the port is not a number from 1 to 65535"),
        ("redis://redis-host:0/0", "the port is not a number from 1 to 65535"),
        ("redis://:s3cret@[::1:6379/0", "broker 'redis://:***@[::1:6379/0': Invalid IPv6 URL"),
        ("redis:///0", "no host"),
        ("unix://", "no socket path"),
        # the client would take database 0 quietly: another site's
        (
            "redis://:s3cret@redis-host/site1",
            "broker 'redis://:***@redis-host/site1': the database 'site1' is not",
        ),
        ("redis://redis-host/0?db=one", "the database 'one' is not a number"),
        ("unix:///run/redis.sock?db=x", "the database 'x' is not a number"),
        (
            "rediss+sentinel://s1/mymaster",
            "expected a Redis URL (redis://HOST:PORT/DB, rediss://..., unix:///PATH, "
            "redis+sentinel://HOST:PORT,HOST:PORT/SERVICE/DB)",
        ),
        (
            "redis+sentinel://:s3cret@s1:26379",
            "broker 'redis+sentinel://:***@s1:26379': no service name "
            "(redis+sentinel://HOST:PORT,HOST:PORT/SERVICE/DB)",
        ),
        ("redis+sentinel://s1/", "no service name"),
        ("redis+sentinel:///mymaster", "sentinel 1 has no host (HOST:PORT,HOST:PORT)"),
        ("redis+sentinel://s1,,s3/mymaster", "sentinel 2 has no host"),
        ("redis+sentinel://s1,s2:0/mymaster", "the port of sentinel 2 (s2) is not a number from 1 to 65535"),
        ("redis+sentinel://s1:port/mymaster", "the port of sentinel 1 (s1) is not a number from 1 to 65535"),
        ("redis+sentinel://s1:65536/mymaster", "the port of sentinel 1 (s1) is not a number"),
        ("redis+sentinel://[::1:26379/mymaster", "sentinel 1: Invalid IPv6 URL"),
        (
            "redis+sentinel://:s3cret@s1/mymaster/site1",
            "the database 'site1' is not a number (.../SERVICE/DB)",
        ),
        ("redis+sentinel://s1/mymaster?db=x", "the database 'x' is not a number"),
        ("redis+sentinel://s1/mymaster/1?db=2", "two databases, 1 and 2 (give one, .../SERVICE/DB)"),
        ("redis+sentinel://s1/mymaster/0/x", "unexpected 'x' after the database (.../SERVICE/DB)"),
        (
            "redis+sentinel://s1/mymaster?sentinel_password=s3cret&timeout=1",
            "broker 'redis+sentinel://s1/mymaster?sentinel_password=***&timeout=1': unknown option "
            "'timeout' (a sentinel URL takes db, username, password, sentinel_username, sentinel_password)",
        ),
    ],
)
def test_a_url_the_redis_client_cannot_use_is_refused_without_its_password(url: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Config(broker=url)
    assert message in str(caught.value)
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize("missing", ["coredis", "anyio"])
def test_a_broker_without_the_redis_client_names_it_and_the_extra(
    monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # an import of it raises ImportError
    monkeypatch.delitem(sys.modules, "trio_c10k._broker", raising=False)
    with pytest.raises(ConfigError) as caught:
        broker_class()
    message = str(caught.value)
    assert message.startswith("--broker needs the Redis client coredis, which cannot be imported here (")
    assert message.endswith("): pip install 'trio-c10k[redis]'")
    assert missing in message


def test_runserver_with_a_broker_and_without_the_redis_client_stops_before_serving(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "coredis", None)
    monkeypatch.delitem(sys.modules, "trio_c10k._broker", raising=False)

    def serve(*args: object, **options: object) -> None:
        raise AssertionError("runserver went on to serve")

    monkeypatch.setattr(DjangoRunserver, "handle", serve)
    with pytest.raises(
        CommandError, match=r"^--broker needs the Redis client coredis, which cannot be imported"
    ):
        call_command("runserver", "--noreload", "--broker", "redis://127.0.0.1:6379/0")


def test_a_broker_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^broker: expected a Redis URL, a string, not a list$"):
        Config(broker=["redis://127.0.0.1:6379/0"])  # type: ignore[arg-type]  # a Django setting


def test_a_sentinel_url_names_the_sentinels_the_service_the_database_and_credentials() -> None:
    parsed = parse_sentinel_url(
        "redis+sentinel://app:p%40ss@s1:26380,[::1],s3/my%20service/3?sentinel_password=sp&sentinel_username=sen"
    )
    assert parsed == SentinelURL(
        sentinels=(("s1", 26380), ("::1", SENTINEL_PORT), ("s3", SENTINEL_PORT)),
        service="my service",
        db=3,
        username="app",
        password="p@ss",
        sentinel_username="sen",
        sentinel_password="sp",
    )
    assert SENTINEL_PORT == 26379  # Redis Sentinel's default
    # No database: 0, as for redis:// URLs; a database as ?db=N; the password as ?password=
    assert parse_sentinel_url("redis+sentinel://s1/mymaster/") == SentinelURL((("s1", 26379),), "mymaster")
    assert parse_sentinel_url("redis+sentinel://s1/mymaster?db=2&password=pw") == SentinelURL(
        (("s1", 26379),), "mymaster", db=2, password="pw"
    )
    assert parse_sentinel_url("redis+sentinel://:pw@s1/mymaster/1?db=1").password == "pw"


def test_the_channel_of_a_sentinel_url_is_named_after_its_database() -> None:
    # the same channel as a redis:// URL of that database: the processes of a site agree
    assert channel_name("redis+sentinel://s1,s2/mymaster/4") == channel_name("redis://primary/4")
    assert channel_name("redis+sentinel://s1/mymaster") == b"trio_c10k.groups.0"


def test_the_system_check_refuses_a_broken_sentinel_url_without_its_password() -> None:
    with override_settings(TRIO_C10K_BROKER="redis+sentinel://:s3cret@s1:26379"):
        [error] = run_checks(tags=["trio_c10k"])
    assert error.id == "trio_c10k.E003"
    assert error.msg == (
        "TRIO_C10K_BROKER: broker 'redis+sentinel://:***@s1:26379': no service name "
        "(redis+sentinel://HOST:PORT,HOST:PORT/SERVICE/DB)."
    )
    assert "redis+sentinel://HOST:PORT,HOST:PORT/SERVICE/DB" in str(error.hint)
    with override_settings(TRIO_C10K_BROKER="redis+sentinel://:s3cret@s1:26379,s2/mymaster/0"):
        assert run_checks(tags=["trio_c10k"]) == []
