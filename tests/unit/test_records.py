"""The records' generated `__init__` (bridge/records.py `_fast_init`) takes what the frozen
dataclass's would: the same keyword-only fields and defaults, each stored under its own name,
and instances stay frozen."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest

from bridge.records import RECORD_TYPES, StateTombstone

pytestmark = pytest.mark.unit

TYPES = [*RECORD_TYPES, StateTombstone]


@pytest.mark.parametrize("record_type", TYPES, ids=lambda t: t.__name__)
def test_every_field_is_stored_under_its_own_name(record_type: Any) -> None:
    values = {f.name: object() for f in dataclasses.fields(record_type)}
    record = record_type(**values)
    assert {name: getattr(record, name) for name in values} == values
    assert dataclasses.replace(record) == record


@pytest.mark.parametrize("record_type", TYPES, ids=lambda t: t.__name__)
def test_signature_and_defaults_are_the_dataclass_fields(record_type: Any) -> None:
    fields = dataclasses.fields(record_type)
    params = list(inspect.signature(record_type).parameters.values())
    assert [p.name for p in params] == [f.name for f in fields]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params)
    for param, f in zip(params, fields, strict=True):
        default = inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default
        assert param.default is default, f.name
    required = {f.name: 1 for f in fields if f.default is dataclasses.MISSING}
    record = record_type(**required)
    for f in fields:
        if f.default is not dataclasses.MISSING:
            assert getattr(record, f.name) is f.default


@pytest.mark.parametrize("record_type", TYPES, ids=lambda t: t.__name__)
def test_records_stay_frozen_and_refuse_what_the_dataclass_refuses(
    record_type: Any,
) -> None:
    values = {f.name: 1 for f in dataclasses.fields(record_type)}
    record = record_type(**values)
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.venue = "other"
    with pytest.raises(TypeError, match="venue"):
        record_type(**{k: v for k, v in values.items() if k != "venue"})
    with pytest.raises(TypeError, match="nonsense"):
        record_type(**values, nonsense=1)
    with pytest.raises(TypeError):
        record_type(*values.values())
