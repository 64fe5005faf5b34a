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

import contextlib
import os
import shutil
import socket
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, Self

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
    wait_for,
)

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
_BIND_ERRORS: Final = ("Address already in use", "BindException", "Port(s) already bound")

RegistryKind = Literal["external", "local"]
DevRegistryError = DevServerError
"""A registry could not be provided; the message says why (with the log tail if any)."""


def ensure_registry(*, timeout: float = 900.0) -> Path:
    """The directory holding Apicurio's runner jar, fetched with mvn the first time (the
    `-all.tar.gz` bundle, `dependency:copy`: no project needed, no plugin markers left)."""

    def fetch(tmp: Path) -> Path:
        args = [f"{DEPENDENCY_PLUGIN}:copy", f"-Dartifact={ARTIFACT}", f"-DoutputDirectory={tmp}"]
        run_mvn(args, tmp, timeout, "Apicurio Registry")
        bundle = tmp / f"apicurio-registry-app-{APICURIO_VERSION}-all.tar.gz"
        if not bundle.is_file():
            raise DevRegistryError(f"mvn ran but fetched no {bundle.name}")
        unpacked = tmp / "app"
        with tarfile.open(bundle) as tar:
            extract_data(tar, unpacked)
        if not (unpacked / _RUNNER).is_file():
            raise DevRegistryError(f"{bundle.name} has no {_RUNNER}")
        return unpacked

    base = cache_root() / f"apicurio-{APICURIO_VERSION}"
    return cached(base, "app", ARTIFACT, fetch, valid=lambda app: (app / _RUNNER).is_file())


def extract_data(tar: tarfile.TarFile, dest: Path, *, stdlib_filter: bool | None = None) -> None:
    """Extract `tar` into `dest` refusing what tarfile's "data" filter refuses: absolute names,
    names or links that leave `dest`, device files. Python 3.11.4+ has the filter
    (`extractall(filter="data")`); 3.11.0-3.11.3, e.g. Debian 12's python3, do not, so there
    the members are checked here first. `stdlib_filter` forces one path (for tests)."""
    if stdlib_filter is None:
        stdlib_filter = hasattr(tarfile, "data_filter")
    if stdlib_filter:
        tar.extractall(dest, filter="data")
        return
    root = dest.resolve()
    members = tar.getmembers()
    for member in members:
        target = (root / member.name).resolve()
        if os.path.isabs(member.name) or not target.is_relative_to(root):
            raise DevRegistryError(f"refusing to extract {member.name!r}: outside {dest}")
        if member.issym() or member.islnk():
            base = target.parent if member.issym() else root
            if os.path.isabs(member.linkname) or not (
                (base / member.linkname).resolve().is_relative_to(root)
            ):
                raise DevRegistryError(f"refusing link {member.name!r} -> {member.linkname!r}")
        elif not (member.isfile() or member.isdir()):
            raise DevRegistryError(f"refusing to extract {member.name!r}: not a file or directory")
    if hasattr(tarfile, "fully_trusted_filter"):  # a forced fallback: the default warns on 3.12+
        tar.extractall(dest, members=members, filter="fully_trusted")  # noqa: S202 - checked
    else:
        tar.extractall(dest, members=members)  # noqa: S202 - every member checked above


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def probe(url: str, timeout: float = 2.0) -> None:
    """One real API round trip (list subjects); raises when the registry does not answer."""
    with urllib.request.urlopen(f"{url}/subjects", timeout=timeout) as response:  # noqa: S310
        if response.status != 200:
            raise DevRegistryError(f"GET {url}/subjects answered {response.status}")


class LocalRegistry(JvmServer):
    """Apicurio Registry (in-memory storage) on a free loopback port, run from the cache."""

    def __init__(self, *, startup_timeout: float = 90.0, heap: str = "384m") -> None:
        self.startup_timeout = startup_timeout
        self._heap = heap
        self._work_dir: Path | None = None
        self._port: int | None = None
        self._jvm: JvmProcess | None = None
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

    def start(self) -> Self:
        """Start the registry and block until its Confluent API answers."""
        if self.is_running:
            return self
        app = ensure_registry()
        if self._work_dir is None:
            self._work_dir = Path(tempfile.mkdtemp(prefix="bridge-devregistry-"))
        self._jvm = JvmProcess(self.log_path, "devregistry")
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

    def close(self) -> None:
        """Stop and delete the work dir (logs included)."""
        try:
            self.stop()
        finally:
            if self._work_dir is not None:
                shutil.rmtree(self._work_dir, ignore_errors=True)
                self._work_dir = None

    def _launch(self, app: Path) -> None:
        assert self._work_dir is not None
        assert self._jvm is not None
        tmpdir = self._work_dir / "tmp"
        tmpdir.mkdir(exist_ok=True)
        t0 = time.monotonic()
        self._jvm.start(
            [
                java(),
                f"-Xmx{self._heap}",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-XX:+ExitOnOutOfMemoryError",
                f"-Djava.io.tmpdir={tmpdir}",
                "-Dquarkus.http.host=127.0.0.1",
                f"-Dquarkus.http.port={self._port}",
                "-jar",
                str(app / _RUNNER),
            ],
            cwd=self._work_dir,
        )

        def ready(remaining: float) -> bool:
            probe(self.url)
            return True

        self._jvm.wait_ready(ready, t0 + self.startup_timeout, f"Apicurio Registry at {self.url}")
        self.startup_seconds = time.monotonic() - t0
        self._jvm.note(f"started in {self.startup_seconds:.1f}s")


@dataclass
class RegistryEndpoint:
    """What tests get: the Confluent-API base URL, its kind, and the local server if any."""

    url: str
    kind: RegistryKind
    local: LocalRegistry | None = None

    def log_tail(self, n: int = LOG_TAIL_LINES) -> str:
        return self.local.log_tail(n) if self.local is not None else ""


@contextlib.contextmanager
def registry_endpoint(*, startup_timeout: float = 90.0) -> Iterator[RegistryEndpoint]:
    """`SCHEMA_REGISTRY_URL` if set (checked with a real request), else a local
    Apicurio Registry. Never skips: any failure raises `DevRegistryError`."""
    external = os.environ.get("SCHEMA_REGISTRY_URL", "").strip().rstrip("/")
    if external:
        wait_for(
            lambda timeout: probe(external, timeout),
            time.monotonic() + startup_timeout,
            f"SCHEMA_REGISTRY_URL={external} did not answer GET /subjects "
            f"within {startup_timeout:g}s",
        )
        yield RegistryEndpoint(url=external, kind="external")
        return
    with LocalRegistry(startup_timeout=startup_timeout) as server:
        yield RegistryEndpoint(url=server.url, kind="local", local=server)
