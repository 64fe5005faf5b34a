"""`bridge tail` as a person runs it: a process, the bridge's own config file, a real broker and
registry, a topic holding both framings (and one record that is not Avro at all)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka import AIOKafkaProducer

from bridge.codec import Codec, SchemaStore
from bridge.dev.kafka import KafkaEndpoint
from bridge.dev.registry import RegistryEndpoint
from bridge.registry import RegistryClient, subject_for
from tests.helpers import ROOT, unique_topics
from tests.records import SAMPLE_BALANCE as BALANCE

pytestmark = pytest.mark.e2e


def tail(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", "tail", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )


async def test_tail_prints_both_framings_and_names_what_it_cannot_decode(
    kafka: KafkaEndpoint, registry: RegistryEndpoint, tmp_path: Path
) -> None:
    topics = unique_topics()
    store = SchemaStore.load()
    async with RegistryClient(registry.url) as client:
        schema_id = await client.register(
            subject_for(topics["balances"]), store.latest("balances").text
        )
    single = Codec(store)
    framed = Codec(store, prefix_for=lambda sv: b"\x00" + schema_id.to_bytes(4, "big"))
    records = [dataclasses.replace(BALANCE, event_id=f"e{i}", asset=f"A{i}") for i in range(4)]
    values = [
        single.value(records[0]),
        framed.value(records[1]),
        b"not avro at all",
        single.value(records[2]),
        framed.value(records[3]),
    ]
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topics["balances"], value, key=b"aquanow|CA1|BTC")
    finally:
        await producer.stop()

    # The bridge's own config: `balances` resolves to its Kafka topic; the streams' secrets
    # are never needed (their variables are unset).
    config: dict[str, Any] = {
        "kafka": {"bootstrap_servers": kafka.bootstrap_servers, "topics": topics},
        "serialization": {"mode": "registry", "registry_url": registry.url},
        "streams": [
            {
                "name": "aq",
                "venue": "aquanow",
                "url": "wss://x/",
                "api_key": "${UNSET_KEY_FOR_TAIL}",
                "api_secret": "${UNSET_SECRET_FOR_TAIL}",
            }
        ],
    }
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(config))

    result = tail(path, "balances", "--from-beginning", "--count", "5", "--timeout", "60")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["offset"] for line in lines] == [0, 1, 2, 3, 4]
    assert all(line["topic"] == topics["balances"] for line in lines)
    assert [line.get("schema_id") for line in lines] == [None, schema_id, None, None, schema_id]
    assert [line["value"]["asset"] for line in (lines[0], lines[1], lines[3], lines[4])] == [
        "A0",
        "A1",
        "A2",
        "A3",
    ]
    assert lines[1]["value"]["available"] == "2.4643104026041307"
    assert lines[2]["error"].startswith("cannot decode: neither single-object")
    assert lines[2]["value"] == "not avro at all"

    # Asking for more than there is: stops at --timeout, says so, exits 1.
    short = tail(path, "balances", "--from-beginning", "--count", "9", "--timeout", "3")
    assert short.returncode == 1
    assert len(short.stdout.splitlines()) == 5
    assert "5 of 9 records" in short.stderr


def test_tail_timeout_is_honoured_on_a_topic_that_does_not_exist(tmp_path: Path) -> None:
    """Auto-create off (the managed-cloud default), a topic that is not there: `--timeout 3`
    ends the tail in seconds (exit 1, the topic named), where it used to wait forever logging
    "not found in cluster metadata" twice a second. Its own broker: the session's auto-creates."""
    import time

    from bridge.dev.kafka import LocalKafka

    with LocalKafka(extra_properties={"auto.create.topics.enable": "false"}) as broker:
        config = tmp_path / "bridge.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "kafka": {"bootstrap_servers": broker.bootstrap_servers},
                    "streams": [
                        {"name": "aq", "venue": "aquanow", "url": "wss://x/", "api_key": "${K}"}
                    ],
                }
            )
        )
        for args in ((), ("--from-beginning",)):
            started = time.monotonic()
            done = tail(config, "balance", "--timeout", "3", "--count", "1", *args)
            elapsed = time.monotonic() - started
            assert done.returncode == 1, done.stderr
            assert elapsed < 20, f"--timeout 3 took {elapsed:.1f} s"
            assert "bridge tail: no such topic: balance" in done.stderr
            assert "0 of 1 records within 3.0 s" in done.stderr
