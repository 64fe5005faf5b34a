"""The checkpoint caught up with the data topics at start (bridge/changelog.py `catch_up`):
the entries of the last records acknowledged before a crash were never written, and an order
published as open in that window must still be known open after the restart."""

from __future__ import annotations

import time

import pytest
from aiokafka import AIOKafkaProducer

from bridge.changelog import CATCH_UP_MARGIN_MS, catch_up
from bridge.checkpoint import Checkpoint, state_digest
from bridge.codec import Codec, SchemaStore
from bridge.dev.kafka import KafkaEndpoint
from bridge.records import Envelope
from tests import records as make
from tests.helpers import unique_topics

pytestmark = pytest.mark.integration

CODEC = Codec(SchemaStore.load())


async def send(bootstrap: str, topic: str, records: list[tuple[Envelope, int]]) -> None:
    """`records` with their Kafka timestamps (ms), in order, to partition 0 of `topic`."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for record, at_ms in records:
            value = CODEC.value(record)
            await producer.send_and_wait(topic, value, partition=0, timestamp_ms=at_ms)
    finally:
        await producer.stop()


async def test_orders_published_after_the_checkpoint_are_known_after_a_restart(
    kafka: KafkaEndpoint,
) -> None:
    topics = unique_topics()
    orders, positions = topics["orders"], topics["positions"]
    now_ms = int(time.time() * 1000)
    written_ms = now_ms - 5_000  # the checkpoint's newest entry: 5 s before the crash
    late_new = make.order(stream="s1", order_id="late", status="new")
    ended_filled = make.order(stream="s1", order_id="ended", status="filled", is_final=True)
    other_stream = make.order(stream="s2", order_id="other")
    too_old = make.order(stream="s1", order_id="old")
    late_position = make.position(stream="s1", position_id="p1")
    await send(
        kafka.bootstrap_servers,
        orders,
        [
            (too_old, written_ms - CATCH_UP_MARGIN_MS - 1_000),  # before the margin: covered
            (make.order(stream="s1", order_id="ended"), written_ms - 100),
            (late_new, written_ms + 1_000),  # acknowledged after the last flush, then a crash
            (ended_filled, written_ms + 2_000),
            (other_stream, written_ms + 3_000),
        ],
    )
    await send(kafka.bootstrap_servers, positions, [(late_position, written_ms + 1_500)])
    # What the checkpoint said: "ended" open (its last entry before the crash), nothing else.
    cp = Checkpoint("s1", written_at=written_ms * 1000)
    cp.open_orders["ended"] = make.order(stream="s1", order_id="ended")
    quiet = Checkpoint("s3", written_at=(written_ms - 3_600_000) * 1000)  # quiet for an hour

    applied = await catch_up(
        {"bootstrap_servers": kafka.bootstrap_servers},
        {orders: 1, positions: 1},
        {"s1": cp, "s3": quiet},
        CODEC.decode,
    )

    assert sorted(cp.open_orders) == ["late"]  # "ended" closed by its newer record
    assert cp.open_orders["late"] == late_new
    assert sorted(cp.open_positions) == ["p1"]
    assert cp.digests["orders"][late_new.key()] == state_digest(late_new)
    assert cp.digests["orders"][ended_filled.key()] == state_digest(ended_filled)
    assert too_old.key() not in cp.digests.get("orders", {})
    assert applied == 4  # ended (open), late, ended (filled), p1: not s2's, not the old one


async def test_a_first_start_reads_nothing(kafka: KafkaEndpoint) -> None:
    topics = unique_topics()
    await send(kafka.bootstrap_servers, topics["orders"], [(make.order(stream="s1"), 1)])
    cp = Checkpoint("s1")  # nothing was ever checkpointed
    options = {"bootstrap_servers": kafka.bootstrap_servers}
    assert await catch_up(options, {topics["orders"]: 1}, {"s1": cp}, CODEC.decode) == 0
    assert cp.open_orders == {}
