"""Fault injection against the venues: drops at random points, refused reconnects, a stalled
connection, malformed and oversized frames, a rejected signature. The venues' state keeps
changing through every gap. After recovery, for every key, the last record on Kafka must equal
the simulators' truth; every malformed frame must be on the dead-letter topic; the reconnect
counters must match the faults injected, reason by reason."""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bridge.dev.kafka import KafkaEndpoint
from bridge.dev.simulator.aquanow import AquanowSimulator
from bridge.dev.simulator.base import VenueSimulator
from bridge.dev.simulator.satori import SatoriSimulator
from tests.e2e.expected import aquanow_truth, mismatches, satori_truth
from tests.helpers import BridgeProcess, Message, collect, unique_topics, wait_until

pytestmark = pytest.mark.e2e

AQ_KEY, AQ_SECRET = "aq-key", "aq-secret-not-real"
SAT_KEY = "st_fault_key"
SAT_PRIVATE = "0x2bf7cc40cfc5b2a43f60769d31191e82ed33aafb5e75be710271acd40a769564"
SAT_WALLET = "0x134eF0CfABEBF9c70eAE631254a6b4736f9b8508"
MAX_FRAME = 65_536
MALFORMED = {
    "aq": ['{"type":"balance","payload":{"symbol":', '{"type":"order","payload":{"symbol":"X"}}'],
    "sat": ['{"event":"api_entrust","data":{"symbol":"ETH-USD"},"success":true}', "[[["],
}


def stream_config(name: str, sim: VenueSimulator) -> dict[str, Any]:
    common = {
        "name": name,
        "url": sim.url,
        "rest_url": sim.rest_url,
        "ping_interval": 0.5,
        "ping_timeout": 1.0,
        "max_frame_bytes": MAX_FRAME,
        "snapshot": {"rate_per_second": 50, "burst": 20, "timeout": 5},
    }
    if name == "aq":
        return {
            **common,
            "venue": "aquanow",
            "api_key": AQ_KEY,
            "api_secret": AQ_SECRET,
            "ack_grace": 0.3,
        }
    return {
        **common,
        "venue": "satori",
        "api_key": SAT_KEY,
        "private_key": SAT_PRIVATE,
        "coins": ["USD", "ETH"],
        "pairs": ["ETH-USD", "BTC-USD"],
    }


async def test_venue_faults_converge_to_the_venues_truth(
    kafka: KafkaEndpoint, tmp_path: Path
) -> None:
    rng = random.Random(7)
    sims: dict[str, VenueSimulator] = {
        "aq": AquanowSimulator(AQ_KEY, AQ_SECRET, rate=40, seed=31, emit_while_disconnected=True),
        "sat": SatoriSimulator(
            SAT_KEY,
            SAT_WALLET,
            rate=40,
            seed=32,
            emit_while_disconnected=True,
            coins=("USD", "ETH"),
            pairs=("ETH-USD", "BTC-USD"),
        ),
    }
    topics = unique_topics()
    faults: Counter[tuple[str, str]] = Counter()
    dead_expected: list[tuple[str, bytes, str]] = []
    for sim in sims.values():
        await sim.start()
    try:
        config = {
            "kafka": {"bootstrap_servers": kafka.bootstrap_servers, "topics": topics},
            "reconnect": {
                "initial_delay": 0.1,
                "max_delay": 0.5,
                "healthy_after": 0.2,
                "auth_initial_delay": 0.2,
                "auth_max_delay": 0.5,
            },
            "shutdown": {"grace_seconds": 15},
            "streams": [stream_config(name, sim) for name, sim in sims.items()],
        }
        with BridgeProcess(tmp_path, config) as bridge:
            await bridge.wait_ready()
            last_fault: dict[str, float] = {}

            async def recovered(name: str, reason: str) -> None:
                """The bridge saw the fault (its counter moved) and is subscribed again."""
                await bridge.wait_metric(
                    "bridge_ws_reconnects_total", faults[(name, reason)], stream=name, reason=reason
                )
                await bridge.wait_metric("bridge_ws_subscribed", 1, stream=name)

            for name, sim in sims.items():
                for _ in range(3):  # drops at random points
                    await _after_random_pushes(sim, rng)
                    await sim.drop_connections()
                    faults[(name, "network")] += 1
                    await recovered(name, "network")

                sim.refusing = True  # refuse reconnects for a while
                await sim.drop_connections()
                faults[(name, "network")] += 1
                refused = lambda: sim.refused >= 3  # noqa: B023, E731 (awaited in this iteration)
                await wait_until(refused, "3 handshakes refused", timeout=30)
                sim.refusing = False
                await recovered(name, "network")

                sim.stall()  # stall without closing: only the ping watchdog can tell
                faults[(name, "watchdog")] += 1
                await recovered(name, "watchdog")

                for text in MALFORMED[name]:  # malformed and oversized frames
                    await sim.send_raw(text)
                    dead_expected.append((name, text.encode(), ""))
                oversized = '{"padding":"' + "x" * MAX_FRAME + '"}'
                await sim.send_raw(oversized)
                dead_expected.append((name, oversized.encode(), "oversized_frame"))

                sim.reject_next = 1  # type: ignore[attr-defined]  # reject the signature once
                last_fault[name] = time.time()
                await sim.drop_connections()
                faults[(name, "network")] += 1
                faults[(name, "auth_rejected")] += 1
                await recovered(name, "network")
                await recovered(name, "auth_rejected")

            for name in sims:  # the snapshot after the last reconnect has completed
                await bridge.wait_metric(
                    "bridge_snapshot_last_success_timestamp_seconds", last_fault[name], stream=name
                )
            for sim in sims.values():
                sim.pause()
            # Pausing is not instant for an emission already underway: let every frame land.
            sent_before = {n: len(s.sent) for n, s in sims.items()}

            def converged(messages: list[Message]) -> bool:
                problems = _problems(sims, messages)
                return not problems

            messages = await collect(kafka.bootstrap_servers, topics, converged, timeout=120)
            assert sent_before == {n: len(s.sent) for n, s in sims.items()}
            reconnects = {
                (name, reason): await bridge.metric(
                    "bridge_ws_reconnects_total", stream=name, reason=reason
                )
                for name in sims
                for reason in (
                    "network",
                    "watchdog",
                    "auth_rejected",
                    "server_error",
                    "close",
                    "silence",
                    "subscribe_timeout",
                    "subscribe_rejected",
                )
            }
            assert bridge.stop() == 0, bridge.log_text()[-3000:]
    finally:
        for sim in sims.values():
            await sim.stop()

    # Reconnect counters match the faults, reason by reason; refused handshakes are HTTP 503.
    for (name, reason), count in reconnects.items():
        expected = faults[(name, reason)] + (sims[name].refused if reason == "server_error" else 0)
        assert count == expected, (name, reason, count, expected)

    # Every malformed or oversized frame is on the dead-letter topic with its reason.
    dead = [m for m in messages if m.topic == "deadletter"]
    for name, raw, reason in dead_expected:
        match = [m for m in dead if m.headers["stream"] == name and m.record["raw"] == raw]
        assert match, f"{name}: {raw[:60]!r} not dead-lettered"
        if reason:
            assert match[0].record["reason"] == reason
    assert all(len(m.record["raw"]) <= 512 * 1024 for m in dead)

    print(_figures(sims, faults, messages))


async def _after_random_pushes(sim: VenueSimulator, rng: random.Random) -> None:
    target = len(sim.sent) + rng.randint(1, 15)
    await wait_until(lambda: len(sim.sent) >= target, f"{target} pushes sent", timeout=30)


def _last_records(messages: list[Message]) -> dict[tuple[str, str], dict[str, Any]]:
    last: dict[tuple[str, str], dict[str, Any]] = {}
    for m in messages:
        if m.topic != "deadletter":
            last[(m.topic, m.key)] = m.record
    return last


def _problems(sims: dict[str, VenueSimulator], messages: list[Message]) -> list[str]:
    last = _last_records(messages)
    truth = {**aquanow_truth(sims["aq"]), **satori_truth(sims["sat"], SAT_WALLET, set(last))}
    return mismatches(truth, last)


def _figures(
    sims: dict[str, VenueSimulator], faults: Counter[tuple[str, str]], messages: list[Message]
) -> str:
    by_source = Counter(m.record["source"] for m in messages)
    ids = Counter(m.record["event_id"] for m in messages)
    return (
        f"FIGURES faults={sum(faults.values())} {dict(faults)} refused_handshakes="
        f"{ {n: s.refused for n, s in sims.items()} } records={len(messages)} {dict(by_source)} "
        f"keys={len(_last_records(messages))} duplicates={sum(c - 1 for c in ids.values())} "
        f"pushes_generated={ {n: len(s.events) for n, s in sims.items()} } "
        f"pushes_delivered={ {n: len(s.sent) for n, s in sims.items()} } mismatched_keys=0"
    )


async def test_a_silent_feed_is_reconnected_only_when_configured(
    kafka: KafkaEndpoint, tmp_path: Path
) -> None:
    """A venue that keeps the connection and answers pings but sends nothing: only the
    separate silence watchdog (silence_timeout) reconnects, with reason `silence`."""
    sim = AquanowSimulator(AQ_KEY, AQ_SECRET, rate=20, seed=9)
    async with sim:
        stream = {**stream_config("aq", sim), "silence_timeout": 1.0}
        config = {
            "kafka": {"bootstrap_servers": kafka.bootstrap_servers, "topics": unique_topics()},
            "reconnect": {"initial_delay": 0.1, "max_delay": 0.5},
            "streams": [stream],
        }
        with BridgeProcess(tmp_path, config) as bridge:
            await bridge.wait_ready()
            sim.pause()
            await bridge.wait_metric("bridge_ws_reconnects_total", 2, stream="aq", reason="silence")
            assert (
                await bridge.metric("bridge_ws_reconnects_total", stream="aq", reason="watchdog")
                == 0
            )
            assert bridge.stop() == 0
