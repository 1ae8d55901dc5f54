"""The server's ``ssl.SSLContext``, built from ``TLSConfig``, and its reload (SIGHUP).

Rule 1: no trio and no socket: the context is built from the files, synchronously; the
connections are wrapped with it elsewhere.
Rule 2: a file that cannot be used raises ``ConfigError`` naming the option, the file and the
reason (missing, unreadable, no certificate or key in it, a wrong or missing password, a key
that is not the certificate's), never an ``ssl`` traceback. Nothing ever prompts for a
password: an encrypted key without one is an error.
Rule 3: ``ServerContext.current`` changes only to a context that loaded completely: a reload
that fails keeps the one in use and logs one ERROR line; one that succeeds logs one INFO line
(logger ``trio_c10k.tls``). A connection keeps the context it began with.
"""

from __future__ import annotations

import logging
import re
import ssl

from ._exceptions import ConfigError
from ._tls_config import TLSConfig

log = logging.getLogger("trio_c10k.tls")

#: ALPN (RFC 7301): the one application protocol served. A client offering only others
#: (``h2``) gets no ALPN answer, not a failed handshake (Python's selection callback), and
#: may go on with HTTP/1.1.
ALPN_PROTOCOLS = ["http/1.1"]
#: bytes read of each file to check it and explain a failure: a certificate chain is a few
#: KB, a bundle of every public authority about 250 KB; a wrong path (a device) is not read on
MAX_PEM_BYTES = 4 * 1024 * 1024

_PRIVATE_KEY = re.compile(rb"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----")


def server_context(tls: TLSConfig) -> ssl.SSLContext:
    """A server-side ``SSLContext`` serving ``tls.certfile``.

    TLS 1.2 or newer; ALPN ``http/1.1``; session tickets on (the ``ssl`` default: resumed
    handshakes are cheaper; each context has its own ticket keys, so a reload or another
    ``--workers`` process makes the client do a full handshake); client-initiated
    renegotiation refused; client certificates as ``tls.cert_reqs`` says, checked against
    ``tls.ca_certs``; ``tls.ciphers`` for TLS 1.2 if given (else Python's default).

    Raises:
        ConfigError: TLS is off (no ``certfile``), or a file cannot be used (Rule 2).
    """
    if tls.certfile is None:
        raise ConfigError("TLS is off: --ssl-certfile is not set")
    certificate = _read("--ssl-certfile", tls.certfile)
    key = certificate if tls.keyfile is None else _read("--ssl-keyfile", tls.keyfile)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # TLS 1.0 and 1.1 are deprecated (RFC 8996); Mozilla's "intermediate" profile starts at 1.2.
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # A client may otherwise ask for a new TLS 1.2 handshake at will, each costing the server
    # far more than the client (a known DoS); nginx refuses it too. TLS 1.3 has none.
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(ALPN_PROTOCOLS)
    password = tls.keyfile_password or ""  # never None: OpenSSL would prompt on the terminal
    try:
        context.load_cert_chain(tls.certfile, tls.keyfile, lambda: password)
    except ssl.SSLError as exc:
        raise ConfigError(_chain_error(tls, certificate, key, exc)) from None
    except OSError as exc:  # the file went away since _read()
        raise ConfigError(f"--ssl-certfile {tls.certfile}: {exc.strerror or exc}") from None
    if tls.ca_certs is not None:
        authorities = _read("--ssl-ca-certs", tls.ca_certs)
        try:
            context.load_verify_locations(cafile=tls.ca_certs)
        except (ssl.SSLError, OSError) as exc:
            reason = _certificate_problem(authorities) or exc.strerror or exc
            raise ConfigError(f"--ssl-ca-certs {tls.ca_certs}: {reason}") from None
    context.verify_mode = tls.verify_mode
    if tls.ciphers is not None:
        context.set_ciphers(tls.ciphers)  # TLSConfig checked that OpenSSL takes it
    return context


def _read(flag: str, path: str) -> bytes:
    """The start of the file at ``path``; a ``ConfigError`` naming ``flag`` if it cannot be read."""
    try:
        with open(path, "rb") as file:
            return file.read(MAX_PEM_BYTES)
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: {exc.strerror or exc}") from None


def _chain_error(tls: TLSConfig, certificate: bytes, key: bytes, exc: ssl.SSLError) -> str:
    """Why ``load_cert_chain`` failed, in words (OpenSSL says "PEM lib" for most causes)."""
    key_flag, key_path = ("--ssl-keyfile", tls.keyfile) if tls.keyfile else ("--ssl-certfile", tls.certfile)
    if exc.reason == "KEY_VALUES_MISMATCH":
        return f"{key_flag} {key_path}: the private key is not the one of the certificate in {tls.certfile}"
    if problem := _certificate_problem(certificate):
        return f"--ssl-certfile {tls.certfile}: {problem}"
    if not _PRIVATE_KEY.search(key):
        where = "" if tls.keyfile else " (give the key's file with --ssl-keyfile)"
        return f"{key_flag} {key_path}: no PEM private key in it{where}"
    if b"ENCRYPTED" in key:
        if tls.keyfile_password is None:
            return f"{key_flag} {key_path}: the private key is encrypted: give --ssl-keyfile-password"
        return f"{key_flag} {key_path}: --ssl-keyfile-password is not the password of the private key"
    return f"{key_flag} {key_path}: the private key in it cannot be read (damaged, cut short?)"


def _certificate_problem(pem: bytes) -> str | None:
    """What is wrong with the PEM certificates in ``pem``, if anything: OpenSSL parses them
    alone, as trust anchors (where a key block beside them is skipped)."""
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        return "no PEM certificate in it"
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=pem.decode("ascii", "replace"))
    except ssl.SSLError:
        return "a certificate in it cannot be read (damaged, cut short?)"
    return None


class ServerContext:
    """The ``SSLContext`` new connections are wrapped with, and its reload from the same files.

    Wrap each new connection with ``current`` as it is at that moment; ``reload()`` (on
    SIGHUP) replaces it for the connections that come next.

    Raises:
        ConfigError: the files cannot be used (from the constructor, as ``server_context``).
    """

    def __init__(self, tls: TLSConfig) -> None:
        #: the settings, whose files each reload reads again
        self.tls = tls
        #: the context new connections use; open connections keep the one they began with
        self.current = server_context(tls)

    def reload(self) -> bool:
        """Load the certificate, key and authorities again from their files.

        Returns:
            True if ``current`` is now the new context (INFO logged); False if a file cannot
            be used: ``current`` stays as it was, and one ERROR line says why.
        """
        try:
            context = server_context(self.tls)
        except ConfigError as exc:
            log.error("TLS certificate not reloaded, the previous one is still served: %s", exc)
            return False
        self.current = context
        log.info("TLS certificate reloaded from %s", self.tls.certfile)
        return True
