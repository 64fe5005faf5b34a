"""The dev registry unpacks its bundle safely on every Python the package supports: with
tarfile's "data" filter where it exists (3.11.4+), with its own checks where it does not
(3.11.0-3.11.3, e.g. Debian 12's python3). Both paths run here wherever they can."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from bridge.dev.registry.server import DevRegistryError, extract_data

pytestmark = pytest.mark.unit

PATHS = [False, *([True] if hasattr(tarfile, "data_filter") else [])]


def archive(path: Path, *members: tarfile.TarInfo) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for member in members:
            data = b"x" * member.size if member.isfile() else None
            tar.addfile(member, io.BytesIO(data) if data is not None else None)
    return path


def entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = 3 if kind == tarfile.REGTYPE else 0
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


@pytest.mark.parametrize("stdlib_filter", PATHS)
def test_a_normal_bundle_is_extracted(tmp_path: Path, stdlib_filter: bool) -> None:
    bundle = archive(
        tmp_path / "ok.tar.gz",
        entry("app", tarfile.DIRTYPE),
        entry("app/runner.jar"),
        entry("app/lib/a.jar"),
        entry("app/current.jar", tarfile.SYMTYPE, "runner.jar"),
    )
    with tarfile.open(bundle) as tar:
        extract_data(tar, tmp_path / "out", stdlib_filter=stdlib_filter)
    assert (tmp_path / "out" / "app" / "lib" / "a.jar").read_bytes() == b"xxx"
    assert (tmp_path / "out" / "app" / "current.jar").resolve().name == "runner.jar"


@pytest.mark.parametrize("stdlib_filter", PATHS)
@pytest.mark.parametrize(
    "evil",
    [
        entry("../escaped.txt"),
        entry("app/up", tarfile.SYMTYPE, "../../outside"),
        entry("app/abs", tarfile.SYMTYPE, "/etc/passwd"),
        entry("app/hard", tarfile.LNKTYPE, "../outside"),
        entry("app/dev", tarfile.CHRTYPE),
    ],
    ids=lambda info: info.name,
)
def test_members_that_leave_the_target_are_refused(
    tmp_path: Path, stdlib_filter: bool, evil: tarfile.TarInfo
) -> None:
    bundle = archive(tmp_path / "evil.tar.gz", entry("app", tarfile.DIRTYPE), evil)
    with tarfile.open(bundle) as tar, pytest.raises((DevRegistryError, tarfile.TarError)):
        extract_data(tar, tmp_path / "out", stdlib_filter=stdlib_filter)
    assert not (tmp_path / "escaped.txt").exists()


@pytest.mark.parametrize("stdlib_filter", PATHS)
def test_an_absolute_name_never_lands_outside(tmp_path: Path, stdlib_filter: bool) -> None:
    """Refused here, made relative by the stdlib filter: either way, nothing outside."""
    outside = tmp_path / "absolute.txt"
    bundle = archive(tmp_path / "abs.tar.gz", entry(str(outside)))
    with tarfile.open(bundle) as tar:
        try:
            extract_data(tar, tmp_path / "out", stdlib_filter=stdlib_filter)
        except DevRegistryError:
            assert not stdlib_filter
        else:
            assert (tmp_path / "out" / str(outside).lstrip("/")).is_file()
    assert not outside.exists()
