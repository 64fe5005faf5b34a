"""The fast frame reader (bridge/venues/decoder.py) and the fast raw writer are the reference,
only faster: `read_json` returns exactly what `loads_exact` returns (same types, same digits)
or raises the same error, and the Kafka records of every frame are byte for byte the same
(value, key, headers, event_id) whichever reader parsed it: over the fuzz tests' hostile and
mutated frames of every type, the simulators' frames of both venues and their REST answers.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.codec import Codec, SchemaStore
from bridge.dev.simulator.aquanow import AquanowSimulator
from bridge.dev.simulator.satori import SatoriSimulator, rest_order, rest_position
from bridge.dev.simulator.wire import json_text
from bridge.errors import ParseError
from bridge.records import Envelope
from bridge.settings import validate_settings
from bridge.venues.aquanow import AquanowVenue
from bridge.venues.base import Frame, RestCall
from bridge.venues.decoder import FAST, REFERENCE, Json, read_json, write_json
from bridge.venues.fields import OutOfRange, dumps_exact, loads_exact
from bridge.venues.satori.venue import SatoriVenue
from tests.data import satori
from tests.unit.test_fuzz_frames import EXAMPLES, FUZZ, TOP_LEVEL, VALUES, frames, with_bad_bytes

pytestmark = pytest.mark.unit

CODEC = Codec(SchemaStore.load())
AT = 1_700_000_000_000_000


def exactly(value: Any) -> Any:
    """`value` with every type and every digit visible (Decimal("1.50") != Decimal("1.5"))."""
    if isinstance(value, dict):
        return {"dict": [(exactly(k), exactly(v)) for k, v in value.items()]}
    if isinstance(value, list):
        return {"list": [exactly(v) for v in value]}
    if isinstance(value, Decimal | OutOfRange):
        return (type(value).__name__, repr(value))
    return (type(value).__name__, value)


def outcome(read: Callable[[str | bytes], Any], data: str | bytes) -> Any:
    try:
        return exactly(read(data))
    except ParseError as exc:
        return ("refused", exc.reason, exc.detail)


@settings(FUZZ, max_examples=max(EXAMPLES, 1))
@given(frames("aquanow") | frames("satori") | TOP_LEVEL | with_bad_bytes(VALUES))
def test_read_json_gives_exactly_what_loads_exact_gives(data: str | bytes) -> None:
    assert outcome(read_json, data) == outcome(loads_exact, data)


@pytest.mark.parametrize(
    "text",
    [
        '{"a":1,"a":2}',  # a duplicate key msgspec would resolve
        '{"t":"15:59:56","a":[{"b":1},{"b":1,"b":2}]}',  # …nested, beside colons in strings
        '{"a":"x:y","a":1}',  # the dropped value held the colon
        '{"k:":1,"k:":2}',
        "[" + "1" * 70 + "]",  # an integer the reference keeps as OutOfRange
        "[" * 33 + "]" * 33,
        '{"a":"\\ud800"}',
        '{"a":0.' + "0" * 70 + "1e70}",  # a long number that looks short once converted
        b'\xef\xbb\xbf{"a":1}',  # UTF-8 with a BOM: the reference detects it
        '{"a":"\\u0041:","b":1}',
        '{"a":1,"a":2,"b":"\\u003a"}',  # an escaped colon would make up for the lost pair
    ],
)
def test_frames_msgspec_cannot_vouch_for_read_as_the_reference_reads_them(text: str) -> None:
    assert outcome(read_json, text) == outcome(loads_exact, text)


# -- records: both readers, byte for byte ----------------------------------------------------
def aquanow(json: Json, legacy: bool = False) -> AquanowVenue:
    return AquanowVenue("aq", "k", "s", account="legacy" if legacy else None, json=json)


def satori_venue(json: Json) -> SatoriVenue:
    pairs = ("ETH-USD", "BTC-USD")
    return SatoriVenue("sat", satori.API_KEY, satori.PRIVATE_KEY, pairs=pairs, json=json)


def kafka_bytes(records: list[Envelope]) -> list[tuple[Any, ...]]:
    out = []
    for record in records:
        e = CODEC.encode(record)
        out.append((e.topic, e.key, e.value, e.headers, record.event_id, repr(record)))
    return out


def both(make: Callable[[Json], Any], feed: Callable[[Any], list[Envelope]]) -> int:
    """The records of the same input through a venue module reading with msgspec and through
    one reading with the reference: the same bytes on Kafka. How many there were."""
    fast, reference = feed(make(FAST)), feed(make(REFERENCE))
    assert kafka_bytes(fast) == kafka_bytes(reference)
    return len(fast)


def pushes(sim: Any, count: int) -> Callable[[Any], list[Envelope]]:
    texts = [sim.next_event().text for _ in range(count)]

    def feed(venue: Any) -> list[Envelope]:
        out: list[Envelope] = []
        for i, text in enumerate(texts):
            data = text if i % 3 else text.encode()  # text and binary frames
            out.extend(venue.parse(Frame(data, AT + i, 0.0)).records)
        return out

    return feed


def test_the_simulators_frames_make_the_same_records_through_both_readers() -> None:
    sat = SatoriSimulator(satori.API_KEY, satori.WALLET, seed=21, pairs=("ETH-USD", "BTC-USD"))
    kinds = {
        both(aquanow, pushes(AquanowSimulator("k", "s", seed=20), 1500)),
        both(
            lambda r: aquanow(r, legacy=True),
            pushes(AquanowSimulator("k", "s", seed=22, legacy=True), 800),
        ),
        both(satori_venue, pushes(sat, 1500)),
    }
    assert min(kinds) > 700


def test_rest_answers_make_the_same_records_through_both_readers() -> None:
    aq = AquanowSimulator("k", "s", seed=30)
    sat = SatoriSimulator(satori.API_KEY, satori.WALLET, seed=31, pairs=("ETH-USD",))
    for _ in range(400):
        aq.next_event(), sat.next_event()
    answers: list[tuple[str, RestCall, str]] = [
        (
            "aq",
            RestCall("balance", "GET", "/users/v1/userbalance"),
            json_text(list(aq.balances.values())),
        ),
        ("aq", RestCall("order", "GET", "/trades/v1/order"), json_text(list(aq.orders.values()))),
        (
            "sat",
            RestCall("orders", "POST", "/o"),
            envelope([rest_order(o) for o in sat.orders.values()]),
        ),
        (
            "sat",
            RestCall("positions", "POST", "/p"),
            envelope([rest_position(p) for p in sat.positions.values()]),
        ),
        ("sat", RestCall("balance", "POST", "/b"), envelope(next(iter(sat.balances.values())))),
    ]
    for venue, call, body in answers:
        make: Callable[[Json], Any] = aquanow if venue == "aq" else satori_venue

        def feed(v: Any, call: RestCall = call, body: str = body) -> list[Envelope]:
            page = v.parse_snapshot(call, 200, body.encode(), Frame(b"", AT, 0.0))
            assert page.error is None
            return list(page.records)

        assert both(make, feed) > 0


def envelope(data: Any) -> str:
    return json_text({"error": False, "code": 200, "msg": "SUCCESS", "data": data})


MUTATED = st.sampled_from(["aquanow", "satori"]).flatmap(lambda v: st.tuples(st.just(v), frames(v)))


@settings(FUZZ, max_examples=max(EXAMPLES, 1))
@given(MUTATED)
def test_hostile_frames_make_the_same_records_or_dead_letters_through_both_readers(
    case: tuple[str, str | bytes],
) -> None:
    """Every type of documented frame with one field hostile, and hostile whole frames: the
    same records, the same dead letters (reason and detail), byte for byte."""
    venue, data = case
    make: Callable[[Json], Any] = aquanow if venue == "aquanow" else satori_venue
    both(make, lambda v: list(v.parse(Frame(data, AT, 0.0)).records))


# -- the raw writer ------------------------------------------------------------------------
@settings(max_examples=500, deadline=None)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.text()
        | st.decimals(allow_nan=False, allow_infinity=False)
        | st.from_regex(r"\A[1-9][0-9]{64,80}\Z").map(OutOfRange),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=12,
    )
)
def test_write_json_writes_what_dumps_exact_writes(value: Any) -> None:
    assert write_json(value) == dumps_exact(value)


def test_the_config_switches_back_to_the_standard_library_reader() -> None:
    base = {
        "streams": [
            {"name": "s", "venue": "aquanow", "url": "ws://x", "api_key": "k", "api_secret": "s"}
        ]
    }
    settings_ = validate_settings(base)
    assert settings_.serialization.decoder == "msgspec"
    chosen = validate_settings({**base, "serialization": {"decoder": "stdlib"}})
    assert chosen.serialization.decoder == "stdlib"
    venue = chosen.streams[0].build_venue(chosen.serialization.decoder)
    assert isinstance(venue, AquanowVenue)
    assert venue._json is REFERENCE
