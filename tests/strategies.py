"""Hypothesis strategies shared by the codec and schema-evolution tests."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from bridge.records import Envelope

AMOUNTS = st.decimals(
    min_value=Decimal("-99999999999999999999.999999999999999999"),
    max_value=Decimal("99999999999999999999.999999999999999999"),
    places=18,
    allow_nan=False,
    allow_infinity=False,
)
TEXT = st.text(max_size=20)
MILLIS = st.integers(min_value=0, max_value=4_102_444_800_000)
BY_TYPE: dict[str, st.SearchStrategy[Any]] = {
    "str": TEXT,
    "str | None": st.none() | TEXT,
    "int": MILLIS,
    "int | None": st.none() | MILLIS,
    "bool": st.booleans(),
    "bool | None": st.none() | st.booleans(),
    "Decimal": AMOUNTS,
    "Decimal | None": st.none() | AMOUNTS,
    "bytes": st.binary(max_size=40),
    "bytes | None": st.none() | st.binary(max_size=40),
    "dict[str, int]": st.dictionaries(TEXT, st.integers(-(2**63), 2**63 - 1), max_size=3),
    "dict[str, str]": st.dictionaries(TEXT, TEXT, max_size=3),
}


def records_of(record_type: type[Envelope]) -> st.SearchStrategy[Envelope]:
    fields = {f.name: BY_TYPE[str(f.type)] for f in dataclasses.fields(record_type)}
    if "leverage" in fields:
        fields["leverage"] = st.none() | st.integers(-(2**31), 2**31 - 1)
    return st.builds(record_type, **fields)
