"""Drift and the control topic, through a real bridge process and a real broker: both venues
drop chosen pushes on healthy connections; the next scheduled reconciliation publishes the truth
for exactly those keys and counts each once (`bridge_reconcile_drift_total`, and the `drift` of
the `reconciled` markers); quiet streams send heartbeats; `bridge resync` is answered."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bridge.dev.kafka import KafkaEndpoint
from bridge.dev.simulator.aquanow import AquanowSimulator
from bridge.dev.simulator.satori import SatoriSimulator
from tests.e2e.expected import aquanow_truth, dropped_key, mismatches, satori_open, satori_truth
from tests.helpers import ROOT, BridgeProcess, Message, collect, unique_topics, wait_until

pytestmark = pytest.mark.e2e

AQ_KEY, AQ_SECRET = "aq-key", "aq-secret-not-real"
SAT_KEY = "st_control_key"
SAT_PRIVATE = "0x2bf7cc40cfc5b2a43f60769d31191e82ed33aafb5e75be710271acd40a769564"
SAT_WALLET = "0x134eF0CfABEBF9c70eAE631254a6b4736f9b8508"
INTERVAL = 2.0  # snapshot.interval of both streams
STATE_KINDS = {
    "aq": frozenset({"balance", "order", "tradeCreditBalance"}),
    "sat": frozenset({"api_account", "api_entrust", "api_position"}),
}
VENUE = {"aq": "aquanow", "sat": "satori"}


def config(kafka: KafkaEndpoint, topics: dict[str, str], sims: dict[str, Any]) -> dict[str, Any]:
    snapshot = {"rate_per_second": 100, "burst": 50, "interval": INTERVAL, "drift_grace": 0.5}
    return {
        "kafka": {"bootstrap_servers": kafka.bootstrap_servers, "topics": topics},
        "reconnect": {"initial_delay": 0.1, "max_delay": 0.5},
        "control": {"heartbeat_interval": 1.0},
        "streams": [
            {
                "name": "aq",
                "venue": "aquanow",
                "url": sims["aq"].url,
                "rest_url": sims["aq"].rest_url,
                "api_key": AQ_KEY,
                "api_secret": AQ_SECRET,
                "ack_grace": 0.3,
                "snapshot": snapshot,
            },
            {
                "name": "sat",
                "venue": "satori",
                "url": sims["sat"].url,
                "rest_url": sims["sat"].rest_url,
                "api_key": SAT_KEY,
                "private_key": SAT_PRIVATE,
                "coins": ["USD", "ETH"],
                "pairs": ["ETH-USD"],
                "snapshot": snapshot,
            },
        ],
    }


async def test_dropped_pushes_are_drift_and_the_control_topic_tells_consumers(
    kafka: KafkaEndpoint, tmp_path: Path
) -> None:
    sims: dict[str, Any] = {
        "aq": AquanowSimulator(AQ_KEY, AQ_SECRET, rate=40, seed=51),
        "sat": SatoriSimulator(
            SAT_KEY, SAT_WALLET, rate=40, seed=52, coins=("USD", "ETH"), pairs=("ETH-USD",)
        ),
    }
    topics = unique_topics()
    for sim in sims.values():
        await sim.start()
    try:
        cfg = config(kafka, topics, sims)
        with BridgeProcess(tmp_path, cfg) as bridge:
            await bridge.wait_ready()
            for name in sims:  # a scheduled run under a steady flow of pushes, first
                await bridge.wait_metric(
                    "bridge_snapshot_last_success_timestamp_seconds",
                    time.time() + INTERVAL,
                    stream=name,
                    timeout=30,
                )
            for name, sim in sims.items():
                sim.drop_next(5, kinds=STATE_KINDS[name], then_pause=True)
            await wait_until(
                lambda: all(len(s.dropped) == 5 for s in sims.values()),
                "5 pushes dropped by each simulator",
                30,
            )
            expected = drift_expected(sims)
            for name in sims:  # a scheduled run that began after the drops has completed
                await bridge.wait_metric(
                    "bridge_snapshot_last_success_timestamp_seconds",
                    time.time() + INTERVAL + 1,
                    stream=name,
                    timeout=30,
                )
            drift = {
                (name, topic): await bridge.metric(
                    "bridge_reconcile_drift_total", stream=name, topic=topic
                )
                for name in sims
                for topic in ("balances", "orders", "positions", "credit")
            }
            await wait_until(
                lambda: any(e.get("event") == "listening for signals" for e in bridge.log_events()),
                "'listening for signals' in the bridge's log",
            )
            answer = await resync(bridge.config_path)
            # Quiet now (the venues paused after dropping): heartbeats.
            messages = await collect(
                kafka.bootstrap_servers,
                topics,
                lambda ms: converged(sims, ms) and beats(ms) >= 4,
                extra=("control",),
            )
            assert bridge.stop() == 0, bridge.log_text()[-3000:]
    finally:
        for sim in sims.values():
            await sim.stop()

    counted = Counter((name, topic) for name, (topic, _) in expected)
    assert {k: v for k, v in drift.items() if v} == dict(counted)
    control = [m for m in messages if m.topic == "control"]
    reconciled = [m.record for m in control if m.record["kind"] == "reconciled"]
    marked = Counter(
        r["stream"] for r in reconciled if r["trigger"] == "schedule" for _ in range(r["drift"])
    )
    assert marked == Counter(name for name, _ in expected)
    for name in sims:
        first = next(m.record for m in control if m.record["stream"] == name)
        assert first["kind"] == "subscribed"
        assert first["gap_start"] is None  # a first start: nothing restored
        assert first["gap_end"] is not None
        assert any(r["stream"] == name and r["trigger"] == "subscribe" for r in reconciled)
    assert answer["value"]["request_id"] is not None
    assert answer["value"]["trigger"] == "resync"
    print(f"FIGURES drift={dict(counted)} heartbeats={beats(messages)} control={len(control)}")


def drift_expected(sims: dict[str, Any]) -> set[tuple[str, tuple[str, str]]]:
    """(stream, key) of every state a dropped push left wrong, as far as the venue can tell:
    a Satori order or position that opened and ended inside the drop is on no list."""
    keys = set()
    for name, sim in sims.items():
        known = {
            dropped_key(VENUE[name], sim, s.kind, s.payload, SAT_WALLET)
            for s in sim.sent
            if s.kind in STATE_KINDS[name]
        }
        for event in sim.dropped:
            key = dropped_key(VENUE[name], sim, event.kind, event.payload, SAT_WALLET)
            if name == "sat" and key not in known and not satori_open(sim, key):
                continue
            keys.add((name, key))
    return keys


def converged(sims: dict[str, Any], messages: list[Message]) -> bool:
    last = {(m.topic, m.key): m.record for m in messages if m.topic != "control"}
    truth = {**aquanow_truth(sims["aq"]), **satori_truth(sims["sat"], SAT_WALLET, set(last))}
    return not mismatches(truth, last)


def beats(messages: list[Message]) -> int:
    return sum(1 for m in messages if m.topic == "control" and m.record["kind"] == "heartbeat")


async def resync(config: Path) -> dict[str, Any]:
    """`bridge resync sat --wait`: the request line, then the answer (tail's JSON line)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "resync",
        "sat",
        "--config",
        str(config),
        "--reason",
        "e2e",
        "--wait",
        "30",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    request, answer = (json.loads(line) for line in out.decode().splitlines())
    assert answer["value"]["request_id"] == request["request_id"]
    return dict(answer)
