"""``python -m trio_c10k --ssl-certfile ...``: certificates that stop the start, SIGHUP reloads.

Each test runs the command line in a real subprocess with throwaway certificates from
``trustme``, and reads its log: a reload says what came of it in one line on ``trio_c10k.tls``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import trustme

from tests.helpers import (
    APP,
    ROOT,
    WORKERS_ENV,
    Output,
    Supervised,
    assert_one_line_error,
    run_cli,
    service_port,
)

RELOADED = r"\[INFO\] {worker}trio_c10k\.tls: TLS certificate reloaded from {path}\n"
NOT_RELOADED = (
    r"\[ERROR\] {worker}trio_c10k\.tls: TLS certificate not reloaded, the previous one is still "
    r"served: {reason}\n"
)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def write_certificate(ca: trustme.CA, directory: Path) -> tuple[str, str]:
    """A new certificate for localhost, and its key, written to ``cert.pem`` and ``key.pem``."""
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    certificate, key = directory / "cert.pem", directory / "key.pem"
    certificate.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())
    return str(certificate), str(key)


def served_certificate(ca: trustme.CA, port: int) -> str:
    """The certificate the server on ``port`` shows a new connection, PEM."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return ssl.DER_cert_to_PEM_cert(der)


def cut_short(path: str) -> None:
    """What a renewal that stopped half-way leaves: the file's first 300 bytes."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:300])


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["one process", "--workers 2"])
@pytest.mark.parametrize("broken", ["another key", "no such file", "cut short"])
def test_a_certificate_that_cannot_be_used_stops_the_start_with_one_line(
    ca: trustme.CA, tmp_path: Path, broken: str, workers: list[str]
) -> None:
    certificate, key = write_certificate(ca, tmp_path)
    if broken == "another key":
        key = str(tmp_path / "other-key.pem")
        ca.issue_cert("other.example").private_key_pem.write_to_path(key)
        reason = f"--ssl-keyfile {key}: the private key is not the one of the certificate in {certificate}"
    elif broken == "no such file":
        certificate = str(tmp_path / "renewed.pem")
        reason = f"--ssl-certfile {certificate}: No such file or directory"
    else:
        cut_short(certificate)
        reason = f"--ssl-certfile {certificate}: a certificate in it cannot be read (damaged, cut short?)"
    result = run_cli(
        APP, "--bind", "127.0.0.1:0", "--ssl-certfile", certificate, "--ssl-keyfile", key, *workers
    )
    line = assert_one_line_error(result, 2)
    assert line == f"python -m trio_c10k: error: {reason} (see --help)"


def test_sighup_reloads_the_certificate_and_a_broken_one_keeps_the_old(
    ca: trustme.CA, tmp_path: Path, supervised: list[Supervised]
) -> None:
    certificate, key = write_certificate(ca, tmp_path)
    command = Supervised("--bind", "127.0.0.1:0", "--ssl-certfile", certificate, "--ssl-keyfile", key)
    supervised.append(command)
    port = int(command.wait_for(r"trio_c10k\.server: Listening on https://127\.0\.0\.1:(\d+)")[0][1])
    first = served_certificate(ca, port)
    assert first == Path(certificate).read_bytes().decode()
    write_certificate(ca, tmp_path)  # renewed
    os.kill(command.proc.pid, signal.SIGHUP)
    command.wait_for(RELOADED.format(worker="", path=re.escape(certificate)))
    second = served_certificate(ca, port)  # a new connection gets the new certificate
    assert second == Path(certificate).read_bytes().decode() != first
    cut_short(certificate)
    os.kill(command.proc.pid, signal.SIGHUP)
    reason = f"--ssl-certfile {certificate}: a certificate in it cannot be read (damaged, cut short?)"
    command.wait_for(NOT_RELOADED.format(worker="", reason=re.escape(reason)))
    write_certificate(ca, tmp_path)  # repaired: the next SIGHUP takes it
    os.kill(command.proc.pid, signal.SIGHUP)
    command.wait_for(RELOADED.format(worker="", path=re.escape(certificate)), count=2)
    assert command.stop() == 0
    assert "Traceback" not in command.log
    assert len(re.findall(r"\[ERROR\]", command.log)) == 1


def test_the_supervisor_passes_sighup_on_to_every_worker(
    ca: trustme.CA, tmp_path: Path, supervised: list[Supervised]
) -> None:
    certificate, key = write_certificate(ca, tmp_path)
    command = Supervised(
        "--workers",
        "2",
        "--bind",
        "127.0.0.1:0",
        "--ssl-certfile",
        certificate,
        "--ssl-keyfile",
        key,
    )
    supervised.append(command)
    command.wait_for(r"worker \d+ trio_c10k\.server: Listening on", count=2)
    write_certificate(ca, tmp_path)
    os.kill(command.proc.pid, signal.SIGHUP)
    command.wait_for(r"trio_c10k\.workers: SIGHUP: passing it on to the 2 workers\n")
    reloaded = command.wait_for(
        RELOADED.format(worker=r"worker (\d+) ", path=re.escape(certificate)), count=2
    )
    assert sorted(match[1] for match in reloaded) == ["0", "1"]
    assert command.stop() == 0
    assert "Traceback" not in command.log
    assert "starting it again" not in command.log  # no worker was killed by the signal


def test_runserver_serves_https_with_the_same_options(ca: trustme.CA, tmp_path: Path) -> None:
    certificate, key = write_certificate(ca, tmp_path)
    port = service_port()
    tls_options = ["--ssl-certfile", certificate, "--ssl-keyfile", key]
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload", *tls_options],
        cwd=ROOT,
        env=WORKERS_ENV,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        Output(proc.stdout).wait_for(f"Listening on https://127.0.0.1:{port}")  # after Django's banner
        context = ssl.create_default_context()
        ca.configure_trust(context)
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            tls.sendall(b"GET /t/environ/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            response = b""
            while chunk := tls.recv(65536):
                response += chunk
        head, _, body = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        assert json.loads(body)["wsgi.url_scheme"] == "https"
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.communicate(timeout=30)
