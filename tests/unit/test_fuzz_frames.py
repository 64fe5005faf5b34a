"""Fuzzing both venues with hostile frames (issue 12). The properties hold for any decoder
(issue 17 will swap `loads_exact`'s for msgspec): they are what the bridge promises about a
frame, not how it reads one.

For every frame, whatever its bytes:
- `Venue.parse` raises nothing (it runs on the event loop every stream shares);
- no frame is lost: it yields a record, a dead letter or a control event;
- every record can be encoded (or the sink's stand-in dead letter can), and a dead letter for
  a whole frame carries the frame's exact bytes;
- the exact-JSON reader returns values within its limits (depth, numbers, strings) or refuses.

Frames: the venues' documented frames with one documented field replaced by a hostile value
(every JSON type, huge and odd numbers, lone surrogates, deep nesting, placeholders), or
duplicated; hostile whole frames (deep nesting, scalars and arrays at the top level, numbers
beyond any range); and the same with invalid UTF-8 spliced into the bytes. `make test` runs a
few thousand examples; `make fuzz` runs BRIDGE_FUZZ_EXAMPLES (default there: 50,000) per test
and prints the counts.
"""

from __future__ import annotations

import json
import os
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.codec import Codec, SchemaStore
from bridge.errors import EncodeError, ParseError
from bridge.records import DeadLetter, Record, build_dead_letter
from bridge.venues.aquanow import AquanowVenue
from bridge.venues.base import Frame, frame_bytes
from bridge.venues.fields import (
    DECIMAL_TEXT,
    MAX_DEPTH,
    MAX_NUMBER_CHARS,
    PLACEHOLDERS,
    OutOfRange,
    bounded,
    dumps_exact,
    loads_exact,
)
from bridge.venues.satori.venue import SatoriVenue
from tests.data.aquanow import DOC_BALANCE, DOC_CREDIT_REPAIRED, DOC_LEGACY_ORDER
from tests.data.satori import (
    API_KEY,
    DOC_ACCOUNT,
    DOC_ACKS,
    DOC_ENTRUST,
    DOC_POSITION,
    DOC_TRADES,
    PRIVATE_KEY,
)

pytestmark = pytest.mark.unit

EXAMPLES = int(os.environ.get("BRIDGE_FUZZ_EXAMPLES", "1000"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
COUNTS: Counter[str] = Counter()
CODEC = Codec(SchemaStore.load())
AQUANOW = AquanowVenue("aq", "key", "secret")
SATORI = SatoriVenue("sat", API_KEY, PRIVATE_KEY, coins=("USD",), pairs=("ETH-USD",))
TEMPLATES: dict[str, list[str]] = {
    "aquanow": [DOC_BALANCE, DOC_CREDIT_REPAIRED, DOC_LEGACY_ORDER],
    "satori": [DOC_ACCOUNT, DOC_ENTRUST, DOC_POSITION, DOC_TRADES, DOC_ACKS[0][0]],
}
VENUES: dict[str, AquanowVenue | SatoriVenue] = {"aquanow": AQUANOW, "satori": SATORI}


# -- hostile JSON values, as text ----------------------------------------------------------
def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


NUMBERS = st.one_of(
    st.integers().map(str),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
    st.from_regex(r"\A-?[1-9][0-9]{0,90}(\.[0-9]{1,90})?([eE][+-]?[0-9]{1,25})?\Z"),
    st.sampled_from(
        [
            *("1e9999999999999999999", "1e1000000", "-0", "0e0", "1E+400", "1e-400", "0.1e-18"),
            *("9223372036854775808", "-9223372036854775809", "1" + "0" * 5000),
        ]
    ),
)
STRINGS = st.one_of(
    st.text(max_size=12).map(lambda s: json.dumps(s, ensure_ascii=False)),
    st.sampled_from(['"-"', '""', '" "', '"NaN"', '"Infinity"', '"1_000"', '"\\u0661"']),
    NUMBERS.map(lambda n: f'"{n}"'),  # decimal strings, as Satori sends amounts
    st.from_regex(r'\A"\\u[dD][89a-fA-F][0-9a-fA-F]{2}[a-z]{0,3}"\Z'),  # lone surrogates
    st.just('"\\ud83d\\ude00"'),  # a valid pair
)
SCALARS = st.one_of(NUMBERS, STRINGS, st.sampled_from(["true", "false", "null"]))
INVALID = st.sampled_from(["NaN", "Infinity", "-Infinity", "01", "1.", ".5", "+1", "'x'", "tru"])
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda xs: "[" + ",".join(xs) + "]"),
        st.lists(st.tuples(STRINGS, inner), max_size=4).map(
            lambda kv: "{" + ",".join(f"{k}:{v}" for k, v in kv) + "}"
        ),
    ),
    max_leaves=8,
)
DEEP = st.integers(MAX_DEPTH - 2, MAX_DEPTH + 3).map(nested) | st.just(nested(5000))
VALUES = st.one_of(*[JSON_VALUES] * 6, DEEP, INVALID)  # one_of picks its branches evenly


# -- frames --------------------------------------------------------------------------------
def render(value: Any, replace: tuple[str, ...], raw: str, duplicate: bool) -> str:
    """`value` as JSON text with the value at path `replace` written as `raw` (and, with
    `duplicate`, its key written a second time)."""
    if isinstance(value, dict):
        parts = []
        for key, item in value.items():
            text = json.dumps(key)
            if replace and replace[0] == key:
                if len(replace) == 1:
                    parts.append(f"{text}:{raw}")
                    if duplicate:
                        parts.append(f"{text}:{dumps_exact(item)}")
                    continue
                parts.append(f"{text}:{render(item, replace[1:], raw, duplicate)}")
            else:
                parts.append(f"{text}:{dumps_exact(item)}")
        return "{" + ",".join(parts) + "}"
    if isinstance(value, list):
        items = [
            render(item, replace[1:], raw, duplicate)
            if replace and replace[0] == str(i)
            else dumps_exact(item)
            for i, item in enumerate(value)
        ]
        return "[" + ",".join(items) + "]"
    return raw


def paths(value: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every key path in a template: its documented fields, the envelope's included."""
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        path = (*prefix, str(key))
        yield path
        if isinstance(item, dict | list):
            yield from paths(item, path)


def plausible(item: Any) -> st.SearchStrategy[str]:
    """A value of the documented field's own JSON type, with any content: the frame may well
    become a record, which must then encode."""
    if isinstance(item, bool):
        return st.sampled_from(["true", "false"])
    if isinstance(item, int | Decimal):
        return NUMBERS
    if isinstance(item, str):
        return STRINGS
    return VALUES


@st.composite
def mutated(draw: st.DrawFn, venue: str) -> str:
    """A documented frame with one documented field hostile (replaced, or duplicated)."""
    template = json.loads(draw(st.sampled_from(TEMPLATES[venue])), parse_float=Decimal)
    path = draw(st.sampled_from(sorted(paths(template))))
    item: Any = template
    for key in path:
        item = item[int(key)] if isinstance(item, list) else item[key]
    raw = draw(st.one_of(VALUES, plausible(item), plausible(item)))
    return render(template, path, raw, duplicate=draw(st.sampled_from([False] * 7 + [True])))


TOP_LEVEL = st.one_of(
    VALUES,
    st.just(nested(20_000)),
    st.just('{"a":' * 20_000 + "1" + "}" * 20_000),
    st.just('{"event":"api_trade","data":[' + ",".join(["{}"] * 5000) + "]}"),
    st.just(" "),
)


def with_bad_bytes(text: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    """The frame's UTF-8 bytes with invalid UTF-8 (or an encoded surrogate) spliced in."""
    bad = st.sampled_from([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\x80"])
    return st.tuples(text, bad, st.floats(0, 1)).map(
        lambda t: (
            t[0].encode()[: int(len(t[0].encode()) * t[2])]
            + t[1]
            + t[0].encode()[int(len(t[0].encode()) * t[2]) :]
        )
    )


def frames(venue: str) -> st.SearchStrategy[str | bytes]:
    documented = mutated(venue)
    return st.one_of(
        documented,
        documented,
        documented,
        TOP_LEVEL,
        with_bad_bytes(documented | TOP_LEVEL),
        st.binary(max_size=64),
    )


# -- the properties ------------------------------------------------------------------------
def check_frame(venue: AquanowVenue | SatoriVenue, data: str | bytes) -> None:
    COUNTS["frames"] += 1
    frame = Frame(data, received_at=1_700_000_000_000_000, received_mono=1.0)
    try:
        result = venue.parse(frame)
    except BaseException:
        COUNTS["crashes"] += 1
        raise
    assert result.records or result.events, "a frame yielded nothing"
    COUNTS["control"] += not result.records
    for record in result.records:
        check_record(record, frame, whole=len(result.records) == 1)


def check_record(record: Record, frame: Frame, whole: bool) -> None:
    if isinstance(record, DeadLetter):
        COUNTS["dead_letters"] += 1
        COUNTS[f"dead_letter:{record.reason}"] += 1
        if whole and not record.detail.startswith(("api_trade:", "snapshot")):
            assert record.raw == frame_bytes(frame)[: len(record.raw)]
    else:
        COUNTS["records"] += 1
    try:
        CODEC.encode(record)
    except EncodeError as exc:  # the sink publishes this dead letter in its place
        COUNTS["encode_errors"] += 1
        stand_in = build_dead_letter(
            venue=record.venue,
            stream=record.stream,
            received_at=record.received_at,
            source=record.source,
            reason="encode_error",
            detail=str(exc),
            raw=frame_bytes(frame),
        )
        CODEC.encode(stand_in)


@FUZZ
@given(frames("aquanow"))
def test_aquanow_survives_hostile_frames(data: str | bytes) -> None:
    check_frame(AQUANOW, data)


@FUZZ
@given(frames("satori"))
def test_satori_survives_hostile_frames(data: str | bytes) -> None:
    check_frame(SATORI, data)


def within_limits(value: object, depth: int = 1) -> None:
    assert depth <= MAX_DEPTH
    if isinstance(value, str):
        value.encode("utf-8")  # no lone surrogate
    elif isinstance(value, Decimal):
        digits = value.as_tuple()
        assert len(digits.digits) <= MAX_NUMBER_CHARS
    elif isinstance(value, int):
        assert len(str(value)) <= MAX_NUMBER_CHARS
    elif isinstance(value, OutOfRange):
        assert not bounded(value.text)
    elif isinstance(value, dict):
        for key, item in value.items():
            within_limits(key, depth)
            within_limits(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            within_limits(item, depth + 1)


@settings(FUZZ, max_examples=max(EXAMPLES // 2, 1))
@given(TOP_LEVEL | mutated("aquanow") | mutated("satori") | with_bad_bytes(VALUES))
def test_the_reader_returns_values_within_its_limits_or_refuses(data: str | bytes) -> None:
    try:
        value = loads_exact(data)
    except ParseError as exc:
        refused: ParseError | None = exc
    else:
        refused = None
    if refused is not None:
        assert refused.reason == "invalid_json"
        return
    within_limits(value)
    assert not has_duplicate_keys(data), "duplicate keys must be refused, not resolved"
    assert loads_exact(dumps_exact(value)) == value  # what it read, it can write back


class _Duplicate(Exception):
    pass


def has_duplicate_keys(data: str | bytes) -> bool:
    """An independent oracle: the standard library's decoder, told to notice duplicates."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({k for k, _ in items}) < len(items):
            raise _Duplicate
        return dict(items)

    try:
        json.loads(data, object_pairs_hook=pairs)
    except _Duplicate:
        return True
    except (ValueError, RecursionError):
        return False
    return False


# The documented fields each template's push is read from (venues.md §1.4, §2.4): strings,
# and numbers (amounts, ids, times), by their place in the template.
_AQ_ACCOUNT = ("payload.accountId", "payload.username")
FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    DOC_BALANCE: (
        ("payload.symbol", "payload.depositAddress", *_AQ_ACCOUNT),
        (
            "payload.totalBalance",
            "payload.availableBalance",
            "payload.pendingTransfer",
            "payload.updatedAt",
            "payload.itemDateTime",
        ),
    ),
    DOC_CREDIT_REPAIRED: (
        _AQ_ACCOUNT,
        ("payload.adjustedMtmUSD", "payload.ltv", "payload.updatedAt", "payload.createdAt"),
    ),
    DOC_LEGACY_ORDER: (
        (
            "payload.orderId",
            "payload.symbol",
            "payload.tradeStatus",
            "payload.tradeSide",
            "payload.baseSymbol",
            "payload.quoteSymbol",
            "payload.strategy",
            "payload.orderIdParent",
        ),
        (
            "payload.tradeSize",
            "payload.fillQtyBase",
            "payload.fillQtyQuote",
            "payload.tradePriceAvg",
            "payload.remainingQtyBase",
            "payload.priceLimit",
            "payload.fillFeeQuote",
            "payload.itemDateTime",
            "payload.createdAt",
        ),
    ),
    DOC_ACCOUNT: (
        ("data.symbol",),
        ("data.availableAmount", "data.frozenAmount", "data.logId", "data.operateAmount"),
    ),
    DOC_ENTRUST: (
        ("data.changeType", "data.symbol", "data.direction"),
        (
            "data.currentEntrustId",
            "data.quantity",
            "data.dealQuantity",
            "data.price",
            "data.dealAmount",
            "data.lever",
        ),
    ),
    DOC_POSITION: (
        ("data.changeType", "data.symbol", "data.direction"),
        (
            "data.positionId",
            "data.currentQuantity",
            "data.operateQuantity",
            "data.canClosedQuantity",
            "data.openingPrice",
            "data.marginAmount",
            "data.positionType",
        ),
    ),
    DOC_TRADES: (
        ("data.0.pair",),
        ("data.0.contractMatchPairId", "data.0.price", "data.0.quantity", "data.0.timestamp"),
    ),
}
NOT_A_STRING = st.one_of(NUMBERS, st.sampled_from(["true", "false", "[]", '{"a":"b"}', '["x"]']))
NOT_A_NUMBER = st.one_of(
    st.sampled_from(["true", "false", "[]", "{}", "[1]", '"1_0"', '"0x10"', '"\u0661"', '"lots"']),
    st.text(min_size=1, max_size=5)
    # a decimal string ("0.", " 7") is a number to the reader; "-" means null
    .filter(lambda t: not DECIMAL_TEXT.fullmatch(t.strip()) and t not in PLACEHOLDERS)
    .map(json.dumps),
)


@st.composite
def wrong_type(draw: st.DrawFn) -> tuple[str, str, str]:
    """A documented push whose documented string field holds another JSON type, or whose
    number field holds something that is not a number: (venue, frame, the field's path)."""
    template_text = draw(st.sampled_from(sorted(FIELDS)))
    strings, numbers = FIELDS[template_text]
    is_string = draw(st.booleans())
    field = draw(st.sampled_from(strings if is_string else numbers))
    raw = draw(NOT_A_STRING if is_string else NOT_A_NUMBER)
    template = json.loads(template_text, parse_float=Decimal)
    venue = "aquanow" if template_text in TEMPLATES["aquanow"] else "satori"
    return venue, render(template, tuple(field.split(".")), raw, duplicate=False), field


@FUZZ
@given(wrong_type())
def test_a_wrong_json_type_in_a_documented_field_is_a_dead_letter_naming_it(
    case: tuple[str, str, str],
) -> None:
    """Never converted (a number is not an asset called `1E+400`), never taken for null."""
    venue, text, field = case
    result = VENUES[venue].parse(Frame(text, 0, 0.0))
    named = field.replace(".0.", "[0].")
    dead = [r for r in result.records if isinstance(r, DeadLetter)]
    assert len(dead) == 1, result
    assert dead[0].reason == "invalid_field"
    assert f"frame.{named}:" in dead[0].detail, dead[0].detail


# -- memory: the worst frames at the size limit --------------------------------------------
MIB = 1024 * 1024
BIG: dict[str, Callable[[], str]] = {
    "deep": lambda: nested(MIB // 2),
    "wide array of objects": lambda: (
        '{"event":"api_trade","data":[' + ",".join(["{}"] * (MIB // 3 - 20)) + "]}"
    ),
    "one huge number": lambda: '{"type":"balance","payload":{"x":1' + "0" * (MIB - 60) + "}}",
    "many huge numbers": lambda: "[" + ",".join(["1e99999"] * (MIB // 8 - 1)) + "]",
    "many surrogates": lambda: '["' + "\\ud800" * (MIB // 6 - 2) + '"]',
    "many keys": lambda: "{" + ",".join(f'"k{i}":0' for i in range(MIB // 12)) + "}",
}


@pytest.mark.parametrize("name", BIG)
def test_memory_stays_bounded_for_the_worst_frames(name: str) -> None:
    """A frame at the default `max_frame_bytes` (1 MiB) costs a bounded multiple of its size
    while parsed, and yields at most one dead letter (a hostile array is refused whole)."""
    text = BIG[name]()
    assert len(text) <= MIB
    for venue in VENUES.values():
        tracemalloc.start()
        try:
            result = venue.parse(Frame(text, 0, 0.0))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert len(result.records) <= 1
        assert peak < 64 * MIB, f"{name}: {peak / MIB:.0f} MiB"


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    COUNTS.clear()
    yield
    shown = " ".join(f"{k}={v}" for k, v in sorted(COUNTS.items()))
    print(f"\nFUZZ examples_per_test={EXAMPLES} crashes={COUNTS['crashes']} {shown}")
