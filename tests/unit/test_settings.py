"""Configuration: key paths in every error, ${ENV} interpolation, *_file secrets, env overrides,
and the `bridge check` / exit-code contract."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bridge.cli import main
from bridge.errors import ConfigError
from bridge.settings import load_reader_settings, load_settings
from bridge.venues.aquanow import AquanowStream

pytestmark = pytest.mark.unit

GOOD = """
kafka:
  bootstrap_servers: "${BOOTSTRAP:-127.0.0.1:9092}"
  topics: {deadletter: dlq}
metrics: {port: 9200}
streams:
  - name: aquanow-main
    venue: aquanow
    url: "wss://report.aquanow.io:8081/"
    rest_url: "https://api.aquanow.io"
    api_key: "${AQUANOW_API_KEY}"
    api_secret_file: secret.txt
    channels: [executionReport, balanceReport]
"""


def write(tmp_path: Path, text: str, secret: str = "s3cr3t-value\n") -> Path:
    (tmp_path / "secret.txt").write_text(secret)
    path = tmp_path / "bridge.yaml"
    path.write_text(text)
    return path


def test_good_config_with_interpolation_and_secret_file(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, GOOD), {"AQUANOW_API_KEY": "key-1"})
    (stream,) = settings.streams
    assert isinstance(stream, AquanowStream)
    assert stream.api_key.get_secret_value() == "key-1"
    assert stream.api_secret.get_secret_value() == "s3cr3t-value"  # trailing newline stripped
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"  # the ${VAR:-default}
    assert settings.kafka.topics.deadletter == "dlq"
    assert settings.kafka.topics.balances == "balances"
    assert stream.channels == ("executionReport", "balanceReport")
    assert "s3cr3t" not in repr(settings)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("api_secret_file: secret.txt", ""), "streams[0].api_secret: field required"),
        (("venue: aquanow", "venue: bogus"), "streams[0]: venue must be one of"),
        (("venue: aquanow", "venu: aquanow"), "streams[0].venue: field required"),
        (("channels:", "chanels:"), "streams[0].chanels: unknown key"),
        (
            ("channels: [executionReport, balanceReport]", "channels: [trades]"),
            "streams[0].channels[0]: input should be",
        ),
        (
            ("metrics: {port: 9200}", "metrics: {port: 99999}"),
            "metrics.port: input should be less than or equal to 65535",
        ),
        (('url: "wss://', 'url: "https://'), "streams[0].url: string should match pattern"),
        (
            ("topics: {deadletter: dlq}", "topics: {deadletters: dlq}"),
            "kafka.topics.deadletters: unknown key",
        ),
        (
            ('api_key: "${AQUANOW_API_KEY}"', 'api_key: "${NOT_SET_ANYWHERE}"'),
            "streams[0].api_key: environment variable NOT_SET_ANYWHERE is not set",
        ),
        (
            ("api_secret_file: secret.txt", "api_secret_file: missing.txt"),
            "streams[0].api_secret_file: cannot read",
        ),
        (
            ("api_secret_file: secret.txt", "api_secret_file: secret.txt\n    api_secret: x"),
            "give either api_secret or api_secret_file",
        ),
    ],
)
def test_errors_name_the_key_path(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    text = GOOD.replace(*edit)
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), {"AQUANOW_API_KEY": "key-1"})
    assert message in str(caught.value)


def test_duplicate_stream_names_are_refused(tmp_path: Path) -> None:
    doubled = GOOD + GOOD[GOOD.index("  - name") :]
    with pytest.raises(
        ConfigError, match=r"streams: stream names must be unique; repeated: \['aquanow-main'\]"
    ):
        load_settings(write(tmp_path, doubled), {"AQUANOW_API_KEY": "k"})


DOC_PRIVATE_KEY = "0x2bf7cc40cfc5b2a43f60769d31191e82ed33aafb5e75be710271acd40a769564"


def test_satori_scopes_are_checked(tmp_path: Path) -> None:
    text = f"""
streams:
  - {{name: s, venue: satori, url: "wss://x/", api_key: k, private_key: "{DOC_PRIVATE_KEY}", events: [api_entrust]}}
"""
    with pytest.raises(
        ConfigError, match=r"streams\[0\]\.pairs: api_entrust/api_position/api_trade need"
    ):
        load_settings(write(tmp_path, text), {})


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_KAFKA__BOOTSTRAP_SERVERS", "broker-a:9092,broker-b:9092")
    settings = load_settings(write(tmp_path, GOOD), {"AQUANOW_API_KEY": "k"})
    assert settings.kafka.bootstrap_servers == "broker-a:9092,broker-b:9092"
    assert settings.kafka.topics.deadletter == "dlq"  # the rest of the section is kept


def test_not_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(write(tmp_path, "streams: [\n"), {})
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "nope.yaml", {})
    with pytest.raises(ConfigError, match="streams: field required"):
        load_settings(write(tmp_path, "kafka: {}\n"), {})


def test_check_prints_streams_topics_endpoints_and_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AQUANOW_API_KEY", "key-visible-nowhere")
    assert main(["check", "--config", str(write(tmp_path, GOOD))]) == 0
    out = capsys.readouterr().out
    assert "aquanow-main" in out
    assert "wss://report.aquanow.io:8081/" in out
    assert "channels executionReport, balanceReport" in out
    assert "deadletter  → dlq" in out
    assert "127.0.0.1:9092" in out
    assert ":9200/metrics" in out
    assert "key-visible-nowhere" not in out
    assert "s3cr3t" not in out


def test_bad_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("api_secret_file: secret.txt", ""))
    result = subprocess.run(
        [sys.executable, "-m", "bridge", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        env={"AQUANOW_API_KEY": "k", "PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "streams[0].api_secret: field required" in result.stderr
    assert result.stdout == ""


def test_a_bad_private_key_is_named_but_never_echoed(tmp_path: Path) -> None:
    text = """
streams:
  - {name: s, venue: satori, url: "wss://x/", api_key: k, private_key: "0xdeadbeef1234", pairs: [ETH-USD], coins: [USD]}
"""
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), {})
    assert "streams[0].private_key: not a valid secp256k1 private key" in str(caught.value)
    assert "deadbeef" not in str(caught.value)


REGISTRY = """
serialization:
  mode: registry
  registry_url: "${REGISTRY_URL}"
  registry_username: bridge
  registry_password_file: registry.txt
"""


def test_registry_mode_with_a_password_file(tmp_path: Path) -> None:
    (tmp_path / "registry.txt").write_text("reg-pass\n")
    path = write(tmp_path, GOOD + REGISTRY)
    settings = load_settings(path, {"AQUANOW_API_KEY": "k", "REGISTRY_URL": "https://sr:8081"})
    ser = settings.serialization
    assert (ser.mode, ser.registry_url, ser.registry_username) == (
        "registry",
        "https://sr:8081",
        "bridge",
    )
    assert ser.registry_password is not None
    assert ser.registry_password.get_secret_value() == "reg-pass"
    assert (ser.compatibility, ser.auto_register) == ("FULL", True)  # the defaults
    assert "reg-pass" not in repr(settings)


@pytest.mark.parametrize(
    ("serialization", "message"),
    [
        ("{mode: registry}", "serialization.registry_url: required when mode is registry"),
        (
            "{mode: registry, registry_url: 'http://u:p@sr:8081'}",
            "serialization.registry_url: put credentials in registry_username",
        ),
        ("{mode: registry, registry_url: 'sr:8081'}", "serialization.registry_url: expected an"),
        (
            "{mode: registry, registry_url: 'http://sr', registry_password: x}",
            "serialization.registry_username: required with registry_password",
        ),
        ("{mode: registry, registry_url: 'http://sr', compatibility: full}", "compatibility"),
        (
            "{mode: registry, registry_url: 'http://sr', subject: x}",
            "serialization.subject: unknown",
        ),
        ("{mode: avro}", "serialization.mode: input should be 'single-object' or 'registry'"),
    ],
)
def test_registry_settings_errors_name_the_key(
    tmp_path: Path, serialization: str, message: str
) -> None:
    path = write(tmp_path, GOOD + f"serialization: {serialization}\n")
    with pytest.raises(ConfigError) as error:
        load_settings(path, {"AQUANOW_API_KEY": "k"})
    assert message in str(error.value)


def test_compatibility_may_be_left_to_the_registry(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        GOOD + "serialization: {mode: registry, registry_url: 'http://sr', "
        "compatibility: null, auto_register: false}\n",
    )
    ser = load_settings(path, {"AQUANOW_API_KEY": "k"}).serialization
    assert (ser.compatibility, ser.auto_register) == (None, False)


def test_readers_take_only_kafka_and_registry_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`bridge tail --config` works with the bridge's own config, without its venue secrets."""
    path = write(tmp_path, GOOD + "serialization: {mode: registry, registry_url: 'http://sr'}\n")
    monkeypatch.delenv("AQUANOW_API_KEY", raising=False)
    monkeypatch.setenv("BRIDGE_KAFKA__BOOTSTRAP_SERVERS", "broker:9093")
    settings = load_reader_settings(path)
    assert settings.kafka.bootstrap_servers == "broker:9093"
    assert settings.kafka.topics.deadletter == "dlq"
    assert settings.serialization.registry_url == "http://sr"
    assert load_reader_settings(None).kafka.bootstrap_servers == "broker:9093"
    (tmp_path / "bad.yaml").write_text("kafka: {bootstrap: x}\n")
    with pytest.raises(ConfigError, match=r"kafka\.bootstrap: unknown key"):
        load_reader_settings(tmp_path / "bad.yaml")
