"""A dev broker with the listeners production clusters put in front of clients, one JVM:

    name       protocol        clients prove who they are with            shaped like
    SCRAM      SASL_SSL        SCRAM-SHA-512 / SCRAM-SHA-256 / PLAIN       MSK SCRAM, Confluent
                                                                          Cloud API keys, Strimzi
                                                                          and Redpanda SCRAM
    MTLS       SSL             a client certificate (required)             Strimzi `tls` users,
                                                                          self-hosted mTLS
    OAUTH      SASL_SSL        OAUTHBEARER (unsecured JWT validator)       Confluent Cloud OAuth,
                                                                          Strimzi `oauth`
    SASLPLAIN  SASL_PLAINTEXT  SCRAM-SHA-256                               Redpanda in-cluster

plus the PLAINTEXT listener every dev broker has (inter-broker traffic and test setup). TLS
uses a private CA made at start (`bridge.dev.tls`); SCRAM users are created when the storage is
formatted (`kafka-storage format --add-scram`), the PLAIN user in the listener's JAAS config.
The OAUTHBEARER validator checks an unsigned JWT's `sub`, `iat` and `exp`: it proves the
bridge's token plumbing, not a signature (no identity provider keys here).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Final

from bridge.dev.kafka.broker import LocalKafka, _free_ports
from bridge.dev.tls import PrivateCA

USER: Final = "bridge"
PASSWORD: Final = "bridge-secret"  # noqa: S105 - the throwaway dev broker's user
LISTENERS: Final = {
    "SCRAM": "SASL_SSL",
    "MTLS": "SSL",
    "OAUTH": "SASL_SSL",
    "SASLPLAIN": "SASL_PLAINTEXT",
}
_SCRAM: Final = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
_UNSECURED: Final = (
    "org.apache.kafka.common.security.oauthbearer.internals.unsecured."
    "OAuthBearerUnsecuredValidatorCallbackHandler"
)


class SecuredKafka(LocalKafka):
    """`LocalKafka` with the listeners above; `address(name)` is each one's host:port and
    `ca` the private CA's certificate clients must trust."""

    def __init__(self, *, startup_timeout: float = 90.0, work_dir: Path | None = None) -> None:
        super().__init__(startup_timeout=startup_timeout, work_dir=work_dir)
        self._tls_dir = Path(tempfile.mkdtemp(prefix="bridge-devkafka-tls-"))
        self.certificates = PrivateCA(self._tls_dir)
        self._ports = dict(zip(LISTENERS, _free_ports(len(LISTENERS)), strict=True))

    @property
    def ca(self) -> Path:
        return self.certificates.ca

    def address(self, listener: str) -> str:
        return f"127.0.0.1:{self._ports[listener]}"

    def _properties(self) -> dict[str, str]:
        props = super()._properties()
        extra = [f"{name}://{self.address(name)}" for name in LISTENERS]
        props["listeners"] += "," + ",".join(extra)
        props["advertised.listeners"] += "," + ",".join(extra)
        props["listener.security.protocol.map"] += "," + ",".join(
            f"{name}:{protocol}" for name, protocol in LISTENERS.items()
        )
        tls = self.certificates
        props |= {
            # As on Confluent Cloud and MSK: a topic exists only when someone created it.
            "auto.create.topics.enable": "false",
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(tls.path("server.pem")),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(tls.ca),
            "sasl.enabled.mechanisms": "SCRAM-SHA-512,SCRAM-SHA-256,PLAIN",
            "listener.name.scram.sasl.enabled.mechanisms": "SCRAM-SHA-512,SCRAM-SHA-256,PLAIN",
            "listener.name.scram.scram-sha-512.sasl.jaas.config": _SCRAM,
            "listener.name.scram.scram-sha-256.sasl.jaas.config": _SCRAM,
            "listener.name.scram.plain.sasl.jaas.config": (
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'user_{USER}="{PASSWORD}";'
            ),
            "listener.name.mtls.ssl.client.auth": "required",
            "listener.name.oauth.sasl.enabled.mechanisms": "OAUTHBEARER",
            "listener.name.oauth.oauthbearer.sasl.jaas.config": (
                "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;"
            ),
            "listener.name.oauth.oauthbearer.sasl.server.callback.handler.class": _UNSECURED,
            "listener.name.saslplain.sasl.enabled.mechanisms": "SCRAM-SHA-256",
            "listener.name.saslplain.scram-sha-256.sasl.jaas.config": _SCRAM,
        }
        return props

    def _format_args(self) -> list[str]:
        return [
            arg
            for mechanism in ("SCRAM-SHA-512", "SCRAM-SHA-256")
            for arg in ("--add-scram", f"{mechanism}=[name={USER},password={PASSWORD}]")
        ]

    def close(self, stop_timeout: float = 20.0) -> None:
        try:
            super().close(stop_timeout)
        finally:
            for path in self._tls_dir.iterdir():
                path.unlink()
            self._tls_dir.rmdir()
