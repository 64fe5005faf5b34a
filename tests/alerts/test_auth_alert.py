"""BridgeAuthFailing against the auth backoff the bridge really runs (`bridge.backoff.Backoff`
with the default `ReconnectSettings()`: 15 s doubling up to `auth_max_delay`, jitter 0.5),
replayed second by second into promtool's input series. During a two-hour credential
revocation the alert must fire and stay firing at every evaluation (it flapped ~11% of the time
with a 10-minute ceiling: a 15-minute window then held one refusal or two), and the stream must
retry soon enough once the credentials work again."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.backoff import Backoff
from bridge.settings import ReconnectSettings
from tests.alerts.test_storm import JITTER, STEP, _notation
from tests.tools import ALERTS, run, tool

pytestmark = pytest.mark.tools

START, END, MINUTES = 5 * 60, 125 * 60, 150  # the revocation, and how long the replay runs


def replay(rng: random.Random) -> tuple[list[int], float]:
    """Per-second auth failures of a stream whose credentials are refused from START to END,
    and how long after END the stream tried again (and was let in)."""
    backoff = Backoff(ReconnectSettings(), rng)
    failures, at = 0, float(START)
    failed_at: dict[int, int] = {}
    while at < END:
        failures += 1
        failed_at[int(at)] = failures
        at += backoff.next_delay(at, auth=True)
    series, value = [], 0
    for second in range(MINUTES * 60):
        value = failed_at.get(second, value)
        series.append(value)
    return series, at - END


def auth_only(tmp_path: Path) -> Path:
    document = yaml.safe_load(ALERTS.read_text())
    (rule,) = [r for r in document["groups"][0]["rules"] if r["alert"] == "BridgeAuthFailing"]
    rule["annotations"] = {}
    document["groups"][0]["rules"] = [rule]
    path = tmp_path / "auth.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def promtool_case(tmp_path: Path, failures: list[int], firing: range, quiet: range) -> str:
    labels = 'job="bridge", instance="i", stream="aq", venue="aquanow"'
    exp: list[dict[str, Any]] = [
        {
            "exp_labels": {
                "severity": "critical",
                "job": "bridge",
                "instance": "i",
                "stream": "aq",
                "venue": "aquanow",
            }
        }
    ]
    checks = [
        {"eval_time": f"{m}m", "alertname": "BridgeAuthFailing", "exp_alerts": exp} for m in firing
    ] + [{"eval_time": f"{m}m", "alertname": "BridgeAuthFailing", "exp_alerts": []} for m in quiet]
    test = {
        "rule_files": [str(auth_only(tmp_path))],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": f"{STEP}s",
                "input_series": [
                    {
                        "series": f"bridge_auth_failures_total{{{labels}}}",
                        "values": _notation(failures[::STEP]),
                    }
                ],
                "alert_rule_test": checks,
            }
        ],
    }
    path = tmp_path / "auth_test.yaml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    code, out = run(tool("promtool"), "test", "rules", str(path))
    return "" if code == 0 else out


@pytest.mark.parametrize("rng", JITTER.values(), ids=JITTER.keys())
def test_a_long_revocation_fires_without_flapping(rng: random.Random, tmp_path: Path) -> None:
    failures, _ = replay(rng)
    # Firing from the second refusal (15 s in) plus an evaluation, to the end of the revocation;
    # quiet before it, and again once the window holds no more than one refusal.
    firing = range(START // 60 + 2, END // 60 + 1)
    quiet = range(0, START // 60 + 1)
    out = promtool_case(tmp_path, failures, firing, quiet)
    assert out == "", out


@pytest.mark.parametrize("rng", JITTER.values(), ids=JITTER.keys())
def test_credentials_that_work_again_are_tried_within_the_ceiling(rng: random.Random) -> None:
    settings = ReconnectSettings()
    _, waited = replay(rng)
    assert waited <= settings.auth_max_delay <= 300
