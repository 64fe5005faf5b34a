"""Codec: schemas load once, every record type round-trips, framing follows the Avro spec."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.codec import Codec, SchemaStore, decode_record, decode_single_object
from bridge.errors import EncodeError
from bridge.records import RECORD_TYPES, Balance, Envelope
from tests import records as make
from tests.helpers import read_record
from tests.strategies import records_of

pytestmark = pytest.mark.unit

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def crc64_avro(data: bytes) -> int:
    """The Avro spec's reference fingerprint algorithm, written out independently."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


ALL_RECORDS = st.one_of(*(records_of(t) for t in RECORD_TYPES))
# Fields in epoch microseconds (timestamp-micros); the other timestamps are milliseconds.
MICROS = {"received_at", "gap_start", "gap_end", "last_record_at"}


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec(SchemaStore.load())


def test_store_loads_every_topic_from_the_repository_schemas() -> None:
    store = SchemaStore.load()
    assert store.topics() == [
        "balances",
        "control",
        "credit",
        "deadletter",
        "orders",
        "positions",
        "state",
        "trades",
    ]
    on_disk = {(p.parent.name, int(p.stem[1:])) for p in SCHEMAS.glob("*/v*.avsc")}
    assert {(sv.topic, sv.version) for sv in store} == on_disk


def test_fingerprints_follow_the_avro_spec() -> None:
    for sv in SchemaStore.load():
        expected = crc64_avro(sv.canonical.encode()).to_bytes(8, "little")
        assert sv.fingerprint == expected, sv.topic


@settings(max_examples=200, deadline=None)
@given(record=ALL_RECORDS)
def test_every_record_round_trips(codec: Codec, record: Envelope) -> None:
    encoded, value = codec.encode(record), codec.value(record)
    sv = codec.schema_for(type(record))
    assert encoded.topic == record.TOPIC
    assert encoded.key == record.key().encode()
    assert value[:2] == b"\xc3\x01"
    assert value[2:10] == sv.fingerprint
    decoded = decode_single_object(codec.store, value)
    for f in dataclasses.fields(record):
        want, got = getattr(record, f.name), decoded[f.name]
        if isinstance(got, dt.datetime):  # milli- or microseconds: the schema says which
            got = round(got.timestamp() * (1e6 if f.name in MICROS else 1000))
        assert got == want, f.name
    # and back to the dataclass, as a restored checkpoint rebuilds its open records
    assert decode_record(codec.store, value) == record


def test_decoding_needs_no_bridge_code(codec: Codec) -> None:
    """A consumer with only the (newest) .avsc file and fastavro reads the body after the
    10-byte header."""
    record = make.balance(
        account="a", event_time=1, received_at=2, available=Decimal("1.5"), version=7
    )
    value = codec.value(record)
    schema = fastavro.parse_schema(json.loads((SCHEMAS / "balances/v2.avsc").read_text()))
    body = read_record(value[10:], schema)
    assert body["available"] == Decimal("1.5")
    assert body["version"] == 7


def test_headers_carry_the_contract(codec: Codec) -> None:
    record = make.balance(
        stream="main", account="a", received_at=2, source="snapshot", event_id="id-1"
    )
    headers = dict(codec.encode(record).headers)
    assert headers == {
        "schema": b"bridge.records.Balance",
        "schema_version": b"2",
        "venue": b"aquanow",
        "stream": b"main",
        "event_id": b"id-1",
        "source": b"snapshot",
    }


def test_a_value_outside_the_schema_is_an_encode_error(codec: Codec) -> None:
    record = make.balance(
        stream="main", account="a", received_at=2, event_id="id", available=Decimal("1E-19")
    )
    newest = codec.schema_for(Balance).version
    with pytest.raises(EncodeError, match=rf"bridge\.records\.Balance v{newest}"):
        codec.encode(record)


def test_a_schema_that_disagrees_with_its_dataclass_is_refused(tmp_path: Path) -> None:
    for sv in SchemaStore.load():
        target = tmp_path / sv.topic
        target.mkdir(exist_ok=True)
        text = sv.text
        if sv.topic == "balances":
            doc = json.loads(text)
            doc["fields"] = [f for f in doc["fields"] if f["name"] != "frozen"]
            text = json.dumps(doc)
        (target / f"v{sv.version}.avsc").write_text(text)
    with pytest.raises(RuntimeError, match=r"Balance fields \['frozen'\] differ"):
        Codec(SchemaStore.load(tmp_path))


def test_unknown_fingerprint_is_reported(codec: Codec) -> None:
    with pytest.raises(ValueError, match="unknown schema fingerprint"):
        decode_single_object(codec.store, b"\xc3\x01" + b"\x00" * 8 + b"\x00")
    with pytest.raises(ValueError, match="single-object"):
        decode_single_object(codec.store, b"\x00\x00\x00\x00\x01")
