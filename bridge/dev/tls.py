"""A private certificate authority made on the spot, for the secured dev broker and the
registry proxy: a CA, a server certificate for 127.0.0.1 / localhost, and a client certificate
(for mTLS) whose key is encrypted with a password. Nothing is fetched, nothing is reused:
each `PrivateCA(dir)` writes fresh keys into `dir`.

Files (PEM): `ca.pem`; `server.pem` (key, then certificate: Kafka's PEM keystore wants both in
one file) and `server.crt` / `server.key`; `client.crt` and `client.key` (PKCS#8, encrypted
with `client_key_password`). Needs `cryptography` (the test extra).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CLIENT_KEY_PASSWORD = "client-key-password"  # noqa: S105 - a throwaway test key's password
CLIENT_CN = "bridge-client"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@dataclass
class PrivateCA:
    directory: Path
    client_key_password: str = CLIENT_KEY_PASSWORD

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._ca_key = _key()
        now = dt.datetime.now(dt.UTC)
        self._valid = (now - dt.timedelta(minutes=5), now + dt.timedelta(days=2))
        ca = (
            self._builder(_name("bridge test CA"), self._ca_key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(cert_sign=True), critical=True)
            .add_extension(_subject_key_id(self._ca_key.public_key()), critical=False)
            .sign(self._ca_key, hashes.SHA256())
        )
        self._ca = ca
        self._write("ca.pem", ca.public_bytes(serialization.Encoding.PEM))
        self._issue("server", "127.0.0.1", ExtendedKeyUsageOID.SERVER_AUTH, password=None)
        self._issue("client", CLIENT_CN, ExtendedKeyUsageOID.CLIENT_AUTH, self.client_key_password)
        server = self.path("server.key").read_bytes() + self.path("server.crt").read_bytes()
        self._write("server.pem", server)

    def path(self, name: str) -> Path:
        return self.directory / name

    @property
    def ca(self) -> Path:
        return self.path("ca.pem")

    def _builder(self, subject: x509.Name, public_key: Any) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(_name("bridge test CA"))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._valid[0])
            .not_valid_after(self._valid[1])
        )

    def _issue(
        self, stem: str, cn: str, usage: x509.ObjectIdentifier, password: str | None
    ) -> None:
        key = _key()
        builder = (
            self._builder(_name(cn), key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            # RFC 5280 4.2.1.1-2; Python 3.13's default context verifies with
            # VERIFY_X509_STRICT, which refuses a certificate without the authority key id.
            .add_extension(_subject_key_id(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._ca_key.public_key()),
                critical=False,
            )
        )
        if usage == ExtendedKeyUsageOID.SERVER_AUTH:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
        cert = builder.sign(self._ca_key, hashes.SHA256())
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password.encode())
            if password
            else serialization.NoEncryption()
        )
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
        self._write(f"{stem}.key", pem)
        self._write(f"{stem}.crt", cert.public_bytes(serialization.Encoding.PEM))

    def _write(self, name: str, data: bytes) -> None:
        path = self.path(name)
        path.write_bytes(data)
        path.chmod(0o600)


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not cert_sign,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _subject_key_id(public_key: ec.EllipticCurvePublicKey) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(public_key)
