"""Typed configuration: a YAML file, `${ENV}` interpolation, `<name>_file` secrets, env overrides.

Every problem is reported as a `ConfigError` naming the exact key path
(`streams[0].api_secret: field required`), and the CLI exits 2 on it. Precedence: environment
variables `BRIDGE_<SECTION>__<KEY>` (e.g. `BRIDGE_KAFKA__BOOTSTRAP_SERVERS`) override the file.

The sections shared by every venue are in bridge/sections.py; each venue's stream section is in
its venue module, and `bridge.venues.STREAM_TYPES` lists them: nothing here names a venue.
"""

from __future__ import annotations

import os
import re
import typing
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, TypeVar, Union

import yaml
from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from bridge.errors import ConfigError
from bridge.sections import (
    Compatibility,
    ControlSettings,
    DiskBufferSettings,
    FleetSettings,
    KafkaSettings,
    LogSettings,
    MetricsSettings,
    ReconnectSettings,
    SerializationSettings,
    ShutdownSettings,
    SnapshotSettings,
    StateSettings,
    StreamBase,
    TopicNames,
)
from bridge.venues import STREAM_TYPES, VENUES

__all__ = [
    "Compatibility",
    "ControlSettings",
    "DiskBufferSettings",
    "FleetSettings",
    "KafkaSettings",
    "LogSettings",
    "MetricsSettings",
    "ReaderSettings",
    "ReconnectSettings",
    "SerializationSettings",
    "Settings",
    "ShutdownSettings",
    "SnapshotSettings",
    "StateSettings",
    "StreamBase",
    "StreamSettings",
    "TopicNames",
    "load_reader_settings",
    "load_settings",
    "path_keys",
    "secrets_of",
    "validate_settings",
]

_VAR: Final = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_S = TypeVar("_S", bound=BaseSettings)

if TYPE_CHECKING:
    StreamSettings = StreamBase
else:
    # One stream section per venue, picked by its `venue` key.
    StreamSettings = Annotated[Union[STREAM_TYPES], Field(discriminator="venue")]  # noqa: UP007


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
    state: StateSettings = StateSettings()
    control: ControlSettings = ControlSettings()
    disk_buffer: DiskBufferSettings = DiskBufferSettings()
    # A factory, not an instance: the default member id is the host name where it runs, so it
    # must not be frozen into the generated chart schema.
    fleet: FleetSettings = Field(default_factory=FleetSettings)
    streams: tuple[StreamSettings, ...] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _shard_count(cls, data: Any) -> Any:
        """`fleet.shards` is the checkpoint topic's partition count: it creates the topic with
        that many (`kafka.new_topics.state_partitions`), one number in two places never."""
        fleet = data.get("fleet") if isinstance(data, dict) else None
        shards = fleet.get("shards") if isinstance(fleet, dict) else None
        if shards is None:
            return data
        kafka = dict(data.get("kafka") or {})
        new_topics = dict(kafka.get("new_topics") or {})
        given = new_topics.get("state_partitions")
        if given is not None and str(given) != str(shards):
            raise ValueError(
                f"fleet.shards: {shards} differs from kafka.new_topics.state_partitions "
                f"{given} (the same number: give one of them)"
            )
        new_topics["state_partitions"] = shards
        kafka["new_topics"] = new_topics
        return {**data, "kafka": kafka}

    @model_validator(mode="after")
    def _fleet_needs_state(self) -> Settings:
        if self.fleet.enabled and not self.state.enabled:
            raise ValueError(
                "fleet: fleet mode needs state.enabled (a shard's streams restore from Kafka "
                "wherever they start)"
            )
        if self.fleet.enabled and self.disk_buffer.enabled:
            raise ValueError(
                "disk_buffer: not available in fleet mode yet (what a member's log owes may "
                "belong to shards another member owns by its restart); turn one of them off"
            )
        return self

    @field_validator("streams")
    @classmethod
    def _unique_names(cls, streams: tuple[StreamSettings, ...]) -> tuple[StreamSettings, ...]:
        names = [s.name for s in streams]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"stream names must be unique; repeated: {duplicates}")
        return streams


@cache
def secret_keys() -> frozenset[str]:
    """Every key whose value is a secret: a `SecretStr` field anywhere in the config model. Such
    a key may also be given as `<key>_file`, and its values are masked in logs (`secrets_of`).
    Derived, so a venue's new secret cannot be forgotten."""
    return _keys_of(SecretStr)


@cache
def path_keys() -> frozenset[str]:
    """Every key whose value is a file path (a CA, a certificate, a key): relative paths are
    resolved against the config file's directory, like `<key>_file` secrets. Derived from the
    model, so a new path key cannot be forgotten."""
    return _keys_of(Path)


def _keys_of(wanted: type) -> frozenset[str]:
    """The names of every field of the config model (sections and venues' stream sections
    included) whose annotation contains `wanted`."""
    keys: set[str] = set()
    seen: set[type[BaseModel]] = set()

    def visit(model: type[BaseModel]) -> None:
        seen.add(model)
        for name, field in model.model_fields.items():
            for kind in _types_in(field.annotation):
                if kind is wanted:
                    keys.add(name)
                elif isinstance(kind, type) and issubclass(kind, BaseModel) and kind not in seen:
                    visit(kind)

    visit(Settings)
    return frozenset(keys)


def secrets_of(node: object) -> list[str]:
    """The values of every secret in a validated config (for log masking)."""
    if isinstance(node, SecretStr):
        return [node.get_secret_value()]
    if isinstance(node, BaseModel):
        return [s for name in type(node).model_fields for s in secrets_of(getattr(node, name))]
    if isinstance(node, tuple | list):
        return [s for item in node for s in secrets_of(item)]
    return []


def _types_in(annotation: Any) -> Iterator[Any]:
    """The types an annotation is made of: `tuple[A | None, ...]` → tuple, A, None, Ellipsis."""
    yield annotation
    for arg in typing.get_args(annotation):
        yield from _types_in(arg)


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
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        detail = f"not UTF-8 text (byte {exc.start})"
        raise ConfigError(f"{path}: cannot read config file: {detail}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: {yaml_problem(exc)}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: the config must be a mapping at the top level")
    return document


def yaml_problem(exc: yaml.YAMLError) -> str:
    """pyyaml's explanation without its snippet: the snippet quotes the offending line, which
    may hold a secret, or part of one when a value spans lines (the problem and the context are
    pyyaml's own words, at most a character of the input)."""
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return "not valid YAML"
    mark = exc.problem_mark
    what = exc.problem or "syntax error"
    if exc.context:
        started = exc.context_mark
        at = f" (line {started.line + 1})" if started and started.line != mark.line else ""
        what = f"{what}, {exc.context}{at}"
    return f"not valid YAML at line {mark.line + 1}, column {mark.column + 1}: {what}"


def validate_settings(data: dict[str, Any]) -> Settings:
    settings = _validate(Settings, data)
    empty = [f"{path}: empty" for path in _empty_secrets(settings, "")]
    if empty:
        raise ConfigError("\n".join(empty))
    return settings


def _empty_secrets(node: object, path: str) -> Iterator[str]:
    """Key paths of secrets given as "" (or only whitespace): a venue would refuse them later,
    as an auth failure that no retry can fix."""
    if isinstance(node, BaseModel):
        for name in type(node).model_fields:
            value, sub = getattr(node, name), f"{path}.{name}" if path else name
            if isinstance(value, SecretStr):
                if not value.get_secret_value().strip():
                    yield sub
            else:
                yield from _empty_secrets(value, sub)
    elif isinstance(node, tuple | list):
        for i, item in enumerate(node):
            yield from _empty_secrets(item, f"{path}[{i}]")


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


_FIELD_MESSAGE: Final = re.compile(r"^([a-z_][a-z_.]*): (.*)$", re.DOTALL)


def _line(error: Any) -> str:
    path, message = format_loc(error["loc"]), _message(error)
    match = _FIELD_MESSAGE.match(message)
    if match:  # a model validator naming the field it is about
        path = match[1] if not error["loc"] else f"{path}.{match[1]}"
        message = match[2]
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
            if key.endswith("_file") and secret in secret_keys():
                if secret in node:
                    raise ConfigError(f"{sub}: give either {secret} or {key}, not both")
                out[secret] = _read_secret_file(resolved, sub, base)
            elif key in path_keys() and isinstance(resolved, str):
                out[key] = str(base / resolved)  # an absolute path stays as it is
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
        secret = file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: cannot read {file}: it is not UTF-8 text") from None
    if not secret:
        raise ConfigError(f"{path}: {file} is empty")
    return secret


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
