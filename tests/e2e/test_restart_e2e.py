"""The bridge's own restarts (issue 13): SIGKILLed while orders and positions are open, down
while the venues end some, fill others and change balances, restarted — the last record of
every key equals the venues' truth, for both venues, after a downtime inside `lookback` and
after one longer than it; a restart without any venue change publishes no state record."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from bridge.checkpoint import STATE_FIELDS
from bridge.dev.kafka import KafkaEndpoint
from bridge.dev.simulator.aquanow import AquanowSimulator
from bridge.dev.simulator.base import VenueSimulator
from bridge.dev.simulator.satori import SatoriSimulator
from tests.e2e.expected import aquanow_truth, mismatches, satori_truth
from tests.helpers import (
    AvroReader,
    BridgeProcess,
    Message,
    read_to_end,
    unique_topics,
    wait_until,
)

pytestmark = pytest.mark.e2e

AQ_KEY, AQ_SECRET = "aq-key", "aq-secret-not-real"
SAT_KEY = "st_restart_key"
SAT_PRIVATE = "0x2bf7cc40cfc5b2a43f60769d31191e82ed33aafb5e75be710271acd40a769564"
SAT_WALLET = "0x134eF0CfABEBF9c70eAE631254a6b4736f9b8508"
LOOKBACK = 6.0  # seconds: downtime A is shorter, downtime B longer
STATE = ("balances", "orders", "positions", "credit")
FIELDS = {t.TOPIC: fields for t, fields in STATE_FIELDS.items()}


def config(
    kafka: KafkaEndpoint, topics: dict[str, str], sims: dict[str, Any], lookback: float = LOOKBACK
) -> dict[str, Any]:
    snapshot = {"rate_per_second": 100, "burst": 50, "lookback": lookback, "since_margin": 1}
    common = {"ping_interval": 1, "ping_timeout": 2, "snapshot": {**snapshot, "interval": 0}}
    return {
        "kafka": {
            "bootstrap_servers": kafka.bootstrap_servers,
            "topics": topics,
            "new_topics": {"state_partitions": 4},
        },
        "reconnect": {"initial_delay": 0.1, "max_delay": 0.5},
        "state": {"flush_interval": 0.2},
        "shutdown": {"grace_seconds": 10},
        "streams": [
            {
                **common,
                "name": "aq",
                "venue": "aquanow",
                "url": sims["aq"].url,
                "rest_url": sims["aq"].rest_url,
                "api_key": AQ_KEY,
                "api_secret": AQ_SECRET,
                "ack_grace": 0.3,
            },
            {
                **common,
                "name": "sat",
                "venue": "satori",
                "url": sims["sat"].url,
                "rest_url": sims["sat"].rest_url,
                "api_key": SAT_KEY,
                "private_key": SAT_PRIVATE,
                "coins": ["USD", "ETH"],
                "pairs": ["ETH-USD", "BTC-USD"],
            },
        ],
    }


async def start(tmp_path: Path, name: str, cfg: dict[str, Any]) -> BridgeProcess:
    (tmp_path / name).mkdir()
    bridge = BridgeProcess(tmp_path / name, cfg).start()
    await bridge.wait_ready()
    for stream in ("aq", "sat"):  # the first reconciliation after the (re)start completed
        started = time.time()
        await bridge.wait_metric(
            "bridge_snapshot_last_success_timestamp_seconds", started - 60, stream=stream
        )
    return bridge


async def activity(sims: dict[str, VenueSimulator], events: int) -> None:
    """Wait until each venue changed its state `events` more times."""
    targets = {n: len(s.events) + events for n, s in sims.items()}
    await wait_until(
        lambda: all(len(s.events) >= targets[n] for n, s in sims.items()),
        "each simulator's target number of events",
        60,
    )


def crash(bridge: BridgeProcess) -> float:
    assert bridge.process is not None
    bridge.process.kill()  # SIGKILL: no flush, no checkpoint catching up
    bridge.process.wait(10)
    return time.time()


async def test_restarts_converge_to_the_venues_truth_and_a_quiet_restart_publishes_nothing(
    kafka: KafkaEndpoint, tmp_path: Path
) -> None:
    sims: dict[str, Any] = {
        "aq": AquanowSimulator(AQ_KEY, AQ_SECRET, rate=30, seed=41, emit_while_disconnected=True),
        "sat": SatoriSimulator(
            SAT_KEY,
            SAT_WALLET,
            rate=30,
            seed=42,
            emit_while_disconnected=True,
            coins=("USD", "ETH"),
            pairs=("ETH-USD", "BTC-USD"),
        ),
    }
    topics = unique_topics()
    for sim in sims.values():
        await sim.start()
    try:
        # More than one page (100) of open Satori orders and positions before the first start.
        await sims["sat"].open_items(orders=220, positions=130)
        # The first start reads an hour back (the venues ran before it); the restarts would
        # read only LOOKBACK back without a restored checkpoint.
        bridge = await start(tmp_path, "run1", config(kafka, topics, sims, lookback=3600))
        cfg = config(kafka, topics, sims)
        await activity(sims, 60)
        crash(bridge)
        await activity(sims, 40)  # downtime A: well inside `lookback`
        boundaries = [time.time()]  # run 2 publishes from here
        bridge = await start(tmp_path, "run2", cfg)
        await activity(sims, 40)
        killed = crash(bridge)
        # Downtime B: longer than `lookback` (and the venues keep changing throughout).
        await wait_until(
            lambda: time.time() > killed + LOOKBACK + 2, "the lookback window to pass", 30
        )
        boundaries.append(time.time())
        bridge = await start(tmp_path, "run3", cfg)
        for sim in sims.values():
            sim.pause()
        problems, messages = await converge(kafka.bootstrap_servers, topics, sims, timeout=60)
        print(figures(messages, boundaries, problems))

        assert problems == [], problems[:10]
        assert bridge.stop() == 0, bridge.log_text()[-3000:]

        quiet = await start(tmp_path, "run4", cfg)  # nothing changed at the venues
        state_records = sum(
            [await quiet.metric("bridge_records_published_total", topic=t) for t in STATE]
        )
        restored = await quiet.metric("bridge_state_restored_keys")
        assert quiet.stop() == 0
        # Finished keys already behind the forgetting horizon are forgotten as the stream
        # starts (tombstoned, not restored): every key is one or the other.
        forgotten = sum(
            e["forgotten"] for e in quiet.log_events() if e.get("event") == "stream state restored"
        )
        print(
            f"FIGURES quiet_restart state_records={state_records} restored_keys={restored} "
            f"forgotten_at_start={forgotten}"
        )
        assert state_records == 0
        assert restored + forgotten == len(last_records(messages))
    finally:
        for sim in sims.values():
            await sim.stop()


async def converge(
    bootstrap: str, topics: dict[str, str], sims: dict[str, Any], timeout: float
) -> tuple[list[str], list[Message]]:
    """Read the data topics until the last record of every key equals the truth (or the
    deadline): the remaining problems, and every message read."""
    reader = AvroReader()
    logical = {topics[t]: t for t in (*STATE, "trades")}
    consumer = AIOKafkaConsumer(*logical, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    messages: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            for batch in (await consumer.getmany(timeout_ms=300)).values():
                for m in batch:
                    _, version, record = reader.decode(m.value)
                    headers = {k: v.decode() for k, v in m.headers}
                    messages.append(
                        Message(logical[m.topic], m.key.decode(), headers, record, version)
                    )
            problems = problems_of(sims, messages)
            if not problems or time.monotonic() > deadline:
                return problems, messages
            await asyncio.sleep(0.1)
    finally:
        await consumer.stop()


def last_records(messages: list[Message]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(m.topic, m.key): m.record for m in messages if m.topic in STATE}


def problems_of(sims: dict[str, Any], messages: list[Message]) -> list[str]:
    last = last_records(messages)
    truth = {**aquanow_truth(sims["aq"]), **satori_truth(sims["sat"], SAT_WALLET, set(last))}
    return mismatches(truth, last)


def figures(messages: list[Message], boundaries: list[float], problems: list[str]) -> str:
    """Duplicates (a snapshot record stating the same state as the key's previous record),
    by run: the first run, then each restart."""
    previous: dict[tuple[str, str], dict[str, Any]] = {}
    duplicates: Counter[int] = Counter()
    for m in messages:
        if m.topic not in STATE:
            continue
        state = {f: m.record[f] for f in FIELDS[m.topic]}
        key = (m.topic, m.key)
        if m.record["source"] == "snapshot" and previous.get(key) == state:
            at = m.record["received_at"].timestamp()
            duplicates[sum(1 for b in boundaries if at >= b)] += 1
        previous[key] = state
    return (
        f"FIGURES keys={len(last_records(messages))} stale_keys={len(problems)} "
        f"duplicates_by_run={dict(sorted(duplicates.items()))} records={len(messages)}"
    )


async def test_finished_orders_are_forgotten_and_a_restart_does_not_publish_them_again(
    kafka: KafkaEndpoint, tmp_path: Path
) -> None:
    """`lookback: 0` and `interval: 0`: a finished order is forgotten once the newest order is
    2 * since_margin + 10 s newer (bridge/stream.py `forget_finished`). The running bridge
    deletes their checkpoint entries (tombstones on the state topic), and a restart restores
    without them and publishes none of them again."""
    sims: dict[str, Any] = {
        "aq": AquanowSimulator(AQ_KEY, AQ_SECRET, rate=30, seed=43),
        "sat": SatoriSimulator(
            SAT_KEY, SAT_WALLET, rate=30, seed=44, coins=("USD", "ETH"), pairs=("ETH-USD",)
        ),
    }
    topics = unique_topics()
    for sim in sims.values():
        await sim.start()
    try:
        cfg = config(kafka, topics, sims, lookback=0)
        bridge = await start(tmp_path, "run1", cfg)
        began = time.time()
        keep = 2 * cfg["streams"][0]["snapshot"]["since_margin"] + 10
        await wait_until(lambda: time.time() > began + keep + 4, "orders older than keep", 60)
        for sim in sims.values():
            sim.pause()
        assert bridge.stop() == 0, bridge.log_text()[-3000:]
        state = [TopicPartition(topics["state"], p) for p in range(4)]
        written = await read_to_end(kafka.bootstrap_servers, state)
        last: dict[bytes, bytes | None] = {m.key: m.value for m in written}
        forgotten = [key.decode() for key, value in last.items() if value is None]
        remembered = [key.decode() for key, value in last.items() if value is not None]
        print(
            f"FIGURES forget entries={len(written)} forgotten={len(forgotten)} kept={len(remembered)}"
        )
        assert forgotten, "no finished order was forgotten"
        assert all(key.split("|")[1] in ("orders", "positions") for key in forgotten)

        quiet = await start(tmp_path, "run2", cfg)  # the venues changed nothing since
        state_records = sum(
            [await quiet.metric("bridge_records_published_total", topic=t) for t in STATE]
        )
        assert quiet.stop() == 0
        assert state_records == 0  # no forgotten order listed and published again
        problems, _ = await converge(kafka.bootstrap_servers, topics, sims, timeout=30)
        assert problems == [], problems[:10]
    finally:
        for sim in sims.values():
            await sim.stop()
