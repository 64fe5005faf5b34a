"""The config's sections that every venue shares, and `StreamBase`, the keys every stream has.

Venue modules build their stream sections on `StreamBase` (bridge/venues/); bridge/settings.py
assembles the whole config from these and from the venues' sections.
"""

from __future__ import annotations

import socket
from abc import abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from bridge.shards import shard_key

if TYPE_CHECKING:
    from bridge.venues.base import Venue

Decoder = Literal["msgspec", "stdlib"]  # bridge/venues/decoder.py


class Section(BaseModel):
    """A config section: unknown keys are errors, values never change after start."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TopicNames(Section):
    balances: str = "balances"
    orders: str = "orders"
    positions: str = "positions"
    trades: str = "trades"
    credit: str = "credit"
    deadletter: str = "bridge.deadletter"
    # Gap markers, heartbeats and operator signals (schemas/control): for consumers.
    control: str = "bridge.control"
    # The bridge's own checkpoint (schemas/state; compacted, one partition per shard): what
    # each stream restores at start. Never written by anything else.
    state: str = "bridge.state"

    def name(self, logical: str) -> str:
        return str(getattr(self, logical))


def _readable(path: Path) -> Path:
    """A file the bridge must read (a CA, a certificate, a key): `bridge check` and start-up
    refuse a missing or unreadable one, naming the key, instead of a traceback later."""
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    return path


# A path in the config; relative paths are relative to the config file (bridge/settings.py).
ReadableFile = Annotated[Path, AfterValidator(_readable)]


class OidcSettings(Section):
    """An OAuth 2.0 client-credentials grant (RFC 6749 §4.4): the bridge fetches a bearer token
    from the identity provider and fetches a new one before it expires. Used for Kafka's
    OAUTHBEARER (Confluent Cloud OAuth, Strimzi `oauth`, Keycloak, Okta, Entra ID) and for the
    schema registry's bearer auth."""

    provider: Literal["oidc"] = "oidc"
    token_endpoint: str = Field(pattern=r"^https?://")
    client_id: str = Field(min_length=1)
    client_secret: SecretStr  # or client_secret_file
    scope: str | None = None
    # SASL extensions sent with the token (Kafka only), e.g. Confluent Cloud's
    # {logicalCluster: lkc-…, identityPoolId: pool-…}.
    extensions: dict[str, str] = {}
    cafile: ReadableFile | None = None  # the identity provider's CA, when it is a private one
    timeout: float = Field(10.0, gt=0)  # seconds per token request


class AwsMskIamSettings(Section):
    """AWS MSK IAM: a SigV4-signed token from AWS's own signer (`pip install 'bridge[msk-iam]'`),
    credentials from the default AWS chain (IRSA / Pod Identity, instance profile, env), or a
    named profile, or a role assumed first."""

    provider: Literal["aws_msk_iam"]
    region: str = Field(min_length=1)
    profile: str | None = None
    role_arn: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> AwsMskIamSettings:
        if self.profile and self.role_arn:
            raise ValueError("role_arn: give either profile or role_arn, not both")
        return self


OAuthSettings = Annotated[OidcSettings | AwsMskIamSettings, Field(discriminator="provider")]
SASL_PROTOCOLS: Final = ("SASL_PLAINTEXT", "SASL_SSL")
TLS_PROTOCOLS: Final = ("SSL", "SASL_SSL")


class NewTopicSettings(Section):
    """How `kafka.create_topics` and `bridge topics create` create a missing topic. null = the
    cluster's own default (num.partitions, default.replication.factor, min.insync.replicas).
    `cleanup.policy` comes from the topic's kind (bridge/topics.py): compact for state topics,
    delete for trades and dead letters; `configs` may override anything per logical topic."""

    partitions: int | None = Field(None, ge=1)
    replication_factor: int | None = Field(None, ge=1)
    min_insync_replicas: int | None = Field(None, ge=1)
    # The checkpoint topic (`topics.state`) has one partition per shard: streams of one API key
    # share a shard (bridge/shards.py). An existing topic keeps its own count.
    state_partitions: int = Field(12, ge=1, le=10_000)
    configs: dict[str, dict[str, str]] = {}  # logical topic (or "all") → topic configs

    @field_validator("configs")
    @classmethod
    def _known_topics(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        unknown = sorted(set(value) - {"all", *TopicNames.model_fields})
        if unknown:
            raise ValueError(f"unknown logical topic(s) {unknown}: expected 'all' or a topic")
        return value


class KafkaSettings(Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    topics: TopicNames = TopicNames()
    client_id: str = "bridge"
    # Records accepted but not yet acknowledged by the broker. When full, reading from the
    # venues pauses (backpressure); nothing is dropped.
    buffer_records: int = Field(10_000, ge=1)
    linger_ms: int = Field(5, ge=0)
    # Per-partition batch size. aiokafka's 16 KiB default (about 30 of our records) halves a
    # bare producer's throughput here (tests/bench: 15k → 31k records/s at 256 KiB).
    max_batch_bytes: int = Field(262_144, ge=16_384, le=1_048_576)
    # Per request, and how long a batch may wait for a partition leader before it fails and
    # the sink resends it in order (bridge.sink).
    request_timeout_ms: int = Field(30_000, ge=1000)
    # The oldest unacknowledged record this old: "kafka stall started" is logged (and "ended").
    stall_seconds: float = Field(5.0, gt=0)
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "none"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    oauth: OAuthSettings | None = None  # the token provider of OAUTHBEARER
    ssl_cafile: ReadableFile | None = None  # the cluster's CA (default: the system's)
    ssl_certfile: ReadableFile | None = None  # mTLS: the client certificate (PEM)
    ssl_keyfile: ReadableFile | None = None  # mTLS: its private key (PEM)
    ssl_key_password: SecretStr | None = None  # when the key is encrypted
    # At start, missing topics are created (else the bridge exits 2 naming them).
    create_topics: bool = False
    new_topics: NewTopicSettings = NewTopicSettings()
    # How often the bridge checks that it can still reach and authenticate to Kafka and that
    # its topics exist (bridge_kafka_up, bridge_kafka_auth_failures_total).
    check_interval: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _consistent_security(self) -> KafkaSettings:
        """The mistakes that otherwise surface as a traceback or an endless retry at start."""
        protocol, mechanism = self.security_protocol, self.sasl_mechanism
        if protocol in SASL_PROTOCOLS and mechanism is None:
            raise ValueError(f"sasl_mechanism: required with security_protocol {protocol}")
        if protocol not in SASL_PROTOCOLS:
            given = [
                k
                for k in ("sasl_mechanism", "sasl_username", "sasl_password", "oauth")
                if getattr(self, k) is not None
            ]
            if given:
                raise ValueError(
                    f"{given[0]}: SASL settings need security_protocol SASL_SSL or "
                    f"SASL_PLAINTEXT (it is {protocol})"
                )
        if mechanism == "OAUTHBEARER":
            if self.oauth is None:
                raise ValueError("oauth: required with sasl_mechanism OAUTHBEARER")
            if self.sasl_username or self.sasl_password:
                raise ValueError("sasl_username: not used with OAUTHBEARER (the token is)")
        elif mechanism is not None:
            if self.oauth is not None:
                raise ValueError(f"oauth: only with sasl_mechanism OAUTHBEARER, not {mechanism}")
            missing = [k for k in ("sasl_username", "sasl_password") if not getattr(self, k)]
            if missing:
                raise ValueError(f"{missing[0]}: required with sasl_mechanism {mechanism}")
        if protocol not in TLS_PROTOCOLS:
            tls = [
                k
                for k in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_key_password")
                if getattr(self, k) is not None
            ]
            if tls:
                raise ValueError(
                    f"{tls[0]}: TLS settings need security_protocol SSL or SASL_SSL "
                    f"(it is {protocol})"
                )
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ValueError("ssl_certfile: required with ssl_keyfile")
        if self.ssl_key_password is not None and self.ssl_certfile is None:
            raise ValueError("ssl_certfile: required with ssl_key_password")
        return self


# Confluent's compatibility levels (a subject's rule for accepting a new schema version).
Compatibility = Literal[
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
    "NONE",
]


class SerializationSettings(Section):
    """How record values are framed. `registry`: Confluent wire format, schemas registered at
    start under `<topic>-value`. `single-object`: the Avro spec's framing, no registry."""

    mode: Literal["single-object", "registry"] = "single-object"
    # The Confluent-API base URL, e.g. http://registry:8081 (Apicurio: …/apis/ccompat/v7).
    registry_url: str | None = None
    registry_username: str | None = None  # HTTP basic auth (Confluent Cloud: the API key)
    registry_password: SecretStr | None = None  # or registry_password_file
    registry_token: SecretStr | None = None  # a static bearer token (or registry_token_file)
    registry_oauth: OidcSettings | None = None  # bearer tokens from an identity provider
    # Extra request headers, e.g. Confluent Cloud OAuth's target-sr-cluster and
    # Confluent-Identity-Pool-Id. Not secret: they are logged by `bridge check`.
    registry_headers: dict[str, str] = {}
    registry_cafile: ReadableFile | None = None  # the registry's CA (default: the system's)
    registry_certfile: ReadableFile | None = None  # mTLS: the client certificate (PEM)
    registry_keyfile: ReadableFile | None = None  # mTLS: its private key (PEM)
    registry_key_password: SecretStr | None = None  # when the key is encrypted
    # Set on each subject before registering, so the registry itself refuses a version that
    # would break readers. null leaves the registry's own setting alone.
    compatibility: Compatibility | None = "FULL"
    # false: only look the schemas up (for registries the bridge may not write to); a version
    # that is not registered is then an error at start, and compatibility is not touched.
    auto_register: bool = True
    registry_timeout: float = Field(10.0, gt=0)  # seconds per registry request
    # Who writes the Avro bodies: encoders generated once per schema (bridge/avro.py, proven
    # byte-identical to fastavro by tests) or fastavro itself, the reference (a way back).
    encoder: Literal["generated", "fastavro"] = "generated"
    # Who reads the venues' JSON: msgspec, for frames it can vouch for, giving exactly what the
    # standard library's careful reader gives (bridge/venues/decoder.py), or that reader
    # itself, the reference (a way back).
    decoder: Decoder = "msgspec"

    @field_validator("registry_url")
    @classmethod
    def _plain_http_url(cls, value: str | None) -> str | None:
        """Credentials go in registry_username/password, never the URL: the URL is printed by
        `bridge check` and logged."""
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an http:// or https:// URL")
        if parts.username or parts.password:
            raise ValueError("put credentials in registry_username / registry_password")
        return value

    @model_validator(mode="after")
    def _registry_needs_url(self) -> SerializationSettings:
        if self.mode == "registry" and not self.registry_url:
            raise ValueError("registry_url: required when mode is registry")
        if self.registry_password is not None and not self.registry_username:
            raise ValueError("registry_username: required with registry_password")
        auth = [
            k
            for k in ("registry_username", "registry_token", "registry_oauth")
            if getattr(self, k) is not None
        ]
        if len(auth) > 1:
            raise ValueError(f"{auth[1]}: give one registry auth, not {' and '.join(auth)}")
        if self.registry_keyfile is not None and self.registry_certfile is None:
            raise ValueError("registry_certfile: required with registry_keyfile")
        return self


class MetricsSettings(Section):
    host: str = "0.0.0.0"  # noqa: S104 - scraped from outside the pod
    port: int = Field(9108, ge=0, le=65535)
    # The two latency histograms (bridge_event_lag_seconds, bridge_pipeline_latency_seconds)
    # per stream, or per venue only (false): 38 of a stream's 92 series, for processes that
    # run hundreds of streams (README "Metrics").
    stream_histograms: bool = True


class ReconnectSettings(Section):
    """Jittered, capped exponential backoff between connection attempts."""

    initial_delay: float = Field(1.0, gt=0)
    max_delay: float = Field(60.0, gt=0)
    multiplier: float = Field(2.0, ge=1)
    jitter: float = Field(0.5, ge=0, le=1)  # fraction of each delay that is randomized
    # A connection must stay up this long before the backoff resets (a flapping venue keeps
    # backing off instead of reconnecting at the initial delay forever).
    healthy_after: float = Field(30.0, ge=0)
    # Auth rejections wait longer: hammering a venue with bad credentials gets keys banned.
    # The ceiling bounds both sides of a revocation: at most 12-24 refused logins an hour (a
    # venue that banned us for hammering sees a trickle), and credentials that work again are
    # tried within 5 minutes. BridgeAuthFailing's 15-minute window assumes at most 300 s
    # (tests/alerts/test_auth_alert.py); restart the process to retry at once.
    auth_initial_delay: float = Field(15.0, gt=0)
    auth_max_delay: float = Field(300.0, gt=0, le=300)


class LogSettings(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class SnapshotSettings(Section):
    """REST reconciliation after every (re)subscribe (needs the stream's `rest_url`)."""

    enabled: bool = True
    rate_per_second: float = Field(5.0, gt=0)  # stay under the venue's REST limit
    burst: int = Field(10, ge=1)
    timeout: float = Field(10.0, gt=0)  # per request
    attempts: int = Field(3, ge=1)  # per request, for server errors and timeouts
    # Finished orders are fetched from the last order event seen minus this margin (on the
    # first snapshot after start, from `lookback` ago) up to now plus it: the venue's clock
    # and ours differ.
    since_margin: float = Field(60.0, ge=0)
    lookback: float = Field(86_400.0, ge=0)
    # Reconcile again every `interval` seconds while subscribed (0: only after (re)subscribing).
    # A key whose venue state differs from what was published, with no push to explain it, is
    # drift: corrected, counted (bridge_reconcile_drift_total) and logged. One run costs
    # Aquanow 3-4 requests against its 100,000 a day per API key (venues.md §1.7).
    interval: float = Field(300.0, ge=0)
    # How long after a scheduled run a differing key may still be explained by a push that was
    # already on its way (it is then not drift).
    drift_grace: float = Field(2.0, ge=0)


class StateSettings(Section):
    """Stream state kept on Kafka (`kafka.topics.state`) and restored before each stream
    subscribes, so a restart resumes reconciliation where the last run left it."""

    enabled: bool = True
    flush_interval: float = Field(1.0, gt=0)  # seconds between checkpoint writes
    restore_timeout: float = Field(120.0, gt=0)  # per attempt to read the checkpoint


class DiskBufferSettings(Section):
    """Frames appended to a local log before they are parsed and released once every record
    made from them is acknowledged by Kafka; what a crash left unreleased is published first at
    the next start (bridge/diskbuffer.py). One log per process: size it for all its streams."""

    enabled: bool = False
    path: Path = Path("/var/lib/bridge/buffer")  # a directory only this process uses
    # Frames owed to Kafka that may wait on disk; when full, reading from the venues pauses
    # (backpressure), never a silent drop. Keep it below the volume's size.
    max_bytes: int = Field(256 * 1024 * 1024, ge=1024 * 1024)
    # The log's files: a file is deleted once every frame in it is released.
    segment_bytes: int = Field(8 * 1024 * 1024, ge=64 * 1024)
    # always: each frame reaches the disk before it is parsed (survives a power loss too);
    # interval: every sync_interval; never: the OS decides. All three survive a process crash.
    fsync: Literal["always", "interval", "never"] = "interval"
    # How often the data is fsynced (fsync: interval) and the release file written (what a
    # restart need not publish again).
    sync_interval: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _segments_fit(self) -> DiskBufferSettings:
        if self.segment_bytes * 4 > self.max_bytes:
            raise ValueError("segment_bytes: must be at most a quarter of max_bytes")
        return self


class ControlSettings(Section):
    """The control topic (`kafka.topics.control`): gap markers, heartbeats, operator signals."""

    enabled: bool = True
    # A heartbeat per subscribed stream that handed no record to Kafka for this long (0: none).
    heartbeat_interval: float = Field(30.0, ge=0)
    signals: bool = True  # act on `bridge resync` requests found on the control topic


class ShutdownSettings(Section):
    grace_seconds: float = Field(20.0, gt=0)


class FleetSettings(Section):
    """Fleet mode (README "Scaling"): many replicas, each stream run by exactly one. Every
    member joins the consumer group `group` on the checkpoint topic (`kafka.topics.state`),
    whose partitions are the shards; a member runs the streams of the shards it is assigned,
    each shard through its own transactional producer (`transactional.id` = group + shard), so
    a new owner fences the old one (bridge/fleet.py)."""

    enabled: bool = False
    group: str = Field("bridge-fleet", min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    # The group's static member id (group.instance.id): stable across restarts, so a member
    # that comes back within `session_timeout` gets its shards back without moving them. On
    # Kubernetes the pod name (the chart sets BRIDGE_FLEET__MEMBER_ID).
    member_id: str = Field(
        default_factory=socket.gethostname, min_length=1, pattern=r"^[A-Za-z0-9._-]+$"
    )
    # The shard count: the checkpoint topic's partition count (created with this many; an
    # existing topic must have this many). null: whatever the topic has.
    shards: int | None = Field(None, ge=1, le=10_000)
    # Seconds without a heartbeat after which the group gives a member's shards to others,
    # and the member stops its streams itself (its lease). Within the broker's
    # group.min/max.session.timeout.ms (6 s to 30 min by default).
    session_timeout: float = Field(10.0, ge=1, le=1800)
    # Seconds between transaction commits per shard: how long a record may wait to become
    # visible to read_committed consumers, besides the commit itself.
    commit_interval: float = Field(0.1, gt=0, le=10)
    # Stream starts after a rebalance: at most `connect_rate` per second per venue (bursts of
    # `connect_burst`), each delayed by up to `connect_jitter` seconds more.
    connect_rate: float = Field(5.0, gt=0)
    connect_burst: int = Field(10, ge=1)
    connect_jitter: float = Field(1.0, ge=0)


class StreamBase(Section):
    """The keys every stream has, whatever its venue. Each venue module subclasses it with its
    own keys, narrows `venue` to its name (the tag that picks the class) and says how to build
    its `Venue` and what `bridge check` prints about its scope; `bridge/venues/__init__.py`
    lists the subclasses."""

    venue: str
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    url: str = Field(pattern=r"^wss?://")
    rest_url: str | None = Field(None, pattern=r"^https?://")
    account: str | None = None  # used when the venue's frames name no account
    # Keepalive (bridge.subscription): a ping every ping_interval; neither its pong nor any
    # frame within ping_timeout seconds *spent reading* reconnects (reason watchdog).
    ping_interval: float = Field(20.0, gt=0)
    ping_timeout: float = Field(20.0, gt=0)
    # Reconnect when no frame at all arrived for this long (0 disables: quiet accounts are
    # normal at some venues).
    silence_timeout: float = Field(0.0, ge=0)
    subscribe_timeout: float = Field(10.0, gt=0)
    # For venues that acknowledge nothing (Aquanow, venues.md §1.3): the subscription counts as
    # accepted at the first push, or when no error frame or close arrived within this time.
    ack_grace: float = Field(2.0, ge=0)
    # Larger frames become dead letters (`oversized_frame`, raw cut to 512 KiB); frames over
    # 16x this (or 16 MiB) close the connection (1009) before they can exhaust memory.
    max_frame_bytes: int = Field(1024 * 1024, ge=1024)
    # Offer permessage-deflate (RFC 7692) to the venue. Off: inflating costs CPU on every
    # frame and ~50 KiB of zlib state per connection (tests/bench: fan-out), for small frames.
    compression: bool = False
    snapshot: SnapshotSettings = SnapshotSettings()

    @abstractmethod
    def build_venue(self, decoder: Decoder = "msgspec") -> Venue:
        """The pure venue module for this stream (its signing keys unwrapped), reading JSON
        with `decoder` (`serialization.decoder`)."""

    @abstractmethod
    def scope(self) -> str:
        """What this stream subscribes to, in one line (`bridge check`)."""

    @abstractmethod
    def credential(self) -> str:
        """The secret that identifies the venue API key (never logged: only its digest is used,
        to put the streams of one key in one shard and under one REST limiter)."""

    def shard_key(self) -> str:
        """The stream's shard key (bridge/shards.py): the same for every stream of one key."""
        return shard_key(self.venue, self.credential())
