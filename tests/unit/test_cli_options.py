"""The options of ``python -m trio_c10k`` generated from the ``Config`` fields' ``option()``.

Pure and synchronous: the parser is built and run in this process, and the ``Config`` it
gives is compared whole with the one expected.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import help_entries
from trio_c10k import Bind, Config, TLSConfig, WebSocketConfig
from trio_c10k._cli import _add_option, add_config_options, build_parser, config_from_args, config_options
from trio_c10k._config import Option, option
from trio_c10k._server import FD_RESERVE

ROOT = Path(__file__).parents[2]
#: fields that no option sets: the nested WebSocket limits and TLS settings (set by their own
#: options) and a value derived from another field
NOT_OPTIONS = {"websocket", "tls", "trusted_proxies"}
#: the nested configs, by the field of ``Config`` holding them
NESTED = {"websocket": WebSocketConfig, "tls": TLSConfig}
#: what a TLS option needs beside it (a certificate; client certificates need authorities):
#: given before the option tested, and the fields it sets
TLS_BASE_ARGS = ["--ssl-certfile", "cert.pem", "--ssl-cert-reqs", "optional", "--ssl-ca-certs", "ca.pem"]
TLS_BASE = {"certfile": "cert.pem", "cert_reqs": "optional", "ca_certs": "ca.pem"}

#: each field set by an option: the arguments, the field ("websocket." for WebSocketConfig)
#: and the value they give it
ROUND_TRIPS: list[tuple[list[str], str, object]] = [
    (
        ["--bind", "0.0.0.0:9000", "-b", "unix:/run/a.sock"],
        "binds",
        (Bind("0.0.0.0", 9000), Bind(path="/run/a.sock")),
    ),
    (["--threads", "3"], "threads", 3),
    (["--backlog", "16"], "backlog", 16),
    (["--max-connections", "50"], "max_connections", 50),
    (["--keep-alive-timeout", "2.5"], "keep_alive_timeout", 2.5),
    (["--header-timeout", "3"], "header_timeout", 3.0),
    (["--max-header-size", "2048"], "max_header_size", 2048),
    (["--max-body-size", "0"], "max_body_size", 0),
    (["--body-timeout", "120"], "body_timeout", 120.0),
    (["--send-timeout", "0.5"], "send_timeout", 0.5),
    (["--graceful-timeout", "1"], "graceful_timeout", 1.0),
    (["--no-access-log"], "access_log", False),
    (["--proxy-headers"], "proxy_headers", True),
    (
        ["--forwarded-allow-ips", " 10.0.0.0/8, 192.168.1.1,"],
        "forwarded_allow_ips",
        ("10.0.0.0/8", "192.168.1.1"),
    ),
    (["--broker", "redis://127.0.0.1:6379/1"], "broker", "redis://127.0.0.1:6379/1"),
    (["--ws-max-message-size", "4096"], "websocket.max_message_size", 4096),
    (["--ws-send-queue-size", "1"], "websocket.send_queue_size", 1),
    (["--ws-send-timeout", "0.25"], "websocket.send_timeout", 0.25),
    (["--ws-ping-interval", "0"], "websocket.ping_interval", None),
    (["--ws-ping-timeout", "5"], "websocket.ping_timeout", 5.0),
    (["--ws-close-timeout", "2"], "websocket.close_timeout", 2.0),
    (["--ws-compression"], "websocket.compression", True),
    (["--ssl-certfile", "/etc/site/fullchain.pem"], "tls.certfile", "/etc/site/fullchain.pem"),
    (["--ssl-keyfile", "/etc/site/privkey.pem"], "tls.keyfile", "/etc/site/privkey.pem"),
    (["--ssl-keyfile-password", "s3cret"], "tls.keyfile_password", "s3cret"),
    (["--ssl-ca-certs", "/etc/site/clients.pem"], "tls.ca_certs", "/etc/site/clients.pem"),
    (["--ssl-cert-reqs", "2"], "tls.cert_reqs", "required"),
    (["--ssl-ciphers", "ECDHE+AESGCM"], "tls.ciphers", "ECDHE+AESGCM"),
]


def all_fields() -> dict[str, dataclasses.Field[Any]]:
    """Every field, by name ("websocket." for WebSocketConfig, "tls." for TLSConfig)."""
    fields = {field.name: field for field in dataclasses.fields(Config)}
    for prefix, cls in NESTED.items():
        fields |= {f"{prefix}.{field.name}": field for field in dataclasses.fields(cls)}
    return fields


def option_fields() -> dict[str, dataclasses.Field[Any]]:
    """Every field declared with ``option()``, by name (as ``all_fields()``)."""
    return {name: field for name, field in all_fields().items() if "option" in field.metadata}


def parse(*args: str) -> Config:
    return config_from_args(build_parser().parse_args(["app", *args]))


def with_value(name: str, value: object) -> Config:
    """``Config()`` with one field changed (a TLS field: from ``TLS_BASE``)."""
    if name.startswith("websocket."):
        return Config(websocket=WebSocketConfig(**{name.removeprefix("websocket."): value}))
    if name.startswith("tls."):
        return Config(tls=TLSConfig(**(TLS_BASE | {name.removeprefix("tls."): value})))
    return Config(**{name: value})


def test_every_field_has_an_option_or_is_listed_as_having_none() -> None:
    assert set(all_fields()) - set(option_fields()) == NOT_OPTIONS
    assert all(isinstance(field.metadata["option"], Option) for field in option_fields().values())


def test_every_option_is_tested_below() -> None:
    assert sorted(option_fields()) == sorted(name for _, name, _ in ROUND_TRIPS)


@pytest.mark.parametrize(("args", "name", "value"), ROUND_TRIPS, ids=[name for _, name, _ in ROUND_TRIPS])
def test_an_option_sets_its_field_and_only_it(args: list[str], name: str, value: object) -> None:
    declared = option_fields()[name].metadata["option"]
    assert args[0] in declared.flags or args[0] == "--no" + declared.flags[-1][1:]
    base = TLS_BASE_ARGS if name.startswith("tls.") else []
    assert parse(*base, *args) == with_value(name, value)


@pytest.mark.parametrize(
    ("args", "name", "value"),
    [
        (["--no-access-log", "--access-log"], "access_log", True),
        (["--proxy-headers", "--no-proxy-headers"], "proxy_headers", False),
        (["--ws-compression", "--no-ws-compression"], "websocket.compression", False),
        (["--ws-ping-interval", "7.5"], "websocket.ping_interval", 7.5),
        (["--forwarded-allow-ips", "*"], "forwarded_allow_ips", ("*",)),
        (["--threads", "3", "--threads", "4"], "threads", 4),
    ],
)
def test_the_last_option_given_wins(args: list[str], name: str, value: object) -> None:
    assert parse(*args) == with_value(name, value)


def test_no_option_gives_the_dataclass_defaults() -> None:
    assert parse() == Config()


def test_help_states_each_dataclass_default() -> None:
    # Compared without whitespace: argparse wraps lines after hyphens too.
    entries = {
        flag: "".join(text.split()) for flag, text in help_entries(build_parser().format_help()).items()
    }
    for name, field in option_fields().items():
        declared = field.metadata["option"]
        default = field.default
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else str(default)
        expected = declared.help if default is None else f"{declared.help} (default: {shown})"
        assert entries[declared.flags[-1]] == "".join(expected.split()), name
    assert entries["--max-connections"].endswith(f"minus{FD_RESERVE})")


def test_a_default_of_the_commands_own_sets_the_field_and_is_shown() -> None:
    # manage.py runserver's --graceful-timeout
    parser = argparse.ArgumentParser()
    add_config_options(parser, leave_out=("bind",), defaults={"graceful_timeout": 3.0})
    assert config_from_args(parser.parse_args([])) == Config(graceful_timeout=3.0)
    given = config_from_args(parser.parse_args(["--graceful-timeout", "7"]))
    assert given == Config(graceful_timeout=7.0)
    entries = {flag: "".join(text.split()) for flag, text in help_entries(parser.format_help()).items()}
    assert entries["--graceful-timeout"].endswith("(default:3.0)")
    assert entries["--keep-alive-timeout"].endswith("(default:5.0)")  # the others keep theirs


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--bind", "nonsense"], "argument -b/--bind: bind 'nonsense': expected HOST:PORT, [IPv6]:PORT"),
        (["--bind", "unix:"], "argument -b/--bind: bind 'unix:': unix: needs a path"),
        (
            ["--ws-ping-interval", "x"],
            "argument --ws-ping-interval: 'x' is not a number of seconds (0 for none)",
        ),
        (["--threads", "x"], "argument --threads: invalid int value: 'x'"),
        (["--ws-send-timeout", "x"], "argument --ws-send-timeout: invalid float value: 'x'"),
        (["--access-log=1"], "argument --access-log/--no-access-log: ignored explicit argument '1'"),
        (
            ["--ssl-cert-reqs", "3"],
            "argument --ssl-cert-reqs: '3': expected none, optional or required (or uvicorn's 0, 1, 2)",
        ),
    ],
)
def test_a_value_that_does_not_parse_names_its_option(
    args: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["app", *args])
    assert exit_info.value.code == 2
    assert f"python -m trio_c10k: error: {error}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("none", "none"),
        ("0", "none"),
        ("Optional", "optional"),
        ("1", "optional"),
        ("required", "required"),
        ("2", "required"),
    ],
)
def test_cert_reqs_takes_a_name_or_uvicorns_number(text: str, name: str) -> None:
    assert build_parser().parse_args(["app", "--ssl-cert-reqs", text]).ssl_cert_reqs == name


@dataclasses.dataclass(frozen=True)
class UnparsedTuple:
    names: tuple[str, ...] = option((), "--names", help="a tuple, but no parse= to make one")


def test_an_option_whose_type_argparse_cannot_make_is_refused() -> None:
    ((declared, default, kind),) = config_options(UnparsedTuple)
    with pytest.raises(TypeError, match="--names: the option of a tuple"):
        _add_option(argparse.ArgumentParser(), declared, default, kind)


def option_strings() -> list[str]:
    """Every option of the command line but --help, generated or not."""
    parser = build_parser()
    return [
        flag for action in parser._actions for flag in action.option_strings if flag not in ("-h", "--help")
    ]


@pytest.mark.parametrize("flag", option_strings())
def test_every_option_is_in_the_configuration_docs(flag: str) -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    assert re.search(rf"`{re.escape(flag)}[ `]", text), f"{flag} is not in docs/configuration.md"


@pytest.mark.parametrize("flag", [flag for flag in option_strings() if not flag.startswith("--no-")])
def test_every_option_is_in_the_readme_table(flag: str) -> None:
    rows = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| `")]
    assert any(re.search(rf"`{re.escape(flag)}[ `]", row) for row in rows), f"{flag} is not in README's table"
