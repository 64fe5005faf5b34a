"""The metric names a PromQL expression (or a Grafana query) reads, for checking dashboards and
alert rules against a real /metrics scrape.

Deliberately small: strings, label matchers, ranges, label lists, numbers and Grafana
variables are removed; what remains that is not a function call or a keyword is a metric
name. Good for the expressions we write; a unit test pins it on tricky ones.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
    | {"group_left", "group_right", "inf", "nan", "Inf", "NaN"}
)
_STEPS = (
    (re.compile(r"\$\{?\w+\}?"), "1m"),  # Grafana variables: $__rate_interval, ${datasource}
    (re.compile(r'"(?:\\.|[^"\\])*"'), '""'),
    (re.compile(r"\{[^}]*\}"), " "),
    (re.compile(r"\[[^\]]*\]"), " "),
    (re.compile(r"label_values\([^)]*\)"), " "),  # Grafana's, after the matchers are gone
    (re.compile(r"\boffset\s+-?[\w.]+"), " "),
    (re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"), " "),
    (re.compile(r"(?<![\w:])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?"), " "),
)
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_LABEL_VALUES = re.compile(r"label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)")


def metric_names(expr: str) -> set[str]:
    grafana = set(_LABEL_VALUES.findall(expr))
    for pattern, replacement in _STEPS:
        expr = pattern.sub(replacement, expr)
    names = set()
    for match in _IDENT.finditer(expr):
        if expr[match.end() :].lstrip().startswith("("):
            continue  # a function (or label_values)
        if match.group() not in _KEYWORDS:
            names.add(match.group())
    return names | grafana


def alert_rules(path: Path) -> list[dict[str, Any]]:
    document = yaml.safe_load(path.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_queries(path: Path) -> list[str]:
    """Every PromQL query of a Grafana dashboard: panel targets and template variables."""
    dashboard = json.loads(path.read_text())
    queries: list[str] = []

    def panels(items: list[dict[str, Any]]) -> None:
        for panel in items:
            queries.extend(t["expr"] for t in panel.get("targets", []) if t.get("expr"))
            panels(panel.get("panels", []))

    panels(dashboard["panels"])
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            queries.append(query["query"] if isinstance(query, dict) else query)
    return queries
