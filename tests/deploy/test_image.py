"""The Dockerfile's promises checked as text (two stages, nothing built in the final one, a
numeric non-root user, the `bridge` entry point and the command the Helm chart runs), the wheel
it installs built for real and opened, and the service without the lab (as in the image) run on
a copy of the package. The image itself is built and run by `make image-test` (tests/image)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.tools import CHART, ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()
STAGES = re.split(r"^FROM ", DOCKERFILE, flags=re.MULTILINE)[1:]
FINAL = STAGES[-1]
TOPICS = ("balances", "orders", "positions", "trades", "credit", "deadletter")


@pytest.mark.unit
def test_two_stages_and_nothing_built_in_the_final_one() -> None:
    assert len(STAGES) == 2
    assert STAGES[0].split()[2] == "build"  # FROM <image> AS build
    assert "python3 -m venv /opt/bridge" in STAGES[0]
    assert "/opt/bridge/bin/pip install ." in STAGES[0]
    assert "pip uninstall --yes --quiet pip setuptools" in STAGES[0]  # none in the venv
    for tool in ("gcc", "build-essential", "apt-get", "pip install", "pip wheel", "COPY . "):
        assert tool not in FINAL, tool
    assert "COPY --from=build /opt/bridge /opt/bridge" in FINAL
    assert "pip uninstall --yes" in FINAL  # the base image's own pip
    # The default base is the public one; CI passes its Debian-made base as a build argument.
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim-bookworm$", DOCKERFILE, re.MULTILINE)


@pytest.mark.unit
def test_the_lab_is_left_out_of_the_image() -> None:
    """The lab (bridge/dev: simulators, the dev broker and registry with their Maven launchers,
    the demo) is removed after the install; tests/image proves it is absent from the image."""
    assert re.search(r"site-packages/bridge \\\n\s*&& rm -rf dev \\", STAGES[0]), STAGES[0]


@pytest.mark.unit
def test_runs_as_the_chart_user_with_the_chart_command() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    user = re.search(r"^USER (\d+):(\d+)$", FINAL, re.MULTILINE)
    assert user is not None, "USER must be numeric uid:gid (runAsNonRoot checks it)"
    uid, gid = int(user[1]), int(user[2])
    assert uid != 0
    assert (uid, gid) == (
        values["podSecurityContext"]["runAsUser"],
        values["podSecurityContext"]["runAsGroup"],
    )
    assert 'ENTRYPOINT ["bridge"]' in FINAL
    cmd = re.search(r"^CMD (\[.*\])$", FINAL, re.MULTILINE)
    assert cmd is not None
    pod = (CHART / "templates" / "_pod.tpl").read_text()  # the Deployment's and StatefulSet's
    assert f"args: {cmd[1]}" in pod
    assert f"EXPOSE {values['metrics']['port']}" in FINAL


@pytest.mark.tools
def test_the_wheel_carries_the_schemas_and_the_command(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("bridge-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for topic in TOPICS:
        assert f"bridge/schemas/{topic}/v1.avsc" in names, topic
    assert "bridge/dev/kafka/pom.xml" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "bridge = bridge.cli:main" in text


@pytest.mark.unit
def test_the_image_deletes_the_lab_and_its_commands_say_so_in_one_line(tmp_path: Path) -> None:
    """bridge/dev deleted from a copy of the package, as the image does: the service still
    imports and `bridge simulate` / `bridge demo` exit 2 with one line."""
    site = tmp_path / "site"
    shutil.copytree(ROOT / "bridge", site / "bridge", ignore=shutil.ignore_patterns("__pycache__"))
    # As in the image: the copy and the dependencies, nothing else. -S skips the .pth files,
    # so the checkout's editable install cannot serve `bridge.dev` behind the copy's back; -P
    # and a cwd outside the checkout keep the checkout off sys.path.
    paths = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sorted(paths)])}

    def python(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-S", "-P", *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )

    where = python("-c", "import bridge; print(bridge.__file__)")
    assert where.stdout.strip() == str(site / "bridge" / "__init__.py"), where
    shutil.rmtree(site / "bridge" / "dev")
    assert (ROOT / "bridge" / "dev").is_dir()
    service = python("-c", "import bridge.app, bridge.cli")
    assert service.returncode == 0, service.stderr
    for command in (["simulate", "aquanow"], ["demo", "--count", "1"]):
        done = python("-m", "bridge", *command)
        assert done.returncode == 2, done.stderr
        assert done.stdout == ""
        assert done.stderr.count("\n") == 1, done.stderr
        assert f"`{command[0]}` needs bridge.dev" in done.stderr
