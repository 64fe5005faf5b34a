"""The one codec: schemas loaded once from `schemas/`, records → Avro bytes + Kafka headers.

Framing is the Avro spec's single-object encoding (`C3 01` + 8-byte little-endian
CRC-64-AVRO fingerprint + body) by default, or the Confluent wire format (magic 0 + 4-byte
schema id + body) in registry mode. Readers find the writer schema from the frame itself.
The bridge's private topics (`records.PRIVATE_TOPICS`: its checkpoint) are always single-object
encoded: only the bridge reads them, and restoring must not depend on a registry.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Final, Literal

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from bridge.avro import Body, compile_writer, decimal_bytes
from bridge.errors import EncodeError
from bridge.records import PRIVATE_TOPICS, RECORD_TYPES, Envelope, StateTombstone

SINGLE_OBJECT_MAGIC: Final = b"\xc3\x01"
CONFLUENT_MAGIC: Final = b"\x00"
_VERSION_FILE: Final = re.compile(r"^v(\d+)\.avsc$")


@dataclass(frozen=True, slots=True)
class SchemaVersion:
    """One released schema file, `schemas/<topic>/v<N>.avsc`."""

    topic: str  # logical topic: balances, orders, positions, trades, credit, deadletter
    version: int
    full_name: str
    text: str
    parsed: Any  # fastavro's parsed schema
    fingerprint: bytes  # CRC-64-AVRO of the parsing canonical form, little-endian

    @property
    def canonical(self) -> str:
        return str(to_parsing_canonical_form(json.loads(self.text)))


def default_schema_root() -> Traversable:
    """`schemas/` inside the installed package (the repository's top-level `schemas/`)."""
    return resources.files("bridge.schemas")


def load_schema_version(topic: str, version: int, text: str) -> SchemaVersion:
    document = json.loads(text)
    parsed = fastavro.parse_schema(document)
    canonical = to_parsing_canonical_form(document)
    return SchemaVersion(
        topic=topic,
        version=version,
        full_name=f"{document.get('namespace', '')}.{document['name']}".lstrip("."),
        text=text,
        parsed=parsed,
        fingerprint=bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO")),
    )


class SchemaStore:
    """Every version of every topic's schema, by topic and by fingerprint."""

    def __init__(self, versions: list[SchemaVersion]) -> None:
        self._by_topic: dict[str, dict[int, SchemaVersion]] = {}
        self._by_fingerprint: dict[bytes, SchemaVersion] = {}
        for sv in versions:
            self._by_topic.setdefault(sv.topic, {})[sv.version] = sv
            self._by_fingerprint[sv.fingerprint] = sv

    @classmethod
    def load(cls, root: Traversable | Path | None = None) -> SchemaStore:
        root = root if root is not None else default_schema_root()
        versions = []
        for topic_dir in sorted(root.iterdir(), key=lambda p: p.name):
            if not topic_dir.is_dir() or topic_dir.name.startswith(("_", ".")):
                continue
            for file in topic_dir.iterdir():
                match = _VERSION_FILE.match(file.name)
                if match:
                    text = file.read_text(encoding="utf-8")
                    versions.append(load_schema_version(topic_dir.name, int(match[1]), text))
        if not versions:
            raise FileNotFoundError(f"no schemas/<topic>/v<N>.avsc files under {root}")
        return cls(versions)

    def topics(self) -> list[str]:
        return sorted(self._by_topic)

    def versions(self, topic: str) -> list[SchemaVersion]:
        return [self._by_topic[topic][v] for v in sorted(self._by_topic[topic])]

    def latest(self, topic: str) -> SchemaVersion:
        return self.versions(topic)[-1]

    def by_fingerprint(self, fp: bytes) -> SchemaVersion | None:
        return self._by_fingerprint.get(fp)

    def __iter__(self) -> Iterator[SchemaVersion]:
        for topic in self.topics():
            yield from self.versions(topic)


@dataclass(frozen=True, slots=True)
class Encoded:
    """A record ready for Kafka. `topic` is the logical topic; the sink maps it to a name."""

    topic: str
    key: bytes
    value: bytes | None  # None: a tombstone (StateTombstone)
    headers: list[tuple[str, bytes]]


def single_object_prefix(sv: SchemaVersion) -> bytes:
    return SINGLE_OBJECT_MAGIC + sv.fingerprint


def confluent_prefix(schema_id: int) -> bytes:
    """Confluent wire format header: magic byte 0, then the schema id as 4 bytes big-endian."""
    return CONFLUENT_MAGIC + schema_id.to_bytes(4, "big")


Encoder = Literal["generated", "fastavro"]


class Codec:
    """Encodes records with the newest schema version of their topic.

    `prefix_for` gives the framing bytes for a schema version: single-object by default; the
    registry mode passes the Confluent prefix for the id the registry assigned. `encoder`
    picks who writes the Avro body: an encoder generated once per schema (`bridge/avro.py`,
    byte-identical, the default) or fastavro itself (`serialization.encoder: fastavro`).
    `member` (fleet mode) adds a `member` header naming the fleet member that wrote the record.
    """

    def __init__(
        self,
        store: SchemaStore,
        prefix_for: Callable[[SchemaVersion], bytes] = single_object_prefix,
        encoder: Encoder = "generated",
        member: str | None = None,
    ) -> None:
        self.store = store
        self.encoder = encoder
        self._prefix_for = prefix_for
        self._by_prefix: dict[bytes, SchemaVersion] | None = None
        self._writers: dict[type[Envelope], _Writer] = {}
        for record_type in RECORD_TYPES:
            sv = store.latest(record_type.TOPIC)
            names = tuple(f.name for f in dataclasses.fields(record_type))
            _check_fields_match(record_type, names, sv)
            private = record_type.TOPIC in PRIVATE_TOPICS
            prefix = single_object_prefix(sv) if private else prefix_for(sv)
            body = compile_writer(json.loads(sv.text)) if encoder == "generated" else None
            if body is None:
                body = _fastavro_body(sv, names)
            headers: tuple[tuple[str, bytes], ...] = (
                ("schema", sv.full_name.encode()),
                ("schema_version", b"%d" % sv.version),
            )
            if member is not None:  # fleet mode: which member wrote it (bridge/fleet.py)
                headers += (("member", member.encode()),)
            self._writers[record_type] = _Writer(sv, prefix, body, headers)

    def schema_for(self, record_type: type[Envelope]) -> SchemaVersion:
        return self._writers[record_type].schema

    def decode(self, value: bytes) -> Envelope:
        """A value written in this codec's framing (any version of the bridge's schemas) back
        as its dataclass; `ValueError` for anything else."""
        if value[:2] == SINGLE_OBJECT_MAGIC:
            return decode_record(self.store, value)
        if self._by_prefix is None:
            self._by_prefix = {
                self._prefix_for(sv): sv for sv in self.store if sv.topic not in PRIVATE_TOPICS
            }
        sv = self._by_prefix.get(value[:5])
        if sv is None:
            raise ValueError(f"not written by this bridge: prefix {value[:5].hex()}")
        return decode_record(self.store, single_object_prefix(sv) + value[5:])

    def encode(self, record: Envelope) -> Encoded:
        writer = self._writers.get(type(record))
        if writer is None:
            assert isinstance(record, StateTombstone), type(record)
            headers = [("stream", record.stream.encode()), ("source", record.source.encode())]
            return Encoded(record.TOPIC, record.key().encode(), None, headers)
        try:
            value = writer.prefix + writer.body(record)
        except (ValueError, TypeError, OverflowError, ArithmeticError, AttributeError) as exc:
            sv = writer.schema
            raise EncodeError(f"{sv.full_name} v{sv.version}: {exc}") from exc
        headers = [
            *writer.headers,
            ("venue", record.venue.encode()),
            ("stream", record.stream.encode()),
            ("event_id", record.event_id.encode()),
            ("source", record.source.encode()),
        ]
        return Encoded(record.TOPIC, record.key().encode(), value, headers)

    def value(self, record: Envelope) -> bytes:
        """`encode(record).value` of a record (never a tombstone: it has no value)."""
        value = self.encode(record).value
        assert value is not None, record
        return value

    def single_object(self, record: Envelope, value: bytes) -> bytes:
        """A value this codec wrote for `record` (`encode(record).value`), in single-object
        framing: the same bytes in the default framing, the body behind the single-object
        prefix in registry mode. What the checkpoint keeps of an open record without encoding
        it again."""
        writer = self._writers[type(record)]
        if writer.prefix[:2] == SINGLE_OBJECT_MAGIC:
            return value
        return single_object_prefix(writer.schema) + value[len(writer.prefix) :]


@dataclass(frozen=True, slots=True)
class _Writer:
    schema: SchemaVersion
    prefix: bytes
    body: Body  # record → Avro binary body
    headers: tuple[tuple[str, bytes], ...]  # the headers every record of the type carries


def _fastavro_body(sv: SchemaVersion, names: tuple[str, ...]) -> Body:
    """fastavro as the writer: the reference the generated encoders are held to. Decimals are
    converted to bytes first (fastavro's own conversion is a Python loop per digit)."""
    decimals = _decimal_scales(sv)

    def body(record: Any) -> bytes:
        values = {n: getattr(record, n) for n in names}
        for name, scale in decimals:
            if values[name] is not None:
                values[name] = decimal_bytes(values[name], scale)
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, sv.parsed, values)
        return buffer.getvalue()

    return body


def _decimal_scales(sv: SchemaVersion) -> tuple[tuple[str, int], ...]:
    out = []
    for field in json.loads(sv.text)["fields"]:
        branches = field["type"] if isinstance(field["type"], list) else [field["type"]]
        for branch in branches:
            if isinstance(branch, dict) and branch.get("logicalType") == "decimal":
                out.append((field["name"], int(branch.get("scale", 0))))
    return tuple(out)


def _check_fields_match(
    record_type: type[Envelope], names: tuple[str, ...], sv: SchemaVersion
) -> None:
    """The dataclass and the newest schema must agree exactly: a field present in one and
    missing in the other would be silently dropped or fail on every record."""
    schema_names = tuple(f["name"] for f in json.loads(sv.text)["fields"])
    if set(schema_names) != set(names):
        raise RuntimeError(
            f"{record_type.__name__} fields {sorted(set(names) ^ set(schema_names))} differ "
            f"from schemas/{sv.topic}/v{sv.version}.avsc"
        )


def decode_single_object(
    store: SchemaStore, value: bytes, reader: SchemaVersion | None = None
) -> dict[str, Any]:
    """Decode a single-object-encoded value, resolving the writer schema by fingerprint.

    With `reader`, the record is resolved to that (older or newer) schema version.
    """
    if value[:2] != SINGLE_OBJECT_MAGIC or len(value) < 10:
        raise ValueError("not an Avro single-object encoding (missing C3 01 header)")
    writer = store.by_fingerprint(value[2:10])
    if writer is None:
        raise ValueError(f"unknown schema fingerprint {value[2:10].hex()}")
    result = fastavro.schemaless_reader(
        io.BytesIO(value[10:]), writer.parsed, reader.parsed if reader else None
    )
    assert isinstance(result, dict)
    return result


_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_UNITS: Final = {
    "timestamp-millis": dt.timedelta(milliseconds=1),
    "timestamp-micros": dt.timedelta(microseconds=1),
}
_RECORD_TYPE: Final = {t.TOPIC: t for t in RECORD_TYPES}


def decode_record(store: SchemaStore, value: bytes) -> Envelope:
    """A single-object value this bridge wrote, back as its dataclass (read with the newest
    schema of its topic; timestamps back to epoch integers). How restored checkpoints rebuild
    the open orders and positions they carry."""
    writer = store.by_fingerprint(value[2:10])
    if writer is None:
        raise ValueError(f"unknown schema fingerprint {value[2:10].hex()}")
    reader = store.latest(writer.topic)
    values = decode_single_object(store, value, reader)
    for name, unit in _timestamp_fields(reader):
        stamp = values.get(name)
        if isinstance(stamp, dt.datetime):
            values[name] = (stamp - _EPOCH) // unit
    return _RECORD_TYPE[writer.topic](**values)


_TIMESTAMPS: dict[tuple[str, int], list[tuple[str, dt.timedelta]]] = {}


def _timestamp_fields(sv: SchemaVersion) -> list[tuple[str, dt.timedelta]]:
    found = _TIMESTAMPS.get((sv.topic, sv.version))
    if found is None:
        found = []
        for field in json.loads(sv.text)["fields"]:
            branches = field["type"] if isinstance(field["type"], list) else [field["type"]]
            for branch in branches:
                if isinstance(branch, dict) and branch.get("logicalType") in _UNITS:
                    found.append((field["name"], _UNITS[branch["logicalType"]]))
        _TIMESTAMPS[(sv.topic, sv.version)] = found
    return found
