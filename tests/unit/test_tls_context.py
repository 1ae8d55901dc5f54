"""``TLSConfig`` checks, the server's ``SSLContext`` (``server_context``) and its reload.

Pure and synchronous: throwaway certificates from ``trustme`` written to ``tmp_path``, and
handshakes between two ``ssl.SSLObject`` over memory buffers, so that what the server
serves (its certificate, byte for byte; the protocol version; ALPN; the client certificate
it asked for) is seen from the client's side.
"""

from __future__ import annotations

import logging
import ssl
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from trio_c10k import Config, ConfigError, TLSConfig
from trio_c10k._tls import TLS
from trio_c10k._tls_context import ServerContext, server_context

PASSWORD = "correct horse"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def leaf(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("localhost", "127.0.0.1")


class Files:
    """PEM files in a temporary directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def write(self, name: str, *blobs: bytes) -> str:
        path = self.directory / name
        path.write_bytes(b"".join(blobs))
        return str(path)

    def certificate(self, leaf: trustme.LeafCert, name: str = "cert.pem") -> str:
        return self.write(name, *(pem.bytes() for pem in leaf.cert_chain_pems))

    def key(self, leaf: trustme.LeafCert, name: str = "key.pem", password: str | None = None) -> str:
        if password is None:
            return self.write(name, leaf.private_key_pem.bytes())
        key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
        encryption = serialization.BestAvailableEncryption(password.encode())
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
        return self.write(name, pem)


@pytest.fixture
def files(tmp_path: Path) -> Files:
    return Files(tmp_path)


def client_context(ca: trustme.CA, alpn: tuple[str, ...] = ("http/1.1",)) -> ssl.SSLContext:
    """A client trusting ``ca``, offering ``alpn``."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.set_alpn_protocols(list(alpn))
    return context


def handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """The client's and the server's ``SSLObject`` after a handshake over memory buffers; the
    ``ssl.SSLError`` of the side that gave up, if one did."""
    client_in, client_out, server_in, server_out = (ssl.MemoryBIO() for _ in range(4))
    client_side = client.wrap_bio(client_in, client_out, server_hostname="localhost")
    server_side = server.wrap_bio(server_in, server_out, server_side=True)
    pending = [client_side, server_side]
    for _ in range(10):  # a TLS 1.2 handshake takes 2 round trips, 1.3 one and a half
        for side in list(pending):
            try:
                side.do_handshake()
                pending.remove(side)
            except ssl.SSLWantReadError:
                pass
        server_in.write(client_out.read())
        client_in.write(server_out.read())
        if not pending:
            return client_side, server_side
    raise AssertionError("the handshake did not finish")


def der(leaf: trustme.LeafCert) -> bytes:
    return ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())


# --- the context -------------------------------------------------------------------------------


def test_the_context_serves_the_certificate_with_tls_1_2_or_newer_and_alpn(
    ca: trustme.CA, leaf: trustme.LeafCert, files: Files
) -> None:
    context = server_context(TLSConfig(certfile=files.certificate(leaf), keyfile=files.key(leaf)))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_NONE
    assert not context.options & ssl.OP_NO_TICKET  # session tickets on
    assert context.options & ssl.OP_NO_RENEGOTIATION
    client, server = handshake(context, client_context(ca, ("h2", "http/1.1")))
    assert client.getpeercert(binary_form=True) == der(leaf)
    assert (client.version(), client.selected_alpn_protocol()) == ("TLSv1.3", "http/1.1")
    assert server.selected_alpn_protocol() == "http/1.1"
    assert server.getpeercert() is None  # no client certificate asked for


@pytest.mark.parametrize(
    ("version", "served"),
    [
        (ssl.TLSVersion.TLSv1_1, None),
        (ssl.TLSVersion.TLSv1_2, "TLSv1.2"),
        (ssl.TLSVersion.TLSv1_3, "TLSv1.3"),
    ],
)
def test_a_client_below_tls_1_2_is_refused(
    ca: trustme.CA, leaf: trustme.LeafCert, files: Files, version: ssl.TLSVersion, served: str | None
) -> None:
    context = server_context(TLSConfig(certfile=files.certificate(leaf), keyfile=files.key(leaf)))
    client_ctx = client_context(ca)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # ssl.TLSVersion.TLSv1_1 is deprecated
        client_ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # the client may offer TLS 1.1
        client_ctx.minimum_version = min(version, ssl.TLSVersion.TLSv1_2)
        client_ctx.maximum_version = version
    if served is None:
        with pytest.raises(ssl.SSLError) as error:
            handshake(context, client_ctx)
        assert error.value.reason == "UNSUPPORTED_PROTOCOL"  # the server's refusal
    else:
        client, _ = handshake(context, client_ctx)
        assert client.version() == served


def test_a_client_offering_only_other_protocols_gets_no_alpn_answer(
    ca: trustme.CA, leaf: trustme.LeafCert, files: Files
) -> None:
    context = server_context(TLSConfig(certfile=files.certificate(leaf), keyfile=files.key(leaf)))
    client, server = handshake(context, client_context(ca, ("h2",)))
    assert client.selected_alpn_protocol() is None
    assert server.selected_alpn_protocol() is None


def test_the_key_may_be_in_the_certificate_file_or_encrypted(
    ca: trustme.CA, leaf: trustme.LeafCert, files: Files
) -> None:
    combined = files.write(
        "combined.pem", leaf.private_key_pem.bytes(), *(p.bytes() for p in leaf.cert_chain_pems)
    )
    client, _ = handshake(server_context(TLSConfig(certfile=combined)), client_context(ca))
    assert client.getpeercert(binary_form=True) == der(leaf)
    tls = TLSConfig(
        certfile=files.certificate(leaf),
        keyfile=files.key(leaf, password=PASSWORD),
        keyfile_password=PASSWORD,
    )
    client, _ = handshake(server_context(tls), client_context(ca))
    assert client.getpeercert(binary_form=True) == der(leaf)


def test_ciphers_apply_to_tls_1_2(ca: trustme.CA, leaf: trustme.LeafCert, files: Files) -> None:
    cipher = "ECDHE-ECDSA-CHACHA20-POLY1305"  # trustme's keys are ECDSA
    tls = TLSConfig(certfile=files.certificate(leaf), keyfile=files.key(leaf), ciphers=cipher)
    client_ctx = client_context(ca)
    client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    client, _ = handshake(server_context(tls), client_ctx)
    assert client.cipher() == (cipher, "TLSv1.2", 256)


@pytest.mark.parametrize("cert_reqs", ["optional", "required"])
def test_client_certificates_are_checked_against_ca_certs(
    ca: trustme.CA, leaf: trustme.LeafCert, files: Files, cert_reqs: str
) -> None:
    tls = TLSConfig(
        certfile=files.certificate(leaf),
        keyfile=files.key(leaf),
        ca_certs=files.write("ca.pem", ca.cert_pem.bytes()),
        cert_reqs=cert_reqs,
    )
    context = server_context(tls)
    assert context.verify_mode == (ssl.CERT_REQUIRED if cert_reqs == "required" else ssl.CERT_OPTIONAL)
    # A certificate signed by the authority: the server sees who the client is.
    client_ctx = client_context(ca)
    ca.issue_cert("alice@example.com").configure_cert(client_ctx)
    _, server = handshake(context, client_ctx)
    assert server.getpeercert()["subjectAltName"] == (("email", "alice@example.com"),)
    # One signed by another authority is refused, in either mode.
    stranger = client_context(ca)
    trustme.CA().issue_cert("mallory@example.com").configure_cert(stranger)
    with pytest.raises(ssl.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
        handshake(context, stranger)
    # None at all: refused only if required.
    if cert_reqs == "required":
        with pytest.raises(ssl.SSLError, match="PEER_DID_NOT_RETURN_A_CERTIFICATE"):
            handshake(context, client_context(ca))
    else:
        _, server = handshake(context, client_context(ca))
        assert server.getpeercert() is None


# --- TLSConfig ---------------------------------------------------------------------------------


def test_tls_is_on_only_with_a_certificate() -> None:
    assert not Config().tls.enabled
    assert Config(tls=TLSConfig(certfile="cert.pem")).tls.enabled
    assert TLSConfig().verify_mode == ssl.CERT_NONE


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"keyfile": "key.pem"}, "--ssl-keyfile needs --ssl-certfile: TLS is on only with a certificate"),
        ({"keyfile_password": "pw"}, "--ssl-keyfile-password needs --ssl-certfile"),
        ({"ca_certs": "ca.pem", "cert_reqs": "required"}, "--ssl-ca-certs needs --ssl-certfile"),
        ({"cert_reqs": "optional"}, "--ssl-cert-reqs needs --ssl-certfile"),
        ({"ciphers": "ECDHE+AESGCM"}, "--ssl-ciphers needs --ssl-certfile"),
        ({"certfile": ""}, "--ssl-certfile must not be empty"),
        ({"certfile": "c.pem", "keyfile": ""}, "--ssl-keyfile must not be empty"),
        (
            {"certfile": "c.pem", "cert_reqs": "sometimes"},
            "--ssl-cert-reqs 'sometimes': expected none, optional or required (or uvicorn's 0, 1, 2)",
        ),
        (
            {"certfile": "c.pem", "cert_reqs": "2"},  # the command line turns 2 into "required"
            "--ssl-cert-reqs '2': expected none, optional or required",
        ),
        (
            {"certfile": "c.pem", "cert_reqs": "required"},
            "--ssl-cert-reqs required needs --ssl-ca-certs: the authorities client certificates are "
            "checked against",
        ),
        (
            {"certfile": "c.pem", "ca_certs": "ca.pem"},
            "--ssl-ca-certs has no effect with --ssl-cert-reqs none (client certificates are not asked "
            "for): add --ssl-cert-reqs optional or required",
        ),
        (
            {"certfile": "c.pem", "ciphers": "NO-SUCH-CIPHER"},
            "--ssl-ciphers 'NO-SUCH-CIPHER': OpenSSL selects no cipher",
        ),
    ],
)
def test_a_combination_that_cannot_work_is_refused_when_built(kwargs: dict[str, str], error: str) -> None:
    with pytest.raises(ConfigError) as raised:
        TLSConfig(**kwargs)
    assert str(raised.value).startswith(error)


# --- files that cannot be used -----------------------------------------------------------------

#: a test case: the files (from the Files helper) -> the TLSConfig and the expected message
Case = Callable[[Files, trustme.CA, trustme.LeafCert], tuple[TLSConfig, str]]


def missing_certificate(files: Files, ca: trustme.CA, leaf: trustme.LeafCert) -> tuple[TLSConfig, str]:
    path = str(files.directory / "nope.pem")
    return TLSConfig(
        certfile=path, keyfile=files.key(leaf)
    ), f"--ssl-certfile {path}: No such file or directory"


def missing_key(files: Files, ca: trustme.CA, leaf: trustme.LeafCert) -> tuple[TLSConfig, str]:
    path = str(files.directory / "nope.pem")
    return TLSConfig(
        certfile=files.certificate(leaf), keyfile=path
    ), f"--ssl-keyfile {path}: No such file or directory"


def directory_as_certificate(files: Files, ca: trustme.CA, leaf: trustme.LeafCert) -> tuple[TLSConfig, str]:
    path = str(files.directory)
    return TLSConfig(certfile=path, keyfile=files.key(leaf)), f"--ssl-certfile {path}: Is a directory"


def no_certificate_in_it(files: Files, ca: trustme.CA, leaf: trustme.LeafCert) -> tuple[TLSConfig, str]:
    path = files.key(leaf, "swapped.pem")  # the key given as the certificate
    return TLSConfig(
        certfile=path, keyfile=files.key(leaf)
    ), f"--ssl-certfile {path}: no PEM certificate in it"


def no_key_in_it(files: Files, ca: trustme.CA, leaf: trustme.LeafCert) -> tuple[TLSConfig, str]:
    certificate = files.certificate(leaf)
    path = files.certificate(leaf, "swapped.pem")  # the certificate given as the key
    return TLSConfig(certfile=certificate, keyfile=path), f"--ssl-keyfile {path}: no PEM private key in it"


def damaged_certificate(files: Files, ca: trustme.CA, leaf: trustme.LeafCert) -> tuple[TLSConfig, str]:
    pem = leaf.cert_chain_pems[0].bytes()
    path = files.write("cut.pem", pem, pem[:300])  # a chain whose second certificate is cut short
    return TLSConfig(certfile=path, keyfile=files.key(leaf)), (
        f"--ssl-certfile {path}: a certificate in it cannot be read (damaged, cut short?)"
    )


def damaged_key(files: Files, ca: trustme.CA, leaf: trustme.LeafCert) -> tuple[TLSConfig, str]:
    pem = leaf.private_key_pem.bytes()
    path = files.write("cut-key.pem", pem[:60], pem[-40:])
    return TLSConfig(certfile=files.certificate(leaf), keyfile=path), (
        f"--ssl-keyfile {path}: the private key in it cannot be read (damaged, cut short?)"
    )


def no_key_in_the_certificate_file(
    files: Files, ca: trustme.CA, leaf: trustme.LeafCert
) -> tuple[TLSConfig, str]:
    path = files.certificate(leaf)
    return TLSConfig(certfile=path), (
        f"--ssl-certfile {path}: no PEM private key in it (give the key's file with --ssl-keyfile)"
    )


def another_key(files: Files, ca: trustme.CA, leaf: trustme.LeafCert) -> tuple[TLSConfig, str]:
    certificate = files.certificate(leaf)
    path = files.key(ca.issue_cert("other.example"), "other-key.pem")
    return TLSConfig(certfile=certificate, keyfile=path), (
        f"--ssl-keyfile {path}: the private key is not the one of the certificate in {certificate}"
    )


def encrypted_key_without_password(
    files: Files, ca: trustme.CA, leaf: trustme.LeafCert
) -> tuple[TLSConfig, str]:
    path = files.key(leaf, password=PASSWORD)
    return TLSConfig(certfile=files.certificate(leaf), keyfile=path), (
        f"--ssl-keyfile {path}: the private key is encrypted: give --ssl-keyfile-password"
    )


def wrong_password(files: Files, ca: trustme.CA, leaf: trustme.LeafCert) -> tuple[TLSConfig, str]:
    path = files.key(leaf, password=PASSWORD)
    return TLSConfig(certfile=files.certificate(leaf), keyfile=path, keyfile_password="wrong"), (
        f"--ssl-keyfile {path}: --ssl-keyfile-password is not the password of the private key"
    )


def missing_ca_certs(files: Files, ca: trustme.CA, leaf: trustme.LeafCert) -> tuple[TLSConfig, str]:
    path = str(files.directory / "nope.pem")
    tls = TLSConfig(
        certfile=files.certificate(leaf), keyfile=files.key(leaf), ca_certs=path, cert_reqs="required"
    )
    return tls, f"--ssl-ca-certs {path}: No such file or directory"


def no_authority_in_ca_certs(files: Files, ca: trustme.CA, leaf: trustme.LeafCert) -> tuple[TLSConfig, str]:
    path = files.write("ca.pem", b"not a certificate\n")
    tls = TLSConfig(
        certfile=files.certificate(leaf), keyfile=files.key(leaf), ca_certs=path, cert_reqs="optional"
    )
    return tls, f"--ssl-ca-certs {path}: no PEM certificate in it"


@pytest.mark.parametrize(
    "case",
    [
        missing_certificate,
        missing_key,
        directory_as_certificate,
        no_certificate_in_it,
        damaged_certificate,
        no_key_in_it,
        damaged_key,
        no_key_in_the_certificate_file,
        another_key,
        encrypted_key_without_password,
        wrong_password,
        missing_ca_certs,
        no_authority_in_ca_certs,
    ],
)
def test_a_file_that_cannot_be_used_is_named_with_the_reason(
    case: Case, files: Files, ca: trustme.CA, leaf: trustme.LeafCert
) -> None:
    tls, message = case(files, ca, leaf)
    with pytest.raises(ConfigError) as raised:
        server_context(tls)
    assert str(raised.value) == message
    with pytest.raises(ConfigError) as raised:
        ServerContext(tls)
    assert str(raised.value) == message


def test_without_a_certificate_there_is_no_context() -> None:
    with pytest.raises(ConfigError, match="TLS is off: --ssl-certfile is not set"):
        server_context(TLSConfig())


# --- reload ------------------------------------------------------------------------------------


def tls_records(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [
        (record.levelname, record.getMessage()) for record in caplog.records if record.name == "trio_c10k.tls"
    ]


def test_a_reload_serves_the_new_certificate_to_new_connections(
    ca: trustme.CA, leaf: trustme.LeafCert, files: Files, caplog: pytest.LogCaptureFixture
) -> None:
    certificate, key = files.certificate(leaf), files.key(leaf)
    holder = ServerContext(TLSConfig(certfile=certificate, keyfile=key))
    before = holder.current
    open_client, _ = handshake(before, client_context(ca))  # a connection made before the renewal
    renewed = ca.issue_cert("localhost", "127.0.0.1")
    files.certificate(renewed)
    files.key(renewed)
    caplog.set_level(logging.INFO, logger="trio_c10k.tls")
    assert holder.reload() is True
    assert holder.current is not before
    assert tls_records(caplog) == [("INFO", f"TLS certificate reloaded from {certificate}")]
    client, _ = handshake(holder.current, client_context(ca))
    assert client.getpeercert(binary_form=True) == der(renewed) != der(leaf)
    assert open_client.getpeercert(binary_form=True) == der(leaf)  # it keeps its own


@pytest.mark.parametrize("broken", ["certificate", "key", "mismatch", "gone"])
def test_a_reload_from_broken_files_keeps_the_old_context_and_logs_why(
    ca: trustme.CA, leaf: trustme.LeafCert, files: Files, caplog: pytest.LogCaptureFixture, broken: str
) -> None:
    certificate, key = files.certificate(leaf), files.key(leaf)
    holder = ServerContext(TLSConfig(certfile=certificate, keyfile=key))
    before = holder.current
    if broken == "certificate":  # a renewal that wrote half a file
        files.write("cert.pem", leaf.cert_chain_pems[0].bytes()[:300])
        reason = f"--ssl-certfile {certificate}: a certificate in it cannot be read (damaged, cut short?)"
    elif broken == "key":
        files.write("key.pem", b"")
        reason = f"--ssl-keyfile {key}: no PEM private key in it"
    elif broken == "mismatch":  # the certificate renewed, the key not yet
        files.certificate(ca.issue_cert("localhost"))
        reason = f"--ssl-keyfile {key}: the private key is not the one of the certificate in {certificate}"
    else:
        (files.directory / "key.pem").unlink()
        reason = f"--ssl-keyfile {key}: No such file or directory"
    caplog.set_level(logging.INFO, logger="trio_c10k.tls")
    assert holder.reload() is False
    assert holder.current is before
    assert tls_records(caplog) == [
        ("ERROR", f"TLS certificate not reloaded, the previous one is still served: {reason}")
    ]
    client, _ = handshake(holder.current, client_context(ca))
    assert client.getpeercert(binary_form=True) == der(leaf)


def test_close_notify_ends_tls_after_the_last_record(
    ca: trustme.CA, leaf: trustme.LeafCert, files: Files
) -> None:
    context = server_context(TLSConfig(certfile=files.certificate(leaf), keyfile=files.key(leaf)))
    server, client = (
        TLS(context, server_side=True),
        TLS(client_context(ca), server_side=False, server_hostname="localhost"),
    )
    data = b""
    while not client.handshake(data):  # the handshake in memory, records passed by hand
        server.handshake(client.data_to_send())
        data = server.data_to_send()
    server.handshake(client.data_to_send())
    assert client.decrypt(server.encrypt(b"last bytes")) == b"last bytes"
    alert = server.close_notify()
    assert alert
    assert client.decrypt(alert) == b""
    assert server.close_notify() == b""  # sent once
