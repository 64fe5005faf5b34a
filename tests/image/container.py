"""The bridge's image, run without a Docker engine: one buildah working container per use,
with the root filesystem mounted read-only the way Kubernetes' `readOnlyRootFilesystem` does
(an `EROFS` for any write), `/tmp` a tmpfs (the chart's emptyDir), the host's network (the
broker and the simulators listen on 127.0.0.1) and the image's own user (USER 10001:10001).

buildah 1.28 has no `--read-only` for `buildah run`: the container's overlay mount is
remounted read-only from the host instead, after one `true` run has let buildah create its
mount points. buildah also recreates `/run/.containerenv` on every run, so `/run` gets a small
root-owned tmpfs first (not writable by the bridge's user).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import pytest

IMAGE = os.environ.get("BRIDGE_IMAGE", "localhost/venue-bridge:ci")
MOUNT_POINT = "/etc/bridge"


def buildah(*args: str, timeout: float = 120) -> str:
    done = subprocess.run(
        ["buildah", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"buildah {' '.join(args)}: exit {done.returncode}\n{done.stderr}")
    return done.stdout.strip()


def _system(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=60)


class Container:
    """`with Container() as c: c.run("bridge", "--version")`; `config_dir` is bound read-only
    at /etc/bridge (the chart's mount point)."""

    def __init__(
        self,
        config_dir: Path | None = None,
        image: str = IMAGE,
        volumes: dict[Path, str] | None = None,
    ) -> None:
        self.image = image
        self.config_dir = config_dir
        self.volumes = volumes or {}  # more read-only binds: host dir → container path
        self.name = ""
        self.rootfs = Path()

    def __enter__(self) -> Container:
        if shutil.which("buildah") is None:
            pytest.fail("buildah is not installed: run `make image` (.ci/image.sh) first")
        if subprocess.run(
            ["buildah", "inspect", "--type", "image", self.image], capture_output=True, check=False
        ).returncode:
            pytest.fail(f"image {self.image} not built: run `make image` (.ci/image.sh) first")
        self.name = buildah("from", "--quiet", self.image)
        try:
            # buildah creates its mount points (/run/.containerenv, /etc/bridge, …) now.
            subprocess.run(self.command("true"), check=True, capture_output=True, timeout=120)
            self.rootfs = Path(buildah("mount", self.name))
            self.upper_before = self.upper_files()
            _system(
                "mount",
                "-t",
                "tmpfs",
                "-o",
                "size=1m,mode=0755",
                "bridge-run",
                f"{self.rootfs}/run",
            )
            _system("mount", "-o", "remount,ro", str(self.rootfs))
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._remove()

    def _remove(self) -> None:
        if self.rootfs != Path():
            subprocess.run(["umount", f"{self.rootfs}/run"], capture_output=True, check=False)
        subprocess.run(["buildah", "rm", self.name], capture_output=True, check=False)

    def upper_files(self) -> list[str]:
        """What the container changed in the image's filesystem (the overlay's upper dir)."""
        upper = self.rootfs.parent / "diff"
        return sorted(str(p.relative_to(upper)) for p in upper.rglob("*"))

    def command(self, *argv: str, env: dict[str, str] | None = None) -> list[str]:
        args = ["buildah", "run", "--isolation", "chroot", "--network", "host"]
        args += ["--mount", "type=tmpfs,destination=/tmp,tmpfs-size=16m"]
        if self.config_dir is not None:
            pod_volume(self.config_dir)
            args += ["--volume", f"{self.config_dir}:{MOUNT_POINT}:ro"]
        for host, inside in self.volumes.items():
            pod_volume(host)
            args += ["--volume", f"{host}:{inside}:ro"]
        for key, value in (env or {}).items():
            args += ["--env", f"{key}={value}"]
        return [*args, self.name, "--", *argv]

    def run(
        self, *argv: str, env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*argv, env=env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def popen(self, argv: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            return subprocess.Popen(self.command(*argv), stdout=out, stderr=subprocess.STDOUT)


def pod_volume(path: Path, gid: int = 10001) -> None:
    """Owner and modes as the chart's projected volume has them: files 0440, group = the
    pod's fsGroup (10001), so the bridge's user reads them and nobody writes them."""
    for p in [path, *path.rglob("*")]:
        os.chown(p, 0, gid)
        p.chmod(0o750 if p.is_dir() else 0o440)


def descendant(pid: int, argv0_suffix: str) -> int | None:
    """The process below `pid` (buildah run → chroot runtime → exec → the command) whose
    command line starts with something ending in `argv0_suffix`; chroot isolation shares the
    host's PID namespace, so it can be signalled and inspected from here."""
    children = {pid}
    found = None
    for _ in range(6):
        nxt: set[int] = set()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                stat = (proc / "stat").read_text()
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid in children:
                nxt.add(int(proc.name))
                if cmdline and cmdline[0].decode(errors="replace").endswith(argv0_suffix):
                    found = int(proc.name)
        children = nxt
    return found


def ids(pid: int) -> tuple[int, int]:
    """(real uid, real gid) of a process, from /proc."""
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(status["Uid"].split()[0]), int(status["Gid"].split()[0])
