"""Every startup failure is one line on stderr with its documented exit code, and none prints
a secret (issue 12): a YAML syntax error on a secret's line (pyyaml's snippet quoted the line),
an empty or unreadable secret file, an unreadable config file, the metrics port in use."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

SECRET = "s3cr3t-HMAC-value-0123456789"
PRIVATE = "0x2bf7cc40cfc5b2a43f60769d31191e82ed33aafb5e75be710271acd40a769564"


def bridge(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )


def config(tmp_path: Path, stream: str, **files: str | bytes) -> Path:
    for name, content in files.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    path = tmp_path / "bridge.yaml"
    path.write_text(
        "metrics: {host: 127.0.0.1, port: 9200}\n"
        "streams:\n"
        "  - name: s\n"
        '    url: "wss://venue.example/"\n' + stream
    )
    return path


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert result.stdout == ""
    return lines[0]


AQUANOW = "    venue: aquanow\n    api_key: k\n"
SATORI = "    venue: satori\n    api_key: k\n    coins: [USD]\n    pairs: [ETH-USD]\n"


@pytest.mark.parametrize(
    ("stream", "where"),
    [
        (AQUANOW + f'    api_secret: "{SECRET}\n', "line 8"),  # unterminated quote
        (AQUANOW + f"    api_secret: {SECRET}: x\n", "line 7"),  # a second colon
        (AQUANOW + f"    api_secret: {SECRET}\n\t  channels: []\n", "line 8"),  # a tab
        (SATORI + f"    private_key: {PRIVATE[:34]}\n  {PRIVATE[34:]}: [\n", "line 10"),
        (AQUANOW + f"    api_secret: >\n      {SECRET}\n     - x\n", "line 9"),  # in a block
    ],
)
def test_a_yaml_error_never_prints_the_line_it_is_on(
    tmp_path: Path, stream: str, where: str
) -> None:
    path = config(tmp_path, stream)
    for command in ("check", "run"):
        result = bridge(command, "--config", str(path), cwd=tmp_path)
        assert result.returncode == 2
        line = one_line(result)
        assert line.startswith(f"bridge: configuration error: {path}: not valid YAML at {where}")
        for secret in (SECRET, SECRET[:12], PRIVATE[2:20], PRIVATE[34:50]):
            assert secret not in result.stderr


@pytest.mark.parametrize("content", ["", "\n", "   \n\n"])
def test_an_empty_secret_file_is_refused_naming_the_key(tmp_path: Path, content: str) -> None:
    path = config(
        tmp_path, AQUANOW + "    api_secret_file: secret.txt\n", **{"secret.txt": content}
    )
    result = bridge("check", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert one_line(result) == (
        f"bridge: configuration error: streams[0].api_secret_file: {tmp_path}/secret.txt is empty"
    )


def test_an_empty_secret_value_is_refused_naming_the_key(tmp_path: Path) -> None:
    path = config(tmp_path, AQUANOW + '    api_secret: ""\n')
    result = bridge("check", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert one_line(result) == "bridge: configuration error: streams[0].api_secret: empty"


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ({"secret.txt": b"\xff\xfe" + SECRET.encode("utf-16-le")}, "is not UTF-8 text"),
        ({"secret.txt/x": ""}, "Is a directory"),
    ],
)
def test_an_unreadable_secret_file_is_one_line(
    tmp_path: Path, setup: dict[str, bytes | str], message: str
) -> None:
    for name in setup:
        if "/" in name:
            (tmp_path / name).parent.mkdir()
    files = {k: v for k, v in setup.items() if "/" not in k}
    path = config(tmp_path, AQUANOW + "    api_secret_file: secret.txt\n", **files)
    result = bridge("check", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 2
    line = one_line(result)
    assert line.startswith("bridge: configuration error: streams[0].api_secret_file: cannot read")
    assert message in line
    assert SECRET not in result.stderr


def test_an_unreadable_config_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bridge.yaml"
    path.write_bytes(b"streams: []\napi_secret: \xff" + SECRET.encode() + b"\n")
    result = bridge("check", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert one_line(result).startswith(f"bridge: configuration error: {path}: cannot read")
    assert SECRET not in result.stderr
    result = bridge("check", "--config", str(tmp_path), cwd=tmp_path)
    assert (result.returncode, "Is a directory" in one_line(result)) == (2, True)


def test_the_metrics_port_in_use_is_one_line_naming_the_key(tmp_path: Path) -> None:
    path = config(tmp_path, AQUANOW + f"    api_secret: {SECRET}\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path.write_text(path.read_text().replace("port: 9200", f"port: {port}"))
        result = bridge("run", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert one_line(result) == (
        f"bridge: configuration error: metrics.port: cannot listen on 127.0.0.1:{port}: "
        "address already in use"
    )
