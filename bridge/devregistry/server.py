"""A real schema registry for tests and local runs, without Docker: Apicurio Registry.

Confluent's Schema Registry is not on Maven Central and Karapace is not on PyPI; Apicurio
Registry is on Central as a runnable bundle (`apicurio-registry-app-<v>-all.tar.gz`) and serves
the Confluent API under `/apis/ccompat/v7`. `ensure_registry()` fetches and unpacks the bundle
once into the cache shared with the Kafka jars; `LocalRegistry` runs it on a free loopback port
with in-memory storage (every start is empty); `registry_endpoint()` picks an external registry
(`SCHEMA_REGISTRY_URL`) or a local one. Nothing here skips: a missing registry is an error.

Why 2.6.13.Final: it runs on Java 11+ and Central has every POM it needs. The 3.0.x bundle's
parent POM is missing from Central (a stand-in must be installed into ~/.m2 to fetch it), and
3.3.x needs Java 21. 2.6.13 also answers `PUT /config` with Confluent's own key names.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Literal, Self

from bridge.devkafka import cache_root

__all__ = [
    "APICURIO_VERSION",
    "CCOMPAT_PATH",
    "DevRegistryError",
    "LocalRegistry",
    "RegistryEndpoint",
    "ensure_registry",
    "registry_endpoint",
]

APICURIO_VERSION: Final = "2.6.13.Final"
ARTIFACT: Final = f"io.apicurio:apicurio-registry-app:{APICURIO_VERSION}:tar.gz:all"
CCOMPAT_PATH: Final = "/apis/ccompat/v7"
_RUNNER: Final = f"apicurio-registry-app-{APICURIO_VERSION}-runner.jar"
_DEPENDENCY_PLUGIN: Final = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
_MARKER: Final = ".complete"
_LOG_TAIL_LINES: Final = 60
_BIND_ERRORS: Final = ("Address already in use", "BindException", "Port(s) already bound")

RegistryKind = Literal["external", "local"]


class DevRegistryError(RuntimeError):
    """A registry could not be provided; the message says why (with the log tail if any)."""


def _tail(text: str, n: int) -> str:
    return "\n".join(text.splitlines()[-n:])


def ensure_registry(*, timeout: float = 900.0) -> Path:
    """The directory holding Apicurio's runner jar, fetching it with mvn the first time.

    Same discipline as the Kafka jars: a marker names the artifact, the fetch goes to a temp
    dir renamed into place under a file lock, so a half-done fetch never looks complete.
    """
    base = cache_root() / f"apicurio-{APICURIO_VERSION}"
    app = base / "app"
    marker = base / _MARKER

    def complete() -> bool:
        try:
            return marker.read_text("utf-8").strip() == ARTIFACT and (app / _RUNNER).is_file()
        except OSError:
            return False

    if complete():
        return app
    base.mkdir(parents=True, exist_ok=True)
    with (base / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be fetching right now
        if complete():
            return app
        tmp = Path(tempfile.mkdtemp(prefix="fetch-", dir=base))
        try:
            bundle = _fetch_bundle(tmp, timeout)
            unpacked = tmp / "app"
            with tarfile.open(bundle) as tar:
                tar.extractall(unpacked, filter="data")
            if not (unpacked / _RUNNER).is_file():
                raise DevRegistryError(f"{bundle.name} has no {_RUNNER}")
            marker.unlink(missing_ok=True)
            if app.exists():
                shutil.rmtree(app)  # stale or from another version: no marker vouches for it
            unpacked.rename(app)
            marker.write_text(ARTIFACT + "\n", "utf-8")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return app


def _fetch_bundle(tmp: Path, timeout: float) -> Path:
    """`mvn dependency:copy` of the `-all.tar.gz` bundle (no project needed, no markers left)."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise DevRegistryError("mvn not found on PATH: Maven is needed to fetch Apicurio Registry")
    cmd = [
        mvn,
        "-B",
        "-q",
        f"{_DEPENDENCY_PLUGIN}:copy",
        f"-Dartifact={ARTIFACT}",
        f"-DoutputDirectory={tmp}",
    ]
    try:
        res = subprocess.run(  # noqa: S603 - fixed argv, no shell
            cmd,
            cwd=tmp,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.output if isinstance(exc.output, str) else ""
        raise DevRegistryError(
            f"mvn did not fetch Apicurio Registry within {timeout:.0f}s:\n{_tail(out, 40)}"
        ) from exc
    bundle = tmp / f"apicurio-registry-app-{APICURIO_VERSION}-all.tar.gz"
    if res.returncode != 0 or not bundle.is_file():
        raise DevRegistryError(
            f"mvn failed to fetch Apicurio Registry (exit {res.returncode}): "
            f"{' '.join(cmd)}\n{_tail(res.stdout, 40)}"
        )
    return bundle


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def probe(url: str, timeout: float = 2.0) -> None:
    """One real API round trip (list subjects); raises when the registry does not answer."""
    with urllib.request.urlopen(f"{url}/subjects", timeout=timeout) as response:  # noqa: S310
        if response.status != 200:
            raise DevRegistryError(f"GET {url}/subjects answered {response.status}")


_LIVE: set[LocalRegistry] = set()
_LIVE_LOCK = threading.Lock()


def _cleanup_at_exit() -> None:
    with _LIVE_LOCK:
        servers = list(_LIVE)
    for server in servers:
        with contextlib.suppress(Exception):
            server.close()


atexit.register(_cleanup_at_exit)


class LocalRegistry:
    """Apicurio Registry (in-memory storage) on a free loopback port, run from the cache."""

    def __init__(self, *, startup_timeout: float = 90.0, heap: str = "384m") -> None:
        self.startup_timeout = startup_timeout
        self._heap = heap
        self._work_dir: Path | None = None
        self._port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None
        """Seconds the last start took (JVM launch until the API answered)."""

    @property
    def url(self) -> str:
        """The Confluent-API base URL, e.g. http://127.0.0.1:41234/apis/ccompat/v7."""
        if self._port is None:
            raise DevRegistryError("LocalRegistry has not been started yet")
        return f"http://127.0.0.1:{self._port}{CCOMPAT_PATH}"

    @property
    def log_path(self) -> Path:
        if self._work_dir is None:
            raise DevRegistryError("LocalRegistry has not been started yet")
        return self._work_dir / "registry.log"

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        """Start the registry and block until its Confluent API answers."""
        if self.is_running:
            return self
        app = ensure_registry()
        if self._work_dir is None:
            self._work_dir = Path(tempfile.mkdtemp(prefix="bridge-devregistry-"))
        with _LIVE_LOCK:
            _LIVE.add(self)
        for attempt in (1, 2, 3):  # a free port may be raced by another process: retry then
            self._port = _free_port()
            try:
                self._launch(app)
                return self
            except DevRegistryError:
                if attempt < 3 and any(e in self.log_tail(200) for e in _BIND_ERRORS):
                    continue
                raise
        raise AssertionError("unreachable")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                proc.wait(10.0)
        self._proc = None

    def close(self) -> None:
        """Stop and delete the work dir (logs included)."""
        try:
            self.stop()
        finally:
            with _LIVE_LOCK:
                _LIVE.discard(self)
            if self._work_dir is not None:
                shutil.rmtree(self._work_dir, ignore_errors=True)
                self._work_dir = None

    def log_tail(self, n: int = _LOG_TAIL_LINES) -> str:
        if self._work_dir is None:
            return ""
        try:
            return _tail(self.log_path.read_bytes().decode("utf-8", errors="replace"), n)
        except OSError:
            return ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _signal(self, sig: signal.Signals) -> None:
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, sig)

    def _java(self) -> str:
        java_home = os.environ.get("JAVA_HOME")
        if java_home and (Path(java_home) / "bin" / "java").is_file():
            return str(Path(java_home) / "bin" / "java")
        java = shutil.which("java")
        if java is None:
            raise DevRegistryError("java not found (set JAVA_HOME or put java on PATH)")
        return java

    def _launch(self, app: Path) -> None:
        assert self._work_dir is not None
        tmpdir = self._work_dir / "tmp"
        tmpdir.mkdir(exist_ok=True)
        cmd = [
            self._java(),
            f"-Xmx{self._heap}",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-XX:+ExitOnOutOfMemoryError",
            f"-Djava.io.tmpdir={tmpdir}",
            "-Dquarkus.http.host=127.0.0.1",
            f"-Dquarkus.http.port={self._port}",
            "-jar",
            str(app / _RUNNER),
        ]
        setpriv = shutil.which("setpriv")
        if setpriv and threading.current_thread() is threading.main_thread():
            # Parent-death signal: the JVM dies even if Python is SIGKILLed (atexit can't run).
            cmd = [setpriv, "--pdeathsig", "KILL", "--", *cmd]
        t0 = time.monotonic()
        with self.log_path.open("ab") as log:
            log.write(f"[bridge.devregistry] starting: {' '.join(cmd)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                cmd,
                cwd=self._work_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready(t0 + self.startup_timeout)
        except BaseException:
            self._signal(signal.SIGKILL)
            if self._proc is not None:
                self._proc.wait(10.0)
            self._proc = None
            raise
        self.startup_seconds = time.monotonic() - t0

    def _wait_ready(self, deadline: float) -> None:
        proc = self._proc
        assert proc is not None
        last_error: BaseException | None = None
        while True:
            rc = proc.poll()
            if rc is not None:
                raise DevRegistryError(
                    f"Apicurio Registry exited with code {rc} during startup; "
                    f"last lines of {self.log_path}:\n{self.log_tail()}"
                )
            if time.monotonic() >= deadline:
                raise DevRegistryError(
                    f"Apicurio Registry at {self.url} did not answer within "
                    f"{self.startup_timeout:g}s (last error: {last_error!r}); "
                    f"last lines of {self.log_path}:\n{self.log_tail()}"
                )
            try:
                probe(self.url)
                return
            except (OSError, DevRegistryError) as exc:
                last_error = exc
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.2)  # poll interval, or the process exited


@dataclass
class RegistryEndpoint:
    """What tests get: the Confluent-API base URL, its kind, and the local server if any."""

    url: str
    kind: RegistryKind
    local: LocalRegistry | None = None

    def log_tail(self, n: int = _LOG_TAIL_LINES) -> str:
        return self.local.log_tail(n) if self.local is not None else ""


@contextlib.contextmanager
def registry_endpoint(*, startup_timeout: float = 90.0) -> Iterator[RegistryEndpoint]:
    """`SCHEMA_REGISTRY_URL` if set (checked with a real request), else a local
    Apicurio Registry. Never skips: any failure raises `DevRegistryError`."""
    external = os.environ.get("SCHEMA_REGISTRY_URL", "").strip().rstrip("/")
    if external:
        deadline = time.monotonic() + startup_timeout
        while True:  # it may still be starting (e.g. a CI service)
            try:
                probe(external)
                break
            except (OSError, DevRegistryError) as exc:
                if time.monotonic() >= deadline:
                    raise DevRegistryError(
                        f"SCHEMA_REGISTRY_URL={external} did not answer GET /subjects "
                        f"within {startup_timeout:g}s: {exc!r}"
                    ) from exc
                time.sleep(0.5)  # poll interval, bounded by the deadline above
        yield RegistryEndpoint(url=external, kind="external")
        return
    with LocalRegistry(startup_timeout=startup_timeout) as server:
        yield RegistryEndpoint(url=server.url, kind="local", local=server)
