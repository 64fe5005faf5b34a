"""`bridge demo`: simulator venues → bridge → real Kafka → decoded records on screen.

The broker is `KAFKA_BOOTSTRAP_SERVERS` if set, else a local one (bridge.dev.kafka). A consumer
is positioned at the end of every topic before the bridge starts, so exactly the records this
run produces are printed. Stops on Ctrl-C, or after `--count` records.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from bridge.app import App
from bridge.codec import SchemaStore, decode_single_object
from bridge.consume import json_line
from bridge.dev.kafka import kafka_bootstrap
from bridge.dev.simulator.aquanow import AquanowSimulator
from bridge.dev.simulator.credentials import (
    AQUANOW_KEY,
    AQUANOW_SECRET,
    SATORI_KEY,
    SATORI_PRIVATE_KEY,
    SATORI_WALLET,
)
from bridge.dev.simulator.satori import SatoriSimulator
from bridge.logs import configure
from bridge.settings import Settings, TopicNames, validate_settings

# Fields left out on screen (`bridge tail` shows everything).
_HIDDEN = ("raw", "venue", "stream", "event_id", "received_at")


def main(count: int | None, rate: float) -> int:
    """Start (or find) a broker, then run the demo in an event loop."""
    print("starting Kafka (KAFKA_BOOTSTRAP_SERVERS or a local broker)…", file=sys.stderr)
    with kafka_bootstrap() as kafka:
        print(f"kafka at {kafka.bootstrap_servers} ({kafka.kind})", file=sys.stderr)
        return asyncio.run(run_demo(kafka.bootstrap_servers, count=count, rate=rate))


async def run_demo(bootstrap: str, *, count: int | None, rate: float) -> int:
    configure("info", "console")
    # The on-screen consumer's first offset lookup on brand-new topics logs a retried,
    # harmless NotLeaderForPartition error; it is only the viewer, keep the screen clean.
    logging.getLogger("aiokafka.consumer.fetcher").setLevel(logging.CRITICAL)
    aquanow = AquanowSimulator(AQUANOW_KEY, AQUANOW_SECRET, rate=rate, seed=7)
    satori = SatoriSimulator(
        SATORI_KEY,
        SATORI_WALLET,
        rate=rate,
        seed=7,
        coins=("USD", "ETH"),
        pairs=("ETH-USD", "BTC-USD"),
    )
    await aquanow.start()
    await satori.start()
    settings = demo_settings(bootstrap, aquanow.url, satori.url)
    topics = [settings.kafka.topics.name(t) for t in TopicNames.model_fields]
    await _create_topics(bootstrap, topics)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="latest")
    consumer.subscribe(topics=topics)
    await consumer.start()
    app = App(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await _wait_assigned(consumer, len(topics))
        bridge = asyncio.create_task(app.run())
        printer = asyncio.create_task(_print_records(consumer, count))
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({bridge, printer, stopper}, return_when="FIRST_COMPLETED")
        print("stopping…", file=sys.stderr)
        app.request_stop()
        code = await bridge
        printer.cancel()
        stopper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await printer
        return code
    finally:
        await consumer.stop()
        await aquanow.stop()
        await satori.stop()


def demo_settings(bootstrap: str, aquanow_url: str, satori_url: str) -> Settings:
    streams: list[dict[str, Any]] = [
        {
            "name": "aquanow-demo",
            "venue": "aquanow",
            "url": aquanow_url,
            "api_key": AQUANOW_KEY,
            "api_secret": AQUANOW_SECRET,
            "channels": ["executionReport"],
            "ack_grace": 0.5,
        },
        {
            "name": "satori-demo",
            "venue": "satori",
            "url": satori_url,
            "api_key": SATORI_KEY,
            "private_key": SATORI_PRIVATE_KEY,
            "coins": ["USD", "ETH"],
            "pairs": ["ETH-USD", "BTC-USD"],
        },
    ]
    return validate_settings(
        {
            "kafka": {"bootstrap_servers": bootstrap},
            "metrics": {"host": "127.0.0.1", "port": 0},
            "log": {"format": "console"},
            "streams": streams,
        }
    )


async def _create_topics(bootstrap: str, topics: list[str]) -> None:
    """Create missing topics and wait until each partition has a leader."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [NewTopic(t, num_partitions=1, replication_factor=1) for t in topics]
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics([t for t in new if t.name not in existing])
        async with asyncio.timeout(30):
            while not _all_led(await admin.describe_topics(topics)):
                await asyncio.sleep(0.1)
    finally:
        await admin.close()


def _all_led(descriptions: list[dict[str, Any]]) -> bool:
    return all(
        d["error_code"] == 0 and d["partitions"] and all(p["leader"] >= 0 for p in d["partitions"])
        for d in descriptions
    )


async def _wait_assigned(consumer: AIOKafkaConsumer, expected: int) -> None:
    async with asyncio.timeout(30):
        while len(consumer.assignment()) < expected:
            await asyncio.sleep(0.05)
    await consumer.seek_to_end()
    for tp in consumer.assignment():
        await consumer.position(tp)  # resolve "end" now, before the bridge writes anything


async def _print_records(consumer: AIOKafkaConsumer, count: int | None) -> None:
    store = SchemaStore.load()
    shown = 0
    async for message in consumer:
        record = decode_single_object(store, message.value)
        key = message.key.decode() if message.key else ""
        shown_fields = {k: v for k, v in record.items() if v is not None and k not in _HIDDEN}
        print(f"{message.topic:<17} {key}  {json_line(shown_fields)}", flush=True)
        shown += 1
        if count is not None and shown >= count:
            return
