"""Interop: a consumer built on another Kafka client than the bridge's (confluent-kafka, i.e.
librdkafka) reads the bridge's topics and decodes every record, in both serialization modes,
to exactly the ground truth. In registry mode it decodes with Confluent's own AvroDeserializer
and SchemaRegistryClient, as Kafka Connect / Flink / ksqlDB users' clients would; in
single-object mode with fastavro and only the `schemas/` files. Balances are also read with
the v1 schema, as a consumer that never upgraded would."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any, cast

import fastavro
import pytest
from confluent_kafka import Consumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from bridge.dev.kafka import KafkaEndpoint
from tests.e2e.expected import RECORD_NAMES
from tests.e2e.scenario import DEPOSIT_ADDRESS, Run, assert_matches, run_both_venues
from tests.helpers import NEWEST_VERSION, SCHEMAS, AvroReader, read_record

pytestmark = pytest.mark.e2e

V1_BALANCE = fastavro.parse_schema(json.loads((SCHEMAS / "balances/v1.avsc").read_text()))


@pytest.mark.parametrize("mode", ["single-object", "registry"])
async def test_a_librdkafka_consumer_decodes_every_record(
    kafka: KafkaEndpoint, tmp_path: Path, request: pytest.FixtureRequest, mode: str
) -> None:
    registry_url = request.getfixturevalue("registry").url if mode == "registry" else None
    serialization = {"mode": mode, **({"registry_url": registry_url} if registry_url else {})}
    run = await run_both_venues(kafka, tmp_path, serialization, seed=41)
    got = await asyncio.to_thread(consume_all, kafka.bootstrap_servers, run, registry_url)
    for topic, expected in run.expected.items():
        assert_matches(topic, [record for record, _ in got[topic]], expected)
    addresses = [r["deposit_address"] for r, _ in got["balances"] if r["deposit_address"]]
    assert addresses == [DEPOSIT_ADDRESS]
    for record, v1_record in got["balances"]:
        assert v1_record == {k: v for k, v in record.items() if k != "deposit_address"}


def consume_all(
    bootstrap: str, run: Run, registry_url: str | None, timeout: float = 90.0
) -> dict[str, list[tuple[dict[str, Any], dict[str, Any] | None]]]:
    """Every record of the run's topics as (decoded, decoded with balances v1 or None)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"interop-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([run.topics[t] for t in run.counts])  # no dead letters: no such topic
    logical = {name: topic for topic, name in run.topics.items()}
    client = SchemaRegistryClient({"url": registry_url}) if registry_url else None
    decode = registry_decoder(client) if client else single_object_decoder()
    got: dict[str, list[tuple[dict[str, Any], dict[str, Any] | None]]] = defaultdict(list)
    deadline = time.monotonic() + timeout
    try:
        while any(len(got[t]) < n for t, n in run.counts.items()):
            assert time.monotonic() < deadline, {t: len(v) for t, v in got.items()}
            message = consumer.poll(0.5)
            if message is None:
                continue
            assert message.error() is None, message.error()
            name = message.topic()
            assert name is not None
            topic = logical[name]
            pairs = cast(list[tuple[str, bytes]], message.headers() or [])
            headers = {k: v.decode() for k, v in pairs}
            assert headers["schema"] == f"bridge.records.{RECORD_NAMES[topic]}"
            assert headers["schema_version"] == str(NEWEST_VERSION[topic])
            got[topic].append(decode(message.topic(), topic, message.value()))
    finally:
        consumer.close()
        if client is not None:
            client.close()  # its HTTP connections, else a ResourceWarning
    return got


def registry_decoder(client: SchemaRegistryClient) -> Any:
    deserializer = AvroDeserializer(client)
    v1_reader = AvroDeserializer(
        client, json.dumps(json.loads((SCHEMAS / "balances/v1.avsc").read_text()))
    )

    def decode(name: str, topic: str, value: bytes) -> tuple[dict[str, Any], dict[str, Any] | None]:
        assert value[:1] == b"\x00", "registry mode writes the Confluent wire format"
        context = SerializationContext(name, MessageField.VALUE)
        record = deserializer(value, context)
        old = v1_reader(value, context) if topic == "balances" else None
        return record, old

    return decode


def single_object_decoder() -> Any:
    reader = AvroReader()

    def decode(name: str, topic: str, value: bytes) -> tuple[dict[str, Any], dict[str, Any] | None]:
        schema_topic, _, record = reader.decode(value)
        assert schema_topic == topic
        old = None
        if topic == "balances":
            writer = reader.by_fingerprint[value[2:10]][2]
            old = read_record(value[10:], writer, V1_BALANCE)
        return record, old

    return decode
