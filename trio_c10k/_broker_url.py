"""The broker URL (``--broker``, ``TRIO_C10K_BROKER``): its forms, its checks, and how it is
shown in logs.

Rule 1: four forms. ``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]``, ``rediss://...`` (TLS) and
``unix://[[USER]:PASSWORD@]/PATH[?db=DB]`` name one Redis server, read by the Redis client
itself. ``redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/SERVICE[/DB]`` names
the Redis Sentinels that know the current primary of the service ``SERVICE`` (the name of
their ``sentinel monitor`` line), the form of the Redis-Sentinel-Url package that other Python
tools read too. A sentinel's port defaults to 26379. The user and password are the primary's
(``requirepass``); ``?sentinel_password=`` (and ``sentinel_username=``) are the sentinels' own,
when they require one.
Rule 2: every URL is checked when the configuration is read (``check_broker_url``): the Redis
client would otherwise fail only once serving, or quietly use database 0 for a database that
is not a number. A refusal says what is wrong, and shows the URL without its passwords.
Rule 3: no log line and no error message shows a password: ``redacted`` masks the one in the
user information and those in the query (``password``, ``sentinel_password``), and never
raises.

Nothing here imports trio or the Redis client: these are string functions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

from ._exceptions import ConfigError

#: the URL schemes ``Config.broker`` accepts
BROKER_SCHEMES = ("redis://", "rediss://", "unix://", "redis+sentinel://")
#: the scheme of a URL that names sentinels rather than a Redis server
SENTINEL_SCHEME = "redis+sentinel"
#: a sentinel's port when the URL gives none (Redis Sentinel's own default)
SENTINEL_PORT = 26379
#: the query arguments a sentinel URL takes (the Redis client reads those of the other forms)
SENTINEL_OPTIONS = ("db", "username", "password", "sentinel_username", "sentinel_password")
#: a password given as a query argument (``?password=...``, ``?sentinel_password=...``)
_QUERY_PASSWORD = re.compile(r"([?&](?:sentinel_)?password=)[^&#]*")
_FORMS = "redis://HOST:PORT/DB, rediss://..., unix:///PATH, redis+sentinel://HOST:PORT,HOST:PORT/SERVICE/DB"


@dataclass(frozen=True, slots=True)
class SentinelURL:
    """A ``redis+sentinel://`` URL, parsed (Rule 1)."""

    #: the sentinels' ``(host, port)``, in the URL's order
    sentinels: tuple[tuple[str, int], ...]
    #: the name the sentinels monitor the primary under
    service: str
    #: the database number (the broadcasts' channel is named after it)
    db: int = 0
    #: the user and password of the primary (and replicas)
    username: str | None = None
    password: str | None = None
    #: the user and password of the sentinels themselves
    sentinel_username: str | None = None
    sentinel_password: str | None = None


def redacted(url: str) -> str:
    """``url`` with its passwords, if any, replaced by ``***``: in the user information
    (``redis://:PASSWORD@host``) and in the query (``?password=PASSWORD``,
    ``?sentinel_password=PASSWORD``). For every log line and error message that shows a broker
    URL; it never raises, even for a URL that does not parse (Rule 3)."""
    # The user information ends at the URL's last "@", even past a "/", "?" or "#": those
    # belong in a password only percent-encoded, and a URL that forgot to is still masked.
    scheme, separator, rest = _QUERY_PASSWORD.sub(r"\1***", url).partition("://")
    userinfo, at, rest = rest.rpartition("@")
    if ":" in userinfo:
        userinfo = userinfo.partition(":")[0] + ":***"
    return scheme + separator + userinfo + at + rest


def check_broker_url(url: str) -> None:
    """Check ``url`` as it will be used (Rule 2): a scheme of ``BROKER_SCHEMES``; for TCP a
    host, a port in range and a database number (the path ``/N`` or ``?db=N``), for a Unix
    socket a path; for sentinels what ``parse_sentinel_url`` checks.

    Raises:
        ConfigError: the URL (shown without its passwords) is not one that can be used.
    """
    if not isinstance(url, str):  # the Django setting may be anything
        raise ConfigError(f"broker: expected a Redis URL, a string, not a {type(url).__name__}")
    shown = redacted(url)
    if not url.startswith(BROKER_SCHEMES):
        raise ConfigError(f"broker {shown!r}: expected a Redis URL ({_FORMS})")
    if url.startswith(f"{SENTINEL_SCHEME}://"):
        parse_sentinel_url(url)
        return
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # a broken [IPv6] address
        raise ConfigError(f"broker {shown!r}: {exc}") from None
    try:
        port = parts.port
    except ValueError:  # (not shown: it may be a password without its "@")
        port = 0
    queried = [value for name, value in _query(parts.query) if name == "db"]
    if parts.scheme == "unix":
        problem = "" if parts.path else "no socket path (unix:///PATH)"
        databases = queried
    else:
        problem = "" if parts.hostname else "no host (redis://HOST:PORT/DB)"
        if port == 0:
            problem = "the port is not a number from 1 to 65535"
        databases = [parts.path.strip("/"), *queried]
    for database in databases:
        if database and not _is_number(database):
            problem = f"the database {database!r} is not a number (redis://HOST:PORT/DB)"
    if problem:
        raise ConfigError(f"broker {shown!r}: {problem}")


def parse_sentinel_url(url: str) -> SentinelURL:
    """The sentinels, service, database and credentials of a ``redis+sentinel://`` URL.

    Raises:
        ConfigError: it has no sentinel, an address without a host or with a port out of range,
            no service name, a database that is not a number (or two different ones), more
            path than ``/SERVICE/DB``, or a query argument it does not take; the message
            shows the URL without its passwords.
    """
    shown = redacted(url)

    def refuse(problem: str) -> ConfigError:
        return ConfigError(f"broker {shown!r}: {problem}")

    rest = url.removeprefix(f"{SENTINEL_SCHEME}://").partition("#")[0]
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username, colon, password = userinfo.partition(":")
    sentinels = []
    for number, address in enumerate(hosts.split(","), 1):
        found = _sentinel_address(address, number)
        if isinstance(found, str):
            raise refuse(found)
        sentinels.append(found)
    segments = path.split("/") if slash else []
    if not segments or not segments[0]:
        raise refuse("no service name (redis+sentinel://HOST:PORT,HOST:PORT/SERVICE/DB)")
    if len(segments) > 2 and any(segments[2:]):
        raise refuse(f"unexpected {'/'.join(segments[2:])!r} after the database (.../SERVICE/DB)")
    options: dict[str, str] = {}
    for name, value in _query(query):
        if name not in SENTINEL_OPTIONS:
            raise refuse(f"unknown option {name!r} (a sentinel URL takes {', '.join(SENTINEL_OPTIONS)})")
        options[name] = value
    databases = {d for d in (segments[1] if len(segments) > 1 else "", options.get("db", "")) if d}
    for database in databases:
        if not _is_number(database):
            raise refuse(f"the database {database!r} is not a number (.../SERVICE/DB)")
    if len(databases) > 1:
        raise refuse(f"two databases, {' and '.join(sorted(databases))} (give one, .../SERVICE/DB)")
    return SentinelURL(
        sentinels=tuple(sentinels),
        service=unquote(segments[0]),
        db=int(databases.pop()) if databases else 0,
        username=options.get("username") or (unquote(username) if at and username else None),
        password=options.get("password") or (unquote(password) if at and colon else None),
        sentinel_username=options.get("sentinel_username") or None,
        sentinel_password=options.get("sentinel_password") or None,
    )


def _sentinel_address(address: str, number: int) -> tuple[str, int] | str:
    """``(host, port)`` of the ``number``-th ``HOST[:PORT]`` of a sentinel URL (``[IPv6]:PORT``
    too), or what is wrong with it. A wrong address is named by its number and host, never
    shown whole: it may be a password whose ``@`` is missing."""
    try:
        parts = urlsplit(f"//{address}")
    except ValueError as exc:  # a broken [IPv6] address
        return f"sentinel {number}: {exc} (HOST:PORT,HOST:PORT)"
    if not parts.hostname or parts.path or parts.query or parts.fragment:
        return f"sentinel {number} has no host (HOST:PORT,HOST:PORT)"
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        return f"the port of sentinel {number} ({parts.hostname}) is not a number from 1 to 65535"
    return parts.hostname, port or SENTINEL_PORT


def _query(query: str) -> list[tuple[str, str]]:
    return parse_qsl(query, keep_blank_values=True)


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit()
