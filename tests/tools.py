"""The deploy-side tools (promtool, helm, kubernetes-validate) and where the canonical
monitoring files live.

The tools come from `.ci/install-tools.sh` (`make tools`), which puts them in
`$BRIDGE_CACHE_DIR/tools/bin` (default `~/.cache/bridge/tools/bin`); `$BRIDGE_TOOLS_BIN`
overrides the directory. A missing tool fails the test that needs it: never a skip, so CI
cannot pass without having run them.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from bridge.dev.kafka import cache_root

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "bridge"
ALERTS = CHART / "files" / "alerts.yaml"
DASHBOARD = CHART / "files" / "dashboard.json"
ALERT_TESTS = ROOT / "tests" / "alerts" / "alerts_test.yaml"


def tool(name: str) -> str:
    env = os.environ.get("BRIDGE_TOOLS_BIN")
    path = (Path(env) if env else cache_root() / "tools" / "bin") / name
    if not os.access(path, os.X_OK):
        pytest.fail(f"{name} not found at {path}: run `make tools` (.ci/install-tools.sh)")
    return str(path)


def run(*args: str, stdin: str | None = None, cwd: Path | None = None) -> tuple[int, str]:
    """Run a tool; (exit code, stdout + stderr)."""
    done = subprocess.run(
        args, input=stdin, capture_output=True, text=True, cwd=cwd or ROOT, timeout=300
    )
    return done.returncode, done.stdout + done.stderr
