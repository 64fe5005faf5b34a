"""One bridge process, one Aquanow and one Satori stream, a real broker: every record on all
five topics is compared with the simulators' ground truth, and injected faults (a bad item in a
trade array, an unknown event, a stale balance version) arrive on the dead-letter topic."""

from __future__ import annotations

import json
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bridge.dev.kafka import KafkaEndpoint
from bridge.dev.simulator.aquanow import AquanowSimulator
from bridge.dev.simulator.satori import SatoriSimulator
from bridge.venues.fields import dumps_exact
from tests.e2e.expected import RECORD_NAMES, expected_aquanow, expected_satori, satori_common
from tests.helpers import BridgeProcess, Message, collect, unique_topics, wait_until

pytestmark = pytest.mark.e2e

AQ_KEY, AQ_SECRET = "aq-key", "aq-secret-not-real"
SAT_KEY = "st_e2e_key"
SAT_PRIVATE = "0x2bf7cc40cfc5b2a43f60769d31191e82ed33aafb5e75be710271acd40a769564"
SAT_WALLET = "0x134eF0CfABEBF9c70eAE631254a6b4736f9b8508"
GOOD_TRADE = {
    "amount": Decimal("1054.89475"),
    "contractMatchPairId": 99000001,
    "contractPairId": 1,
    "isLong": True,
    "pair": "ETH-USD",
    "price": Decimal("2318.45"),
    "quantity": Decimal("0.455"),
    "time": "08:38:17",
    "timestamp": 1725871097000,
}
BAD_TRADE = {"contractMatchPairId": 99000002, "pair": "ETH-USD", "price": "n/a", "quantity": 1}
UNKNOWN_EVENT = '{"data":{"x":1},"event":"api_deal_user","success":true}'


async def test_aquanow_and_satori_in_one_process(kafka: KafkaEndpoint, tmp_path: Path) -> None:
    aquanow = AquanowSimulator(AQ_KEY, AQ_SECRET, rate=80, count=80, seed=21)
    satori = SatoriSimulator(
        SAT_KEY,
        SAT_WALLET,
        rate=80,
        count=80,
        seed=22,
        coins=("USD", "ETH"),
        pairs=("ETH-USD", "BTC-USD"),
    )
    topics = unique_topics()
    async with aquanow, satori:
        config: dict[str, Any] = {
            "kafka": {"bootstrap_servers": kafka.bootstrap_servers, "topics": topics},
            "shutdown": {"grace_seconds": 10},
            "streams": [
                {
                    "name": "aq",
                    "venue": "aquanow",
                    "url": aquanow.url,
                    "api_key": AQ_KEY,
                    "api_secret": AQ_SECRET,
                    "ack_grace": 0.3,
                },
                {
                    "name": "sat",
                    "venue": "satori",
                    "url": satori.url,
                    "api_key": SAT_KEY,
                    "private_key_file": "satori.key",
                    "coins": ["USD", "ETH"],
                    "pairs": ["ETH-USD", "BTC-USD"],
                },
            ],
        }
        (tmp_path / "satori.key").write_text(SAT_PRIVATE + "\n")
        with BridgeProcess(tmp_path, config) as bridge:
            await bridge.wait_ready()
            assert satori.subscriptions_accepted == 8  # 2 coins + 3 events x 2 pairs
            await wait_until(
                lambda: len(satori.sent) >= 30 and "USD" in satori.balances,
                "30 Satori pushes and a USD balance",
            )
            satori.pause()
            stale = dict(satori.balances["USD"], logId=satori.balances["USD"]["logId"] - 1)
            stale_text = dumps_exact(
                {"data": stale, "event": "api_account", "success": True, "symbol": "USD"}
            )
            mixed = dumps_exact(
                {
                    "data": [GOOD_TRADE, BAD_TRADE],
                    "event": "api_trade",
                    "pair": "ETH-USD",
                    "success": True,
                }
            )
            await satori.send_raw(stale_text)
            await satori.send_raw(mixed)
            await satori.send_raw(UNKNOWN_EVENT)
            satori.pause(False)
            await aquanow.finished.wait()
            await satori.finished.wait()

            expected: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for sent in aquanow.sent:
                for topic, record in expected_aquanow(sent, "aq", None):
                    expected[topic].append(record)
            for sent in satori.sent:
                if sent.kind.startswith("api_"):
                    for topic, record in expected_satori(sent, "sat", SAT_WALLET):
                        expected[topic].append(record)
                elif sent.text == mixed:  # the good half of the injected trade array
                    expected["trades"].append(
                        {
                            **satori_common(GOOD_TRADE, "sat", None),
                            "trade_id": "99000001",
                            "price": Decimal("2318.45"),
                            "quantity": Decimal("0.455"),
                            "side": "buy",
                        }
                    )
            want = {t: len(v) for t, v in expected.items()} | {"deadletter": 3}
            assert all(want.get(t) for t in ("balances", "orders", "positions", "trades", "credit"))

            def complete(messages: list[Message]) -> bool:
                return all(sum(1 for m in messages if m.topic == t) >= n for t, n in want.items())

            messages = await collect(kafka.bootstrap_servers, topics, complete)
            assert bridge.stop() == 0, bridge.log_text()[-3000:]

    got = {t: sum(1 for m in messages if m.topic == t) for t in want}
    assert got == want
    for topic, records in expected.items():
        on_topic = [m for m in messages if m.topic == topic]
        for venue in ("aquanow", "satori"):
            mine = [r for r in records if r["venue"] == venue]
            theirs = [m for m in on_topic if m.record["venue"] == venue]
            assert len(mine) == len(theirs), (topic, venue)
            for want_record, message in zip(mine, theirs, strict=True):
                assert {k: message.record[k] for k in want_record} == want_record
                assert message.headers["schema"] == f"bridge.records.{RECORD_NAMES[topic]}"
                assert message.headers["event_id"] == message.record["event_id"]
                assert message.headers["stream"] == {"aquanow": "aq", "satori": "sat"}[venue]

    dead = {m.record["reason"]: m.record for m in messages if m.topic == "deadletter"}
    assert set(dead) == {"stale_version", "invalid_field", "unknown_event"}
    assert dead["stale_version"]["raw"] == stale_text.encode()
    assert "USD logId" in dead["stale_version"]["detail"]
    assert dead["invalid_field"]["raw"] == dumps_exact(BAD_TRADE).encode()
    assert dead["invalid_field"]["detail"].startswith("api_trade: frame.data[1].price")
    assert dead["unknown_event"]["raw"] == UNKNOWN_EVENT.encode()
    assert all(m.key == "satori|sat" for m in messages if m.topic == "deadletter")
    assert json.loads(dead["invalid_field"]["raw"])["contractMatchPairId"] == 99000002


async def test_refused_satori_subscription_is_retried_with_auth_backoff(
    kafka: KafkaEndpoint, tmp_path: Path
) -> None:
    wrong = "0x" + "22" * 32
    sim = SatoriSimulator(SAT_KEY, SAT_WALLET, rate=10)
    async with sim:
        config = {
            "kafka": {"bootstrap_servers": kafka.bootstrap_servers, "topics": unique_topics()},
            "reconnect": {"auth_initial_delay": 0.2, "auth_max_delay": 1},
            "streams": [
                {
                    "name": "sat",
                    "venue": "satori",
                    "url": sim.url,
                    "api_key": SAT_KEY,
                    "private_key": "${SAT_PRIVATE}",
                    "coins": ["USD"],
                    "pairs": ["ETH-USD"],
                }
            ],
        }
        with BridgeProcess(tmp_path, config, env={"SAT_PRIVATE": wrong}) as bridge:
            # Each connection's 4 subscriptions are all refused; the bridge reconnects at the first.
            await bridge.wait_metric("bridge_auth_failures_total", 3, stream="sat")
            assert await bridge.metric("bridge_ws_reconnects_total", reason="auth_rejected") >= 2
            assert bridge.stop() == 0
    lost = [e for e in bridge.log_events() if e.get("event") == "connection lost"]
    assert lost[0]["reason"] == "auth_rejected"
    assert "refused: signature verification failed" in lost[0]["detail"]
    assert wrong[2:] not in bridge.log_text()
    assert sim.subscriptions_accepted == 0
