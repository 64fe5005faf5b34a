"""The Helm chart, validated offline the way a cluster would: `helm lint --strict`, `helm
template` for the default values and for the full example, every manifest against Kubernetes'
strict schemas (kubernetes-validate) and the Prometheus Operator resources against their own
structural schemas, the rendered config through `bridge check`, the rendered PrometheusRule
through promtool (with the same unit tests as the canonical rules), and the dashboard and
rules in the chart proved to be the canonical files byte for byte."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import jsonschema
import pytest
import yaml

from bridge.dev.tls import PrivateCA
from bridge.sections import MetricsSettings
from bridge.settings import path_keys
from tests.tools import ALERT_TESTS, ALERTS, CHART, DASHBOARD, ROOT, run, tool

pytestmark = pytest.mark.tools

FULL = ROOT / "helm" / "examples" / "values-full.yaml"
OPERATORS = ROOT / "helm" / "examples" / "values-operators.yaml"
FLEET = ROOT / "helm" / "examples" / "values-fleet.yaml"
VALUES = {"default": None, "full": FULL, "operators": OPERATORS, "fleet": FLEET}
KUBE_RENDER = "1.34.0"
KUBE_VALIDATE = ("1.25", "1.34")  # the chart's oldest supported version and a current one
CRD_SCHEMAS = {
    "ServiceMonitor": Path(__file__).parent / "crd-schemas" / "servicemonitor.json",
    "PrometheusRule": Path(__file__).parent / "crd-schemas" / "prometheusrule.json",
}
NAMESPACE = "bridges"


def helm(*args: str) -> tuple[int, str]:
    return run(tool("helm"), *args)


def template_args(values: Path | None, *extra: str) -> list[str]:
    args = ["template", "treasury", str(CHART), "-n", NAMESPACE, "--kube-version", KUBE_RENDER]
    return [*args, *(["-f", str(values)] if values else []), *extra]


@cache
def rendered(case: str) -> str:
    code, out = helm(*template_args(VALUES[case]))
    assert code == 0, out
    return out


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def one(docs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, (kind, [d["metadata"]["name"] for d in found])
    return found[0]


def workload(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The Deployment (one process) or, in fleet mode, the StatefulSet of members."""
    (found,) = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    return found


def config_map(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == "ConfigMap" and "bridge.yaml" in d.get("data", {}))


# ------------------------------------------------------------------ helm lint, kube schemas


@pytest.mark.parametrize("case", VALUES)
def test_helm_lint_strict(case: str) -> None:
    values = VALUES[case]
    code, out = helm("lint", "--strict", str(CHART), *(["-f", str(values)] if values else []))
    assert code == 0, out
    assert "1 chart(s) linted, 0 chart(s) failed" in out


@pytest.mark.parametrize("case", VALUES)
def test_manifests_pass_kubernetes_strict_schemas(case: str) -> None:
    text = rendered(case)
    docs = documents(text)
    builtin = [d for d in docs if d["kind"] not in CRD_SCHEMAS]
    for version in KUBE_VALIDATE:  # one run each: with `-` it reads stdin only once
        code, out = run(tool("kubernetes-validate"), "-k", version, "--strict", "-", stdin=text)
        assert code == 0, out
        for doc in builtin:
            expected = f"passed for resource {doc['kind'].lower()}/{doc['metadata']['name']}"
            assert f"{expected} against version {version}" in out, out
        assert out.count("passed for resource") == len(builtin)
        assert "did not validate" not in out
    # kubernetes-validate skips custom resources (a warning, exit 0): check them ourselves.
    for doc in docs:
        if doc["kind"] in CRD_SCHEMAS:
            schema = json.loads(CRD_SCHEMAS[doc["kind"]].read_text())
            jsonschema.validate(doc, schema)
    kinds = sorted(d["kind"] for d in docs)
    opt_in = {
        "operators": ["NetworkPolicy", "PodDisruptionBudget"],
        "fleet": ["PodDisruptionBudget"],
        "full": ["PersistentVolumeClaim"],  # the disk buffer's
    }
    assert kinds == sorted(
        [
            "ConfigMap",
            "ConfigMap",
            "StatefulSet" if case == "fleet" else "Deployment",
            "Pod",  # the `helm test` hook
            "PrometheusRule",
            "Service",
            "ServiceAccount",
            "ServiceMonitor",
            *opt_in.get(case, []),
        ]
    )


def test_crd_schemas_catch_mistakes() -> None:
    docs = documents(rendered("default"))
    monitor = one(docs, "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["scrapeInterval"] = "30s"  # the field is `interval`
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(monitor, json.loads(CRD_SCHEMAS["ServiceMonitor"].read_text()))
    rule = one(docs, "PrometheusRule")
    rule["spec"]["groups"][0]["rules"][0]["for"] = "3 minutes"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(rule, json.loads(CRD_SCHEMAS["PrometheusRule"].read_text()))


# ------------------------------------------------------------------ the config: bridge check


@pytest.mark.parametrize("case", VALUES)
def test_rendered_config_is_accepted_by_bridge_check(case: str, tmp_path: Path) -> None:
    docs = documents(rendered(case))
    tls = PrivateCA(tmp_path / "tls")
    text = config_map(docs)["data"]["bridge.yaml"]
    config = yaml.safe_load(text)
    metrics = {"host": "0.0.0.0", "port": 9108, "stream_histograms": True}  # noqa: S104
    assert config["metrics"] == metrics  # the chart's own: the listener in the pod
    # The pod sees the Secret's keys next to bridge.yaml (projected volume): so does the check.
    # Files under /etc/bridge (the projected volume) or another mount (extraVolumeMounts):
    # each one is made under tmp_path, and the config points there.
    for name in secret_files(config):
        if name.startswith("/"):
            mounts = [m["mountPath"] for m in pod_mounts(docs)]
            assert any(name.startswith(m + "/") for m in mounts), f"{name}: not on a mount"
            text = text.replace(name, str(tmp_path / name.lstrip("/")))
        path = tmp_path / name.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        placeholder = "0x" + "11" * 32 if "private" in name else f"placeholder-{name}"
        path.write_text(placeholder + "\n")
        if name.endswith((".crt", ".pem", ".key")):  # bridge check loads TLS files: real PEM
            pem = {".key": "server.key", ".crt": "ca.pem", ".pem": "ca.pem"}[Path(name).suffix]
            path.write_bytes(tls.path(pem).read_bytes())
    (tmp_path / "bridge.yaml").write_text(text)
    env = {"SATORI_API_KEY": "placeholder", "AQUANOW_API_KEY": "k", "AQUANOW_API_SECRET": "s"}
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "check", "--config", str(tmp_path / "bridge.yaml")],
        capture_output=True,
        text=True,
        env={**env, "PATH": "/usr/bin:/bin"},
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f"config OK: {len(config['streams'])} stream(s)" in done.stdout
    deployment = workload(docs)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["run", "--config", "/etc/bridge/bridge.yaml"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert mount["mountPath"] == "/etc/bridge"


def pod_mounts(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = workload(docs)["spec"]["template"]["spec"]["containers"][0][
        "volumeMounts"
    ]
    return mounts


def plain_secrets(node: Any) -> list[str]:
    """Secret keys given as values (not `<key>_file`, not a `${VAR}` reference)."""
    keys = ("api_secret", "private_key", "sasl_password")
    if isinstance(node, dict):
        found = [k for k, v in node.items() if k in keys and not str(v).startswith("${")]
        return found + [f for v in node.values() for f in plain_secrets(v)]
    if isinstance(node, list):
        return [f for v in node for f in plain_secrets(v)]
    return []


def secret_files(node: Any) -> list[str]:
    """Every file the config names: `<secret>_file` keys and path keys (CAs, certificates)."""
    if isinstance(node, dict):
        found = [
            v
            for k, v in node.items()
            if (k.endswith("_file") or k in path_keys() - {"path"}) and isinstance(v, str)
        ]  # disk_buffer.path: a directory, the volume the chart mounts (test_disk_buffer_…)
        return found + [f for v in node.values() for f in secret_files(v)]
    if isinstance(node, list):
        return [f for v in node for f in secret_files(v)]
    return []


# ------------------------------------------------------------------ alert rules: promtool


def prometheus_rule_spec(case: str) -> dict[str, Any]:
    spec: dict[str, Any] = one(documents(rendered(case)), "PrometheusRule")["spec"]
    return spec


@pytest.mark.parametrize("case", VALUES)
def test_rendered_prometheusrule_passes_promtool(case: str, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(prometheus_rule_spec(case), sort_keys=False))
    code, out = run(tool("promtool"), "check", "rules", str(rules))
    assert code == 0, out
    canonical = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    assert f"SUCCESS: {len(canonical)} rules found" in out
    if case == "default":  # the defaults are the tested thresholds: the unit tests must pass
        tests = tmp_path / "alerts_test.yaml"
        tests.write_text(
            ALERT_TESTS.read_text().replace("../../helm/bridge/files/alerts.yaml", str(rules))
        )
        code, out = run(tool("promtool"), "test", "rules", str(tests))
        assert code == 0, out


def test_overrides_change_only_what_they_name() -> None:
    canonical = {r["alert"]: r for r in yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]}
    full = {r["alert"]: r for r in prometheus_rule_spec("full")["groups"][0]["rules"]}
    assert full.keys() == canonical.keys()
    lag, silent = full["BridgeEventLagHigh"], full["BridgeFeedSilent"]
    assert lag["expr"] == canonical["BridgeEventLagHigh"]["expr"].replace("> 30", "> 10")
    assert lag["for"] == "5m"
    assert silent["expr"].count("> 3600") == 2
    assert "900" not in silent["expr"]
    assert full["BridgeDeadLettersRising"]["labels"] == {"severity": "critical", "team": "treasury"}
    base = "https://git.example.com/trading/venue-bridge/-/blob/main/README.md"
    for name, rule in full.items():
        assert rule["annotations"]["runbook_url"] == f"{base}#{name.lower()}"
        if name not in ("BridgeEventLagHigh", "BridgeFeedSilent", "BridgeDeadLettersRising"):
            assert rule == {
                **canonical[name],
                "labels": {**canonical[name]["labels"], "team": "treasury"},
                "annotations": {**canonical[name]["annotations"], "runbook_url": ANY},
            }


def test_disabled_alerts_are_left_out() -> None:
    code, out = helm(*template_args(None, "--set", "prometheusRule.disabled={BridgeFeedSilent}"))
    assert code == 0, out
    spec = one(documents(out), "PrometheusRule")["spec"]
    names = [r["alert"] for r in spec["groups"][0]["rules"]]
    canonical = [r["alert"] for r in yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]]
    assert names == [n for n in canonical if n != "BridgeFeedSilent"]


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("prometheusRule.overrides.BridgeDown.threshold=1", "this alert has no threshold"),
        ("prometheusRule.overrides.NoSuchAlert.for=5m", "no alert named NoSuchAlert"),
        ("prometheusRule.disabled={BridgeDwon}", "no alert named BridgeDwon"),
    ],
)
def test_override_mistakes_fail_the_render(flag: str, message: str) -> None:
    code, out = helm(*template_args(None, "--set", flag))
    assert code != 0
    assert message in out


# ------------------------------------------------------------------ one source, byte for byte


def test_chart_renders_the_canonical_rules_byte_for_byte() -> None:
    """The PrometheusRule's spec, as text, is files/alerts.yaml: the file promtool tests."""
    text = rendered("default")
    block = next(b for b in text.split("\n---\n") if "\nkind: PrometheusRule\n" in b)
    spec_text = block.split("\nspec:\n", 1)[1]
    lines = spec_text.split("\n")
    assert all(line.startswith("  ") or line == "" for line in lines)
    assert "\n".join(line[2:] for line in lines).rstrip(" \n") + "\n" == ALERTS.read_text()
    assert yaml.safe_load(spec_text) == yaml.safe_load(ALERTS.read_text())


def test_chart_renders_the_canonical_dashboard_byte_for_byte() -> None:
    dashboard = one(documents(rendered("default")), "ConfigMap", "-dashboard")
    assert dashboard["data"]["venue-bridge.json"] == DASHBOARD.read_text()
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    json.loads(dashboard["data"]["venue-bridge.json"])


def test_the_canonical_files_are_single_copies() -> None:
    """No second copy of the rules or dashboard anywhere in the repository."""
    tracked = subprocess.run(
        ["git", "ls-files"], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout.split()
    for canonical in (ALERTS, DASHBOARD):
        content = canonical.read_bytes()
        copies = [p for p in tracked if (ROOT / p).is_file() and (ROOT / p).read_bytes() == content]
        assert copies == [str(canonical.relative_to(ROOT))]


# ------------------------------------------------------------------ the Deployment's promises


@pytest.mark.parametrize("case", VALUES)
def test_deployment_runs_one_non_root_read_only_process(case: str) -> None:
    docs = documents(rendered(case))
    deployment = workload(docs)
    spec = deployment["spec"]
    if case == "fleet":  # many members, one stream each at a time (test_fleet_* below)
        assert spec["replicas"] == 3
    else:
        assert spec["replicas"] == 1
        assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]["memory"]
    grace = yaml.safe_load(config_map(docs)["data"]["bridge.yaml"])["shutdown"]["grace_seconds"]
    assert pod["terminationGracePeriodSeconds"] >= grace + 10
    # a config change restarts the pod
    assert "checksum/config" in spec["template"]["metadata"]["annotations"]
    # scraped even while not ready; job="bridge" whatever the release is called
    service = one(docs, "Service")
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["metadata"]["labels"]["app.kubernetes.io/part-of"] == "bridge"
    monitor = one(docs, "ServiceMonitor")
    assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/part-of"
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )


def test_config_change_changes_the_checksum() -> None:
    def checksum(*extra: str) -> str:
        code, out = helm(*template_args(None, *extra))
        assert code == 0, out
        deployment = one(documents(out), "Deployment")
        value: str = deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        return value

    assert checksum() != checksum("--set", "config.log.level=debug")


def test_latency_histograms_can_be_kept_per_venue() -> None:
    """`metrics.streamHistograms: false` reaches the config the bridge reads, as the bool its
    settings take (unset in a user's values: true)."""
    for flag, expected in (("false", False), ("true", True)):
        code, out = helm(*template_args(None, "--set", f"metrics.streamHistograms={flag}"))
        assert code == 0, out
        config = yaml.safe_load(config_map(documents(out))["data"]["bridge.yaml"])
        assert config["metrics"]["stream_histograms"] is expected
        assert MetricsSettings(**config["metrics"]).stream_histograms is expected


def test_secret_is_used_from_an_existing_one_or_created() -> None:
    full = documents(rendered("full"))
    assert not [d for d in full if d["kind"] in ("Secret", "NetworkPolicy", "PodDisruptionBudget")]
    volume = one(full, "Deployment")["spec"]["template"]["spec"]["volumes"][0]
    assert {"secret": {"name": "treasury-bridge"}} in volume["projected"]["sources"]
    config = yaml.safe_load(config_map(full)["data"]["bridge.yaml"])
    assert not plain_secrets(config), "secrets in a ConfigMap"

    code, out = helm(
        *template_args(
            None, "--set", "secret.create=true", "--set", "secret.data.aquanow-api-secret=s3cr3t"
        )
    )
    assert code == 0, out
    docs = documents(out)
    secret = one(docs, "Secret")
    assert base64.b64decode(secret["data"]["aquanow-api-secret"]) == b"s3cr3t"
    assert "s3cr3t" not in config_map(docs)["data"]["bridge.yaml"]
    annotations = one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/secret" in annotations


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicas": 2}, "additional properties 'replicas' not allowed"),
        (
            {
                "config": {
                    "streams": [
                        {
                            "name": "a",
                            "venue": "aquanow",
                            "url": "wss://x/",
                            "api_secret": "plain-text",
                        }
                    ]
                }
            },
            "/config/streams/0/api_secret",
        ),
        ({"config": {"streams": []}}, "minItems"),
        ({"prometheusRule": {"overrides": {"BridgeDown": {"severity": "page"}}}}, "severity"),
        (
            {"terminationGracePeriodSeconds": 25},
            "must be at least config.shutdown.grace_seconds + 10",
        ),
    ],
)
def test_bad_values_are_refused(values: dict[str, Any], message: str, tmp_path: Path) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    code, out = helm(*template_args(path))
    assert code != 0
    assert message in out


def test_notes_say_how_to_check_the_release(tmp_path: Path) -> None:
    """NOTES.txt renders only on install (which needs a cluster): render it as a template."""
    chart = tmp_path / "bridge"
    shutil.copytree(CHART, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "NOTES.txt").unlink()
    body = "".join("  " + line for line in notes.splitlines(keepends=True))
    (chart / "templates" / "notes.yaml").write_text("notes: |\n" + body)
    code, out = run(
        tool("helm"),
        "template",
        "treasury",
        str(chart),
        "-n",
        NAMESPACE,
        "-f",
        str(FULL),
        "--show-only",
        "templates/notes.yaml",
    )
    assert code == 0, out
    text = yaml.safe_load(out)["notes"]
    assert "runs 2 stream(s): aquanow-treasury (aquanow), satori-treasury (satori)" in text
    assert "kubectl -n bridges rollout status deployment/treasury-bridge" in text
    assert 'Secret "treasury-bridge" (not created by this chart' in text


def test_the_readme_install_example_works(tmp_path: Path) -> None:
    """README "Deploy on Kubernetes": its `helm install` renders (as `helm template`), passes
    the Kubernetes schemas and `bridge check`, and the Secret it creates first has exactly the
    files the rendered config names."""
    import shlex

    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Deploy on Kubernetes", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    commands = [shlex.split(line, comments=True) for line in block.splitlines()]
    commands = [c for c in commands if c]
    install = next(c for c in commands if c[:2] == ["helm", "install"])
    secret = next(c for c in commands if c[:4] == ["kubectl", "-n", "bridges", "create"])
    args = ["template", *install[2:], "--kube-version", KUBE_RENDER]
    code, out = helm(*args)
    assert code == 0, out
    code, report = run(tool("kubernetes-validate"), "-k", "1.34", "--strict", "-", stdin=out)
    assert code == 0, report
    docs = documents(out)
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"].startswith("registry.example.com/trading/venue-bridge:")
    secret_name = secret[secret.index("generic") + 1]
    assert {"secret": {"name": secret_name}} in pod["volumes"][0]["projected"]["sources"]
    files = {a.split("=", 1)[1].split("=")[0] for a in secret if a.startswith("--from-file=")}
    text = config_map(docs)["data"]["bridge.yaml"]
    assert set(secret_files(yaml.safe_load(text))) == files
    (tmp_path / "bridge.yaml").write_text(text)
    for name in files:
        (tmp_path / name).write_text("placeholder\n")
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "check", "--config", str(tmp_path / "bridge.yaml")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "my-cluster-kafka-bootstrap.kafka:9092" in done.stdout
    monitor = one(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


# ------------------------------------------------------------------ values.schema.json: config


def test_config_schema_is_generated_from_the_settings_model() -> None:
    done = subprocess.run(
        [sys.executable, "helm/chart_schema.py", "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_the_schema_check_fails_when_model_and_chart_disagree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key the model has but the chart's schema lacks (as after a settings change without
    `make chart-schema`) fails the check, and the message says what to run."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("chart_schema", ROOT / "helm" / "chart_schema.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    stale = json.loads((CHART / "values.schema.json").read_text())
    del stale["definitions"]["config.KafkaSettings"]["properties"]["client_id"]
    copy = tmp_path / "values.schema.json"
    copy.write_text(json.dumps(stale, indent=2) + "\n")
    monkeypatch.setattr(module, "SCHEMA", copy)
    monkeypatch.setattr(module, "ROOT", tmp_path)
    assert module.main(["--check"]) == 1
    assert "run `make chart-schema`" in capsys.readouterr().err
    assert module.main([]) == 0  # regenerates
    assert module.main(["--check"]) == 0


STREAM = {"name": "a", "venue": "aquanow", "url": "wss://x/", "api_key_file": "k"}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"streams": [{**STREAM, "api_secret_file": "s", "chanels": ["executionReport"]}]},
            "additional properties 'chanels' not allowed",
        ),
        (
            {
                "streams": [
                    {
                        **STREAM,
                        "api_key_file": None,
                        "api_key": "AKIA-plaintext",
                        "api_secret_file": "s",
                    }
                ]
            },
            "at '/config/streams/0/api_key': 'AKIA-plaintext' does not match pattern",
        ),
        (
            {
                "serialization": {"registry_username": "u", "registry_password": "hunter2"},
                "streams": [{**STREAM, "api_secret_file": "s"}],
            },
            "at '/config/serialization/registry_password': 'hunter2' does not match pattern",
        ),
        (
            {
                "kafka": {"bootstrap_server": "x:9092"},
                "streams": [{**STREAM, "api_secret_file": "s"}],
            },
            "additional properties 'bootstrap_server' not allowed",
        ),
        ({"streams": [STREAM]}, "missing property 'api_secret'"),
        (
            {"streams": [{**STREAM, "api_secret": "${S}", "api_secret_file": "s"}]},
            "at '/config/streams/0'",
        ),
        (
            {"streams": [{**STREAM, "api_secret_file": "s", "venue": "binance"}]},
            "at '/config/streams/0/venue'",
        ),
        (
            {"log": {"level": "verbose"}, "streams": [{**STREAM, "api_secret_file": "s"}]},
            "/config/log/level",
        ),
        (
            {"metrics": {"port": 1}, "streams": [{**STREAM, "api_secret_file": "s"}]},
            "'metrics' not allowed",
        ),
    ],
    ids=[
        "chanels-typo",
        "plain-api-key",
        "plain-registry-password",
        "kafka-key-typo",
        "secret-missing",
        "secret-and-file",
        "unknown-venue",
        "bad-enum",
        "metrics-is-the-charts",
    ],
)
def test_helm_refuses_what_bridge_check_refuses(
    config: dict[str, Any], message: str, tmp_path: Path
) -> None:
    config = json.loads(json.dumps(config))
    for stream in config["streams"]:
        if stream.get("api_key_file") is None:
            stream.pop("api_key_file", None)
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump({"config": config}))
    code, out = helm(*template_args(path))
    assert code != 0, out
    assert message in out, out


def test_env_references_pass_wherever_bridge_check_interpolates(tmp_path: Path) -> None:
    """`${VAR}` is interpolated before validation: a number, an enum or a URL given so is not
    refused by helm (bridge check validates the result in the pod)."""
    config = {
        "kafka": {"bootstrap_servers": "${KAFKA}", "buffer_records": "${BUFFER}"},
        "log": {"level": "${LOG_LEVEL:-info}"},
        "serialization": {"registry_username": "u", "registry_password": "${REGISTRY_PASSWORD}"},
        "streams": [{**STREAM, "api_secret": "${AQ_SECRET}", "url": "${AQ_URL}"}],
    }
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump({"config": config}))
    code, out = helm(*template_args(path))
    assert code == 0, out


# ------------------------------------------------------------------ options operators need


def test_operator_secrets_are_projected_next_to_the_config() -> None:
    """Strimzi's cluster CA and KafkaUser Secrets, a cert-manager Certificate and a CA bundle
    ConfigMap land next to bridge.yaml under the names the config uses; a CSI secret store is
    an extra volume; envFrom brings whole Secrets as variables."""
    docs = documents(rendered("operators"))
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    sources = pod["volumes"][0]["projected"]["sources"]
    assert sources[1] == {"secret": {"name": "venue-bridge"}}  # the KafkaUser's Secret
    files = {
        item["path"]: (kind, source["name"], item["key"])
        for entry in sources[2:]
        for kind, source in entry.items()
        for item in source["items"]
    }
    assert files == {
        "kafka-ca.crt": ("secret", "my-cluster-cluster-ca-cert", "ca.crt"),
        "client.crt": ("secret", "venue-bridge-tls", "tls.crt"),
        "client.key": ("secret", "venue-bridge-tls", "tls.key"),
        "corporate-ca.pem": ("configMap", "corporate-ca-bundle", "ca-bundle.pem"),
    }
    config = yaml.safe_load(config_map(docs)["data"]["bridge.yaml"])
    assert config["kafka"]["sasl_password_file"] == "kafka-password"  # KafkaUser `password`
    assert config["kafka"]["ssl_cafile"] == "/etc/bridge/kafka-ca.crt"
    csi = next(v for v in pod["volumes"] if v["name"] == "secrets-store")
    assert csi["csi"]["driver"] == "secrets-store.csi.k8s.io"
    container = pod["containers"][0]
    assert {"name": "secrets-store", "mountPath": "/mnt/secrets-store", "readOnly": True} in (
        container["volumeMounts"]
    )
    assert container["envFrom"] == [{"secretRef": {"name": "aquanow-keys"}}]
    assert not plain_secrets(config)


def test_reloader_annotation_common_labels_and_digest() -> None:
    docs = documents(rendered("operators"))
    deployment = one(docs, "Deployment")
    annotations = deployment["metadata"]["annotations"]
    assert annotations["secret.reloader.stakater.com/reload"] == (
        "aquanow-keys,venue-bridge,my-cluster-cluster-ca-cert"
    )
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert labels["team"] == "treasury", doc["kind"]
        assert labels["app.kubernetes.io/part-of"] == "bridge", doc["kind"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pod_labels["cost-center"] == "4711"
    assert "team" not in deployment["spec"]["selector"]["matchLabels"]  # selectors never change
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == (
        "registry.example.com/trading/venue-bridge@sha256:"
        "4f1c0e0b7b1c6a4d5d2a9f0e3c8b7a6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b"
    )
    assert one(docs, "Pod")["spec"]["containers"][0]["image"] == image
    default = one(documents(rendered("default")), "Deployment")
    assert "annotations" not in default["metadata"]
    assert default["spec"]["template"]["spec"]["containers"][0]["image"] == "venue-bridge:0.1.0"


def test_network_policy_admits_only_prometheus_and_the_test_pod_to_the_metrics_port() -> None:
    docs = documents(rendered("operators"))
    policy = one(docs, "NetworkPolicy")["spec"]
    deployment = one(docs, "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert policy["podSelector"] == {"matchLabels": selector}
    assert policy["policyTypes"] == ["Ingress"]  # egress open unless given
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    monitoring, test_pod = rule["from"]
    assert monitoring == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    }
    test_labels = one(docs, "Pod")["metadata"]["labels"]
    assert test_pod["podSelector"]["matchLabels"].items() <= test_labels.items()
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["ports"][0]["name"] == "metrics"


def test_pod_disruption_budget_never_blocks_a_drain_by_default(tmp_path: Path) -> None:
    pdb = one(documents(rendered("operators")), "PodDisruptionBudget")["spec"]
    assert pdb["maxUnavailable"] == 1
    assert "minAvailable" not in pdb
    code, out = helm(
        *template_args(
            None,
            "--set",
            "podDisruptionBudget.enabled=true",
            "--set",
            "podDisruptionBudget.minAvailable=1",
        )
    )
    assert code == 0, out
    pdb = one(documents(out), "PodDisruptionBudget")["spec"]
    assert pdb == {**pdb, "minAvailable": 1}
    assert "maxUnavailable" not in pdb


def test_helm_test_pod_checks_readyz_through_the_service() -> None:
    docs = documents(rendered("default"))
    pod = one(docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    service = one(docs, "Service")
    script = pod["spec"]["containers"][0]["command"][-1]
    port = service["spec"]["ports"][0]["port"]
    assert f'url = "http://{service["metadata"]["name"]}:{port}/readyz"' in script
    assert pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True


def test_helm_test_script_fails_unless_ready(tmp_path: Path) -> None:
    """The test pod's script, run here against a stand-in /readyz: exit 0 on 200, not on 503."""
    import http.server
    import threading

    script = one(documents(rendered("default")), "Pod")["spec"]["containers"][0]["command"][-1]
    answers = iter([(200, b"ready"), (503, b"not subscribed: aquanow-main")])

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = next(answers)
            self.send_response(status)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        local = re.sub(
            r'"http://[^"]+/readyz"', f'"http://127.0.0.1:{server.server_port}/readyz"', script
        )
        ok = subprocess.run(
            [sys.executable, "-c", local], capture_output=True, text=True, timeout=30
        )
        assert ok.returncode == 0, ok.stderr
        assert "200 ready" in ok.stdout
        bad = subprocess.run(
            [sys.executable, "-c", local], capture_output=True, text=True, timeout=30
        )
        assert bad.returncode != 0
        assert "503 not subscribed: aquanow-main" in bad.stderr
    finally:
        server.shutdown()
        server.server_close()  # else its socket leaks (a ResourceWarning, an error here)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"commonLabels": {"app.kubernetes.io/part-of": "payments"}}, "/commonLabels"),
        ({"image": {"repository": "r", "digest": "latest"}}, "/image/digest"),
        (
            {"extraVolumeMounts": [{"name": "x", "mountPath": "/etc/bridge/x"}]},
            "/extraVolumeMounts/0/mountPath",
        ),
        ({"secret": {"extraSources": [{"emptyDir": {}}]}}, "invalid propertyName 'emptyDir'"),
        (
            {"networkPolicy": {"enabled": True, "metricsNamespace": ""}},
            "/networkPolicy/metricsNamespace",
        ),
        ({"podDisruptionBudget": {"enabled": True, "minAvailabe": 1}}, "'minAvailabe' not allowed"),
        ({"diskBuffer": {"volume": "hostPath"}}, "/diskBuffer/volume"),
        ({"diskBuffer": {"size": "1 GB"}}, "/diskBuffer/size"),
    ],
    ids=[
        "part-of",
        "digest",
        "mount-in-config-dir",
        "source-kind",
        "namespace",
        "pdb-typo",
        "disk-volume-kind",
        "disk-size",
    ],
)
def test_new_options_are_checked(values: dict[str, Any], message: str, tmp_path: Path) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    code, out = helm(*template_args(path))
    assert code != 0, out
    assert message in out, out


def test_disk_buffer_gets_its_volume_at_the_configured_path(tmp_path: Path) -> None:
    def pod_and_claims(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
        pod = one(docs, "Deployment")["spec"]["template"]["spec"]
        claims = [d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"]
        return pod, claims

    def disk_volume(pod: dict[str, Any], path: str) -> dict[str, Any]:
        (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == path]
        volumes: list[dict[str, Any]] = pod["volumes"]
        (volume,) = [v for v in volumes if v["name"] == mount["name"]]
        return volume

    # full: a claim the chart creates, mounted at the default path
    pod, claims = pod_and_claims(documents(rendered("full")))
    assert disk_volume(pod, "/var/lib/bridge/buffer") == {
        "name": "disk-buffer",
        "persistentVolumeClaim": {"claimName": "treasury-bridge-disk-buffer"},
    }
    assert claims == ["treasury-bridge-disk-buffer"]
    # operators: an emptyDir with a size limit, at the path the config names
    pod, claims = pod_and_claims(documents(rendered("operators")))
    assert disk_volume(pod, "/var/lib/bridge/frames")["emptyDir"] == {"sizeLimit": "512Mi"}
    assert claims == []
    # an existing claim: used, none created
    path = tmp_path / "values.yaml"
    path.write_text(
        yaml.safe_dump(
            {"config": {"disk_buffer": {"enabled": True}}, "diskBuffer": {"existingClaim": "mine"}}
        )
    )
    code, out = helm(*template_args(path))
    assert code == 0, out
    pod, claims = pod_and_claims(documents(out))
    assert disk_volume(pod, "/var/lib/bridge/buffer")["persistentVolumeClaim"] == {
        "claimName": "mine"
    }
    assert claims == []
    # off (the default, or false): no volume, no claim
    for values in (None, {"config": {"disk_buffer": {"enabled": False}}}):
        if values is None:
            out = rendered("default")
        else:
            path.write_text(yaml.safe_dump(values))
            code, out = helm(*template_args(path))
            assert code == 0, out
        pod, claims = pod_and_claims(documents(out))
        assert [v["name"] for v in pod["volumes"]] == ["config", "tmp"]
        assert claims == []


def test_a_fleet_is_a_statefulset_of_named_members_spread_and_budgeted() -> None:
    docs = documents(rendered("fleet"))
    assert not [d for d in docs if d["kind"] == "Deployment"]
    members = one(docs, "StatefulSet")["spec"]
    assert members["updateStrategy"] == {"type": "RollingUpdate"}  # one pod at a time
    assert members["podManagementPolicy"] == "Parallel"
    assert members["serviceName"] == one(docs, "Service")["metadata"]["name"]
    pod = members["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["BRIDGE_FLEET__MEMBER_ID"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.name"}
    }
    spread = pod["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in spread] == [
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    ]
    assert all(
        c["labelSelector"]["matchLabels"] == members["selector"]["matchLabels"] for c in spread
    )
    assert one(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    config = yaml.safe_load(config_map(docs)["data"]["bridge.yaml"])
    assert config["fleet"]["enabled"] is True
