"""TLS client contexts from the config's files, with errors that name the key at fault.

Used for Kafka (`kafka.ssl_*`), the schema registry (`serialization.registry_*`) and the
identity provider. Hostname verification stays on: a certificate must name the host the
bridge dials (its SANs), as every managed Kafka's does.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from pydantic import SecretStr

from bridge.errors import ConfigError


def client_context(
    *,
    cafile: Path | None,
    certfile: Path | None = None,
    keyfile: Path | None = None,
    password: SecretStr | None = None,
    keys: tuple[str, str, str],
) -> ssl.SSLContext:
    """A verifying client context: the system's CAs, or `cafile`'s only; with a client
    certificate for mTLS when `certfile` is set. `keys` are the config keys of the CA file,
    the certificate and the key password, for the error message."""
    ca_key, cert_key, password_key = keys
    context = ssl.create_default_context()
    if cafile is not None:
        try:
            context = ssl.create_default_context(cafile=str(cafile))
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"{ca_key}: {cafile} holds no usable CA certificate: {exc}") from None
    if certfile is not None:
        secret = password.get_secret_value() if password is not None else ""
        try:
            # A callable, never None: with None OpenSSL would prompt on a terminal for the
            # password of an encrypted key.
            context.load_cert_chain(
                str(certfile), str(keyfile) if keyfile else None, lambda: secret
            )
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError(
                f"{cert_key}: cannot load the client certificate and key ({exc}): is the key "
                f"encrypted without {password_key} (or with another password), or not the "
                "certificate's key?"
            ) from None
    return context
