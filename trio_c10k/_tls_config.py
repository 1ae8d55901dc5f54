"""The TLS settings (``Config.tls``): the certificate, its key, client certificates, ciphers.

Rule 1: as in ``_config``, nothing here imports trio or Django, nor reads a file: a
``TLSConfig`` is a plain value. The files are loaded by ``_tls_context``, when the server starts
and on each reload.
Rule 2: a combination that cannot work (a key without a certificate, client certificates
required without the authorities to check them against...) raises ``ConfigError`` when the
``TLSConfig`` is built.
Rule 3: the options are named as uvicorn names them, so that a uvicorn command line's TLS part
works here unchanged.
"""

from __future__ import annotations

import dataclasses
import ssl
from dataclasses import dataclass

from ._exceptions import ConfigError
from ._options import option

#: the values of ``--ssl-cert-reqs``, and the ``ssl`` verify mode each stands for
CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


def _cert_reqs(text: str) -> str:
    """``--ssl-cert-reqs``: a name of ``CERT_REQS``, or uvicorn's number for it (the value of
    ``ssl.CERT_NONE``, ``CERT_OPTIONAL``, ``CERT_REQUIRED``: 0, 1, 2)."""
    names = {str(int(mode)): name for name, mode in CERT_REQS.items()}
    name = names.get(text.strip(), text.strip().lower())
    if name not in CERT_REQS:
        raise ConfigError(f"{text!r}: expected none, optional or required (or uvicorn's 0, 1, 2)")
    return name


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """How the server speaks TLS (``Config.tls``); it does once ``certfile`` is set.

    Raises:
        ConfigError: an option is set without ``certfile``, ``cert_reqs`` is unknown, client
            certificates are asked for without ``ca_certs`` (or ``ca_certs`` is given without
            asking for them), a file name is empty, or OpenSSL selects no cipher of ``ciphers``.
    """

    #: PEM file: the server's certificate, then the intermediate ones (certbot's
    #: ``fullchain.pem``); None: plain HTTP
    certfile: str | None = option(
        None,
        "--ssl-certfile",
        metavar="FILE",
        group="TLS",
        help="serve HTTPS and wss:// with this PEM certificate chain (the certificate, then the "
        "intermediate ones); without it, plain HTTP. SIGHUP reloads it and its key",
    )
    #: PEM file of the certificate's private key; None: the key is in ``certfile``
    keyfile: str | None = option(
        None,
        "--ssl-keyfile",
        metavar="FILE",
        group="TLS",
        help="PEM private key of --ssl-certfile (default: the key is in --ssl-certfile)",
    )
    #: password of an encrypted ``keyfile``; None: the key is not encrypted (nothing prompts
    #: for one: an encrypted key without it stops the start)
    keyfile_password: str | None = option(
        None,
        "--ssl-keyfile-password",
        metavar="PASSWORD",
        group="TLS",
        help="password of an encrypted --ssl-keyfile (default: none, the key is not encrypted). "
        "Other users see it in ps: prefer a key readable only by the server's user",
    )
    #: PEM file of the certificate authorities client certificates are checked against
    ca_certs: str | None = option(
        None,
        "--ssl-ca-certs",
        metavar="FILE",
        group="TLS",
        help="PEM file of the certificate authorities client certificates must be signed by, "
        "with --ssl-cert-reqs optional or required (default: none)",
    )
    #: client certificates: "none" (not asked for), "optional" (checked if the client sends
    #: one), "required" (the handshake fails without a valid one)
    cert_reqs: str = option(
        "none",
        "--ssl-cert-reqs",
        metavar="{none,optional,required}",
        group="TLS",
        parse=_cert_reqs,
        help="client certificates: none (not asked for), optional (checked if sent) or required "
        "(the handshake fails without one); uvicorn's numbers 0, 1, 2 mean the same",
    )
    #: OpenSSL cipher list for TLS 1.2 (TLS 1.3's suites are OpenSSL's own); None: Python's
    #: default for servers, which uvicorn keeps too (since 0.48; "TLSv1" before)
    ciphers: str | None = option(
        None,
        "--ssl-ciphers",
        metavar="CIPHERS",
        group="TLS",
        help="OpenSSL cipher list for TLS 1.2, as in 'ECDHE+AESGCM' (default: Python's ssl "
        "default for servers, as uvicorn; TLS 1.3 always uses OpenSSL's suites)",
    )

    def __post_init__(self) -> None:
        flags = {field.name: field.metadata["option"].flags[-1] for field in dataclasses.fields(self)}
        for name in ("certfile", "keyfile", "keyfile_password", "ca_certs", "ciphers"):
            if getattr(self, name) == "":
                raise ConfigError(f"{flags[name]} must not be empty")
        if self.cert_reqs not in CERT_REQS:
            raise ConfigError(
                f"--ssl-cert-reqs {self.cert_reqs!r}: expected none, optional or required "
                "(or uvicorn's 0, 1, 2)"
            )
        if self.certfile is None:
            given = [
                name for name in ("keyfile", "keyfile_password", "ca_certs", "ciphers") if getattr(self, name)
            ]
            if given or self.cert_reqs != "none":
                flag = flags[given[0]] if given else "--ssl-cert-reqs"
                raise ConfigError(f"{flag} needs --ssl-certfile: TLS is on only with a certificate")
        if self.cert_reqs != "none" and self.ca_certs is None:
            raise ConfigError(
                f"--ssl-cert-reqs {self.cert_reqs} needs --ssl-ca-certs: the authorities client "
                "certificates are checked against"
            )
        if self.cert_reqs == "none" and self.ca_certs is not None:
            raise ConfigError(
                "--ssl-ca-certs has no effect with --ssl-cert-reqs none (client certificates are "
                "not asked for): add --ssl-cert-reqs optional or required"
            )
        if self.ciphers is not None:
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(self.ciphers)
            except ssl.SSLError:
                raise ConfigError(f"--ssl-ciphers {self.ciphers!r}: OpenSSL selects no cipher") from None

    @property
    def enabled(self) -> bool:
        """True if the server speaks TLS (``certfile`` is set)."""
        return self.certfile is not None

    @property
    def verify_mode(self) -> ssl.VerifyMode:
        """``cert_reqs`` as ``ssl.CERT_NONE``, ``CERT_OPTIONAL`` or ``CERT_REQUIRED``."""
        return CERT_REQS[self.cert_reqs]
