"""Aquanow simulator → `bridge run` (a real process) → real Kafka → an independent consumer.

Every record is decoded with only `schemas/*.avsc` and compared, field by field and exactly,
with what the simulator sent (its ground truth). Malformed frames must arrive on the
dead-letter topic with their reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bridge.dev.kafka import KafkaEndpoint
from bridge.dev.simulator.aquanow import AquanowSimulator
from tests.e2e.expected import EXPECT, RECORD_NAMES
from tests.helpers import (
    NEWEST_VERSION,
    BridgeProcess,
    Message,
    collect,
    unique_topics,
    wait_until,
)

pytestmark = pytest.mark.e2e

KEY, SECRET = "e2e-key", "e2e-secret-value-not-real"
TRUNCATED = '{"type":"balance","payload":{"symbol":"BTC","totalBalance":1.5'
NO_ORDER_ID = (
    '{"type":"order","payload":{"createdAt":1557267645477,"accountId":"CA1000051R",'
    '"symbol":"BTC-USD","totalBalance":2.40047884,"depositAddress":"-"}}'
)
UNKNOWN_TYPE = '{"type":"transaction","payload":{"id":1}}'


def config(
    kafka: KafkaEndpoint, sim: AquanowSimulator, topics: dict[str, str], **stream: Any
) -> dict[str, Any]:
    return {
        "kafka": {"bootstrap_servers": kafka.bootstrap_servers, "topics": topics},
        "reconnect": {
            "initial_delay": 0.1,
            "max_delay": 1,
            "auth_initial_delay": 0.2,
            "auth_max_delay": 2,
        },
        "shutdown": {"grace_seconds": 10},
        "streams": [
            {
                "name": "aq-e2e",
                "venue": "aquanow",
                "url": sim.url,
                "api_key": "${E2E_KEY}",
                "api_secret": "${E2E_SECRET}",
                "channels": ["executionReport"],
                "ack_grace": 0.3,
                **stream,
            }
        ],
    }


@pytest.mark.parametrize("legacy", [False, True], ids=["latest", "legacy"])
async def test_every_push_reaches_kafka_exactly(
    kafka: KafkaEndpoint, tmp_path: Path, legacy: bool
) -> None:
    sim = AquanowSimulator(KEY, SECRET, rate=100, count=120, seed=5, legacy=legacy)
    topics = unique_topics()
    account = "legacy-account" if legacy else None
    async with sim:
        cfg = config(kafka, sim, topics, account=account)
        with BridgeProcess(tmp_path, cfg, env={"E2E_KEY": KEY, "E2E_SECRET": SECRET}) as bridge:
            await bridge.wait_ready()
            await wait_until(lambda: len(sim.sent) >= 40, "40 pushes sent")
            for bad in (TRUNCATED, NO_ORDER_ID, UNKNOWN_TYPE):
                await sim.send_raw(bad)
            await sim.send_raw(b"\x00\xffnot-utf8", kind="raw-binary")
            await sim.finished.wait()
            pushes = [s for s in sim.sent if s.kind in EXPECT]
            assert len(pushes) == 120
            want = {
                t: sum(1 for s in pushes if EXPECT[s.kind][0] == t)
                for t in ("balances", "orders", "credit")
            }
            want["deadletter"] = 4

            def complete(messages: list[Message]) -> bool:
                return all(sum(1 for m in messages if m.topic == t) >= n for t, n in want.items())

            messages = await collect(kafka.bootstrap_servers, topics, complete)
            assert bridge.stop() == 0, bridge.log_text()[-3000:]

    # Nothing more, nothing less, on every topic.
    got = {t: sum(1 for m in messages if m.topic == t) for t in want}
    assert got == want
    assert not any(m.topic in ("positions", "trades") for m in messages)

    # Every fact, field by field, in the order the venue sent it.
    for topic in ("balances", "orders", "credit"):
        sent_here = [s for s in pushes if EXPECT[s.kind][0] == topic]
        got_here = [m for m in messages if m.topic == topic]
        for sent, message in zip(sent_here, got_here, strict=True):
            expected = EXPECT[sent.kind][1](sent, "aq-e2e", account)
            record = message.record
            assert {k: record[k] for k in expected} == expected
            received = record["received_at"].timestamp()
            assert sent.at - 0.5 <= received <= sent.at + 10
            key_field = {"balances": "asset", "orders": "order_id", "credit": "asset"}[topic]
            assert message.key == f"aquanow|{record['account']}|{record[key_field]}"
            assert message.headers == {
                "schema": f"bridge.records.{RECORD_NAMES[topic]}",
                "schema_version": str(NEWEST_VERSION[topic]),
                "venue": "aquanow",
                "stream": "aq-e2e",
                "event_id": record["event_id"],
                "source": "stream",
            }
    ids = [m.record["event_id"] for m in messages if m.topic != "deadletter"]
    assert len(set(ids)) == len(ids), "distinct facts must have distinct event ids"

    # The malformed frames, each with its reason and its exact bytes.
    by_raw = {m.record["raw"]: m.record for m in messages if m.topic == "deadletter"}
    assert by_raw[TRUNCATED.encode()]["reason"] == "invalid_json"
    assert by_raw[NO_ORDER_ID.encode()]["reason"] == "missing_field"
    assert by_raw[NO_ORDER_ID.encode()]["detail"] == "frame.payload.orderId is required"
    assert by_raw[UNKNOWN_TYPE.encode()]["reason"] == "unknown_type"
    assert by_raw[b"\x00\xffnot-utf8"]["reason"] == "invalid_json"
    for m in messages:
        if m.topic == "deadletter":
            assert m.key == "aquanow|aq-e2e"
            assert m.headers["schema"] == "bridge.records.DeadLetter"


async def test_wrong_secret_is_an_auth_error_retried_with_backoff(
    kafka: KafkaEndpoint, tmp_path: Path
) -> None:
    wrong = "wrong-secret-value-xyz"
    sim = AquanowSimulator(KEY, SECRET, rate=10)
    async with sim:
        cfg = config(kafka, sim, unique_topics())
        with BridgeProcess(tmp_path, cfg, env={"E2E_KEY": KEY, "E2E_SECRET": wrong}) as bridge:
            await bridge.wait_metric("bridge_auth_failures_total", 3, stream="aq-e2e")
            assert sim.auth_failures >= 3
            assert await bridge.metric("bridge_ws_reconnects_total", reason="auth_rejected") >= 3
            status, body = await bridge.get("/readyz")
            assert (status, body.strip()) == (503, "not subscribed: aq-e2e")
            assert bridge.stop() == 0
    assert sim.subscriptions_accepted == 0
    lost = [e for e in bridge.log_events() if e.get("event") == "connection lost"]
    assert len(lost) >= 3
    assert all(e["reason"] == "auth_rejected" and e["level"] == "error" for e in lost)
    assert "Unauthorized: invalid signature" in lost[0]["detail"]
    delays = [e["retry_in"] for e in lost[:3]]
    assert delays[0] < delays[2], f"auth retries must back off: {delays}"
    log = bridge.log_text()
    assert wrong not in log
    assert SECRET not in log
