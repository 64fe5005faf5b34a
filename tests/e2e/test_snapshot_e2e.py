"""Snapshots against the simulators' REST endpoints: they respect the venue's rate limit (and
recover when the venue says "too many requests"), and what they publish is the venue's state."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.dev.kafka import KafkaEndpoint
from bridge.dev.simulator.satori import SatoriSimulator
from tests.helpers import BridgeProcess, collect, unique_topics

pytestmark = pytest.mark.e2e

SAT_KEY = "st_snap_key"
SAT_PRIVATE = "0x2bf7cc40cfc5b2a43f60769d31191e82ed33aafb5e75be710271acd40a769564"
SAT_WALLET = "0x134eF0CfABEBF9c70eAE631254a6b4736f9b8508"
PAIRS = ("ETH-USD", "BTC-USD", "SOL-USD", "XRP-USD", "ADA-USD", "DOT-USD", "LTC-USD", "BNB-USD")


async def test_snapshot_recovers_from_the_venues_rate_limit(
    kafka: KafkaEndpoint, tmp_path: Path
) -> None:
    # 1 balance + 8 pairs x (orders, fills, positions) = 25 calls against a venue allowing
    # 3/s: the bridge, configured faster, is told "Frequent requests" (2008) and must retry.
    sim = SatoriSimulator(SAT_KEY, SAT_WALLET, rate=5, seed=3, pairs=PAIRS, rest_rate=3)
    sim.pause()  # no pushes: none can supersede the snapshot's balance (what this test reads)
    topics = unique_topics()
    async with sim:
        config = {
            "kafka": {"bootstrap_servers": kafka.bootstrap_servers, "topics": topics},
            "reconnect": {"initial_delay": 0.3},
            "streams": [
                {
                    "name": "sat",
                    "venue": "satori",
                    "url": sim.url,
                    "rest_url": sim.rest_url,
                    "api_key": SAT_KEY,
                    "private_key": SAT_PRIVATE,
                    "coins": ["USD"],
                    "pairs": list(PAIRS),
                    "snapshot": {"rate_per_second": 20, "burst": 20, "attempts": 5},
                }
            ],
        }
        with BridgeProcess(tmp_path, config) as bridge:
            await bridge.wait_ready()
            await bridge.wait_metric(
                "bridge_snapshot_last_success_timestamp_seconds", 1, stream="sat", timeout=60
            )
            assert sim.rest_rejected > 0, "the venue's limit was hit"
            retried = [e for e in bridge.log_events() if e.get("event") == "snapshot call retried"]
            assert retried
            assert {e["kind"] for e in retried} == {"rate_limited"}
            messages = await collect(
                kafka.bootstrap_servers,
                topics,
                lambda ms: any(
                    m.record["source"] == "snapshot" and m.topic == "balances" for m in ms
                ),
            )
            assert bridge.stop() == 0
    balance = next(
        m for m in messages if m.record["source"] == "snapshot" and m.topic == "balances"
    )
    assert balance.key == f"satori|{SAT_WALLET}|USD"
    print(
        f"FIGURES rest_calls={sim.rest_requests} rate_limited={sim.rest_rejected} retried={len(retried)}"
    )
