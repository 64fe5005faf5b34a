"""The generated Avro encoders (bridge/avro.py) write exactly fastavro's bytes: over every
released schema version with property-generated values, over every record type through the
codec (value, key, headers), and over the simulators' frames as the venues parse them. Values
fastavro refuses are refused too, as `EncodeError`."""

from __future__ import annotations

import io
import json
from decimal import Context, Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.avro import compile_writer
from bridge.codec import Codec, Encoded, SchemaStore
from bridge.dev.simulator.aquanow import AquanowSimulator
from bridge.dev.simulator.base import VenueSimulator
from bridge.dev.simulator.satori import SatoriSimulator
from bridge.errors import EncodeError
from bridge.records import RECORD_TYPES, Envelope
from bridge.settings import validate_settings
from bridge.venues.aquanow import AquanowVenue
from bridge.venues.base import Frame, Venue
from bridge.venues.satori.venue import SatoriVenue
from tests import records as make
from tests.data import satori
from tests.strategies import records_of

pytestmark = pytest.mark.unit

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
VERSIONS = sorted(SCHEMAS.glob("*/v*.avsc"))
STORE = SchemaStore.load()
GENERATED, FASTAVRO = Codec(STORE), Codec(STORE, encoder="fastavro")

# Lengths around the varint boundaries (1 and 2 bytes) and the length table's end (4096).
_LONG_TEXT = st.sampled_from([63, 64, 127, 128, 4095, 4096, 20_000]).map(lambda n: "é" * n)
_TEXT = st.text() | _LONG_TEXT
_BYTES = st.binary() | st.sampled_from([4095, 4096, 9000]).map(lambda n: b"\x00" * n)
WIDE = Context(prec=80)
_LONG = st.integers(-(2**63), 2**63 - 1) | st.integers(-200, 200)


def _decimals(scale: int, precision: int) -> st.SearchStrategy[Decimal]:
    """Every decimal the type holds (from its unscaled integer: hypothesis' own decimals round
    at 28 digits), and short ones with fewer places."""
    bound = 10**precision - 1
    full = st.integers(-bound, bound).map(lambda n: Decimal(n).scaleb(-scale, WIDE))
    return full | st.decimals(-(10**6), 10**6, places=min(scale, 4))


def values_for(avro_type: Any) -> st.SearchStrategy[Any]:
    """Values of an Avro type as the records carry them (timestamps as epoch integers)."""
    if isinstance(avro_type, list):
        return st.one_of(*(values_for(branch) for branch in avro_type))
    if isinstance(avro_type, dict):
        if avro_type.get("type") == "map":
            return st.dictionaries(_TEXT, values_for(avro_type["values"]), max_size=5)
        if avro_type.get("logicalType") == "decimal":
            return _decimals(avro_type.get("scale", 0), avro_type["precision"])
        return values_for(avro_type["type"])
    return {
        "null": st.none(),
        "boolean": st.booleans(),
        "int": st.integers(-(2**31), 2**31 - 1),
        "long": _LONG,
        "string": _TEXT,
        "bytes": _BYTES,
    }[avro_type]


def fastavro_body(schema: Any, value: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema, value)
    return buffer.getvalue()


def test_every_released_schema_gets_a_generated_encoder() -> None:
    assert len(VERSIONS) >= 7
    for path in VERSIONS:
        assert compile_writer(json.loads(path.read_text())) is not None, path
    assert GENERATED.encoder == "generated"


@pytest.mark.parametrize("path", VERSIONS, ids=lambda p: f"{p.parent.name}-{p.stem}")
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_each_schema_version_is_written_as_fastavro_writes_it(
    path: Path, data: st.DataObject
) -> None:
    document = json.loads(path.read_text())
    fields = {f["name"]: values_for(f["type"]) for f in document["fields"]}
    value = data.draw(st.fixed_dictionaries(fields))
    encode = compile_writer(document)
    assert encode is not None
    assert encode(SimpleNamespace(**value)) == fastavro_body(fastavro.parse_schema(document), value)


def _same(a: Encoded, b: Encoded) -> None:
    assert (a.topic, a.key, a.value, a.headers) == (b.topic, b.key, b.value, b.headers)


@settings(max_examples=200, deadline=None)
@given(record=st.one_of(*(records_of(t) for t in RECORD_TYPES)))
def test_every_record_type_encodes_the_same_through_both_encoders(record: Envelope) -> None:
    _same(GENERATED.encode(record), FASTAVRO.encode(record))


def simulator_records() -> list[Envelope]:
    aquanow = AquanowSimulator("k", "s", seed=11)
    sat = SatoriSimulator(satori.API_KEY, satori.WALLET, seed=12, pairs=("ETH-USD", "BTC-USD"))
    venues: list[tuple[VenueSimulator, Venue]] = [
        (aquanow, AquanowVenue("aq", "k", "s")),
        (AquanowSimulator("k", "s", seed=13, legacy=True), AquanowVenue("aql", "k", "s")),
        (sat, SatoriVenue("sat", satori.API_KEY, satori.PRIVATE_KEY)),
    ]
    records: list[Envelope] = []
    for i, (sim, venue) in enumerate(venues * 600):
        frame = Frame(sim.next_event().text, 1_700_000_000_000_000 + i, 0.0)
        records.extend(venue.parse(frame).records)
    return records


def test_the_simulators_frames_encode_the_same_through_both_encoders() -> None:
    records = simulator_records()
    kinds = {type(r).__name__ for r in records}
    assert {"Balance", "Order", "Position", "Trade", "CreditBalance"} <= kinds
    for record in records:
        _same(GENERATED.encode(record), FASTAVRO.encode(record))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"leverage": 2**31}, "Order v1"),  # an Avro int
        ({"created_at": 2**63}, "Order v1"),  # beyond a long
        ({"price": Decimal("1E-19")}, "more than 18 decimal places"),
        ({"symbol": "\ud800"}, "Order v1"),  # a lone surrogate: not UTF-8
    ],
)
def test_what_fastavro_refuses_is_refused(fields: dict[str, Any], message: str) -> None:
    record = make.order(**fields)
    for codec in (GENERATED, FASTAVRO):
        with pytest.raises(EncodeError, match=message):
            codec.encode(record)


def test_the_config_switches_back_to_fastavro() -> None:
    streams = [{"name": "s", "venue": "aquanow", "url": "ws://x", "api_key": "k"}]
    base = {"streams": [{**streams[0], "api_secret": "s"}]}
    assert validate_settings(base).serialization.encoder == "generated"
    chosen = validate_settings({**base, "serialization": {"encoder": "fastavro"}})
    assert chosen.serialization.encoder == "fastavro"
