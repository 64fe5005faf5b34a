"""Typed configuration: a YAML file, `${ENV}` interpolation, `<name>_file` secrets, env overrides.

Every problem is reported as a `ConfigError` naming the exact key path
(`streams[0].api_secret: field required`), and the CLI exits 2 on it. Precedence: environment
variables `BRIDGE_<SECTION>__<KEY>` (e.g. `BRIDGE_KAFKA__BOOTSTRAP_SERVERS`) override the file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeVar
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from bridge.errors import ConfigError

# Keys whose value may instead be read from a file (`api_secret_file: /var/run/secrets/…`),
# the way Kubernetes mounts Secrets.
SECRET_KEYS: Final = frozenset(
    {"api_key", "api_secret", "private_key", "sasl_password", "registry_password"}
)
_VAR: Final = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
VENUES: Final = ("aquanow", "satori")
_S = TypeVar("_S", bound=BaseSettings)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TopicNames(_Model):
    balances: str = "balances"
    orders: str = "orders"
    positions: str = "positions"
    trades: str = "trades"
    credit: str = "credit"
    deadletter: str = "bridge.deadletter"

    def name(self, logical: str) -> str:
        return str(getattr(self, logical))


class KafkaSettings(_Model):
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
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "none"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None


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


class SerializationSettings(_Model):
    """How record values are framed. `registry`: Confluent wire format, schemas registered at
    start under `<topic>-value`. `single-object`: the Avro spec's framing, no registry."""

    mode: Literal["single-object", "registry"] = "single-object"
    # The Confluent-API base URL, e.g. http://registry:8081 (Apicurio: …/apis/ccompat/v7).
    registry_url: str | None = None
    registry_username: str | None = None  # HTTP basic auth (Confluent Cloud: the API key)
    registry_password: SecretStr | None = None  # or registry_password_file
    # Set on each subject before registering, so the registry itself refuses a version that
    # would break readers. null leaves the registry's own setting alone.
    compatibility: Compatibility | None = "FULL"
    # false: only look the schemas up (for registries the bridge may not write to); a version
    # that is not registered is then an error at start, and compatibility is not touched.
    auto_register: bool = True
    registry_timeout: float = Field(10.0, gt=0)  # seconds per registry request

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
        return self


class MetricsSettings(_Model):
    host: str = "0.0.0.0"  # noqa: S104 - scraped from outside the pod
    port: int = Field(9108, ge=0, le=65535)


class ReconnectSettings(_Model):
    """Jittered, capped exponential backoff between connection attempts."""

    initial_delay: float = Field(1.0, gt=0)
    max_delay: float = Field(60.0, gt=0)
    multiplier: float = Field(2.0, ge=1)
    jitter: float = Field(0.5, ge=0, le=1)  # fraction of each delay that is randomized
    # A connection must stay up this long before the backoff resets (a flapping venue keeps
    # backing off instead of reconnecting at the initial delay forever).
    healthy_after: float = Field(30.0, ge=0)
    # Auth rejections wait longer: hammering a venue with bad credentials gets keys banned.
    auth_initial_delay: float = Field(15.0, gt=0)
    auth_max_delay: float = Field(600.0, gt=0)


class LogSettings(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class SnapshotSettings(_Model):
    """REST reconciliation after every (re)subscribe (needs the stream's `rest_url`)."""

    enabled: bool = True
    rate_per_second: float = Field(5.0, gt=0)  # stay under the venue's REST limit
    burst: int = Field(10, ge=1)
    timeout: float = Field(10.0, gt=0)  # per request
    attempts: int = Field(3, ge=1)  # per request, for server errors and timeouts
    # Finished orders are fetched from the last order event seen minus this margin; on the
    # first snapshot after start, from `lookback` ago.
    since_margin: float = Field(60.0, ge=0)
    lookback: float = Field(86_400.0, ge=0)


class _StreamBase(_Model):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    url: str = Field(pattern=r"^wss?://")
    rest_url: str | None = Field(None, pattern=r"^https?://")
    account: str | None = None  # used when the venue's frames name no account
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
    snapshot: SnapshotSettings = SnapshotSettings()


class AquanowStream(_StreamBase):
    venue: Literal["aquanow"]
    api_key: SecretStr
    api_secret: SecretStr
    channels: tuple[Literal["executionReport", "parentOrderReport", "balanceReport"], ...] = (
        "executionReport",
    )

    @field_validator("channels")
    @classmethod
    def _not_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one channel is required")
        return value


class SatoriStream(_StreamBase):
    venue: Literal["satori"]
    api_key: SecretStr
    private_key: SecretStr
    coins: tuple[str, ...] = ()
    pairs: tuple[str, ...] = ()
    events: tuple[Literal["api_account", "api_entrust", "api_position", "api_trade"], ...] = (
        "api_account",
        "api_entrust",
        "api_position",
        "api_trade",
    )
    trade_period: Literal[
        "1MIN", "3MIN", "5MIN", "15MIN", "30MIN", "1HOUR", "4HOUR", "8HOUR", "12HOUR", "1DAY"
    ] = "1MIN"

    @field_validator("private_key")
    @classmethod
    def _valid_key(cls, value: SecretStr) -> SecretStr:
        from eth_account import Account

        try:
            Account.from_key(value.get_secret_value())
        except (ValueError, TypeError):
            # Never echo the value: it is a private key.
            raise ValueError("not a valid secp256k1 private key (32 bytes, hex)") from None
        return value

    @model_validator(mode="after")
    def _scopes(self) -> SatoriStream:
        if "api_account" in self.events and not self.coins:
            raise ValueError("coins: api_account needs at least one coin")
        if set(self.events) - {"api_account"} and not self.pairs:
            raise ValueError("pairs: api_entrust/api_position/api_trade need at least one pair")
        return self


StreamSettings = Annotated[AquanowStream | SatoriStream, Field(discriminator="venue")]


class ShutdownSettings(_Model):
    grace_seconds: float = Field(20.0, gt=0)


class _EnvOverFile(BaseSettings):
    """`BRIDGE_<SECTION>__<KEY>` environment variables override the file's values (12-factor:
    a Deployment can change one key without editing the config)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)


class Settings(_EnvOverFile):
    model_config = SettingsConfigDict(
        extra="forbid", frozen=True, env_prefix="BRIDGE_", env_nested_delimiter="__"
    )

    kafka: KafkaSettings = KafkaSettings()
    serialization: SerializationSettings = SerializationSettings()
    metrics: MetricsSettings = MetricsSettings()
    reconnect: ReconnectSettings = ReconnectSettings()
    log: LogSettings = LogSettings()
    shutdown: ShutdownSettings = ShutdownSettings()
    streams: tuple[StreamSettings, ...] = Field(min_length=1)

    @field_validator("streams")
    @classmethod
    def _unique_names(cls, streams: tuple[StreamSettings, ...]) -> tuple[StreamSettings, ...]:
        names = [s.name for s in streams]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"stream names must be unique; repeated: {duplicates}")
        return streams


class ReaderSettings(_EnvOverFile):
    """What a reader of the bridge's topics (`bridge tail`) takes from the bridge's config:
    how to reach Kafka and the registry. Other sections are ignored, so their `${ENV}`
    secrets need not be set."""

    model_config = SettingsConfigDict(
        extra="ignore", frozen=True, env_prefix="BRIDGE_", env_nested_delimiter="__"
    )

    kafka: KafkaSettings = KafkaSettings()
    serialization: SerializationSettings = SerializationSettings()


def load_reader_settings(
    path: Path | str | None, environ: dict[str, str] | None = None
) -> ReaderSettings:
    """The `kafka` and `serialization` sections of a config file (defaults without a file)."""
    env = dict(os.environ) if environ is None else environ
    if path is None:
        return _validate(ReaderSettings, {})
    document = _read_yaml(Path(path))
    wanted = {k: v for k, v in document.items() if k in ReaderSettings.model_fields}
    return _validate(ReaderSettings, resolve(wanted, "", env, Path(path).parent))


def load_settings(path: Path | str, environ: dict[str, str] | None = None) -> Settings:
    """Read, interpolate and validate a config file. Raises `ConfigError` naming the key."""
    env = dict(os.environ) if environ is None else environ
    path = Path(path)
    document = _read_yaml(path)
    data = resolve(document, "", env, path.parent)
    return validate_settings(data)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: the config must be a mapping at the top level")
    return document


def validate_settings(data: dict[str, Any]) -> Settings:
    return _validate(Settings, data)


def _validate(model: type[_S], data: dict[str, Any]) -> _S:
    try:
        return model(**data)
    except ValidationError as exc:
        errors = exc.errors()
        # pydantic also reports "too short" for a list whose items all failed: noise.
        failed = [e["loc"] for e in errors if e["type"] != "too_short"]
        lines = [
            _line(e)
            for e in errors
            if not (
                e["type"] == "too_short" and any(f[: len(e["loc"])] == e["loc"] for f in failed)
            )
        ]
        raise ConfigError("\n".join(lines)) from None


_FIELD_MESSAGE: Final = re.compile(r"^([a-z_]+): (.*)$", re.DOTALL)


def _line(error: Any) -> str:
    path, message = format_loc(error["loc"]), _message(error)
    match = _FIELD_MESSAGE.match(message)
    if match:  # a model validator naming the field it is about
        path, message = f"{path}.{match[1]}", match[2]
    return f"{path}: {message}"


def resolve(node: Any, path: str, env: dict[str, str], base: Path) -> Any:
    """Interpolate `${VAR}` / `${VAR:-default}` in strings and read `<secret>_file` keys."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            key = str(key)
            sub = f"{path}.{key}" if path else key
            resolved = resolve(value, sub, env, base)
            secret = key.removesuffix("_file")
            if key.endswith("_file") and secret in SECRET_KEYS:
                if secret in node:
                    raise ConfigError(f"{sub}: give either {secret} or {key}, not both")
                out[secret] = _read_secret_file(resolved, sub, base)
            else:
                out[key] = resolved
        return out
    if isinstance(node, list):
        return [resolve(v, f"{path}[{i}]", env, base) for i, v in enumerate(node)]
    if isinstance(node, str):
        return _interpolate(node, path, env)
    return node


def _interpolate(text: str, path: str, env: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name, default = match[1], match[2]
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(f"{path}: environment variable {name} is not set")

    return _VAR.sub(replace, text)


def _read_secret_file(value: Any, path: str, base: Path) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{path}: expected a file path")
    file = base / value
    try:
        return file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {file}: {exc.strerror}") from None


def format_loc(loc: tuple[int | str, ...]) -> str:
    """('streams', 0, 'aquanow', 'api_secret') → 'streams[0].api_secret'."""
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in VENUES and i > 0 and isinstance(loc[i - 1], int):
            continue  # the discriminated union's tag, not a key in the file
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _message(error: Any) -> str:
    kind, msg = error["type"], str(error["msg"])
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "union_tag_invalid":
        return f"venue must be one of {list(VENUES)}"
    if kind == "union_tag_not_found":
        return "venue: field required"
    msg = msg.removeprefix("Value error, ")
    return msg[:1].lower() + msg[1:]
