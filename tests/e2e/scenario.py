"""One run of both simulated venues through a real bridge process, in a chosen serialization
mode, with the ground truth of what must be on every topic. Shared by the registry-mode,
evolution and interop tests, which then read the topics back each in their own way."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

from bridge.dev.kafka import KafkaEndpoint
from bridge.dev.simulator.aquanow import AquanowSimulator
from bridge.dev.simulator.base import Sent
from bridge.dev.simulator.satori import SatoriSimulator
from bridge.venues.fields import dumps_exact
from tests.e2e.expected import EXPECT, expected_aquanow, expected_satori
from tests.helpers import BridgeProcess, unique_topics, wait_until

AQ_KEY, AQ_SECRET = "aq-key", "aq-secret-not-real"
SAT_KEY = "st_e2e_key"
SAT_PRIVATE = "0x2bf7cc40cfc5b2a43f60769d31191e82ed33aafb5e75be710271acd40a769564"
SAT_WALLET = "0x134eF0CfABEBF9c70eAE631254a6b4736f9b8508"
# Aquanow's REST docs' own example address (venues.md §1.6): balances v2 carries it.
DEPOSIT_ADDRESS = "rPEPPER7kfTD9w2To4CQk6UCfuHM9c6GDY"
DEPOSIT_PAYLOAD: dict[str, Any] = {
    "accountId": "CA1000051R",
    "symbol": "XRP",
    "totalBalance": Decimal("2.785710402604131"),
    "depositAddress": DEPOSIT_ADDRESS,
    "pendingTransfer": Decimal("0.3214"),
    "itemDateTime": 1656460243147,
    "updatedAt": 1656460243147,
    "availableBalance": Decimal("2.4643104026041307"),
    "pending": Decimal("0.3214000000000003"),
    "username": "helloWorld",
}
DEPOSIT_FRAME = dumps_exact({"type": "balance", "payload": DEPOSIT_PAYLOAD})


@dataclasses.dataclass
class Run:
    topics: dict[str, str]  # logical → Kafka topic name
    expected: dict[str, list[dict[str, Any]]]  # logical topic → records, in publish order
    bridge: BridgeProcess

    @property
    def counts(self) -> dict[str, int]:
        return {t: len(v) for t, v in self.expected.items()}


def bridge_config(
    kafka: KafkaEndpoint,
    topics: dict[str, str],
    serialization: dict[str, Any],
    aquanow_url: str,
    satori_url: str,
) -> dict[str, Any]:
    return {
        "kafka": {
            "bootstrap_servers": kafka.bootstrap_servers,
            "topics": topics,
            "create_topics": True,
        },
        "serialization": serialization,
        "reconnect": {"initial_delay": 0.2, "max_delay": 1},
        "shutdown": {"grace_seconds": 10},
        "streams": [
            {
                "name": "aq",
                "venue": "aquanow",
                "url": aquanow_url,
                "api_key": AQ_KEY,
                "api_secret": AQ_SECRET,
                "ack_grace": 0.3,
            },
            {
                "name": "sat",
                "venue": "satori",
                "url": satori_url,
                "api_key": SAT_KEY,
                "private_key": SAT_PRIVATE,
                "coins": ["USD", "ETH"],
                "pairs": ["ETH-USD", "BTC-USD"],
            },
        ],
    }


async def run_both_venues(
    kafka: KafkaEndpoint,
    tmp_path: Path,
    serialization: dict[str, Any],
    *,
    count: int = 60,
    seed: int = 31,
) -> Run:
    """Run the bridge until both simulators sent `count` pushes (plus one Aquanow balance with
    a deposit address), stop it (exit 0 required), and return the ground truth."""
    aquanow = AquanowSimulator(AQ_KEY, AQ_SECRET, rate=100, count=count, seed=seed)
    satori = SatoriSimulator(
        SAT_KEY,
        SAT_WALLET,
        rate=100,
        count=count,
        seed=seed + 1,
        coins=("USD", "ETH"),
        pairs=("ETH-USD", "BTC-USD"),
    )
    topics = unique_topics()
    async with aquanow, satori:
        config = bridge_config(kafka, topics, serialization, aquanow.url, satori.url)
        with BridgeProcess(tmp_path, config) as bridge:
            await bridge.wait_ready()
            await wait_until(
                lambda: len(aquanow.sent) >= count // 3, "a third of the Aquanow pushes sent"
            )
            await aquanow.send_raw(DEPOSIT_FRAME, kind="balance")
            await aquanow.finished.wait()
            await satori.finished.wait()
            expected = _expected(aquanow.sent, satori.sent)
            # Everything sent is published before the bridge may stop: poll its counter.
            total = sum(len(v) for v in expected.values())
            await bridge.wait_metric("bridge_records_published_total", total, timeout=60)
            assert bridge.stop() == 0, bridge.log_text()[-3000:]
    return Run(topics, expected, bridge)


def _expected(aquanow: list[Sent], satori: list[Sent]) -> dict[str, list[dict[str, Any]]]:
    expected: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for sent in aquanow:
        if sent.text == DEPOSIT_FRAME:
            sent = dataclasses.replace(sent, payload=DEPOSIT_PAYLOAD)
        if sent.kind not in EXPECT:
            continue
        for topic, record in expected_aquanow(sent, "aq", None):
            expected[topic].append(record)
    for sent in satori:
        if not sent.kind.startswith("api_"):
            continue
        for topic, record in expected_satori(sent, "sat", SAT_WALLET):
            expected[topic].append(record)
    assert all(expected[t] for t in ("balances", "orders", "positions", "trades", "credit"))
    return dict(expected)


def by_venue(records: list[dict[str, Any]], venue: str) -> list[dict[str, Any]]:
    return [r for r in records if r["venue"] == venue]


def assert_matches(topic: str, got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    """Per venue, in order, every expected field exactly (per-venue order is what Kafka keeps:
    each venue's stream is one connection and its records share partitions in send order)."""
    assert len(got) == len(want), (topic, len(got), len(want))
    for venue in ("aquanow", "satori"):
        mine, theirs = by_venue(want, venue), by_venue(got, venue)
        assert len(mine) == len(theirs), (topic, venue)
        for expected, record in zip(mine, theirs, strict=True):
            assert {k: record[k] for k in expected} == expected, (topic, venue)
