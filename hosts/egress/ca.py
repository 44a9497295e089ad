"""A sandbox's own certificate authority, with which the egress proxy terminates TLS towards
the hosts a secret of that sandbox names (docs/network.md, "Secrets").

One CA per sandbox, so a sandbox that extracts the CA's certificate from its trust store
learns nothing that would let it (or anyone) impersonate a server to another sandbox; the
private key never enters the sandbox: it stays in hostd's state directory (``ca.key``, mode
0600), and only the certificate is installed in the sandbox. Leaf certificates are made on
demand for the names connections ask for, kept in memory as ``ssl.SSLContext``s.
"""

from __future__ import annotations

import datetime
import os
import ssl
import tempfile
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CERT = "ca.pem"
KEY = "ca.key"
_DAY = datetime.timedelta(days=1)


class SandboxCa:
    """The CA kept in ``directory`` (created on first use); thread-safe."""

    def __init__(self, directory: Path, sandbox_id: str) -> None:
        self.directory = directory
        self.sandbox_id = sandbox_id
        self._lock = threading.Lock()
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._key, self._cert = self._load_or_make()

    @property
    def cert_path(self) -> Path:
        return self.directory / CERT

    def certificate_pem(self) -> bytes:
        return self._cert.public_bytes(serialization.Encoding.PEM)

    def server_context(self, name: str) -> ssl.SSLContext:
        """A server context presenting a certificate for ``name`` signed by this CA, offering
        HTTP/1.1 only (the proxy reads requests as HTTP/1.x)."""
        with self._lock:
            context = self._contexts.get(name)
            if context is None:
                context = self._contexts[name] = self._context_for(name)
            return context

    def _load_or_make(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key_path, cert_path = self.directory / KEY, self.directory / CERT
        if key_path.exists() and cert_path.exists():
            key = serialization.load_pem_private_key(key_path.read_bytes(), None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            return key, x509.load_pem_x509_certificate(cert_path.read_bytes())
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dnah"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"dnah egress CA for sandbox {self.sandbox_id}"),
            ]
        )
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + 3650 * _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        _write_private(key_path, _key_pem(key))
        _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
        return key, cert

    def _context_for(self, name: str) -> ssl.SSLContext:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + 30 * _DAY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.set_alpn_protocols(["http/1.1"])
        # ssl loads keys from files only: a private temporary file, gone once loaded.
        with tempfile.NamedTemporaryFile(dir=self.directory, prefix=".leaf-", suffix=".pem") as pem:
            os.fchmod(pem.fileno(), 0o600)
            pem.write(_key_pem(key) + cert.public_bytes(serialization.Encoding.PEM))
            pem.flush()
            context.load_cert_chain(pem.name)
        return context


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)
