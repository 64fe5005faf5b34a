"""`make bench ARGS="--only restore"`: how long a stream takes to restore its state at start,
and what it holds in memory, against the number of keys — and the design choice behind it:

- checkpoint: what the bridge does (bridge/changelog.py). The stream's entries are in its
  shard's partition of the checkpoint topic (12 partitions here); restoring reads that one
  partition, whatever the other shards hold.
- scan: the alternative, no checkpoint: read the state topics themselves and keep the records
  whose `stream` header is ours, decoding them to rebuild digests and open orders. It reads
  every stream's records, so it is measured with the same number of keys belonging to other
  streams beside ours (a fleet member taking over one shard of many would read all of them).
"""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from decimal import Decimal
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bridge.changelog import restore
from bridge.checkpoint import CheckpointReader, Tracker
from bridge.codec import Codec, SchemaStore, decode_record
from bridge.records import Balance, Envelope, Order, make_event_id
from bridge.shards import shard_key, shard_of

PARTITIONS = 12
STREAM = "bench-0"
OTHERS = ("bench-1", "bench-2", "bench-3")


def orders(stream: str, count: int) -> list[Envelope]:
    """`count` state records of one stream: 80 % finished orders, 10 % open orders, 10 %
    balances (as an account with a long order history looks)."""
    out: list[Envelope] = []
    for i in range(count):
        common: dict[str, Any] = {
            "venue": "aquanow",
            "stream": stream,
            "account": "CA1000051R",
            "event_time": 1_700_000_000_000 + i,
            "received_at": 1_700_000_000_000_000 + i,
            "source": "stream",
            "event_id": make_event_id(stream, i),
            "raw": '{"orderId":"' + str(i) + '"}',
        }
        if i % 10 == 9:
            out.append(
                Balance(
                    **common,
                    asset=f"A{i}",
                    available=Decimal("1.5"),
                    total=Decimal("2.5"),
                    frozen=None,
                    pending=Decimal("1"),
                    pending_transfer=Decimal(0),
                    credit=None,
                    change=None,
                    version=None,
                )
            )
            continue
        out.append(_order(common, f"{stream}-order-{i:07d}", final=i % 10 != 0))
    return out


def _order(common: dict[str, Any], order_id: str, final: bool) -> Order:
    return Order(
        **common,
        order_id=order_id,
        client_order_id=None,
        parent_order_id=order_id,
        symbol="BTC-USD",
        base_asset="BTC",
        quote_asset="USD",
        side="buy",
        side_raw="buy",
        order_type="LIMIT",
        status="filled" if final else "open",
        status_raw="COMPLETE" if final else "AWAITING",
        is_final=final,
        change_type=None,
        quantity=Decimal("1.25"),
        price=Decimal("64000.5"),
        filled_quantity=Decimal("1.25") if final else Decimal("0.5"),
        filled_quote=Decimal("80000.625"),
        last_fill_quantity=None,
        average_price=Decimal("64000.5"),
        remaining_quantity=Decimal(0),
        fee=Decimal("16.0001"),
        fee_asset="USD",
        is_taker=None,
        reduce_only=None,
        leverage=None,
        created_at=1_700_000_000_000,
    )


async def write(bootstrap: str, codec: Codec, keys: int) -> tuple[str, list[str]]:
    """A checkpoint topic and the four state topics, each with `keys` keys of our stream
    and as many of three other streams. Returns (checkpoint topic, state topics)."""
    suffix = f"{time.time_ns() % 10**9}"
    checkpoint, data = (
        f"bench{suffix}.state",
        [f"bench{suffix}.{t}" for t in ("orders", "balances")],
    )
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topics = [NewTopic(checkpoint, PARTITIONS, 1, topic_configs={"cleanup.policy": "compact"})]
        topics += [NewTopic(t, 1, 1) for t in data]
        await admin.create_topics(topics)
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=262_144)
    await producer.start()
    try:
        for stream, share in ((STREAM, keys), *((o, keys // len(OTHERS)) for o in OTHERS)):
            records = orders(stream, share)
            tracker = Tracker()
            for record in records:
                tracker.acked(record)
            partition = shard_of(shard_key("aquanow", f"key-of-{stream}"), PARTITIONS)
            entries = tracker.drain(1, lambda r: codec.value(r), lambda s: {})
            sends = [
                await producer.send(
                    checkpoint, codec.value(e), key=e.key().encode(), partition=partition
                )
                for e in entries
            ]
            for record in records:
                encoded = codec.encode(record)
                topic = data[0] if record.TOPIC == "orders" else data[1]
                sends.append(
                    await producer.send(
                        topic, encoded.value, key=encoded.key, headers=encoded.headers
                    )
                )
            await asyncio.gather(*sends)
    finally:
        await producer.stop()
    return checkpoint, data


async def scan(bootstrap: str, topics: list[str], store: SchemaStore) -> int:
    """The alternative: read the data topics whole, keep our stream's records (by header)."""
    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    reader = CheckpointReader(STREAM)
    kept = 0
    try:
        partitions = list(consumer.assignment()) or await _assigned(consumer)
        end = await consumer.end_offsets(partitions)
        left = {tp for tp in partitions if end[tp] > 0}
        while left:
            for batch in (await consumer.getmany(timeout_ms=1000)).values():
                for m in batch:
                    if dict(m.headers).get("stream") != STREAM.encode():
                        continue
                    record = decode_record(store, m.value)
                    kept += 1
                    _fold(reader, record)
            left = {tp for tp in left if await consumer.position(tp) < end[tp]}
    finally:
        await consumer.stop()
    return kept


async def _assigned(consumer: AIOKafkaConsumer) -> list[Any]:
    while not consumer.assignment():
        await asyncio.sleep(0.05)
    return list(consumer.assignment())


def _fold(reader: CheckpointReader, record: Envelope) -> None:
    from bridge.checkpoint import is_open, state_digest

    assert isinstance(record, Balance | Order)
    reader.apply(
        record.TOPIC,
        record.key(),
        {
            "received_at": record.received_at,
            "digest": state_digest(record),
            "open": is_open(record),
            "record": None,
            "event_time": record.event_time,
        },
    )


async def measure(bootstrap: str, keys: int) -> dict[str, Any]:
    store = SchemaStore.load()
    codec = Codec(store)
    checkpoint, data = await write(bootstrap, codec, keys)
    options = {"bootstrap_servers": bootstrap}
    shard = shard_of(shard_key("aquanow", f"key-of-{STREAM}"), PARTITIONS)
    gc.collect()
    started = time.perf_counter()
    restored = await restore(options, checkpoint, {STREAM: shard}, store)
    restore_s = time.perf_counter() - started
    cp = restored[STREAM]
    assert cp.keys == keys, (cp.keys, keys)
    del restored, cp
    gc.collect()
    tracemalloc.start()
    kept = await restore(options, checkpoint, {STREAM: shard}, store)
    retained, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del kept
    gc.collect()
    started = time.perf_counter()
    scanned = await scan(bootstrap, data, store)
    scan_s = time.perf_counter() - started
    assert scanned == keys, (scanned, keys)
    return {
        "keys": keys,
        "other_streams_keys": keys // len(OTHERS) * len(OTHERS),
        "checkpoint_restore_s": round(restore_s, 3),
        "checkpoint_us_per_key": round(restore_s / keys * 1e6, 1),
        "checkpoint_retained_mb": round(retained / 1e6, 1),
        "checkpoint_peak_mb": round(peak / 1e6, 1),
        "scan_restore_s": round(scan_s, 3),
        "scan_records_read": keys + keys // len(OTHERS) * len(OTHERS),
    }


async def restore_bench(bootstrap: str, sizes: tuple[int, ...]) -> dict[str, Any]:
    results = [await measure(bootstrap, n) for n in sizes]
    return {"sizes": results, "command": 'make bench ARGS="--only restore"'}
