"""Schema evolution: `schemas/<topic>/v<N>.avsc` is never edited once released, and every
version is FULL-compatible with the one before it, proven on generated data: records written
with the old version are read with the new one, and records written with the new version are
read with the old one, through Avro schema resolution (fastavro), with nothing lost that both
versions know. The registry's own checker agrees (tests/integration/test_registry.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import itertools
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.codec import Codec, SchemaStore, decode_single_object
from bridge.records import Balance, Envelope
from tests.helpers import read_record
from tests.strategies import records_of

pytestmark = pytest.mark.unit

STORE = SchemaStore.load()

# SHA-256 of every released schema file. A released file is never edited (consumers and
# registries hold it by fingerprint and id): change a schema by adding v<N+1>, and add its
# hash here when it is released.
RELEASED = {
    "balances/v1.avsc": "f052f050fd38b03bbd5eef15979abe98f7a98f97571f844fcbfb6697eeb24f20",
    "balances/v2.avsc": "543b3c60401862015f5909a69072b3a91bf6463c163e398740d4907d5e6409cb",
    "control/v1.avsc": "5be695fc0c722026b3fe9a23ac268fc6604716ff141af18f45bbf583996b093e",
    "credit/v1.avsc": "27201b2f5b1ca6b8700369088d79ee24067e1af0fca16772c349197933f119b1",
    "deadletter/v1.avsc": "790ec87a5096e96d5e53697a4891127fbe2da26d4b6dcc8d73893779b11b9d7a",
    "orders/v1.avsc": "7eee46b981b8a97c55a60a79f8d6d86c0407992fa62148c433d81297543d6583",
    "positions/v1.avsc": "d8ef50ef2d9bf0af47356646efd83a6bac1eb303950169bbce1f86745048adc6",
    "state/v1.avsc": "3817ce5577d3fb840cab33acbc3b92ec64184cffc9634ea8a225973f846e40d9",
    "trades/v1.avsc": "ba093801a9d8d598667f922af92fdbf3742fa245077242abada2d4b0e9f781b1",
}


# -- generated data for any Avro schema ----------------------------------------------------
_INT32 = st.integers(-(2**31), 2**31 - 1)
_INT64 = st.integers(-(2**63), 2**63 - 1)
_UTC_TIMES = st.datetimes(
    min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1), timezones=st.just(dt.UTC)
)
_PRIMITIVES: dict[str, st.SearchStrategy[Any]] = {
    "null": st.none(),
    "boolean": st.booleans(),
    "int": _INT32,
    "long": _INT64,
    "float": st.floats(allow_nan=False, width=32),
    "double": st.floats(allow_nan=False),
    "bytes": st.binary(max_size=32),
    "string": st.text(max_size=24),
}


def avro_values(schema: Any, named: dict[str, Any] | None = None) -> st.SearchStrategy[Any]:
    """Values valid for `schema` (a parsed JSON Avro schema), logical types included."""
    named = {} if named is None else named
    if isinstance(schema, list):
        return st.one_of(*(avro_values(branch, named) for branch in schema))
    if isinstance(schema, str):
        return _PRIMITIVES[schema] if schema in _PRIMITIVES else avro_values(named[schema], named)
    logical = _logical(schema)
    if logical is not None:
        return logical
    kind = schema["type"]
    if kind == "record":
        named[_full_name(schema)] = schema
        fields = {f["name"]: avro_values(f["type"], named) for f in schema["fields"]}
        return st.fixed_dictionaries(fields)
    if kind == "enum":
        named[_full_name(schema)] = schema
        return st.sampled_from(schema["symbols"])
    if kind == "fixed":
        named[_full_name(schema)] = schema
        return st.binary(min_size=schema["size"], max_size=schema["size"])
    if kind == "array":
        return st.lists(avro_values(schema["items"], named), max_size=3)
    if kind == "map":
        return st.dictionaries(
            st.text(max_size=8), avro_values(schema["values"], named), max_size=3
        )
    return avro_values(kind, named)  # {"type": "string"} and the like


def _logical(schema: dict[str, Any]) -> st.SearchStrategy[Any] | None:
    logical = schema.get("logicalType")
    if logical == "decimal":
        precision, scale = schema["precision"], schema.get("scale", 0)
        digits = "9" * (precision - scale) or "0"
        bound = Decimal(f"{digits}.{'9' * scale}" if scale else digits)  # exact, any precision
        return st.decimals(
            min_value=bound.copy_negate(),  # unary minus would round to 28 digits
            max_value=bound,
            places=scale,
            allow_nan=False,
            allow_infinity=False,
        )
    if logical == "timestamp-millis":
        return _UTC_TIMES.map(lambda t: t.replace(microsecond=t.microsecond // 1000 * 1000))
    if logical == "timestamp-micros":
        return _UTC_TIMES
    if logical == "date":
        return st.dates()
    if logical == "uuid":
        return st.uuids().map(str)
    return None


def _full_name(schema: dict[str, Any]) -> str:
    name = str(schema["name"])
    namespace = schema.get("namespace")
    return name if "." in name or not namespace else f"{namespace}.{name}"


# -- the check --------------------------------------------------------------------------
class NotFullCompatible(AssertionError):
    pass


def check_full_compatibility(
    label: str, old: dict[str, Any], new: dict[str, Any], datum: dict[str, Any], written: str
) -> None:
    """`datum` (valid for the `written` version) must read back with the other version, and
    every field both versions have must come back unchanged. Raises `NotFullCompatible`."""
    writer, reader = (old, new) if written == "old" else (new, old)
    direction = (
        "data written with the old version cannot be read with the new one (backward)"
        if written == "old"
        else "data written with the new version cannot be read with the old one (forward)"
    )
    parsed_writer = fastavro.parse_schema(writer)
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, parsed_writer, datum)
    body = buffer.getvalue()
    baseline = read_record(body, parsed_writer)
    try:
        resolved = read_record(body, parsed_writer, fastavro.parse_schema(reader))
    except Exception as exc:
        raise NotFullCompatible(
            f"{label} is not FULL-compatible: {direction}:\n  {type(exc).__name__}: {exc}"
        ) from None
    reader_fields = {f["name"]: f for f in reader["fields"]}
    writer_fields = {f["name"]: f for f in writer["fields"]}
    for name, field in reader_fields.items():
        if name in writer_fields and field["type"] == writer_fields[name]["type"]:
            if resolved[name] != baseline[name]:
                raise NotFullCompatible(
                    f"{label}: field {name!r} changed in schema resolution: "
                    f"{baseline[name]!r} → {resolved[name]!r}"
                )
        elif name not in writer_fields and "default" in field and field["default"] is None:
            assert resolved[name] is None


def version_pairs() -> Iterator[tuple[str, int, int]]:
    for topic in STORE.topics():
        numbers = [sv.version for sv in STORE.versions(topic)]
        yield from ((topic, a, b) for a, b in itertools.pairwise(numbers))


def _doc(topic: str, version: int) -> dict[str, Any]:
    sv = next(v for v in STORE.versions(topic) if v.version == version)
    document: dict[str, Any] = json.loads(sv.text)
    return document


PAIRS = list(version_pairs())


def test_there_is_an_evolution_to_check() -> None:
    """balances ships v2 (deposit_address): the evolution path is exercised, not vacuous."""
    assert ("balances", 1, 2) in PAIRS


@pytest.mark.parametrize(
    ("topic", "old", "new"), PAIRS, ids=[f"{t}-v{a}-v{b}" for t, a, b in PAIRS]
)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_each_version_is_full_compatible_with_the_one_before(
    topic: str, old: int, new: int, data: st.DataObject
) -> None:
    old_doc, new_doc = _doc(topic, old), _doc(topic, new)
    label = f"schemas/{topic}: v{old} → v{new}"
    check_full_compatibility(label, old_doc, new_doc, data.draw(avro_values(old_doc)), "old")
    check_full_compatibility(label, old_doc, new_doc, data.draw(avro_values(new_doc)), "new")


def test_released_schema_files_are_never_edited() -> None:
    on_disk = {f"{sv.topic}/v{sv.version}.avsc": sv.text for sv in STORE}
    changed = {
        name: hashlib.sha256(text.encode()).hexdigest()
        for name, text in on_disk.items()
        if name in RELEASED and hashlib.sha256(text.encode()).hexdigest() != RELEASED[name]
    }
    assert not changed, (
        f"released schema files were edited: {sorted(changed)}; restore them and add a new "
        "version instead"
    )
    unreleased = sorted(set(on_disk) - set(RELEASED))
    assert not unreleased, f"add the sha256 of {unreleased} to RELEASED when releasing them"


def test_versions_count_from_1_and_keep_their_record_name() -> None:
    for topic in STORE.topics():
        versions = STORE.versions(topic)
        assert [sv.version for sv in versions] == list(range(1, len(versions) + 1)), topic
        assert len({sv.full_name for sv in versions}) == 1, topic


# -- the check can fail: an incompatible change is caught, with a readable message ---------
def _with_field(document: dict[str, Any], field: dict[str, Any]) -> dict[str, Any]:
    return {**document, "fields": [*document["fields"], field]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"name": "region", "type": "string"},  # a new field without a default
            "data written with the old version cannot be read with the new one (backward):\n"
            "  SchemaResolutionError: No default value for field region in bridge.records.Balance",
        ),
    ],
)
@settings(max_examples=5, deadline=None)
@given(data=st.data())
def test_an_incompatible_change_is_caught(
    change: dict[str, Any], message: str, data: st.DataObject
) -> None:
    old_doc = _doc("balances", 1)
    new_doc = _with_field(old_doc, change)
    with pytest.raises(NotFullCompatible) as caught:
        check_full_compatibility(
            "v1 → bad", old_doc, new_doc, data.draw(avro_values(old_doc)), "old"
        )
    assert message in str(caught.value)


@settings(max_examples=5, deadline=None)
@given(data=st.data())
def test_a_removed_field_without_default_is_caught(data: st.DataObject) -> None:
    old_doc = _with_field(_doc("balances", 1), {"name": "region", "type": "string"})
    new_doc = _doc("balances", 1)  # "region" dropped: old readers need it, have no default
    with pytest.raises(NotFullCompatible, match=r"\(forward\):\n  SchemaResolutionError"):
        check_full_compatibility(
            "bad → v1", old_doc, new_doc, data.draw(avro_values(new_doc)), "new"
        )


@settings(max_examples=5, deadline=None)
@given(data=st.data())
def test_a_changed_type_is_caught(data: st.DataObject) -> None:
    old_doc = _doc("balances", 1)
    new_doc = {
        **old_doc,
        "fields": [{**f, "type": "long"} if f["name"] == "asset" else f for f in old_doc["fields"]],
    }
    with pytest.raises(NotFullCompatible, match="cannot be read with the new one"):
        check_full_compatibility(
            "v1 → bad", old_doc, new_doc, data.draw(avro_values(old_doc)), "old"
        )


# -- what the bridge writes today, every older reader still reads ---------------------------
@settings(max_examples=100, deadline=None)
@given(record=records_of(Balance))
def test_a_consumer_on_an_older_version_keeps_reading(record: Envelope) -> None:
    codec = Codec(STORE)
    value = codec.value(record)
    newest = decode_single_object(STORE, value)
    for old in STORE.versions(record.TOPIC)[:-1]:
        known = {f["name"] for f in json.loads(old.text)["fields"]}
        decoded = decode_single_object(STORE, value, reader=old)
        assert set(decoded) == known
        assert decoded == {k: v for k, v in newest.items() if k in known}
