"""The Kafka edge: how to reach the cluster, for everything that talks to it (the sink's
producer, `bridge tail`, the start-up checks, `bridge topics`, benchmarks), and aiokafka's
errors translated into `KafkaAccessError` naming the cause.

Security: PLAINTEXT, SSL (with a client certificate for mTLS), SASL_PLAINTEXT and SASL_SSL with
PLAIN, SCRAM-SHA-256/512 or OAUTHBEARER (tokens from bridge/oauth.py). The TLS context and the
token provider are built once per `KafkaAccess`, so a replacement producer reuses the cached
token.

Why the bridge opens its own connection for checks: aiokafka's bootstrap swallows the reason a
connection failed (a wrong password reads as "Unable to bootstrap from [...]", the broker's
"invalid credentials" only in its own log line). `connect()` dials the bootstrap servers with
the same options and raises what actually happened, so a wrong password exits 2 at start and
counts as an authentication failure while running, instead of an endless "kafka unreachable".
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

from aiokafka.conn import AIOKafkaConnection, collect_hosts, create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    IllegalSaslStateError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from bridge.errors import KafkaAccessError
from bridge.kafka_wire import DESCRIBE, NOT_REPORTED, WRITE, TopicMetadata
from bridge.oauth import KafkaTokenProvider, TokenSource, token_source
from bridge.sections import TLS_PROTOCOLS, KafkaSettings
from bridge.tls import client_context

_AUTH_ERRORS: Final = (
    SaslAuthenticationFailed,
    AuthenticationFailedError,
    UnsupportedSaslMechanismError,
    IllegalSaslStateError,
)
# aiokafka options that say how to reach the cluster (the rest is producer/consumer tuning).
_CONNECTION_KEYS: Final = (
    "bootstrap_servers",
    "client_id",
    "request_timeout_ms",
    "security_protocol",
    "sasl_mechanism",
    "sasl_plain_username",
    "sasl_plain_password",
    "sasl_oauth_token_provider",
    "ssl_context",
)
UNKNOWN_TOPIC: Final = 3
TOPIC_AUTHORIZATION_FAILED: Final = 29


@dataclass(frozen=True, slots=True)
class TopicState:
    """One topic as the cluster describes it to this principal."""

    name: str
    exists: bool
    partitions: int = 0
    # False: the broker says this principal may not write (or describe) it; None: the broker
    # did not say (Metadata < v8).
    writable: bool | None = None
    error: str | None = None


class KafkaAccess:
    """How to reach the cluster, built once from `KafkaSettings`. Raises `ConfigError`
    (naming the key) when a CA, certificate or key cannot be loaded."""

    def __init__(self, settings: KafkaSettings, tokens: TokenSource | None = None) -> None:
        self.settings = settings
        s = settings
        options: dict[str, Any] = {
            "bootstrap_servers": s.bootstrap_servers,
            "client_id": s.client_id,
            "request_timeout_ms": s.request_timeout_ms,
            "security_protocol": s.security_protocol,
        }
        if s.security_protocol in TLS_PROTOCOLS:
            options["ssl_context"] = client_context(
                cafile=s.ssl_cafile,
                certfile=s.ssl_certfile,
                keyfile=s.ssl_keyfile,
                password=s.ssl_key_password,
                keys=("kafka.ssl_cafile", "kafka.ssl_certfile", "kafka.ssl_key_password"),
            )
        if s.sasl_mechanism == "OAUTHBEARER":
            assert s.oauth is not None  # settings validation guarantees it
            extensions = getattr(s.oauth, "extensions", {})
            source = tokens or token_source(s.oauth)
            options["sasl_mechanism"] = "OAUTHBEARER"
            options["sasl_oauth_token_provider"] = KafkaTokenProvider(source, extensions)
        elif s.sasl_mechanism is not None:
            assert s.sasl_password is not None  # settings validation guarantees it
            options["sasl_mechanism"] = s.sasl_mechanism
            options["sasl_plain_username"] = s.sasl_username
            options["sasl_plain_password"] = s.sasl_password.get_secret_value()
        self.options = options

    def producer_options(self) -> dict[str, Any]:
        s = self.settings
        return {
            **self.options,
            "enable_idempotence": True,
            "acks": "all",
            "linger_ms": s.linger_ms,
            "max_batch_size": s.max_batch_bytes,
            "compression_type": None if s.compression == "none" else s.compression,
        }

    def consumer_options(self) -> dict[str, Any]:
        return dict(self.options)

    def describe(self) -> str:
        """How the bridge signs in, for messages: `host:port SASL_SSL/SCRAM-SHA-512 as 'u'`."""
        s = self.settings
        how: str = s.security_protocol
        if s.sasl_mechanism:
            how += f"/{s.sasl_mechanism}"
        if s.sasl_username:
            how += f" as {s.sasl_username!r}"
        elif s.oauth is not None:
            how += f" ({s.oauth.provider} token)"
        if s.ssl_certfile is not None:
            how += " with a client certificate"
        return f"{s.bootstrap_servers} {how}"

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[AIOKafkaConnection]:
        """A connection to the first bootstrap server that lets the bridge in. Raises
        `KafkaAccessError`: `auth` / `tls` as soon as one server says so (every server of a
        cluster would), `unreachable` when none answered."""
        failures: list[KafkaAccessError] = []
        for host, port, _ in collect_hosts(self.settings.bootstrap_servers, randomize=False):
            try:
                conn = await create_conn(
                    host, port, **{k: v for k, v in self.options.items() if k in _CONN_ARGS}
                )
            except Exception as exc:  # aiokafka raises OSError, SSL and Kafka errors here
                failure = self.translate(exc, f"{host}:{port}")
                if not failure.retriable:
                    raise failure from exc
                failures.append(failure)
                continue
            try:
                yield conn
            finally:
                conn.close()
            return
        raise KafkaAccessError(
            "unreachable",
            "; ".join(str(f) for f in failures) or f"no bootstrap server in {self.describe()}",
        )

    async def topics(self, names: list[str]) -> list[TopicState]:
        """Which of `names` exist and may be written, creating none of them."""
        async with self.connect() as conn:
            try:
                response = await conn.send(TopicMetadata(names))
            except (KafkaError, TimeoutError, OSError) as exc:
                raise self.translate(exc, f"{conn.host}:{conn.port}") from exc
        return [_topic_state(t) for t in response.to_object()["topics"]]

    def translate(self, exc: BaseException, where: str) -> KafkaAccessError:
        """An exception from dialing or asking `where`, as the cause an operator can act on."""
        how = self.describe()
        if isinstance(exc, _AUTH_ERRORS):
            return KafkaAccessError("auth", f"kafka {where}: authentication failed ({how}): {exc}")
        if isinstance(exc, ssl.SSLCertVerificationError):
            return KafkaAccessError(
                "tls",
                f"kafka {where}: the broker's certificate was not accepted: "
                f"{exc.verify_message} (kafka.ssl_cafile must hold the CA that signed it)",
            )
        if isinstance(exc, ssl.SSLError):
            hint = _tls_hint(str(exc), self.settings)
            return KafkaAccessError("tls", f"kafka {where}: TLS handshake failed: {exc}{hint}")
        if isinstance(exc, KafkaError) and "closed" in str(exc).lower():
            hint = _closed_hint(self.settings)
            return KafkaAccessError("unreachable", f"kafka {where}: {exc}{hint}")
        return KafkaAccessError("unreachable", f"kafka {where} ({how}): {exc!r}")


# create_conn's keyword arguments among the connection options.
_CONN_ARGS: Final = frozenset(_CONNECTION_KEYS) - {"bootstrap_servers"}


def _topic_state(topic: dict[str, Any]) -> TopicState:
    name, code = topic["topic"], topic["error_code"]
    if code == UNKNOWN_TOPIC:
        return TopicState(name, exists=False)
    if code == TOPIC_AUTHORIZATION_FAILED:
        # Kafka answers this instead of "unknown" when the principal may not describe it.
        return TopicState(name, exists=False, writable=False, error="not authorized")
    operations = topic.get("topic_authorized_operations", NOT_REPORTED)
    writable = None
    if operations != NOT_REPORTED:
        writable = bool(operations & (1 << WRITE)) and bool(operations & (1 << DESCRIBE))
    error = None if code == 0 else f"error code {code}"
    return TopicState(name, True, len(topic["partitions"]), writable, error)


def _tls_hint(text: str, settings: KafkaSettings) -> str:
    if "CERTIFICATE_REQUIRED" in text.upper():
        return " — the listener requires a client certificate: set kafka.ssl_certfile/ssl_keyfile"
    if "WRONG_VERSION_NUMBER" in text.upper() or "RECORD_LAYER" in text.upper():
        protocol = settings.security_protocol
        return f" — the listener does not speak TLS: is security_protocol {protocol} right?"
    return ""


def _closed_hint(settings: KafkaSettings) -> str:
    if settings.security_protocol in TLS_PROTOCOLS and settings.ssl_certfile is None:
        return (
            " — the broker closed the connection: if this listener requires client "
            "certificates (mTLS), set kafka.ssl_certfile and kafka.ssl_keyfile"
        )
    return " — the broker closed the connection: does security_protocol match the listener?"


def producer_options(settings: KafkaSettings) -> dict[str, Any]:
    """aiokafka producer options from the config (benchmarks' bare producer)."""
    return KafkaAccess(settings).producer_options()


def consumer_options(settings: KafkaSettings) -> dict[str, Any]:
    """How to reach the cluster for a consumer (`bridge tail`)."""
    return KafkaAccess(settings).consumer_options()
