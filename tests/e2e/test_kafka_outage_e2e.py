"""Kafka outages and shutdown: the broker SIGKILLed mid-stream and restarted (no fact lost, the
last record per key in order, memory bounded while it is down), and SIGTERM under load (exit 0
within the grace period, every frame received before the signal on its topic)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from bridge.dev.kafka import KafkaEndpoint, LocalKafka
from bridge.dev.simulator.aquanow import AquanowSimulator
from bridge.dev.simulator.base import Sent, VenueSimulator
from bridge.dev.simulator.satori import SatoriSimulator
from tests.e2e.expected import expected_aquanow, expected_satori
from tests.helpers import BridgeProcess, Message, collect, unique_topics, wait_until

pytestmark = pytest.mark.e2e

AQ_KEY, AQ_SECRET = "aq-key", "aq-secret-not-real"
SAT_KEY = "st_outage_key"
SAT_PRIVATE = "0x2bf7cc40cfc5b2a43f60769d31191e82ed33aafb5e75be710271acd40a769564"
SAT_WALLET = "0x134eF0CfABEBF9c70eAE631254a6b4736f9b8508"


def sims(rate: float) -> dict[str, VenueSimulator]:
    return {
        "aq": AquanowSimulator(AQ_KEY, AQ_SECRET, rate=rate, seed=41),
        "sat": SatoriSimulator(
            SAT_KEY, SAT_WALLET, rate=rate, seed=42, coins=("USD",), pairs=("ETH-USD",)
        ),
    }


def config(
    bootstrap: str, topics: dict[str, str], sim: dict[str, VenueSimulator], **kafka: Any
) -> dict[str, Any]:
    return {
        "kafka": {"bootstrap_servers": bootstrap, "topics": topics, **kafka},
        "reconnect": {"initial_delay": 0.2, "max_delay": 1},
        "shutdown": {"grace_seconds": 20},
        "streams": [
            {
                "name": "aq",
                "venue": "aquanow",
                "url": sim["aq"].url,
                "api_key": AQ_KEY,
                "api_secret": AQ_SECRET,
                "ack_grace": 0.3,
            },
            {
                "name": "sat",
                "venue": "satori",
                "url": sim["sat"].url,
                "api_key": SAT_KEY,
                "private_key": SAT_PRIVATE,
                "coins": ["USD"],
                "pairs": ["ETH-USD"],
            },
        ],
    }


def expected_for(name: str, sent: Sent) -> list[tuple[str, dict[str, Any]]]:
    if name == "aq":
        return expected_aquanow(sent, "aq", None)
    return expected_satori(sent, "sat", SAT_WALLET) if sent.kind.startswith("api_") else []


def match_pushes(
    simulators: dict[str, VenueSimulator], pushes: dict[str, list[Sent]], messages: list[Message]
) -> tuple[int, int, list[str], list[str]]:
    """(facts checked, duplicates, lost facts, keys whose records are out of order).

    Each pushed fact is looked for among the records of its key. Order per key: the facts, in
    the venue's order, must be found one after another in the key's records listed by offset
    (a resend may repeat records in between; two equal facts are two matches, not a swap),
    and the key's last record carries its last fact."""
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for m in messages:
        if m.record["source"] == "stream" and m.topic != "deadletter":
            by_key[(m.topic, m.key)].append(m.record)
    lost, checked = [], 0
    facts: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for name, sent_list in pushes.items():
        for index, sent in enumerate(sent_list):
            for topic, want in expected_for(name, sent):
                checked += 1
                key = _key(topic, want)
                if not any(_carries(r, want) for r in by_key[key]):
                    lost.append(f"{name}#{index} {topic} {key}")
                facts[key].append(want)
    disorder = [str(key) for key, wants in facts.items() if not _in_order(by_key[key], wants)]
    return checked, _dupes(by_key), lost, disorder


def _carries(record: dict[str, Any], want: dict[str, Any]) -> bool:
    return all(record[k] == v for k, v in want.items())


def _in_order(records: list[dict[str, Any]], wants: list[dict[str, Any]]) -> bool:
    """`wants` is a subsequence of `records` (first match after the previous one), and the
    last record carries the last fact. A lost fact is reported as lost, not as disorder."""
    found = [w for w in wants if any(_carries(r, w) for r in records)]
    position = 0
    for want in found:
        position = next(
            (i + 1 for i in range(position, len(records)) if _carries(records[i], want)), -1
        )
        if position < 0:
            return False
    return not found or _carries(records[-1], found[-1])


def _dupes(by_key: dict[tuple[str, str], list[dict[str, Any]]]) -> int:
    ids = Counter(r["event_id"] for rs in by_key.values() for r in rs)
    return sum(c - 1 for c in ids.values())


def _key(topic: str, want: dict[str, Any]) -> tuple[str, str]:
    venue, account = want["venue"], want["account"] or ""
    field = {
        "balances": "asset",
        "orders": "order_id",
        "positions": "position_id",
        "credit": "asset",
    }.get(topic)
    if field is None:
        return topic, f"{venue}|{want['symbol']}"
    return topic, f"{venue}|{account}|{want[field]}"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_broker_killed_mid_stream_loses_nothing(kafka: KafkaEndpoint, tmp_path: Path) -> None:
    if kafka.kind != "local":
        pytest.skip(f"needs a broker process to kill; the session broker is {kafka.kind}")
    broker = LocalKafka()
    await asyncio.to_thread(broker.start)
    simulators = sims(rate=100)
    topics = unique_topics()
    outage = {"seconds": 0.0, "rss_before": 0.0, "rss_max": 0.0}
    try:
        for sim in simulators.values():
            await sim.start()
        cfg = config(
            broker.bootstrap_servers,
            topics,
            simulators,
            buffer_records=300,
            request_timeout_ms=4000,
        )
        with BridgeProcess(tmp_path, cfg) as bridge:
            await bridge.wait_ready()
            await wait_until(
                lambda: all(len(s.sent) >= 150 for s in simulators.values()),
                "150 pushes sent by each simulator",
                timeout=60,
            )
            assert bridge.process is not None
            outage["rss_before"] = rss_mb(bridge.process.pid)
            await asyncio.to_thread(broker.kill)
            killed_at = time.monotonic()
            # The outage lasts longer than request_timeout_ms, so queued batches expire and
            # the sink's ordered resend must do its work. Sample memory meanwhile.
            while time.monotonic() - killed_at < 12:
                outage["rss_max"] = max(outage["rss_max"], rss_mb(bridge.process.pid))
                await asyncio.sleep(0.25)
            sent_during = {n: len(s.sent) for n, s in simulators.items()}
            assert "backpressure on" in bridge.log_text(), (
                "the buffer must fill while Kafka is down"
            )
            await asyncio.to_thread(broker.restart)
            outage["seconds"] = time.monotonic() - killed_at
            await wait_until(
                lambda: all(len(s.sent) >= sent_during[n] + 150 for n, s in simulators.items()),
                "150 more pushes by each simulator after the broker's restart",
                timeout=90,
            )
            for sim in simulators.values():
                await sim.quiesce()  # an event still being delivered is a fact too
            pushes = {n: list(s.sent) for n, s in simulators.items()}
            expected = sum(len(expected_for(n, s)) for n, ps in pushes.items() for s in ps)

            def complete(messages: list[Message]) -> bool:
                return sum(1 for m in messages if m.record["source"] == "stream") >= expected

            messages = await collect(broker.bootstrap_servers, topics, complete, timeout=120)
            assert bridge.stop() == 0, bridge.log_text()[-3000:]
    finally:
        for sim in simulators.values():
            await sim.stop()
        await asyncio.to_thread(broker.close)

    checked, duplicates, lost, disorder = match_pushes(simulators, pushes, messages)
    assert lost == []
    assert disorder == []
    growth = outage["rss_max"] - outage["rss_before"]
    assert growth < 100, f"memory grew {growth:.1f} MB while Kafka was down"
    recovered = [e for e in bridge.log_events() if e.get("event") == "delivery recovered"]
    print(
        f"FIGURES outage_s={outage['seconds']:.1f} facts_checked={checked} lost=0 "
        f"duplicates={duplicates} rss_before_mb={outage['rss_before']:.1f} "
        f"rss_max_during_outage_mb={outage['rss_max']:.1f} sent_during_outage={sent_during} "
        f"recoveries={[(e['resent'], e['republished']) for e in recovered]}"
    )


async def test_sigterm_under_load_flushes_everything_received(
    kafka: KafkaEndpoint, tmp_path: Path
) -> None:
    simulators = sims(rate=400)
    topics = unique_topics()
    async with simulators["aq"], simulators["sat"]:
        with BridgeProcess(tmp_path, config(kafka.bootstrap_servers, topics, simulators)) as bridge:
            await bridge.wait_ready()
            await wait_until(
                lambda: all(len(s.sent) >= 400 for s in simulators.values()),
                "400 pushes sent by each simulator",
                timeout=60,
            )
            assert bridge.process is not None
            signalled = time.monotonic()
            bridge.process.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(bridge.process.wait, 30)
            exit_seconds = time.monotonic() - signalled
        stopped = {
            e["stream"]: e for e in bridge.log_events() if e.get("event") == "stream stopped"
        }
        received = {
            n: stopped[n]["frames_received"] - stopped[n]["control_frames"] for n in simulators
        }
        # Frames arrive in the order sent (one connection, TCP): the first `received` ones.
        pushes = {n: simulators[n].sent[: received[n]] for n in simulators}
        expected = sum(len(expected_for(n, s)) for n, ps in pushes.items() for s in ps)
        messages = await collect(
            kafka.bootstrap_servers, topics, lambda ms: len(ms) >= expected, timeout=60
        )
    assert code == 0, bridge.log_text()[-3000:]
    assert exit_seconds < 20
    checked, _, lost, disorder = match_pushes(simulators, pushes, messages)
    assert lost == []
    assert disorder == []
    assert len(messages) == expected, "nothing beyond what was received"
    print(
        f"FIGURES sigterm_exit_s={exit_seconds:.2f} frames_received={received} "
        f"records_checked={checked} lost=0 sent_by_venues={ {n: len(s.sent) for n, s in simulators.items()} }"
    )
