"""The container image built by `make image` (.ci/image.sh), run with buildah: it reports its
version, `bridge check` accepts the configs the Helm chart renders, and one end-to-end run
publishes the simulators' records to the real test broker, as user 10001, on a read-only
root filesystem (writes fail with EROFS; only /tmp is writable), with nothing changed in the
image's filesystem afterwards. The lab (simulators, dev broker, Maven launchers) and pip are
not in the image."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge import __version__
from bridge.dev.kafka import KafkaEndpoint
from bridge.dev.simulator.aquanow import AquanowSimulator
from bridge.dev.simulator.satori import SatoriSimulator
from bridge.dev.tls import PrivateCA
from tests.deploy.test_chart import (
    VALUES,
    config_map,
    documents,
    pod_mounts,
    rendered,
    secret_files,
)
from tests.e2e.scenario import (
    AQ_KEY,
    AQ_SECRET,
    SAT_KEY,
    SAT_WALLET,
    _expected,
    assert_matches,
    bridge_config,
)
from tests.helpers import BridgeProcess, collect, unique_topics
from tests.image.container import MOUNT_POINT, Container, descendant, ids

pytestmark = pytest.mark.image

USER = (10001, 10001)  # the Dockerfile's USER and the chart's runAsUser/runAsGroup


def test_version_user_and_read_only_root() -> None:
    with Container() as c:
        done = c.run("bridge", "--version")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"bridge {__version__}"
        probe = c.run(
            "python3",
            "-c",
            "import os\n"
            "print(os.getuid(), os.getgid())\n"
            "for p in ('/x', '/opt/bridge/x', '/etc/bridge.yaml', '/tmp/x'):\n"
            "    try:\n"
            "        open(p, 'w').close(); print(p, 'writable')\n"
            "    except OSError as e:\n"
            "        print(p, e.errno)",
        )
        assert probe.returncode == 0, probe.stderr
        lines = probe.stdout.splitlines()
        assert lines[0] == "10001 10001"
        assert lines[1:] == [
            "/x 30",
            "/opt/bridge/x 30",
            "/etc/bridge.yaml 30",
            "/tmp/x writable",  # noqa: S108 - inside the container
        ]


def test_no_lab_no_pip_in_the_image() -> None:
    with Container() as c:
        done = c.run(
            "python3",
            "-c",
            "import importlib.util as u\n"
            "print([m for m in ('bridge.dev', 'pip', 'setuptools') if u.find_spec(m)])",
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "[]"
        assert not list(c.rootfs.rglob("pom.xml")), "a Maven launcher is in the image"
        assert c.run("bridge", "simulate", "aquanow").returncode != 0


@pytest.mark.parametrize("case", VALUES)
def test_bridge_check_accepts_the_charts_config(case: str, tmp_path: Path) -> None:
    """The config the chart renders, with the Secret's files next to it, as the pod sees it."""
    docs = documents(rendered(case))
    text = config_map(docs)["data"]["bridge.yaml"]
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    (config_dir / "bridge.yaml").write_text(text)
    # Files named by absolute path live on another volume (extraVolumeMounts, e.g. a CSI
    # secret store): bound at the same path in the container.
    volumes: dict[Path, str] = {}
    tls = PrivateCA(tmp_path / "tls")
    for name in secret_files(yaml.safe_load(text)):
        if name.startswith(MOUNT_POINT + "/"):  # the projected volume itself: the config's dir
            path = config_dir / name.removeprefix(MOUNT_POINT + "/")
        elif name.startswith("/"):
            mount = max(
                (m["mountPath"] for m in pod_mounts(docs) if name.startswith(m["mountPath"] + "/")),
                key=len,
            )
            host = tmp_path / mount.strip("/").replace("/", "-")
            host.mkdir(exist_ok=True)
            volumes[host] = mount
            path = host / name.removeprefix(mount + "/")
        else:
            path = config_dir / name
        path.write_text(("0x" + "11" * 32) if "private" in name else "placeholder")
        if name.endswith((".crt", ".pem", ".key")):  # bridge check loads TLS files: real PEM
            pem = {".key": "server.key", ".crt": "ca.pem", ".pem": "ca.pem"}[Path(name).suffix]
            path.write_bytes(tls.path(pem).read_bytes())
    with Container(config_dir, volumes=volumes) as c:
        done = c.run(
            "bridge",
            "check",
            "--config",
            f"{MOUNT_POINT}/bridge.yaml",
            env={
                "SATORI_API_KEY": "placeholder",
                "AQUANOW_API_KEY": "k",
                "AQUANOW_API_SECRET": "s",
            },
        )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "config OK" in done.stdout


class ImageBridge(BridgeProcess):
    """`bridge run` inside the image: same config file (bound at /etc/bridge), same metrics
    port (host network), signalled directly (buildah run does not forward SIGTERM)."""

    def __init__(self, tmp_path: Path, config: dict[str, Any], container: Container) -> None:
        super().__init__(tmp_path, config)
        self.container = container

    def start(self) -> ImageBridge:
        self._log = self.log_path.open("ab")
        argv = ("bridge", "run", "--config", f"{MOUNT_POINT}/bridge.yaml")
        self.process = self.container.popen(argv, self.log_path)
        return self

    def bridge_pid(self) -> int:
        assert self.process is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pid = descendant(self.process.pid, "python3")
            if pid is not None:
                return pid
            time.sleep(0.1)
        raise AssertionError("the bridge process did not appear under buildah run")

    def stop(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            os.kill(self.bridge_pid(), signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
            self._log.close()


async def test_the_image_publishes_the_simulators_records(
    kafka: KafkaEndpoint, tmp_path: Path
) -> None:
    count = 40
    aquanow = AquanowSimulator(AQ_KEY, AQ_SECRET, rate=100, count=count, seed=61)
    satori = SatoriSimulator(
        SAT_KEY,
        SAT_WALLET,
        rate=100,
        count=count,
        seed=62,
        coins=("USD", "ETH"),
        pairs=("ETH-USD", "BTC-USD"),
    )
    topics = unique_topics()
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    async with aquanow, satori:
        config = bridge_config(kafka, topics, {"mode": "single-object"}, aquanow.url, satori.url)
        with Container(config_dir) as container:
            bridge = ImageBridge(config_dir, config, container).start()
            try:
                await bridge.wait_ready(timeout=90)
                pid = bridge.bridge_pid()
                assert ids(pid) == USER, "the bridge must run as the image's non-root user"
                await aquanow.finished.wait()
                await satori.finished.wait()
                expected = _expected(aquanow.sent, satori.sent)
                total = sum(len(v) for v in expected.values())
                await bridge.wait_metric("bridge_records_published_total", total, timeout=60)
                code = bridge.stop()
            finally:
                if bridge.process is not None and bridge.process.poll() is None:
                    bridge.process.kill()
            assert code == 0, bridge.log_text()[-4000:]
            changed = sorted(set(container.upper_files()) - set(container.upper_before))
            assert changed == [], f"written outside /tmp: {changed}"
    events = [e.get("event") for e in bridge.log_events()]
    assert "subscribed" in events, bridge.log_text()[-3000:]
    messages = await collect(
        kafka.bootstrap_servers,
        topics,
        lambda got: len(got) >= total,
        timeout=60,
    )
    for topic, want in expected.items():
        got = [m.record for m in messages if m.topic == topic]
        assert_matches(topic, got, want)
    # What the closing note quotes: the image's own log lines and the records it published.
    print(f"\n{len(messages)} records on {len(expected)} topics, published by pid {pid} {USER}")
    for line in bridge.log_text().splitlines():
        if any(
            f'"event": "{e}"' in line
            for e in ("producer started", "subscribed", "shutdown complete")
        ):
            print("  image log:", line[:240])
