"""The metrics an on-call engineer alerts on, from a real `bridge run` against both simulators
and a real broker: every metric the dashboard and the alert rules read exists in the scrape,
and the values move the way the alerts assume when faults are injected (a dropped connection,
refused subscriptions, a malformed frame)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge import __version__
from bridge.dev.kafka import KafkaEndpoint
from bridge.dev.simulator.aquanow import AquanowSimulator
from bridge.dev.simulator.satori import SatoriSimulator
from bridge.metrics import DEADLETTER_REASONS, RECONNECT_REASONS, TOPICS
from tests.helpers import BridgeProcess, unique_topics, wait_until
from tests.promql import alert_rules, dashboard_queries, metric_names
from tests.tools import ALERTS, DASHBOARD

pytestmark = pytest.mark.e2e

AQ_KEY, AQ_SECRET = "metrics-aq-key", "metrics-aq-secret-not-real"
SAT_KEY = "st_metrics_key"
SAT_PRIVATE = "0x2bf7cc40cfc5b2a43f60769d31191e82ed33aafb5e75be710271acd40a769564"
SAT_WALLET = "0x134eF0CfABEBF9c70eAE631254a6b4736f9b8508"
AQ = {"stream": "aq", "venue": "aquanow"}
SAT = {"stream": "sat", "venue": "satori"}
# Synthesized by Prometheus for every target, never exposed by the target itself.
SYNTHETIC = {"up"}


class Scrape:
    """One /metrics response, parsed with prometheus_client's own parser."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: list[tuple[str, dict[str, str], float]] = [
            (s.name, s.labels, s.value)
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]
        self.names = {name for name, _, _ in self.samples}

    def value(self, name: str, **labels: str) -> float:
        """Sum over the samples of `name` whose labels include `labels`; absent → KeyError."""
        found = [
            v
            for n, lbl, v in self.samples
            if n == name and all(lbl.get(k) == want for k, want in labels.items())
        ]
        if not found:
            raise KeyError(f"{name}{labels} not in the scrape")
        return sum(found)


async def scrape(bridge: BridgeProcess) -> Scrape:
    status, text = await bridge.get("/metrics")
    assert status == 200
    return Scrape(text)


async def wait_for(
    bridge: BridgeProcess, what: str, condition: Callable[[Scrape], bool], timeout: float = 60
) -> Scrape:
    """Scrape /metrics until `condition` holds; fail with the last scrape's bridge_ lines."""
    last: list[Scrape] = []

    async def probe() -> Scrape | None:
        last[:] = [await scrape(bridge)]
        return last[0] if condition(last[0]) else None

    def tail() -> str:
        lines = last[0].text.splitlines() if last else []
        return "\n".join(ln for ln in lines if "bridge_" in ln)[-3000:]

    found = await wait_until(
        probe, what, timeout, interval=0.1, ignore=(aiohttp.ClientError, KeyError), detail=tail
    )
    assert found is not None  # wait_until returns a true value
    return found


def referenced_metrics() -> set[str]:
    names: set[str] = set()
    for rule in alert_rules(ALERTS):
        names |= metric_names(str(rule["expr"]))
    for query in dashboard_queries(DASHBOARD):
        names |= metric_names(query)
    return names


def config(kafka: KafkaEndpoint, aq: AquanowSimulator, sat: SatoriSimulator) -> dict[str, Any]:
    return {
        "kafka": {
            "bootstrap_servers": kafka.bootstrap_servers,
            "topics": unique_topics(),
            "buffer_records": 500,
        },
        "reconnect": {
            "initial_delay": 0.1,
            "max_delay": 0.5,
            # long enough that a 100 ms poll sees the stream down between auth retries
            "auth_initial_delay": 2,
            "auth_max_delay": 3,
        },
        "shutdown": {"grace_seconds": 10},
        "streams": [
            {
                "name": "aq",
                "venue": "aquanow",
                "url": aq.url,
                "api_key": AQ_KEY,
                "api_secret": AQ_SECRET,
                "ack_grace": 0.3,
            },
            {
                "name": "sat",
                "venue": "satori",
                "url": sat.url,
                "api_key": SAT_KEY,
                "private_key": SAT_PRIVATE,
                "coins": ["USD"],
                "pairs": ["ETH-USD"],
            },
        ],
    }


async def test_metrics_exist_and_move(kafka: KafkaEndpoint, tmp_path: Path) -> None:
    aquanow = AquanowSimulator(AQ_KEY, AQ_SECRET, rate=40, seed=3)
    satori = SatoriSimulator(SAT_KEY, SAT_WALLET, rate=40, seed=4)
    started = time.time()
    async with aquanow, satori:
        with BridgeProcess(tmp_path, config(kafka, aquanow, satori)) as bridge:
            await bridge.wait_ready()
            first = await scrape(bridge)
            (tmp_path / "first-scrape.txt").write_text(first.text)

            # Every metric the dashboard and the alert rules read is in a real scrape,
            # before anything went wrong: series exist from the start, at zero.
            missing = referenced_metrics() - SYNTHETIC - first.names
            assert not missing, f"used by the dashboard/alerts but not exposed: {missing}"
            for labels in (AQ, SAT):
                assert first.value("bridge_ws_connected", **labels) == 1
                assert first.value("bridge_ws_subscribed", **labels) == 1
                for reason in RECONNECT_REASONS:
                    assert first.value("bridge_ws_reconnects_total", **labels, reason=reason) == 0
                for why in DEADLETTER_REASONS:
                    assert first.value("bridge_deadletter_total", **labels, reason=why) == 0
                for topic in TOPICS:
                    assert first.value("bridge_publish_errors_total", **labels, topic=topic) == 0
                assert first.value("bridge_auth_failures_total", **labels) == 0
                assert first.value("bridge_ws_sessions_total", **labels) == 1  # subscribed once
            assert first.value("bridge_build_info", version=__version__) == 1
            assert first.value("bridge_producer_buffer_capacity_records") == 500
            assert started - 60 < first.value("process_start_time_seconds") <= time.time()

            # Traffic: frames, published records, lag observed on the broker's ack.
            def flowing(s: Scrape) -> bool:
                return all(
                    s.value("bridge_ws_messages_received_total", **lbl) >= 20
                    and s.value("bridge_event_lag_seconds_count", **lbl) >= 10
                    and s.value("bridge_pipeline_latency_seconds_count", **lbl) >= 10
                    for lbl in (AQ, SAT)
                )

            busy = await wait_for(bridge, "frames, records and lag on both streams", flowing)
            (tmp_path / "busy-scrape.txt").write_text(busy.text)
            for lbl in (AQ, SAT):
                assert busy.value("bridge_records_published_total", **lbl) >= 10
                assert busy.value("bridge_state_keys", **lbl) >= 1  # balances at least
                last = busy.value("bridge_ws_last_message_timestamp_seconds", **lbl)
                assert started <= last <= time.time() + 1
                assert busy.value("bridge_event_lag_seconds_sum", **lbl) >= 0
            assert busy.value("bridge_control_frames_total", **SAT) >= 2  # subscribe acks

            # An injected network drop: a reconnect with reason network, then subscribed again.
            await aquanow.drop_connections()
            resubscribed = await wait_for(
                bridge,
                "aq reconnect counted as network and resubscribed",
                lambda s: (
                    s.value("bridge_ws_reconnects_total", **AQ, reason="network") >= 1
                    and s.value("bridge_ws_subscribed", **AQ) == 1
                ),
            )
            assert resubscribed.value("bridge_ws_sessions_total", **AQ) == 2

            # Refused subscriptions: auth failures counted, the stream is seen down between
            # retries (connected 0, /readyz 503), then it recovers.
            satori.reject_next = 2
            await satori.drop_connections()
            down = await wait_for(
                bridge,
                "sat down after a refused subscription",
                lambda s: (
                    s.value("bridge_auth_failures_total", **SAT) >= 1
                    and s.value("bridge_ws_connected", **SAT) == 0
                    and s.value("bridge_ws_subscribed", **SAT) == 0
                ),
            )
            assert down.value("bridge_ws_reconnects_total", **SAT, reason="auth_rejected") >= 1
            assert down.value("bridge_ws_subscribed", **AQ) == 1  # the other stream is untouched
            status, body = await bridge.get("/readyz")
            assert status == 503, body
            assert "sat" in body
            recovered = await wait_for(
                bridge,
                "sat resubscribed after the refusals",
                lambda s: s.value("bridge_ws_subscribed", **SAT) == 1,
            )
            # one per refused session (a session's later refusals are the same failure)
            assert recovered.value("bridge_auth_failures_total", **SAT) >= 1
            assert recovered.value("bridge_ws_reconnects_total", **SAT, reason="network") >= 1
            # the refused sessions never reached subscribed: only the recovery counts (the
            # storm alert counts these, so a venue refusing or down is not a "storm")
            assert recovered.value("bridge_ws_sessions_total", **SAT) == 2

            # A malformed frame: a dead letter with its reason, acknowledged on its topic.
            await satori.send_raw("{not json")
            await wait_for(
                bridge,
                "dead letter counted",
                lambda s: (
                    s.value("bridge_deadletter_total", **SAT, reason="invalid_json") == 1
                    and s.value("bridge_records_published_total", **SAT, topic="deadletter") == 1
                ),
            )

            # Quiet: every published record was observed on its ack (latency count equals the
            # published count; lag for every record that has an event time).
            aquanow.pause()
            satori.pause()

            def facts(s: Scrape, stream: dict[str, str]) -> float:
                """Records of frames received (not the bridge's own control and state)."""
                return sum(
                    s.value("bridge_records_published_total", **stream, topic=t)
                    for t in TOPICS
                    if t not in ("control", "state")
                )

            def settled(s: Scrape) -> bool:
                return s.value("bridge_producer_buffer_records") == 0 and facts(s, AQ) == s.value(
                    "bridge_pipeline_latency_seconds_count", **AQ
                )

            final = await wait_for(bridge, "buffer drained", settled)
            published = facts(final, AQ)
            dead = final.value("bridge_records_published_total", **AQ, topic="deadletter")
            assert final.value("bridge_event_lag_seconds_count", **AQ) == published - dead
            assert final.value("bridge_event_lag_seconds_count", **SAT) <= facts(final, SAT)
            assert final.value("bridge_ws_messages_received_total", **AQ) > busy.value(
                "bridge_ws_messages_received_total", **AQ
            )
            status, _ = await bridge.get("/healthz")
            assert status == 200
            assert bridge.stop() == 0, bridge.log_text()[-3000:]
