"""Registry mode end to end: simulators → `bridge run` (a process) → real Kafka, with a real
schema registry. Every record is Confluent framed with the id the registry gave the newest
schema version, decodes (writer schema fetched by id) to exactly the ground truth, and still
reads with the v1 schema (a consumer that never upgraded). Start-up failures are loud."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from bridge.dev.kafka import KafkaEndpoint
from bridge.dev.registry import RegistryEndpoint
from tests.e2e.scenario import (
    DEPOSIT_ADDRESS,
    assert_matches,
    bridge_config,
    run_both_venues,
)
from tests.helpers import (
    NEWEST_VERSION,
    REGISTERED_TOPICS,
    ROOT,
    SCHEMAS,
    BridgeProcess,
    Message,
    collect,
    free_port,
    read_record,
    unique_topics,
    wait_until,
)

pytestmark = pytest.mark.e2e


def registry_mode(registry: RegistryEndpoint, **extra: Any) -> dict[str, Any]:
    return {"mode": "registry", "registry_url": registry.url, **extra}


async def test_registry_mode_end_to_end(
    kafka: KafkaEndpoint,
    registry: RegistryEndpoint,
    confluent_registry: SchemaRegistryClient,
    tmp_path: Path,
) -> None:
    run = await run_both_venues(kafka, tmp_path, registry_mode(registry))
    want = run.counts

    def complete(messages: list[Message]) -> bool:
        return all(sum(1 for m in messages if m.topic == t) >= n for t, n in want.items())

    messages = await collect(
        kafka.bootstrap_servers, run.topics, complete, registry_url=registry.url
    )
    assert {t: sum(1 for m in messages if m.topic == t) for t in want} == want
    for topic, expected in run.expected.items():
        assert_matches(topic, [m.record for m in messages if m.topic == topic], expected)

    # The registry holds every version of every subject, FULL compatibility set, and each
    # value names the newest version's id.
    confluent = confluent_registry
    for topic in REGISTERED_TOPICS:
        subject = f"{run.topics[topic]}-value"
        versions = sorted(int(p.stem[1:]) for p in (SCHEMAS / topic).glob("v*.avsc"))
        assert confluent.get_versions(subject) == versions
        assert confluent.get_compatibility(subject) == "FULL"
        newest = confluent.get_latest_version(subject)
        for m in (m for m in messages if m.topic == topic):
            assert m.schema_id == newest.schema_id
            assert m.schema_version == NEWEST_VERSION[topic]
            assert m.headers["schema_version"] == str(NEWEST_VERSION[topic])
    registered = [e for e in run.bridge.log_events() if e.get("event") == "schemas registered"]
    assert len(registered) == len(REGISTERED_TOPICS)  # not the private state topic

    # Balances v2 carries the Aquanow deposit address; a v1 reader still reads every record.
    balances = [m for m in messages if m.topic == "balances"]
    with_address = [m for m in balances if m.record["deposit_address"] is not None]
    assert [m.record["deposit_address"] for m in with_address] == [DEPOSIT_ADDRESS]
    v1 = fastavro.parse_schema(json.loads((SCHEMAS / "balances/v1.avsc").read_text()))
    for m in balances:
        assert m.schema_id is not None
        writer = confluent.get_schema(m.schema_id).schema_str
        assert writer is not None
        old = read_record(m.value[5:], fastavro.parse_schema(json.loads(writer)), v1)
        assert "deposit_address" not in old
        assert old == {k: v for k, v in m.record.items() if k != "deposit_address"}

    # `bridge tail` reads the same topic back through the registry.
    lines = _tail(kafka, registry, run.topics["balances"], count=5)
    assert len(lines) == 5
    for line, m in zip(lines, balances, strict=False):
        assert line["topic"] == run.topics["balances"]
        assert line["key"] == m.key
        assert (line["schema"], line["version"]) == ("bridge.records.Balance", 2)
        assert line["schema_id"] == m.schema_id
        assert line["value"]["event_id"] == m.record["event_id"]
        for amount in ("available", "total"):  # exact decimals, as strings
            value = m.record[amount]
            shown = line["value"][amount]
            assert shown is None if value is None else Decimal(shown) == value
            assert shown is None or isinstance(shown, str)


def _tail(
    kafka: KafkaEndpoint, registry: RegistryEndpoint, topic: str, count: int
) -> list[dict[str, Any]]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bridge",
            "tail",
            topic,
            "--bootstrap-servers",
            kafka.bootstrap_servers,
            "--registry-url",
            registry.url,
            "--from-beginning",
            "--count",
            str(count),
            "--timeout",
            "60",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def _quiet_config(kafka: KafkaEndpoint, serialization: dict[str, Any]) -> dict[str, Any]:
    """A bridge that never gets past start-up: its venue is never contacted."""
    config = bridge_config(kafka, unique_topics(), serialization, "ws://127.0.0.1:9", "ws://x:9")
    config["reconnect"] = {"initial_delay": 0.1, "max_delay": 0.5}
    return config


async def test_unreachable_registry_is_retried_and_the_bridge_is_not_ready(
    kafka: KafkaEndpoint, tmp_path: Path
) -> None:
    down = {"mode": "registry", "registry_url": f"http://127.0.0.1:{free_port()}"}
    with BridgeProcess(tmp_path, _quiet_config(kafka, down)) as bridge:

        def retries() -> int:
            events = bridge.log_events()
            return sum(
                1 for e in events if e.get("event") == "schema registry unavailable; retrying"
            )

        await wait_until(lambda: retries() >= 3, "3 registry retries", timeout=60)
        assert (await bridge.get("/healthz"))[0] == 200
        assert (await bridge.get("/readyz"))[0] == 503
        assert bridge.stop() == 0  # SIGTERM during the retries is a clean stop
    events = bridge.log_events()
    assert not any(e.get("event") == "producer started" for e in events)
    retry = next(e for e in events if e.get("event") == "schema registry unavailable; retrying")
    assert "schema registry unreachable" in retry["error"]


async def test_an_incompatible_schema_stops_the_bridge_with_exit_2(
    kafka: KafkaEndpoint,
    registry: RegistryEndpoint,
    confluent_registry: SchemaRegistryClient,
    tmp_path: Path,
) -> None:
    config = _quiet_config(kafka, registry_mode(registry))
    subject = f"{config['kafka']['topics']['balances']}-value"
    confluent = confluent_registry
    confluent.set_compatibility(subject, "FULL")
    other = {
        "type": "record",
        "name": "Balance",
        "namespace": "bridge.records",
        "fields": [{"name": "asset", "type": "long"}],
    }
    confluent.register_schema(subject, Schema(json.dumps(other), "AVRO"))
    bridge = BridgeProcess(tmp_path, config).start()
    assert bridge.process is not None
    try:
        assert bridge.process.wait(60) == 2, bridge.log_text()[-3000:]
    finally:
        bridge.stop()
    text = bridge.log_text()
    assert "bridge: schema registry error" in text
    assert (
        f"subject {subject}: the registry refused schemas/balances/v1.avsc as incompatible: "
        in text
    )
    refused = [e for e in bridge.log_events() if e.get("level") == "error"]
    assert refused
    assert refused[0]["event"] == "schema registry refused the bridge's schemas"
    assert confluent.get_versions(subject) == [1]  # nothing of ours was registered


async def test_sigterm_is_not_held_by_a_registry_that_never_answers(
    kafka: KafkaEndpoint, tmp_path: Path
) -> None:
    """A registry that accepts connections and never answers, with a request timeout longer
    than any test: SIGTERM must still end the bridge cleanly (exit 0, not a kill)."""
    accepted = asyncio.Event()

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        try:
            await reader.read()  # until the client goes away
        finally:
            writer.close()  # else the transport outlives the test's loop (a ResourceWarning)

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    silent = {
        "mode": "registry",
        "registry_url": f"http://127.0.0.1:{port}",
        "registry_timeout": 3600,
    }
    async with server:
        with BridgeProcess(tmp_path, _quiet_config(kafka, silent)) as bridge:
            async with asyncio.timeout(60):
                await accepted.wait()
            assert (await bridge.get("/readyz"))[0] == 503
            assert bridge.stop(timeout=30) == 0
