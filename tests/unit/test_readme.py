"""The README's promises: its first lines are the two commands, CI runs the test command, and
its consumer example decodes what the bridge writes."""

from __future__ import annotations

import os
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bridge.codec import Codec, SchemaStore
from bridge.records import CreditBalance

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_first_lines_are_the_demo_and_test_commands() -> None:
    block = README.split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.splitlines()]
    assert commands == ["make demo", "make test"]
    assert README.index("```sh") < README.index("\n## ")


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test\b", ci, re.MULTILINE)


def test_consumer_example_decodes_a_bridge_record(monkeypatch: pytest.MonkeyPatch) -> None:
    snippet = README.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(ROOT)
    namespace: dict[str, Any] = {}
    exec(compile(snippet, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    record = CreditBalance(
        venue="aquanow",
        stream="s",
        account="CA1",
        event_time=None,
        received_at=0,
        source="stream",
        event_id="e",
        raw="{}",
        asset="USD",
        adjusted_mtm=Decimal("49215.15490545314"),
        ltv=None,
        unutilized_credit=None,
        credit_limit=None,
        created_at=None,
    )
    decoded = namespace["decode"](Codec(SchemaStore.load()).value(record))
    assert decoded["adjusted_mtm"] == Decimal("49215.15490545314")
    assert decoded["account"] == "CA1"
    assert os.path.basename(os.getcwd()) == ROOT.name


def test_metrics_sample_is_an_excerpt_of_a_real_scrape() -> None:
    """Every line of the README's /metrics sample is in the captured scrape, which parses
    and names every metric of the contract."""
    from prometheus_client.parser import text_string_to_metric_families

    from tests.data.metrics import CONTRACT

    scrape = (ROOT / "docs" / "metrics-sample.txt").read_text()
    section = README.split("## Metrics, health and logs", 1)[1]
    sample = section.split("```\n", 1)[1].split("```", 1)[0]
    lines = set(scrape.splitlines())
    assert sample.strip()
    assert [line for line in sample.splitlines() if line not in lines] == []
    names = {f.name for f in text_string_to_metric_families(scrape)}
    assert {n.removesuffix("_total") for n in CONTRACT} <= names


def test_every_alert_is_explained() -> None:
    import yaml

    rules = yaml.safe_load((ROOT / "helm" / "bridge" / "files" / "alerts.yaml").read_text())
    section = README.split("## Alerts and dashboard", 1)[1].split("\n## ", 1)[0]
    for rule in rules["groups"][0]["rules"]:
        anchor = f'<a id="{rule["alert"].lower()}"></a>'
        assert f"| {anchor}`{rule['alert']}` |" in section, rule["alert"]
