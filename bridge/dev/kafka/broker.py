"""A real Apache Kafka broker for tests and local demos, without Docker.

Our machines (developers' and CI's) have no Docker engine, so the broker comes from Maven Central
jars (README.md "Development", docs/DESIGN.md "Local broker"): ``ensure_jars()`` fetches the
runtime classpath once into a cache, ``LocalKafka`` runs a single-node KRaft broker from it, and
``kafka_bootstrap()`` picks the best available broker in the project's order of preference
(external cluster, Docker via testcontainers, local jars). Nothing here ever skips: a missing
broker is an error. The fetch and process machinery is shared with the dev registry
(``bridge.dev.jvm``).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import hashlib
import importlib
import importlib.resources
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self

from aiokafka.admin import AIOKafkaAdminClient

from bridge.dev.jvm import (
    DEPENDENCY_PLUGIN,
    LOG_TAIL_LINES,
    DevServerError,
    JvmProcess,
    JvmServer,
    cache_root,
    cached,
    java,
    run_mvn,
    tail,
    wait_for,
)

__all__ = [
    "KAFKA_VERSION",
    "DevKafkaError",
    "KafkaEndpoint",
    "KafkaKind",
    "LocalKafka",
    "cache_root",
    "docker_available",
    "ensure_jars",
    "kafka_bootstrap",
    "probe_metadata",
]

KAFKA_VERSION = "3.9.1"
"""Broker version fetched by ``pom.xml``; part of the cache path so versions never mix."""

_PACKAGE = "bridge.dev.kafka"
_BIND_ERRORS = ("Address already in use", "BindException")

KafkaKind = Literal["external", "testcontainers", "local"]
DevKafkaError = DevServerError
"""A broker could not be provided; the message says why (and shows logs where there are any)."""


def _package_text(name: str) -> str:
    return importlib.resources.files(_PACKAGE).joinpath(name).read_text(encoding="utf-8")


def ensure_jars(*, timeout: float = 900.0) -> Path:
    """The directory holding the broker's runtime jars, fetched with mvn the first time (and
    again when ``pom.xml`` changes: the marker records its hash)."""
    pom_text = _package_text("pom.xml")

    def fetch(tmp: Path) -> Path:
        pom = tmp / "pom.xml"  # a copy, so mvn never writes next to the installed package
        pom.write_text(pom_text, encoding="utf-8")
        out_dir = tmp / "libs"
        args = [
            "-f",
            str(pom),
            f"{DEPENDENCY_PLUGIN}:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={out_dir}",
        ]
        run_mvn(args, tmp, timeout, "the Kafka jars")
        if not (out_dir / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file():
            raise DevKafkaError(f"mvn ran but fetched no kafka_2.13-{KAFKA_VERSION}.jar")
        return out_dir

    fingerprint = hashlib.sha256(pom_text.encode("utf-8")).hexdigest()
    return cached(cache_root() / f"kafka-{KAFKA_VERSION}", "libs", fingerprint, fetch)


def probe_metadata(bootstrap_servers: str, timeout: float = 10.0) -> list[str]:
    """Do one real metadata round trip (admin ``list_topics``) and return the topic names.

    An open port is not a ready broker: KRaft brokers accept connections before they serve
    requests. Runs its own event loop in a worker thread so it works from sync code and from
    inside a running event loop alike.
    """

    async def _probe() -> list[str]:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap_servers,
            client_id="bridge-devkafka-probe",
            request_timeout_ms=max(1000, int(timeout * 1000)),
        )
        try:
            await admin.start()
            topics: list[str] = await admin.list_topics()
            return sorted(topics)
        finally:
            await admin.close()

    def _run() -> list[str]:
        return asyncio.run(asyncio.wait_for(_probe(), timeout))

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="devkafka-probe") as pool:
        return pool.submit(_run).result(timeout + 5.0)


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def _free_ports(n: int) -> list[int]:
    """Distinct free loopback ports (all held open together so the kernel can't repeat one)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class LocalKafka(JvmServer):
    """A single-node KRaft broker (broker+controller in one JVM) run from the cached jars.

    Ports and data dir are chosen on the first ``start()`` and kept for ``restart()``, so data
    survives a ``kill()``. The JVM runs in its own process group, is stopped at interpreter
    exit, and (when started from the main thread) dies with this process even on SIGKILL.
    """

    def __init__(
        self,
        *,
        startup_timeout: float = 60.0,
        work_dir: Path | None = None,
        heap: str = "512m",
        extra_properties: Mapping[str, str] | None = None,
    ) -> None:
        self.startup_timeout = startup_timeout
        self._heap = heap
        self._extra = dict(extra_properties or {})
        self._owns_dir = work_dir is None
        self._work_dir: Path | None = work_dir
        self._port: int | None = None
        self._controller_port: int | None = None
        self._cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        self._jvm: JvmProcess | None = None
        self._formatted = False
        self._closed = False
        self.startup_seconds: float | None = None
        """Seconds the last successful start took (format, JVM launch, first metadata answer)."""

    # -- properties ---------------------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:<port>`` of the PLAINTEXT listener (fixed from the first start on)."""
        if self._port is None:
            raise DevKafkaError("LocalKafka has not been started yet")
        return f"127.0.0.1:{self._port}"

    @property
    def port(self) -> int | None:
        return self._port

    @property
    def controller_port(self) -> int | None:
        return self._controller_port

    @property
    def work_dir(self) -> Path:
        if self._work_dir is None:
            raise DevKafkaError("LocalKafka has not been started yet")
        return self._work_dir

    @property
    def data_dir(self) -> Path:
        return self.work_dir / "data"

    @property
    def log_path(self) -> Path:
        """Broker stdout+stderr (and the format step's output), appended across restarts."""
        return self.work_dir / "broker.log"

    @property
    def pid(self) -> int | None:
        return self._jvm.pid if self._jvm is not None else None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the broker and block until it answers a metadata request."""
        if self.is_running and not self._closed:
            return self
        libs = self._prepare()
        first = self._port is None
        attempts = 3 if first else 1  # fresh ports may be raced by another process: retry then
        for attempt in range(1, attempts + 1):
            if first:
                self._port, self._controller_port = _free_ports(2)
            try:
                self._await_ready(self._spawn(libs))
                return self
            except DevKafkaError:
                assert self._jvm is not None
                if attempt < attempts and any(e in self.log_tail(200) for e in _BIND_ERRORS):
                    self._jvm.note(f"port clash, retrying with new ports (attempt {attempt})")
                    continue
                raise
        raise AssertionError("unreachable")

    def kill(self) -> None:
        """SIGKILL the broker now (crash simulation); the data dir is kept for ``restart()``."""
        if self._jvm is not None:
            self._jvm.kill()

    def restart(self) -> Self:
        """Start again on the same ports with the same data dir (stops first if running)."""
        if self._port is None:
            raise DevKafkaError("restart() needs a broker that was started before")
        self.stop()
        return self.start()

    def close(self, stop_timeout: float = 20.0) -> None:
        """Stop the broker and delete its temp dir (only if this object created it)."""
        try:
            self.stop(stop_timeout)
        finally:
            self._closed = True
            if self._owns_dir and self._work_dir is not None:
                shutil.rmtree(self._work_dir, ignore_errors=True)

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"LocalKafka(port={self._port}, controller_port={self._controller_port}, {state})"

    # -- internals ----------------------------------------------------------------------------

    def _properties(self) -> dict[str, str]:
        b, c = self._port, self._controller_port
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            # Static voters + format without --standalone: same config works on 3.9 and 4.x.
            "controller.quorum.voters": f"1@127.0.0.1:{c}",
            "listeners": f"PLAINTEXT://127.0.0.1:{b},CONTROLLER://127.0.0.1:{c}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{b}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            # A single node can't satisfy the production defaults of 3 replicas.
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "group.initial.rebalance.delay.ms": "0",
            # Fleet tests use session timeouts of a few seconds (Kafka's floor is 6 s).
            "group.min.session.timeout.ms": "1000",
            # Sized for a 2-core box.
            "num.network.threads": "2",
            "num.io.threads": "2",
            "log.cleaner.dedupe.buffer.size": "33554432",
            # After a SIGKILL the controller refuses the restarted broker's registration
            # (DUPLICATE_BROKER_REGISTRATION) until the dead incarnation's session expires:
            # 9 s by default, which made every kill/restart take ~15 s. 3 s keeps the window
            # short yet well above any GC pause of a 512 MB SerialGC heap.
            "broker.heartbeat.interval.ms": "500",
            "broker.session.timeout.ms": "3000",
            "auto.create.topics.enable": "true",
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
        }
        props.update(self._extra)
        return props

    def _prepare(self) -> Path:
        """The jars, the work dir and the process handle, before a (re)start."""
        if self._closed:
            raise DevKafkaError("LocalKafka was closed; create a new one")
        libs = ensure_jars()
        if self._work_dir is None:
            self._work_dir = Path(tempfile.mkdtemp(prefix="bridge-devkafka-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._jvm = JvmProcess(self.log_path, "devkafka")
        return libs

    def _write_config(self) -> tuple[Path, Path]:
        work = self.work_dir
        props_path = work / "server.properties"
        props_path.write_text(
            "".join(f"{k}={v}\n" for k, v in self._properties().items()), encoding="utf-8"
        )
        log4j = work / "log4j.properties"
        log4j.write_text(_package_text("log4j.properties"), encoding="utf-8")
        return props_path, log4j

    def _format_storage(self, libs: Path) -> None:
        """Format the data dir once (a JVM of its own; a cluster formats its nodes at once)."""
        if not self._formatted:
            props_path, log4j = self._write_config()
            self._format(java(), f"{libs}{os.sep}*", props_path, log4j)

    def _spawn(self, libs: Path) -> float:
        """Write the config, format if needed, start the JVM; returns when it started."""
        assert self._jvm is not None
        t0 = time.monotonic()
        self._format_storage(libs)
        props_path, log4j = self._write_config()
        self._jvm.start(
            [
                java(),
                f"-Xms{self._heap}",
                f"-Xmx{self._heap}",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-XX:+ExitOnOutOfMemoryError",
                "-Djava.awt.headless=true",
                f"-Dlog4j.configuration=file:{log4j}",
                "-cp",
                f"{libs}{os.sep}*",  # the JVM expands the wildcard itself
                "kafka.Kafka",
                str(props_path),
            ],
            cwd=self.work_dir,
        )
        return t0

    def _await_ready(self, t0: float) -> None:
        assert self._jvm is not None

        def ready(remaining: float) -> bool:
            assert self._port is not None
            if not _port_open(self._port):
                return False
            probe_metadata(self.bootstrap_servers, timeout=min(remaining, 10.0))
            return True

        self._jvm.wait_ready(
            ready, t0 + self.startup_timeout, f"Kafka broker on {self.bootstrap_servers}"
        )
        self.startup_seconds = time.monotonic() - t0
        self._jvm.note(f"broker ready after {self.startup_seconds:.1f}s")

    def _format_args(self) -> list[str]:
        """More `StorageTool format` arguments (the secured broker's SCRAM users)."""
        return []

    def _format(self, java_bin: str, classpath: str, props: Path, log4j: Path) -> None:
        assert self._jvm is not None
        cmd = [
            java_bin,
            "-Xmx256m",
            "-XX:TieredStopAtLevel=1",
            f"-Dlog4j.configuration=file:{log4j}",
            "-cp",
            classpath,
            "kafka.tools.StorageTool",
            "format",
            # `=` form: a base64 id may start with "-", which argparse would take for an option.
            f"--cluster-id={self._cluster_id}",
            "-c",
            str(props),
            "--ignore-formatted",
            *self._format_args(),
        ]
        self._jvm.note(f"formatting storage: {' '.join(cmd)}")
        with self.log_path.open("ab") as log:
            try:
                res = subprocess.run(  # noqa: S603 - fixed argv, no shell
                    cmd,
                    cwd=self.work_dir,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=120,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise DevKafkaError(
                    f"kafka StorageTool format timed out; log {self.log_path}:\n{self.log_tail()}"
                ) from exc
        if res.returncode != 0:
            raise DevKafkaError(
                f"kafka StorageTool format failed (exit {res.returncode}); "
                f"log {self.log_path}:\n{self.log_tail()}"
            )
        self._formatted = True


# --------------------------------------------------------------------------------------------
# Preference order
# --------------------------------------------------------------------------------------------


@dataclass
class KafkaEndpoint:
    """What tests and the demo get: where the broker is, what kind, and handles to control it."""

    bootstrap_servers: str
    kind: KafkaKind
    local: LocalKafka | None = None
    """The broker process when ``kind == "local"`` (tests may kill/restart it)."""
    container: Any = field(default=None, repr=False)
    """The testcontainers ``KafkaContainer`` when ``kind == "testcontainers"``."""

    def log_tail(self, n: int = LOG_TAIL_LINES) -> str:
        """Last ``n`` lines of the broker's log, where we have one ("" for external)."""
        if self.local is not None:
            return self.local.log_tail(n)
        if self.container is not None:
            with contextlib.suppress(Exception):
                out, err = self.container.get_logs()
                return tail((bytes(out) + bytes(err)).decode("utf-8", errors="replace"), n)
        return ""


def docker_available(timeout: float = 3.0) -> bool:
    """True if a Docker engine answers a ping (cheap; the CLI may exist without a daemon)."""
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if host.startswith("unix://") and not Path(host.removeprefix("unix://")).exists():
        # No engine socket. Asking docker-py would find the same, but it leaks the socket it
        # failed to connect (a ResourceWarning, an error under the tests' warning filter).
        return False
    try:
        docker: Any = importlib.import_module("docker")
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


_MODES = ("auto", "external", "testcontainers", "local")


@contextlib.contextmanager
def kafka_bootstrap(
    *, mode: str | None = None, startup_timeout: float = 60.0
) -> Iterator[KafkaEndpoint]:
    """Yield a reachable broker in the project's order of preference (README.md, "Development").

    1. ``KAFKA_BOOTSTRAP_SERVERS`` set: that cluster (checked with a metadata round trip).
    2. A Docker engine answers: testcontainers' ``KafkaContainer`` in KRaft mode.
    3. Otherwise: ``LocalKafka`` from Maven Central jars.

    ``mode`` (default ``$BRIDGE_KAFKA_MODE`` or "auto") forces one of them. Never skips:
    any failure raises ``DevKafkaError``.
    """
    mode = mode or os.environ.get("BRIDGE_KAFKA_MODE") or "auto"
    if mode not in _MODES:
        raise DevKafkaError(f"unknown kafka mode {mode!r}; expected one of {_MODES}")
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()

    if mode == "external" or (mode == "auto" and external):
        if not external:
            raise DevKafkaError("mode 'external' needs KAFKA_BOOTSTRAP_SERVERS")
        wait_for(
            lambda timeout: probe_metadata(external, timeout=timeout),
            time.monotonic() + startup_timeout,
            f"KAFKA_BOOTSTRAP_SERVERS={external} did not answer a metadata request "
            f"within {startup_timeout:g}s",
        )
        yield KafkaEndpoint(bootstrap_servers=external, kind="external")
        return

    if mode == "testcontainers" or (mode == "auto" and docker_available()):
        try:
            from testcontainers.community.kafka import KafkaContainer
        except ImportError as exc:
            raise DevKafkaError("Docker is available but testcontainers is not installed") from exc
        with KafkaContainer().with_kraft() as container:
            yield KafkaEndpoint(
                bootstrap_servers=str(container.get_bootstrap_server()),
                kind="testcontainers",
                container=container,
            )
        return

    with LocalKafka(startup_timeout=startup_timeout) as broker:
        yield KafkaEndpoint(bootstrap_servers=broker.bootstrap_servers, kind="local", local=broker)
