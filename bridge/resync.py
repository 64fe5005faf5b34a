"""`bridge resync STREAM`: ask the bridge that runs STREAM to reconcile it now.

Writes a `resync_requested` record (source operator) to the control topic, keyed like every
control record of the stream (`venue|stream`), so the answer — the `reconciled` record with
the same `request_id` — lands in the same partition after it. With `--wait`, reads that
partition from the request on and prints the answer as `bridge tail` prints records.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from typing import Any, TextIO

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bridge.codec import SchemaStore
from bridge.consume import RecordDecoder, tail_line
from bridge.control import RECONCILED, build_resync_request
from bridge.errors import ConfigError
from bridge.kafka import consumer_options, producer_options
from bridge.registry import registry_client
from bridge.settings import Settings


async def resync(
    settings: Settings,
    stream: str,
    reason: str | None,
    wait: float | None,
    out: TextIO = sys.stdout,
) -> int:
    """0 when the request was written (and, with `wait`, answered in time); 1 otherwise."""
    from bridge.app import App

    found = [s for s in settings.streams if s.name == stream]
    if not found:
        names = ", ".join(s.name for s in settings.streams)
        raise ConfigError(f"STREAM: {stream!r} is not a stream of this config ({names})")
    codec = await App(settings).build_codec()
    assert codec is not None  # no stop can be requested here
    request = build_resync_request(found[0].venue, stream, reason)
    encoded = codec.encode(request)
    topic = settings.kafka.topics.name("control")
    producer = AIOKafkaProducer(**producer_options(settings.kafka))
    await producer.start()
    try:
        sent = await producer.send_and_wait(
            topic, encoded.value, key=encoded.key, headers=encoded.headers
        )
    finally:
        await producer.stop()
    where = {"partition": sent.partition, "offset": sent.offset}
    print(
        json.dumps({"request_id": request.event_id, "stream": stream, "topic": topic, **where}),
        file=out,
        flush=True,
    )
    if wait is None:
        return 0
    tp = TopicPartition(topic, sent.partition)
    return await _answer(settings, tp, sent.offset, request.event_id, wait, out)


async def _answer(
    settings: Settings,
    tp: TopicPartition,
    offset: int,
    request_id: str,
    wait: float,
    out: TextIO,
) -> int:
    """Read the request's partition after it until the answer comes or `wait` seconds pass."""
    consumer = AIOKafkaConsumer(enable_auto_commit=False, **consumer_options(settings.kafka))
    async with contextlib.AsyncExitStack() as stack:
        ser = settings.serialization
        registry = None
        if ser.registry_url:
            registry = await stack.enter_async_context(registry_client(ser))
        decoder = RecordDecoder(SchemaStore.load(), registry)
        await consumer.start()
        stack.push_async_callback(consumer.stop)
        consumer.assign([tp])
        consumer.seek(tp, offset + 1)
        try:
            async with asyncio.timeout(wait):
                while True:
                    for message in (await consumer.getmany(tp, timeout_ms=500)).get(tp, []):
                        if message.value is None:
                            continue
                        decoded = await decoder.decode(message.value)
                        if _answers(decoded.record, request_id):
                            print(tail_line(message, decoded), file=out, flush=True)
                            return 0
        except TimeoutError:
            print(
                f"bridge resync: no answer to {request_id} within {wait} s (is a bridge "
                "running this stream, with control.signals on?)",
                file=sys.stderr,
            )
            return 1
    return 1


def _answers(value: dict[str, Any], request_id: str) -> bool:
    return value.get("kind") == RECONCILED and value.get("request_id") == request_id
