"""The ceilings, each in its own process: a bare aiokafka producer sending pre-encoded records
(the bridge's own, same keys and headers, same producer options) with `send()` or with the
batch API. Prints its CPU time per record (this process, from the first record to the last
ack) as JSON.

    python -m tests.bench.ceiling send|batch KAFKA_SETTINGS_JSON RECORDS_PICKLE
"""

from __future__ import annotations

import asyncio
import json
import pickle
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from bridge.kafka import producer_options
from bridge.settings import KafkaSettings

Record = tuple[str, bytes, bytes, list[tuple[str, bytes]]]  # topic, key, value, headers


async def send_each(producer: AIOKafkaProducer, records: list[Record]) -> None:
    futures = [
        await producer.send(topic, value, key=key, headers=headers)
        for topic, key, value, headers in records
    ]
    await asyncio.gather(*futures)


async def send_batches(producer: AIOKafkaProducer, records: list[Record]) -> None:
    """One partition per bench topic: batches filled in order, each sent when full."""
    by_topic: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        by_topic[record[0]].append(record)
    futures = []
    for topic, items in by_topic.items():
        batch = producer.create_batch()
        for _, key, value, headers in items:
            if batch.append(timestamp=None, key=key, value=value, headers=headers) is None:
                futures.append(await producer.send_batch(batch, topic, partition=0))
                batch = producer.create_batch()
                batch.append(timestamp=None, key=key, value=value, headers=headers)
        futures.append(await producer.send_batch(batch, topic, partition=0))
    await asyncio.gather(*futures)


async def main(mode: str, kafka: dict[str, Any], records: list[Record]) -> dict[str, Any]:
    producer = AIOKafkaProducer(**producer_options(KafkaSettings(**kafka)))
    await producer.start()
    try:
        for topic in {r[0] for r in records}:
            await producer.partitions_for(topic)
        cpu, wall = time.process_time(), time.monotonic()
        await (send_each if mode == "send" else send_batches)(producer, records)
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    finally:
        await producer.stop()
    return {"cpu_us_per_record": cpu / len(records) * 1e6, "wall_s": wall}


if __name__ == "__main__":
    kafka = json.loads(sys.argv[2])
    records = pickle.loads(Path(sys.argv[3]).read_bytes())  # noqa: S301 - our own file
    print(json.dumps(asyncio.run(main(sys.argv[1], kafka, records))))
