"""event_id: the hand-written UUIDv5 gives exactly the ids `uuid.uuid5` gave (the ids are a
contract: consumers deduplicate on them, across bridge versions)."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.records import _EVENT_NAMESPACE, make_event_id

pytestmark = pytest.mark.unit


def reference_event_id(*parts: object) -> str:
    """The original implementation: the standard library's UUIDv5 over the same JSON list."""

    def part(p: object) -> str | None:
        if p is None:
            return None
        if isinstance(p, Decimal):
            return format(p.normalize(), "f")
        return str(p)

    name = json.dumps([part(p) for p in parts], separators=(",", ":"))
    return str(uuid.uuid5(_EVENT_NAMESPACE, name))


PARTS = st.one_of(
    st.none(),
    st.text(),  # any Unicode, escapes and surrogates included
    st.integers(),
    st.booleans(),
    st.decimals(allow_nan=False, allow_infinity=False),
)


@settings(max_examples=500, deadline=None)
@given(parts=st.lists(PARTS, max_size=8))
def test_event_ids_equal_the_standard_uuid5(parts: list[object]) -> None:
    assert make_event_id(*parts) == reference_event_id(*parts)


def test_a_known_id_never_changes() -> None:
    """Pinned: an id as the standard library computed it (consumers keep deduplicating on it)."""
    parts = ("aquanow", "CA1", "balance", "BTC", 1656460243147, Decimal("2.50"))
    assert make_event_id(*parts) == "f88f8f9b-bd2d-58dc-9cbf-2ef3d2ebfecc"
    assert uuid.UUID(make_event_id(*parts)).version == 5


@pytest.mark.parametrize(
    "text",
    ["\x7f", "\x00\x1f\n\t\r\b\f", 'a"b\\c/d', "é", "\u2028", "😀", "\ud800", "\udfff x"],
)
def test_characters_json_escapes_give_the_same_ids(text: str) -> None:
    """The name is json's text: where msgspec would write other bytes (DEL, non-ASCII, lone
    surrogates), json writes it."""
    assert make_event_id("v", text, Decimal("1.0")) == reference_event_id("v", text, Decimal(1))
