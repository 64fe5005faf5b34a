"""A full `bridge run` session at debug level, both venues, with a wrong secret, refused
subscriptions, dropped connections, malformed frames, backpressure and a SIGTERM: the whole
log output is JSON, carries every lifecycle event bound to its stream, and contains no
configured secret, no private key (with or without 0x), no API key and no signature the
venues received. Nothing needed masking either: the masking is a second line of defence, and
a `***` in the log would mean the first one failed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.dev.kafka import KafkaEndpoint
from bridge.dev.simulator.aquanow import AquanowSimulator
from bridge.dev.simulator.base import Session
from bridge.dev.simulator.satori import SatoriSimulator
from bridge.logs import HEX_MASK, MASK
from tests.helpers import BridgeProcess, unique_topics, wait_until

pytestmark = pytest.mark.e2e

AQ_KEY, AQ_SECRET = "aq-log-key-1234", "aq-log-secret-5678-not-real"
AQ_BAD_KEY, AQ_WRONG = "aq-bad-key-9876", "aq-wrong-secret-4321-not-real"
SAT_KEY = "st_log_key_abcdef"
SAT_PRIVATE = "0x2bf7cc40cfc5b2a43f60769d31191e82ed33aafb5e75be710271acd40a769564"
SAT_WALLET = "0x134eF0CfABEBF9c70eAE631254a6b4736f9b8508"


class RecordingAquanow(AquanowSimulator):
    """Keeps every request it received, to collect the signatures the bridge sent."""

    requests: list[str]

    async def handle_request(self, session: Session, text: str) -> None:
        self.requests.append(text)
        await super().handle_request(session, text)


class RecordingSatori(SatoriSimulator):
    requests: list[str]

    async def handle_request(self, session: Session, text: str) -> None:
        self.requests.append(text)
        await super().handle_request(session, text)


def signatures(requests: list[str], field: str) -> set[str]:
    found = set()
    for text in requests:
        value = json.loads(text).get(field)
        if isinstance(value, str) and len(value) >= 16:
            found |= {value, value.removeprefix("0x")}
    return found


async def test_a_full_session_logs_no_secret(kafka: KafkaEndpoint, tmp_path: Path) -> None:
    good = RecordingAquanow(AQ_KEY, AQ_SECRET, rate=50, seed=8)
    bad = RecordingAquanow(AQ_BAD_KEY, AQ_SECRET, rate=5, seed=9)  # the bridge has it wrong
    satori = RecordingSatori(SAT_KEY, SAT_WALLET, rate=50, seed=10)
    for sim in (good, bad, satori):
        sim.requests = []
    (tmp_path / "satori.key").write_text(SAT_PRIVATE + "\n")
    async with good, bad, satori:
        config = {
            "kafka": {
                "bootstrap_servers": kafka.bootstrap_servers,
                "topics": unique_topics(),
                "buffer_records": 1,  # every multi-record frame meets backpressure
            },
            "reconnect": {
                "initial_delay": 0.1,
                "max_delay": 0.5,
                "auth_initial_delay": 0.2,
                "auth_max_delay": 0.5,
            },
            "shutdown": {"grace_seconds": 10},
            "log": {"level": "debug", "format": "json"},
            "streams": [
                {
                    "name": "aq",
                    "venue": "aquanow",
                    "url": good.url,
                    "api_key": "${LOG_AQ_KEY}",
                    "api_secret": "${LOG_AQ_SECRET}",
                    "channels": ["executionReport", "balanceReport"],
                    "ack_grace": 0.3,
                },
                {
                    "name": "aq-wrong",
                    "venue": "aquanow",
                    "url": bad.url,
                    "api_key": AQ_BAD_KEY,
                    "api_secret": AQ_WRONG,
                    "ack_grace": 0.3,
                },
                {
                    "name": "sat",
                    "venue": "satori",
                    "url": satori.url,
                    "api_key": SAT_KEY,
                    "private_key_file": "satori.key",
                    "coins": ["USD"],
                    "pairs": ["ETH-USD"],
                },
            ],
        }
        env = {"LOG_AQ_KEY": AQ_KEY, "LOG_AQ_SECRET": AQ_SECRET}
        with BridgeProcess(tmp_path, config, env=env) as bridge:
            await bridge.wait_metric("bridge_ws_subscribed", 1, stream="aq")
            await bridge.wait_metric("bridge_ws_subscribed", 1, stream="sat")
            await bridge.wait_metric("bridge_auth_failures_total", 2, stream="aq-wrong")
            # faults: drops, a refused Satori subscription, malformed frames
            await good.drop_connections()
            satori.reject_next = 1
            await satori.drop_connections()
            await bridge.wait_metric("bridge_auth_failures_total", 1, stream="sat")
            await bridge.wait_metric("bridge_ws_reconnects_total", 1, stream="aq", reason="network")
            await bridge.wait_metric("bridge_ws_subscribed", 1, stream="sat")
            await bridge.wait_metric("bridge_ws_subscribed", 1, stream="aq")
            await good.send_raw('{"type":"order","payload":{"apiKey":"x"')
            await satori.send_raw('{"event":"api_unknown","data":{},"success":true}')
            await bridge.wait_metric("bridge_records_published_total", 2, topic="deadletter")

            async def backpressure_seen() -> bool:
                return '"event": "backpressure off"' in bridge.log_text()

            await wait_until(backpressure_seen, "backpressure on and off in the log", 60)
            assert bridge.stop() == 0, bridge.log_text()[-3000:]

    text = bridge.log_text()
    secrets = {AQ_KEY, AQ_SECRET, AQ_BAD_KEY, AQ_WRONG, SAT_KEY, SAT_PRIVATE, SAT_PRIVATE[2:]}
    sent = signatures(good.requests + bad.requests, "apiSignature")
    sent |= signatures(satori.requests, "signature")
    assert len(sent) >= 2 * 6, "the simulators saw signed subscriptions"
    lowered = text.lower()
    for value in secrets | sent:
        assert value.lower() not in lowered, "a secret or signature reached the log"
    assert MASK not in text, "something tried to log a secret"
    assert HEX_MASK not in text, "something tried to log a signature or key"

    # The whole output is JSON lines (the bridge's and the libraries').
    events = [json.loads(line) for line in text.splitlines() if line.strip()]
    names = {e["event"] for e in events}
    lifecycle = {
        "metrics server listening",
        "producer started",
        "connecting",
        "connected",
        "subscribed",
        "connection lost",
        "backpressure on",
        "backpressure off",
        "shutdown requested",
        "shutting down",
        "stream stopped",
        "shutdown complete",
    }
    assert lifecycle <= names, lifecycle - names
    for event in events:
        if event["event"] in lifecycle:
            assert event["level"] in ("info", "warning", "error"), event
    for name in ("connecting", "connected", "subscribed", "connection lost", "stream stopped"):
        streams = {e.get("stream") for e in events if e["event"] == name}
        assert None not in streams, f"{name} must be bound to its stream"
    assert {"aq", "sat"} <= {e["stream"] for e in events if e["event"] == "subscribed"}
    lost = [e for e in events if e["event"] == "connection lost"]
    reasons = {(e["stream"], e["reason"]) for e in lost}
    assert {("aq-wrong", "auth_rejected"), ("sat", "auth_rejected"), ("aq", "network")} <= reasons
    assert all(e["level"] == "error" for e in lost if e["reason"] == "auth_rejected")
