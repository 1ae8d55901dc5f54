"""The broker URL (``--broker``, ``TRIO_C10K_BROKER``): checked when the ``Config`` is built,
shown without its password, and a missing Redis client named with the extra that installs it.

Pure and synchronous: ``check_broker_url`` and ``redacted`` are string functions; the missing
client is simulated with ``None`` in ``sys.modules``.
"""

from __future__ import annotations

import sys

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from trio_c10k import Config, ConfigError
from trio_c10k._config import check_broker_url, redacted
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
