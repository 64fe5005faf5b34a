"""The sink against a real broker: keys, headers, dead-letter conversions, ack-based metrics."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from bridge.codec import Codec, SchemaStore
from bridge.dev.kafka import KafkaEndpoint
from bridge.metrics import Metrics
from bridge.records import Order, make_event_id
from bridge.settings import KafkaSettings, TopicNames
from bridge.sink import Sink
from tests import records as make
from tests.helpers import Message, collect, unique_topics
from tests.records import live_balance as balance

pytestmark = pytest.mark.integration


def order(order_id: str, status: str) -> Order:
    return make.order(
        stream="s1",
        account="A1",
        source="snapshot",
        event_id=make_event_id(order_id, status),
        order_id=order_id,
        base_asset="BTC",
        quote_asset="USD",
        side_raw="buy",
        order_type="LIMIT",
        status=status,
        status_raw=status.upper(),
        quantity=Decimal("1"),
    )


async def test_records_land_with_keys_headers_and_metrics(kafka: KafkaEndpoint) -> None:
    topics = unique_topics()
    settings = KafkaSettings(bootstrap_servers=kafka.bootstrap_servers, topics=TopicNames(**topics))
    metrics = Metrics()
    sink = Sink(settings, Codec(SchemaStore.load()), metrics)
    await sink.start()
    try:
        await sink.publish(balance("BTC", "1.5"), received_mono=time.monotonic())
        for status in ("new", "partially_filled", "filled"):
            await sink.publish(order("o-1", status))
        # Not representable in decimal(38, 18): must become a dead letter, not vanish.
        await sink.publish(balance("ETH", "1E-19", raw='{"x":1}'))
        # Larger than the producer's max request size: a dead letter carrying its start.
        await sink.publish(balance("XRP", "1", raw="x" * 1_200_000))
        assert await sink.flush(30)
    finally:
        assert await sink.stop()

    def done(messages: list[Message]) -> bool:
        return len(messages) >= 6

    messages = await collect(kafka.bootstrap_servers, topics, done)
    by_topic = {
        t: [m for m in messages if m.topic == t] for t in ("balances", "orders", "deadletter")
    }
    assert [m.record["asset"] for m in by_topic["balances"]] == ["BTC"]
    assert by_topic["balances"][0].key == "aquanow|A1|BTC"
    assert [m.record["status"] for m in by_topic["orders"]] == ["new", "partially_filled", "filled"]
    assert {m.key for m in by_topic["orders"]} == {"aquanow|A1|o-1"}
    assert by_topic["orders"][0].headers["source"] == "snapshot"

    encode_error, oversized = sorted(by_topic["deadletter"], key=lambda m: m.record["reason"])
    assert encode_error.record["reason"] == "encode_error"
    balances = SchemaStore.load().latest("balances").version  # the version the bridge writes
    assert f"bridge.records.Balance v{balances}" in encode_error.record["detail"]
    assert encode_error.record["raw"] == b'{"x":1}'
    assert oversized.record["reason"] == "oversized_record"
    assert "raw cut from 1200000 bytes" in oversized.record["detail"]
    assert oversized.record["raw"] == b"x" * 512 * 1024
    assert oversized.key == "aquanow|s1"

    def value(name: str, **labels: str) -> float:
        return metrics.registry.get_sample_value(name, labels) or 0.0

    s1 = {"stream": "s1", "venue": "aquanow"}
    assert value("bridge_records_published_total", **s1, topic="balances") == 1
    assert value("bridge_records_published_total", **s1, topic="orders") == 3
    assert value("bridge_records_published_total", **s1, topic="deadletter") == 2
    assert value("bridge_deadletter_total", **s1, reason="encode_error") == 1
    assert value("bridge_deadletter_total", **s1, reason="oversized_record") == 1
    assert value("bridge_snapshot_records_total", **s1) == 3
    assert value("bridge_pipeline_latency_seconds_count", **s1) == 1
    assert value("bridge_event_lag_seconds_count", **s1) == 1  # only the BTC balance has a time
    assert (
        0.25
        <= value("bridge_event_lag_seconds_sum", **s1)
        / value("bridge_event_lag_seconds_count", **s1)
        < 30
    )
    assert value("bridge_producer_buffer_records") == 0
    assert value("bridge_producer_buffer_capacity_records") == 10_000


async def test_a_batch_the_broker_refuses_is_resent_in_order(kafka: KafkaEndpoint) -> None:
    """The broker refuses a whole batch (MESSAGE_TOO_LARGE: one record in it is over the topic's
    max.message.bytes). The sink must resend the batch's records one by one, in order, keep the
    ones that fit, dead-letter only the one that does not, and leave each key's newest record
    last."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    topics = unique_topics()
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    try:
        small = NewTopic(topics["balances"], 1, 1, topic_configs={"max.message.bytes": "4096"})
        await admin.create_topics([small])
    finally:
        await admin.close()
    settings = KafkaSettings(
        bootstrap_servers=kafka.bootstrap_servers, topics=TopicNames(**topics), linger_ms=200
    )
    metrics = Metrics()
    sink = Sink(settings, Codec(SchemaStore.load()), metrics)
    await sink.start()
    try:
        for asset, available, raw in [
            ("AAA", "1", "{}"),
            ("BBB", "1", "{}"),
            ("AAA", "2", "x" * 10_000),
            ("AAA", "3", "{}"),
            ("BBB", "2", "{}"),
        ]:
            await sink.publish(balance(asset, available, raw=raw))
        assert await sink.flush(60)
        assert sink.ledger.resent >= 4, "the refused batch went through the recovery path"
    finally:
        assert await sink.stop()

    messages = await collect(kafka.bootstrap_servers, topics, lambda ms: len(ms) >= 5)
    balances = [
        (m.record["asset"], m.record["available"]) for m in messages if m.topic == "balances"
    ]
    assert [a for a in balances if a[0] == "AAA"] == [("AAA", Decimal(1)), ("AAA", Decimal(3))]
    assert [a for a in balances if a[0] == "BBB"] == [("BBB", Decimal(1)), ("BBB", Decimal(2))]
    (dead,) = [m.record for m in messages if m.topic == "deadletter"]
    assert dead["reason"] == "oversized_record"
    assert len(dead["raw"]) == 10_000
    labels = {"stream": "s1", "venue": "aquanow", "topic": "balances"}
    assert (metrics.registry.get_sample_value("bridge_publish_errors_total", labels) or 0) >= 5
