"""What the dev servers (bridge.dev.kafka, bridge.dev.registry) share: artifacts fetched from Maven
Central once into a cache, and a JVM child run in its own process group with a log file.

Our machines have no Docker engine, so the broker and the registry the tests use are Java
programs from Maven Central. Fetches are cached behind a marker file, done in a temp dir that is
renamed into place, under a file lock: an interrupted or concurrent fetch never leaves something
that merely looks complete. A JVM dies with this process even on SIGKILL (parent-death signal,
when started from the main thread), is stopped at interpreter exit, and counts as ready only
when a real API call answers. Nothing here skips: every failure raises with the log's tail.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import Final, Protocol, Self, TypeVar

DEPENDENCY_PLUGIN: Final = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
LOG_TAIL_LINES: Final = 60
_MARKER: Final = ".complete"
S = TypeVar("S", bound="DevServer")


class DevServerError(RuntimeError):
    """A dev server could not be provided; the message says why (with its log tail if any)."""


def cache_root() -> Path:
    """Cache root shared by all checkouts: ``$BRIDGE_CACHE_DIR`` or ``~/.cache/bridge``."""
    env = os.environ.get("BRIDGE_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "bridge"


def tail(text: str, n: int) -> str:
    return "\n".join(text.splitlines()[-n:])


def cached(
    base: Path,
    name: str,
    fingerprint: str,
    build: Callable[[Path], Path],
    valid: Callable[[Path], bool] = Path.is_dir,
) -> Path:
    """`base/name`, built by `build(tmp_dir)` (which returns the directory to move into place)
    unless the marker already vouches for it (`fingerprint`: what it was built from)."""
    target, marker = base / name, base / _MARKER

    def complete() -> bool:
        try:
            return marker.read_text("utf-8").strip() == fingerprint and valid(target)
        except OSError:
            return False

    if complete():
        return target
    base.mkdir(parents=True, exist_ok=True)
    with (base / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be fetching right now
        if complete():
            return target
        tmp = Path(tempfile.mkdtemp(prefix="fetch-", dir=base))
        try:
            built = build(tmp)
            marker.unlink(missing_ok=True)
            if target.exists():
                shutil.rmtree(target)  # stale or from another version: no marker vouches for it
            built.rename(target)
            marker.write_text(fingerprint + "\n", "utf-8")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def run_mvn(args: list[str], cwd: Path, timeout: float, what: str) -> str:
    """Run Maven (batch, quiet); its output, or a `DevServerError` naming `what` with mvn's tail."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise DevServerError(f"mvn not found on PATH: Maven is needed to fetch {what}")
    cmd = [mvn, "-B", "-q", *args]
    try:
        res = subprocess.run(  # noqa: S603 - fixed argv, no shell
            cmd,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.output if isinstance(exc.output, str) else ""
        raise DevServerError(
            f"mvn did not fetch {what} within {timeout:.0f}s:\n{tail(out, 40)}"
        ) from exc
    if res.returncode != 0:
        raise DevServerError(
            f"mvn failed to fetch {what} (exit {res.returncode}): {' '.join(cmd)}\n"
            f"{tail(res.stdout, 40)}"
        )
    return res.stdout


def java() -> str:
    """The `java` of `$JAVA_HOME`, else the one on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise DevServerError("java not found (set JAVA_HOME or put java on PATH); need JDK 17+")
    return found


def wait_for(probe: Callable[[float], object], deadline: float, failure: str) -> None:
    """Call `probe(timeout)` until it succeeds or `deadline` (monotonic) passes: for servers
    someone else runs (an external cluster may still be starting). `failure` starts the
    error's message."""
    while True:
        try:
            probe(max(1.0, min(10.0, deadline - time.monotonic())))
            return
        except Exception as exc:
            if time.monotonic() >= deadline:
                raise DevServerError(f"{failure}: {exc!r}") from exc
            time.sleep(0.5)  # poll interval, bounded by the deadline above


# JVMs started and not yet stopped, stopped at interpreter exit. The exit hook is registered
# by the first start, not at import: importing this module changes nothing.
_LIVE: set[JvmProcess] = set()
_LIVE_LOCK = threading.Lock()
_exit_hook_registered = False


def _stop_all_at_exit() -> None:
    with _LIVE_LOCK:
        processes = list(_LIVE)
    for process in processes:
        with contextlib.suppress(Exception):
            process.stop(10.0)


def _track(process: JvmProcess) -> None:
    global _exit_hook_registered
    with _LIVE_LOCK:
        if not _exit_hook_registered:
            atexit.register(_stop_all_at_exit)
            _exit_hook_registered = True
        _LIVE.add(process)


class JvmProcess:
    """One JVM child process: its own process group, output appended to `log_path`."""

    def __init__(self, log_path: Path, name: str) -> None:
        self.log_path = log_path
        self.name = name
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def note(self, text: str) -> None:
        """A line of our own in the log, so it reads as one story with the JVM's."""
        with self.log_path.open("a", encoding="utf-8") as f:
            f.write(f"[bridge.{self.name} {time.strftime('%H:%M:%S')}] {text}\n")

    def start(self, cmd: list[str], cwd: Path) -> None:
        setpriv = shutil.which("setpriv")
        if setpriv and threading.current_thread() is threading.main_thread():
            # Parent-death signal: the JVM dies even if Python is SIGKILLed (atexit can't run).
            # Only from the main thread: the signal fires when the *forking thread* exits.
            cmd = [setpriv, "--pdeathsig", "KILL", "--", *cmd]
        self.note(f"starting: {' '.join(cmd)}")
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                cmd,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _track(self)

    def wait_ready(self, ready: Callable[[float], bool], deadline: float, what: str) -> None:
        """Poll `ready(remaining_seconds)` until it is true; raise with the log's tail if the
        process exits or `deadline` (monotonic) passes. Kills the process on failure."""
        proc = self._proc
        assert proc is not None
        last_error: BaseException | None = None
        try:
            while True:
                rc = proc.poll()
                if rc is not None:
                    raise DevServerError(
                        f"{what} exited with code {rc} during startup; last lines of "
                        f"{self.log_path}:\n{self.log_tail()}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DevServerError(
                        f"{what} did not answer in time (last error: {last_error!r}); last "
                        f"lines of {self.log_path}:\n{self.log_tail()}"
                    )
                try:
                    if ready(remaining):
                        return
                except Exception as exc:
                    last_error = exc
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=0.2)  # poll interval, or the process exited
        except BaseException:
            self.kill()
            raise

    def signal(self, sig: signal.Signals) -> None:
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, sig)  # the JVM leads its own process group

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.note(f"ignored SIGTERM for {timeout:.0f}s, sending SIGKILL")
                self.signal(signal.SIGKILL)
                proc.wait(10.0)
        self._forget()

    def kill(self) -> None:
        """SIGKILL now (crash simulation)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self.signal(signal.SIGKILL)
            proc.wait(10.0)
        self._forget()

    def _forget(self) -> None:
        self._proc = None
        with _LIVE_LOCK:
            _LIVE.discard(self)

    def log_tail(self, n: int = LOG_TAIL_LINES) -> str:
        """Last `n` lines of the log ("" if there is none yet)."""
        try:
            return tail(self.log_path.read_bytes().decode("utf-8", errors="replace"), n)
        except OSError:
            return ""


class JvmServer:
    """Lifecycle shared by LocalKafka and LocalRegistry: a `JvmProcess` once started."""

    _jvm: JvmProcess | None = None

    def start(self) -> Self:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    @property
    def is_running(self) -> bool:
        return self._jvm is not None and self._jvm.is_running

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds."""
        if self._jvm is not None:
            self._jvm.stop(timeout)

    def log_tail(self, n: int = LOG_TAIL_LINES) -> str:
        """Last `n` lines of the server's log ("" if there is none yet)."""
        return self._jvm.log_tail(n) if self._jvm is not None else ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class DevServer(Protocol):
    startup_seconds: float | None

    @property
    def log_path(self) -> Path: ...

    @property
    def is_running(self) -> bool: ...

    def log_tail(self, n: int = LOG_TAIL_LINES) -> str: ...


def serve(
    argv: list[str] | None,
    *,
    prog: str,
    description: str,
    what: str,
    fetch: Callable[[], Path],
    server: Callable[[float], AbstractContextManager[S]],
    announce: Callable[[S], str],
    startup_timeout: float,
) -> int:
    """`python -m bridge.dev.kafka` / `bridge.dev.registry`: fetch only, or run the server until
    Ctrl-C / SIGTERM. `announce(server)` goes to stdout (e.g. `KAFKA_BOOTSTRAP_SERVERS=…`, so a
    shell can grep it); everything else to stderr."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--fetch-only", action="store_true", help="only fetch into the cache")
    parser.add_argument("--startup-timeout", type=float, default=startup_timeout)
    args = parser.parse_args(argv)
    try:
        if args.fetch_only:
            started = time.monotonic()
            where = fetch()
            print(f"{what} ready in {where} ({time.monotonic() - started:.1f}s)", file=sys.stderr)
            return 0
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        with server(args.startup_timeout) as running:
            print(
                f"{what} ready in {running.startup_seconds:.1f}s; log: {running.log_path}; "
                "Ctrl-C to stop",
                file=sys.stderr,
            )
            print(announce(running), flush=True)
            while not stop.wait(0.5):
                if not running.is_running:
                    print(f"{what} died; last log lines:\n{running.log_tail()}", file=sys.stderr)
                    return 1
            print(f"stopping {what}...", file=sys.stderr)
    except DevServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
