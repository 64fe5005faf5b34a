"""The alert rules: promtool accepts them, promtool's unit tests pass, every alert is tested
firing and not firing (and those tests can fail), and every alert carries what on-call needs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.promql import alert_rules, metric_names
from tests.tools import ALERT_TESTS, ALERTS, ROOT, run, tool

RULES = alert_rules(ALERTS)
NAMES = [r["alert"] for r in RULES]
# A threshold the chart may override: the expression's last `> N` / `>= N`.
THRESHOLD = re.compile(r">=?\s*([0-9.]+)\)?\s*$")


@pytest.mark.tools
def test_promtool_check_rules() -> None:
    code, out = run(tool("promtool"), "check", "rules", str(ALERTS))
    assert code == 0, out
    assert f"SUCCESS: {len(RULES)} rules found" in out


@pytest.mark.tools
def test_promtool_unit_tests_pass() -> None:
    code, out = run(tool("promtool"), "test", "rules", str(ALERT_TESTS))
    assert code == 0, out
    assert "SUCCESS" in out


@pytest.mark.unit
def test_every_alert_is_tested_firing_and_not_firing() -> None:
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    checks = [c for t in tests for c in t["alert_rule_test"]]
    for name in NAMES:
        mine = [c for c in checks if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in mine), f"{name}: no firing case"
        assert any(not c["exp_alerts"] for c in mine), f"{name}: no not-firing case"


@pytest.mark.tools
@pytest.mark.parametrize("name", NAMES)
def test_the_firing_case_fails_when_the_alert_cannot_fire(name: str, tmp_path: Path) -> None:
    """Mutation: the alert's expression replaced by one that never fires must break the
    unit tests, so they really check this alert."""
    text = ALERTS.read_text()
    document = yaml.safe_load(text)
    for rule in document["groups"][0]["rules"]:
        if rule["alert"] == name:
            rule["expr"] = "vector(1) > 2"
    rules = tmp_path / "alerts.yaml"
    rules.write_text(yaml.safe_dump(document, sort_keys=False))
    tests = tmp_path / "alerts_test.yaml"
    tests.write_text(
        ALERT_TESTS.read_text().replace("../../helm/bridge/files/alerts.yaml", str(rules))
    )
    code, out = run(tool("promtool"), "test", "rules", str(tests))
    assert code != 0
    assert f"alertname: {name}" in out


@pytest.mark.unit
@pytest.mark.parametrize("rule", RULES, ids=NAMES)
def test_every_alert_says_what_to_do(rule: dict[str, object]) -> None:
    labels, annotations = rule["labels"], rule["annotations"]
    assert isinstance(labels, dict)
    assert isinstance(annotations, dict)
    assert labels["severity"] in ("critical", "warning")
    # runbook_url: the key kube-prometheus' rules and Alertmanager templates link to
    assert set(annotations) == {"summary", "description", "runbook_url"}
    assert all(len(str(v)) > 20 for v in annotations.values())
    assert "First check: " in str(annotations["description"])
    name = str(rule["alert"])
    assert annotations["runbook_url"] == f"https://venue-bridge.example/README.md#{name.lower()}"
    readme = (ROOT / "README.md").read_text()
    assert f'<a id="{name.lower()}"></a>' in readme, f"README: no runbook anchor for {name}"
    assert str(rule["alert"]).startswith("Bridge")


@pytest.mark.unit
def test_the_alerts_the_issue_asks_for() -> None:
    assert NAMES == [
        "BridgeDown",
        "BridgeCrashLooping",
        "BridgeMemoryNearLimit",
        "BridgeStreamDisconnected",
        "BridgeReconnectStorm",
        "BridgeEventLagHigh",
        "BridgeFeedSilent",
        "BridgeDeadLettersRising",
        "BridgeAuthFailing",
        "BridgeKafkaAuthFailed",
        "BridgeKafkaDown",
        "BridgeBufferNearFull",
        "BridgeKafkaStalled",
        "BridgeStreamCrashed",
        "BridgePublishErrors",
        "BridgeSnapshotFailing",
        "BridgeReconcileDrift",
        "BridgeDiskBufferFull",
        "BridgeDiskBufferWriteErrors",
        "BridgeStreamUnowned",
        "BridgeStreamOwnedTwice",
    ]


@pytest.mark.unit
def test_thresholds_are_where_the_chart_overrides_them() -> None:
    """The chart's `prometheusRule.overrides.<alert>.threshold` replaces every `> N` equal to
    the last one; the alerts on a 0/1 state have none."""
    for rule in RULES:
        match = THRESHOLD.search(str(rule["expr"]).strip())
        if rule["alert"] in (
            "BridgeDown",
            "BridgeStreamDisconnected",
            "BridgeKafkaDown",
            "BridgeStreamUnowned",
        ):
            assert match is None
        else:
            assert match is not None, rule["alert"]


@pytest.mark.unit
def test_rules_read_only_bridge_and_standard_metrics() -> None:
    names = set().union(*(metric_names(str(r["expr"])) for r in RULES))
    standard = {"up", "process_start_time_seconds", "process_resident_memory_bytes"}
    assert names - standard == {n for n in names if n.startswith("bridge_")}
