"""Reading the bridge's topics back: decode any record the codec wrote, print it for people.

Used by `bridge tail` and the demo. Both framings are recognised from the value itself:
`C3 01` + fingerprint (single-object, writer schema from `schemas/`) or `00` + schema id
(Confluent, writer schema fetched from the registry by id, once per id). Exact decimals print
as strings, timestamps as ISO-8601.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import io
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import fastavro
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.errors import KafkaError

from bridge.codec import (
    CONFLUENT_MAGIC,
    SINGLE_OBJECT_MAGIC,
    SchemaStore,
    decode_single_object,
    load_schema_version,
)
from bridge.errors import RegistryError
from bridge.kafka import consumer_options
from bridge.registry import RegistryClient, registry_client
from bridge.settings import TopicNames, load_reader_settings


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded value and the writer schema it names."""

    record: dict[str, Any]
    schema: str  # full name, e.g. bridge.records.Balance
    version: int | None  # v<N> in schemas/; None when this build has no file for the writer
    schema_id: int | None  # the registry id (Confluent framing only)


@dataclass(frozen=True, slots=True)
class _Writer:
    parsed: Any
    schema: str
    version: int | None


class RecordDecoder:
    """Decodes values in either framing. Registry-framed values need `registry`; a writer
    schema the registry returns is matched to `schemas/` by fingerprint (to name its version),
    and used as is when this build does not know it (a newer bridge may have written it)."""

    def __init__(self, store: SchemaStore, registry: RegistryClient | None = None) -> None:
        self.store = store
        self._registry = registry
        self._by_id: dict[int, _Writer] = {}

    async def decode(self, value: bytes) -> Decoded:
        if value[:2] == SINGLE_OBJECT_MAGIC:
            sv = self.store.by_fingerprint(value[2:10])
            record = decode_single_object(self.store, value)
            assert sv is not None  # decode_single_object raised otherwise
            return Decoded(record, sv.full_name, sv.version, None)
        if value[:1] == CONFLUENT_MAGIC and len(value) >= 5:
            schema_id = int.from_bytes(value[1:5], "big")
            writer = await self._writer(schema_id)
            body = fastavro.schemaless_reader(io.BytesIO(value[5:]), writer.parsed)
            assert isinstance(body, dict)
            return Decoded(body, writer.schema, writer.version, schema_id)
        raise ValueError(f"neither single-object (C3 01) nor Confluent (00) framing: {value[:4]!r}")

    async def _writer(self, schema_id: int) -> _Writer:
        writer = self._by_id.get(schema_id)
        if writer is not None:
            return writer
        if self._registry is None:
            raise ValueError(
                f"registry-framed value (schema id {schema_id}) and no registry URL "
                "(--registry-url or serialization.registry_url)"
            )
        text = await self._registry.schema_by_id(schema_id)
        sv = load_schema_version("", 0, text)
        local = self.store.by_fingerprint(sv.fingerprint)
        if local is not None:
            writer = _Writer(local.parsed, local.full_name, local.version)
        else:
            writer = _Writer(sv.parsed, sv.full_name, None)
        self._by_id[schema_id] = writer
        return writer


def to_jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value else "0"
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_jsonable(v) for v in value]
    return value


def json_line(record: dict[str, Any], *, drop: tuple[str, ...] = ()) -> str:
    """One record as a JSON line (fields in schema order; `drop` leaves some out)."""
    shown = {k: v for k, v in record.items() if k not in drop}
    return json.dumps(to_jsonable(shown), ensure_ascii=False)


def tail_line(message: ConsumerRecord[bytes, bytes], decoded: Decoded | str) -> str:
    """What `bridge tail` prints for one Kafka record: where it is, its key, the writer
    schema, and the decoded `value`; or `error` (the reason) when it could not be decoded."""
    line: dict[str, Any] = {
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
        "timestamp": dt.datetime.fromtimestamp(message.timestamp / 1000, dt.UTC),
        "key": message.key,
    }
    if isinstance(decoded, str):
        line["error"] = decoded
        line["value"] = message.value
    else:
        line |= {
            "schema": decoded.schema,
            "version": decoded.version,
            "schema_id": decoded.schema_id,
            "value": decoded.record,
        }
    return json.dumps(to_jsonable(line), ensure_ascii=False)


async def tail(
    decoder: RecordDecoder,
    topics: Sequence[str],
    options: dict[str, Any],
    *,
    from_beginning: bool,
    count: int | None,
    timeout: float | None,
    out: TextIO = sys.stdout,
) -> int:
    """Print records of `topics` as JSON lines until `count` were printed (or forever), or no
    record came for `timeout` seconds. Returns the number printed. No consumer group: nothing
    is committed, and tailing never disturbs the topic's real consumers."""
    consumer = AIOKafkaConsumer(
        *topics,
        auto_offset_reset="earliest" if from_beginning else "latest",
        enable_auto_commit=False,
        **options,
    )
    # `timeout` bounds every wait, including the ones aiokafka does not bound itself: on a
    # topic the cluster does not have (auto-create off, or a typo) it waits for partitions
    # forever, logging "Topic … not found in cluster metadata" twice a second.
    try:
        await asyncio.wait_for(consumer.start(), timeout)
    except TimeoutError:
        await _report_missing(consumer, topics, out=sys.stderr)
        await consumer.stop()
        return 0
    printed = 0
    try:
        while count is None or printed < count:
            batches = await _next_batches(consumer, timeout)
            if batches is None:
                if printed == 0:
                    await _report_missing(consumer, topics, out=sys.stderr)
                break
            for message in _in_order(batches):
                print(await _line(decoder, message), file=out, flush=True)
                printed += 1
                if count is not None and printed >= count:
                    break
    finally:
        await consumer.stop()
    return printed


async def _next_batches(
    consumer: AIOKafkaConsumer, timeout: float | None
) -> dict[Any, list[ConsumerRecord[bytes, bytes]]] | None:
    """The next non-empty fetch; None when `timeout` seconds passed without a record."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    while deadline is None or loop.time() < deadline:
        left = None if deadline is None else max(deadline - loop.time(), 0.0)
        try:
            batches: dict[Any, list[ConsumerRecord[bytes, bytes]]] = await asyncio.wait_for(
                consumer.getmany(timeout_ms=500), left
            )
        except TimeoutError:
            return None
        if batches:
            return batches
    return None


async def _report_missing(consumer: AIOKafkaConsumer, topics: Sequence[str], out: TextIO) -> None:
    """Say which topics the cluster does not have (the likely reason nothing came)."""
    try:
        existing: set[str] = await asyncio.wait_for(consumer.topics(), 10)
    except (TimeoutError, KafkaError):
        return
    missing = [t for t in topics if t not in existing]
    if missing:
        print(f"bridge tail: no such topic: {', '.join(missing)}", file=out)


def _in_order(
    batches: dict[Any, list[ConsumerRecord[bytes, bytes]]],
) -> list[ConsumerRecord[bytes, bytes]]:
    """Records of one fetch ordered by topic, partition, offset (stable, readable output)."""
    return [
        m for tp in sorted(batches, key=lambda tp: (tp.topic, tp.partition)) for m in batches[tp]
    ]


async def _line(decoder: RecordDecoder, message: ConsumerRecord[bytes, bytes]) -> str:
    if message.value is None:
        return tail_line(message, "tombstone (null value)")
    try:
        decoded = await decoder.decode(message.value)
    except (ValueError, EOFError, IndexError, KeyError, RegistryError) as exc:
        return tail_line(message, f"cannot decode: {exc}")
    return tail_line(message, decoded)


def tail_main(
    *,
    topics: Sequence[str],
    config: Path | None,
    bootstrap_servers: str | None,
    registry_url: str | None,
    from_beginning: bool,
    count: int | None,
    timeout: float | None,
) -> int:
    """`bridge tail`: exit 0, or 1 when `--timeout` ended it before `--count` records."""
    settings = load_reader_settings(config)
    kafka = settings.kafka
    if bootstrap_servers:
        kafka = kafka.model_copy(update={"bootstrap_servers": bootstrap_servers})
    names = [kafka.topics.name(t) if t in TopicNames.model_fields else t for t in topics]
    ser = settings.serialization
    url = registry_url or ser.registry_url
    if url:
        ser = ser.model_copy(update={"registry_url": url})

    async def run() -> int:
        store = SchemaStore.load()
        async with contextlib.AsyncExitStack() as stack:
            registry = None
            if url:
                registry = await stack.enter_async_context(registry_client(ser))
            decoder = RecordDecoder(store, registry)
            return await tail(
                decoder,
                names,
                consumer_options(kafka),
                from_beginning=from_beginning,
                count=count,
                timeout=timeout,
            )

    printed = asyncio.run(run())
    if count is not None and printed < count:
        print(f"bridge tail: {printed} of {count} records within {timeout} s", file=sys.stderr)
        return 1
    return 0
