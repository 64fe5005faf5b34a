"""Finished orders forgotten (bridge/stream.py `forget_finished`) leave the checkpoint topic
too: a tombstone per key through the real sink and broker, and a restart's restore reads only
what is still remembered — even for orders Kafka acknowledged after the stream forgot them."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition

from bridge.changelog import Changelog, restore
from bridge.checkpoint import Checkpoint
from bridge.codec import Codec, SchemaStore
from bridge.dev.kafka import KafkaEndpoint
from bridge.metrics import Metrics
from bridge.records import Order
from bridge.sections import KafkaSettings, StateSettings, TopicNames
from bridge.sink import Sink
from bridge.stream import StreamState
from tests import records as make
from tests.helpers import read_to_end, unique_topics

pytestmark = pytest.mark.integration


def order(order_id: str, time_ms: int, final: bool = True) -> Order:
    status = "filled" if final else "open"
    return make.order(
        stream="s1", order_id=order_id, event_time=time_ms, is_final=final, status=status
    )


async def test_forgotten_orders_are_tombstoned_and_not_restored(kafka: KafkaEndpoint) -> None:
    topics = unique_topics()
    codec = Codec(SchemaStore.load())
    settings = KafkaSettings(bootstrap_servers=kafka.bootstrap_servers, topics=TopicNames(**topics))
    sink = Sink(settings, codec, Metrics())
    await sink.start()
    try:
        changelog = Changelog(StateSettings(), sink, codec.store, 1)
        sink.on_acked, sink.partition_of = changelog.acked, changelog.partition_of
        state = StreamState("s1", "aquanow", sink, forget_after_ms=1_000)
        venue: Any = SimpleNamespace(name="aquanow", checkpoint_facts=lambda: {})
        changelog.add("s1", venue, state, Checkpoint("s1"))
        old = [order(f"old{i}", 1_000 + i) for i in range(50)]
        for record in [*old, order("open", 1_500, final=False), order("kept", 9_500)]:
            await state.publish(record)
        # Published, not yet acknowledged: the newest order time passes them all now.
        assert await state.publish(order("newest", 10_000))
        await sink.flush()  # every record acknowledged: the checkpoint hears of each
        await changelog.flush(final=True)
        await sink.flush()
    finally:
        assert await sink.stop(5)

    written = await read_to_end(kafka.bootstrap_servers, [TopicPartition(topics["state"], 0)])
    tombstones = {m.key for m in written if m.value is None}
    assert tombstones == {f"s1|orders|{r.key()}".encode() for r in old}
    checkpoint = (
        await restore(
            {"bootstrap_servers": kafka.bootstrap_servers}, topics["state"], {"s1": 0}, codec.store
        )
    )["s1"]
    remembered = {order(i, 0).key() for i in ("open", "kept", "newest")}
    assert set(checkpoint.digests["orders"]) == remembered
    assert set(checkpoint.open_orders) == {"open"}
    assert list(checkpoint.finished) == [("orders", order(i, 0).key()) for i in ("kept", "newest")]
    assert checkpoint.last_order_ms == 10_000
