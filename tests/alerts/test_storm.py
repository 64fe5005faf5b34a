"""BridgeReconnectStorm against the reconnect policy the bridge really runs: the default
backoff (`bridge.backoff.Backoff`, ReconnectSettings() = 1 s, x2, jitter 0.5, max 60 s)
replayed second by second into promtool's input series. A 2-minute venue outage must not fire
the storm (the old rule, counting attempts, did 21 s in); a feed that keeps subscribing and
dropping must. And the process-death tests of alerts_test.yaml depend on `keep_firing_for`."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.backoff import Backoff
from bridge.settings import ReconnectSettings
from tests.tools import ALERT_TESTS, ALERTS, run, tool

pytestmark = pytest.mark.tools

STEP = 5  # seconds between samples, a typical scrape interval
MINUTES = 25
OLD_STORM = "sum without (reason) (increase(bridge_ws_reconnects_total[15m])) >= 6"


class Fixed(random.Random):
    """An rng whose random() is always `value`: 0 = no jitter, 0.999 = the most jitter."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


def replay(
    rng: random.Random, *, outage: tuple[float, float] | None, session: float
) -> tuple[list[int], list[int]]:
    """Per-second (reconnect attempts failed, sessions that reached subscribed) of one stream
    whose sessions last `session` seconds (then drop), during which the venue refuses every
    connection in `outage` (start, end)."""
    backoff = Backoff(ReconnectSettings(), rng)
    reconnects, sessions = 0, 0
    failed_at: dict[int, int] = {}
    subscribed_at: dict[int, int] = {}
    now = 0.0
    while now < MINUTES * 60:
        down = outage is not None and outage[0] <= now < outage[1]
        if down:
            reconnects += 1
            failed_at[int(now)] = reconnects
            now += backoff.next_delay(now)
            continue
        backoff.connected(now)
        sessions += 1
        subscribed_at[int(now)] = sessions
        end = now + session
        if outage is not None and now < outage[0] < end:
            end = outage[0]  # the venue goes down under an established session
        now = end
        reconnects += 1  # the session is lost
        failed_at[int(now)] = reconnects
        now += backoff.next_delay(now)
    return _cumulative(failed_at), _cumulative(subscribed_at)


def _cumulative(events: dict[int, int]) -> list[int]:
    out, value = [], 0
    for second in range(MINUTES * 60):
        value = events.get(second, value)
        out.append(value)
    return out


def _notation(samples: list[int]) -> str:
    """promtool's expanding notation: runs of equal values as `vxN`."""
    parts, i = [], 0
    while i < len(samples):
        j = i
        while j + 1 < len(samples) and samples[j + 1] == samples[i]:
            j += 1
        parts.append(f"{samples[i]}x{j - i}" if j > i else str(samples[i]))
        i = j + 1
    return " ".join(parts)


def promtool_case(
    rules: Path, tmp_path: Path, reconnects: list[int], sessions: list[int], fires: bool
) -> tuple[int, str]:
    labels = 'job="bridge", instance="i", stream="aq", venue="aquanow"'
    exp: list[dict[str, Any]] = [
        {
            "exp_labels": {
                "severity": "warning",
                "job": "bridge",
                "instance": "i",
                "stream": "aq",
                "venue": "aquanow",
            }
        }
    ]
    checks: list[dict[str, Any]] = [
        {"eval_time": f"{m}m", "alertname": "BridgeReconnectStorm", "exp_alerts": []}
        for m in range(1, 16)
    ]
    if fires:
        checks = [{"eval_time": "15m", "alertname": "BridgeReconnectStorm", "exp_alerts": exp}]
    test = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": f"{STEP}s",
                "input_series": [
                    {
                        "series": f'bridge_ws_reconnects_total{{{labels}, reason="network"}}',
                        "values": _notation(reconnects[::STEP]),
                    },
                    {
                        "series": f"bridge_ws_sessions_total{{{labels}}}",
                        "values": _notation(sessions[::STEP]),
                    },
                ],
                "alert_rule_test": checks,
            }
        ],
    }
    path = tmp_path / "storm_test.yaml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    return run(tool("promtool"), "test", "rules", str(path))


def storm_only(tmp_path: Path, expr: str | None = None) -> Path:
    """The canonical rules, reduced to BridgeReconnectStorm (summary/description are not
    what these tests check), optionally with another expression."""
    document = yaml.safe_load(ALERTS.read_text())
    (rule,) = [r for r in document["groups"][0]["rules"] if r["alert"] == "BridgeReconnectStorm"]
    rule["annotations"] = {}
    if expr is not None:
        rule["expr"] = expr
    document["groups"][0]["rules"] = [rule]
    path = tmp_path / "storm.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


JITTER = {"no jitter": Fixed(0.0), "most jitter": Fixed(0.999), "seeded": random.Random(7)}


@pytest.mark.parametrize("rng", JITTER.values(), ids=JITTER.keys())
def test_no_storm_during_a_two_minute_venue_outage(rng: random.Random, tmp_path: Path) -> None:
    # Up for 5 minutes (healthy: the backoff is reset), the venue down from 5:00 to 7:00.
    reconnects, sessions = replay(rng, outage=(300, 420), session=10**9)
    attempts = reconnects[420] - reconnects[299]
    assert 6 <= attempts <= 9, attempts  # what the old rule counted as a storm
    assert sessions[-1] == 2  # the first session and the one after the outage
    code, out = promtool_case(storm_only(tmp_path), tmp_path, reconnects, sessions, fires=False)
    assert code == 0, out
    # The same input fires the old rule (attempts): this test tells the two apart.
    code, out = promtool_case(
        storm_only(tmp_path, OLD_STORM), tmp_path, reconnects, sessions, fires=False
    )
    assert code != 0, out
    assert "alertname: BridgeReconnectStorm" in out


@pytest.mark.parametrize("rng", JITTER.values(), ids=JITTER.keys())
def test_storm_on_a_feed_that_keeps_dropping_after_subscribing(
    rng: random.Random, tmp_path: Path
) -> None:
    """Sessions of 20 s (shorter than healthy_after: the backoff is never reset)."""
    reconnects, sessions = replay(rng, outage=None, session=20)
    assert sessions[15 * 60] >= 6
    code, out = promtool_case(storm_only(tmp_path), tmp_path, reconnects, sessions, fires=True)
    assert code == 0, out


def test_process_death_tests_need_keep_firing_for(tmp_path: Path) -> None:
    """Without keep_firing_for, the firing disconnect alert resolves the minute the process
    dies: the unit tests of alerts_test.yaml must catch it."""
    document = yaml.safe_load(ALERTS.read_text())
    for rule in document["groups"][0]["rules"]:
        rule.pop("keep_firing_for", None)
    rules = tmp_path / "alerts.yaml"
    rules.write_text(yaml.safe_dump(document, sort_keys=False))
    tests = tmp_path / "alerts_test.yaml"
    tests.write_text(
        ALERT_TESTS.read_text().replace("../../helm/bridge/files/alerts.yaml", str(rules))
    )
    code, out = run(tool("promtool"), "test", "rules", str(tests))
    assert code != 0
    assert "keeps firing when the process dies" in out
    assert "alertname: BridgeStreamDisconnected, time: 7m" in out
