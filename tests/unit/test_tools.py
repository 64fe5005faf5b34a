"""Tools for people: `bridge schemas` (what is released, with fingerprints) and the decoding
behind `bridge tail` (either framing, one JSON object per record)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bridge.cli import main
from bridge.codec import Codec, SchemaStore, confluent_prefix
from bridge.consume import RecordDecoder, tail_line
from tests.helpers import SCHEMAS
from tests.records import SAMPLE_BALANCE as BALANCE

pytestmark = pytest.mark.unit

STORE = SchemaStore.load()


def test_schemas_lists_every_released_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schemas"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()[1:] if line.startswith(tuple(STORE.topics()))]
    assert len(rows) == len(list(SCHEMAS.glob("*/v*.avsc")))
    for sv in STORE:
        row = next(r for r in rows if r[0] == sv.topic and r[1] == f"v{sv.version}")
        assert sv.fingerprint.hex() in row
        assert f"schemas/{sv.topic}/v{sv.version}.avsc" in row
        assert ("(writes)" in row) == (sv.version == STORE.latest(sv.topic).version)


def test_schemas_prints_one_version_exactly(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schemas", "balances"]) == 0
    assert capsys.readouterr().out == (SCHEMAS / "balances/v2.avsc").read_text()
    assert main(["schemas", "balances", "--version", "1"]) == 0
    assert capsys.readouterr().out == (SCHEMAS / "balances/v1.avsc").read_text()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["schemas", "balance"], "TOPIC: 'balance' is not one of"),
        (["schemas", "balances", "--version", "9"], "--version: balances has versions [1, 2]"),
        (["schemas", "--version", "1"], "--version: needs a TOPIC"),
    ],
)
def test_schemas_usage_errors_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


class FakeRegistry:
    """Answers schema_by_id like a registry holding `schemas` (id → text)."""

    def __init__(self, schemas: dict[int, str]) -> None:
        self.schemas = schemas
        self.calls: list[int] = []

    async def schema_by_id(self, schema_id: int) -> str:
        self.calls.append(schema_id)
        return self.schemas[schema_id]


async def test_decoder_reads_both_framings_to_the_same_record() -> None:
    v2 = STORE.latest("balances")
    registry = FakeRegistry({7: v2.text})
    decoder = RecordDecoder(STORE, registry)  # type: ignore[arg-type]
    single = await decoder.decode(Codec(STORE).value(BALANCE))
    framed = Codec(STORE, prefix_for=lambda sv: confluent_prefix(7)).value(BALANCE)
    assert framed[:5] == b"\x00\x00\x00\x00\x07"
    confluent = await decoder.decode(framed)
    await decoder.decode(framed)
    assert registry.calls == [7]  # fetched once per id
    assert confluent.record == single.record
    assert (single.schema, single.version, single.schema_id) == ("bridge.records.Balance", 2, None)
    assert (confluent.schema, confluent.version, confluent.schema_id) == (
        "bridge.records.Balance",
        2,
        7,
    )
    assert confluent.record["deposit_address"] == BALANCE.deposit_address


async def test_a_writer_this_build_does_not_know_is_decoded_with_the_registrys_schema() -> None:
    future = json.loads(STORE.latest("balances").text)
    future["fields"].append({"name": "extra", "type": ["null", "long"], "default": None})
    decoder = RecordDecoder(STORE, FakeRegistry({9: json.dumps(future)}))  # type: ignore[arg-type]
    value = confluent_prefix(9) + Codec(STORE).value(BALANCE)[10:] + b"\x00"
    decoded = await decoder.decode(value)
    assert (decoded.schema, decoded.version, decoded.schema_id) == (
        "bridge.records.Balance",
        None,
        9,
    )
    assert decoded.record["extra"] is None
    assert decoded.record["available"] == BALANCE.available


async def test_decoder_errors_say_what_is_missing() -> None:
    decoder = RecordDecoder(STORE)
    with pytest.raises(ValueError, match="schema id 3\\) and no registry URL"):
        await decoder.decode(confluent_prefix(3) + b"\x00")
    with pytest.raises(ValueError, match="neither single-object"):
        await decoder.decode(b'{"json": true}')
    with pytest.raises(ValueError, match="unknown schema fingerprint"):
        await decoder.decode(b"\xc3\x01" + b"\x01" * 8)


class FakeMessage:
    topic = "balances"
    partition = 0
    offset = 41
    timestamp = 1656460243147
    key = b"aquanow|CA1|BTC"
    value = b"\xc3\x01junk"


async def test_tail_line_is_one_readable_json_object() -> None:
    decoded = await RecordDecoder(STORE).decode(Codec(STORE).value(BALANCE))
    line: dict[str, Any] = json.loads(tail_line(FakeMessage(), decoded))
    assert list(line) == [
        "topic",
        "partition",
        "offset",
        "timestamp",
        "key",
        "schema",
        "version",
        "schema_id",
        "value",
    ]
    assert line["timestamp"] == "2022-06-28T23:50:43.147000+00:00"
    assert line["key"] == "aquanow|CA1|BTC"
    value = line["value"]
    assert value["available"] == "2.4643104026041307"  # exact, as a string
    assert value["total"] == "100"
    assert value["pending_transfer"] == "0"
    assert value["received_at"] == "2022-06-28T23:50:43.147123+00:00"
    error = json.loads(tail_line(FakeMessage(), "cannot decode: bad"))
    assert error["error"] == "cannot decode: bad"
    assert error["value"] == "base64:wwFqdW5r"
