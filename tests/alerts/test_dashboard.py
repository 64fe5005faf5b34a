"""The Grafana dashboard: every query is valid PromQL (promtool checks them as recording
rules, with Grafana's variables filled in), it shows what the issue asks for per stream, and
it is a dashboard the Grafana sidecar can load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.promql import dashboard_queries, metric_names
from tests.tools import DASHBOARD, run, tool

QUERIES = dashboard_queries(DASHBOARD)
VARIABLES = {
    "$__rate_interval": "5m",
    "${datasource}": "prometheus",
    "$stream": ".*",
    "$venue": ".*",
}


def as_promql(query: str) -> str:
    for variable, value in VARIABLES.items():
        query = query.replace(variable, value)
    if query.startswith("label_values("):  # Grafana's: label_values(<selector>, <label>)
        query = query.removeprefix("label_values(").rsplit(",", 1)[0]
    return query


@pytest.mark.tools
def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": as_promql(q)}
                    for i, q in enumerate(QUERIES)
                ],
            }
        ]
    }
    path = tmp_path / "queries.yaml"
    path.write_text(yaml.safe_dump(rules))
    code, out = run(tool("promtool"), "check", "rules", str(path))
    assert code == 0, out
    assert f"SUCCESS: {len(QUERIES)} rules found" in out


@pytest.mark.unit
def test_shows_what_on_call_needs_per_stream() -> None:
    read = set().union(*(metric_names(q) for q in QUERIES))
    for metric in (
        "bridge_ws_subscribed",  # connected
        "bridge_ws_connected",
        "bridge_ws_reconnects_total",  # reconnect rate
        "bridge_ws_messages_received_total",  # message rate
        "bridge_event_lag_seconds_bucket",  # lag percentiles
        "bridge_pipeline_latency_seconds_bucket",
        "bridge_deadletter_total",  # dead letters
        "bridge_producer_buffer_records",  # buffer fill
        "bridge_producer_buffer_capacity_records",
        "bridge_auth_failures_total",  # auth failures
        "bridge_records_published_total",
        "bridge_publish_errors_total",
        "bridge_ws_last_message_timestamp_seconds",
    ):
        assert metric in read, metric
    per_stream = [q for q in QUERIES if "stream=~" in q]
    assert len(per_stream) >= 10


@pytest.mark.unit
def test_loadable_by_the_grafana_sidecar() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "venue-bridge"
    assert "id" not in dashboard  # a provisioned dashboard must not carry a database id
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["description"]
            assert panel["targets"]


@pytest.mark.tools
def test_snapshot_records_show_what_was_published_before_the_first_scrape(
    tmp_path: Path,
) -> None:
    """The start-up snapshot is usually over before Prometheus' first scrape: the counter is
    first seen at its final value. The panel must still show those records (a rate() of that
    series is empty: the old query drew a flat line after every restart)."""
    (query,) = [q for q in QUERIES if "bridge_snapshot_records_total" in q]
    test = {
        "rule_files": [],
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": [
                    {
                        "series": 'bridge_snapshot_records_total{stream="aq", venue="aquanow"}',
                        "values": "16x20",  # first scrape: 16 records already published
                    }
                ],
                "promql_expr_test": [
                    {
                        "expr": as_promql(query),
                        "eval_time": "2m",
                        "exp_samples": [{"labels": '{stream="aq"}', "value": 16}],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "panel_test.yaml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    code, out = run(tool("promtool"), "test", "rules", str(path))
    assert code == 0, out
