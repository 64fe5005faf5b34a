"""Issue 12's broker scenario on a real 3-broker cluster (RF 3, `min.insync.replicas=2`),
simulators → a `bridge run` process → Kafka, run once:

1. a partition leader lost: the broker leading the trades topic is SIGSTOPped for 10 s;
2. the partitions below min ISR for 75 s: two of the three brokers are SIGSTOPped.

Before, publishing stalled silently inside the client (no metric moved) and, in (2), the
bridge's websocket keepalive declared both venues dead after ~40 s of backpressure and closed
the connections, losing every fact the venues had pushed into them. Now: 0 facts lost, the
venue connections kept (one session per stream, no reconnect), the age of the oldest
unacknowledged record (BridgeKafkaStalled's metric) moved past the alert's threshold, and the
log says when each stall started and ended."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bridge.dev.kafka.cluster import LocalKafkaCluster
from bridge.dev.simulator.base import VenueSimulator
from tests.e2e.test_kafka_outage_e2e import _key, config, expected_for, match_pushes, sims
from tests.helpers import BridgeProcess, Message, collect, unique_topics, wait_until

pytestmark = pytest.mark.e2e

LEADER_LOST = 10.0  # seconds broker 2, the trades topic's leader, is stopped
BELOW_MIN_ISR = 75.0  # seconds brokers 2 and 3 are stopped (the outage)
STALL_ALERT = 60.0  # BridgeKafkaStalled's threshold (helm/bridge/files/alerts.yaml)


async def create_topics(cluster: LocalKafkaCluster, topics: dict[str, str]) -> None:
    """Every topic on all three brokers, led by broker 1; trades led by broker 2."""
    admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    name,
                    -1,
                    -1,
                    replica_assignments={0: [2, 1, 3] if logical == "trades" else [1, 2, 3]},
                    topic_configs={"min.insync.replicas": "2"},
                )
                for logical, name in topics.items()
            ]
        )
    finally:
        await admin.close()


class Sampler:
    """Scrapes the bridge once a second: the stall age, and whether both venues stay up."""

    def __init__(self, bridge: BridgeProcess) -> None:
        self.bridge = bridge
        self.max_age = 0.0
        self.min_connected = 2.0

    async def during(self, seconds: float) -> float:
        """Sample for `seconds`; returns the highest stall age seen meanwhile."""
        highest, end = 0.0, time.monotonic() + seconds
        while time.monotonic() < end:
            age = await self.bridge.metric("bridge_producer_oldest_unacked_age_seconds")
            highest = max(highest, age)
            connected = await self.bridge.metric("bridge_ws_connected")
            self.min_connected = min(self.min_connected, connected)
            await asyncio.sleep(1.0)
        self.max_age = max(self.max_age, highest)
        return highest

    async def recovered(self, timeout: float = 90.0) -> None:
        async def caught_up() -> bool:
            age = await self.bridge.metric("bridge_producer_oldest_unacked_age_seconds")
            return age < 2.0

        deadline = time.monotonic() + timeout
        while not await caught_up():
            assert time.monotonic() < deadline, "Kafka did not acknowledge again"
            await asyncio.sleep(0.5)


def out_of_order(pushes: dict[str, list[Any]], messages: list[Message]) -> list[str]:
    """Keys whose records on Kafka do not hold the venue's facts in the venue's order, or do
    not end with the newest. Each key's facts must be a subsequence of its records (a resend
    may add records; identical facts pushed twice are matched in turn, not confused)."""
    facts: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for name, sent in pushes.items():
        for push in sent:
            for topic, want in expected_for(name, push):
                facts.setdefault(_key(topic, want), []).append(want)
    records: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for m in messages:
        if m.record["source"] == "stream" and m.topic != "deadletter":
            records.setdefault((m.topic, m.key), []).append(m.record)
    bad = []
    for key, wanted in facts.items():
        got, matched = records.get(key, []), 0
        for record in got:
            if matched < len(wanted) and _is(record, wanted[matched]):
                matched += 1
        if matched < len(wanted) or not _is(got[-1], wanted[-1]):
            bad.append(f"{key}: {matched}/{len(wanted)} facts in order")
    return bad


def _is(record: dict[str, Any], want: dict[str, Any]) -> bool:
    return {k: record[k] for k in want} == want


def bridge_config(cluster: LocalKafkaCluster, topics: dict[str, str], sim: Any) -> dict[str, Any]:
    cfg = config(
        cluster.bootstrap_servers,
        topics,
        sim,
        buffer_records=300,
        request_timeout_ms=5000,  # a request to a stopped leader is given up after 5 s
        stall_seconds=2,
    )
    for stream in cfg["streams"]:
        # An eager keepalive: the old one closed a busy connection after 4 s without reading.
        stream.update(ping_interval=1, ping_timeout=3)
    return cfg


async def test_a_lost_leader_and_75_s_below_min_isr_lose_nothing_and_keep_the_venues(
    tmp_path: Path,
) -> None:
    cluster = LocalKafkaCluster(3)
    cluster.start()  # from this thread: the JVMs die with the test process
    simulators: dict[str, VenueSimulator] = sims(rate=40)
    topics = unique_topics()
    try:
        await create_topics(cluster, topics)
        for sim in simulators.values():
            await sim.start()
        with BridgeProcess(tmp_path, bridge_config(cluster, topics, simulators)) as bridge:
            await bridge.wait_ready(timeout=90)
            await wait_until(
                lambda: all(len(s.sent) >= 100 for s in simulators.values()),
                "100 pushes sent by each simulator",
                timeout=60,
            )
            sampler = Sampler(bridge)

            cluster.pause([2])  # the trades topic's leader
            leader_lost_age = await sampler.during(LEADER_LOST)
            cluster.resume([2])
            await sampler.recovered()

            cluster.pause([2, 3])  # the partitions' ISR falls to 1 < min.insync.replicas
            below_min_isr_age = await sampler.during(BELOW_MIN_ISR)
            sent_during = {n: len(s.sent) for n, s in simulators.items()}
            cluster.resume([2, 3])
            await sampler.recovered(timeout=120)
            await wait_until(
                lambda: all(len(s.sent) >= sent_during[n] + 100 for n, s in simulators.items()),
                "100 more pushes by each simulator after the outage",
                timeout=90,
            )
            for sim in simulators.values():
                await sim.quiesce()  # an event still being delivered is a fact too
            pushes = {n: list(s.sent) for n, s in simulators.items()}
            expected = sum(len(expected_for(n, s)) for n, ps in pushes.items() for s in ps)

            def complete(messages: list[Message]) -> bool:
                return sum(1 for m in messages if m.record["source"] == "stream") >= expected

            messages = await collect(cluster.bootstrap_servers, topics, complete, timeout=120)
            sessions = {
                name: await bridge.metric("bridge_ws_sessions_total", stream=name)
                for name in simulators
            }
            reconnects = await bridge.metric("bridge_ws_reconnects_total")
            assert bridge.stop() == 0, bridge.log_text()[-3000:]
    finally:
        for sim in simulators.values():
            await sim.stop()
        cluster.close()

    checked, duplicates, lost, _ = match_pushes(simulators, pushes, messages)
    assert lost == []
    assert out_of_order(pushes, messages) == []
    assert sessions == {"aq": 1, "sat": 1}, "a venue connection was dropped"
    assert reconnects == 0
    assert sampler.min_connected == 2
    assert {n: s.connections_total for n, s in simulators.items()} == {"aq": 1, "sat": 1}
    assert leader_lost_age >= 3, "a lost leader must move the stall metric"
    assert below_min_isr_age >= STALL_ALERT, "BridgeKafkaStalled must be able to fire"
    events = bridge.log_events()
    started = [e for e in events if e.get("event") == "kafka stall started"]
    ended = [e for e in events if e.get("event") == "kafka stall ended"]
    assert len(started) >= 2, started  # one stall per outage at least, each logged
    assert len(ended) == len(started), ended
    assert {e["topic"] for e in started} <= set(topics.values())
    assert any(e.get("event") == "backpressure on" for e in events), "reading must pause"
    print(
        f"FIGURES cluster_start_s={cluster.startup_seconds:.1f} facts_checked={checked} lost=0 "
        f"duplicates={duplicates} sessions={sessions} leader_lost_max_age_s={leader_lost_age:.1f} "
        f"below_min_isr_max_age_s={below_min_isr_age:.1f} "
        f"stalls={[(e['topic'], e['oldest_unacked_seconds']) for e in started]} "
        f"stall_ends_s={[e['seconds'] for e in ended]} pushes={ {n: len(p) for n, p in pushes.items()} }"
    )
