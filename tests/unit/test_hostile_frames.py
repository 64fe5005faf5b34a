"""Issue 12's hostile frames, one test per row: each frame becomes a record or a dead letter
naming what is wrong, and nothing escapes `Venue.parse` (which runs on the event loop of every
stream). Both venues, since they share the exact-JSON reader (`bridge.venues.fields`)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from decimal import Decimal

import pytest

from bridge.records import Balance, DeadLetter, Order, Record, Trade
from bridge.venues.aquanow import AquanowVenue
from bridge.venues.base import Frame, frame_bytes
from bridge.venues.fields import MAX_DEPTH, loads_exact
from bridge.venues.satori.venue import SatoriVenue
from tests.data.satori import API_KEY, PRIVATE_KEY

pytestmark = pytest.mark.unit


def aquanow() -> AquanowVenue:
    return AquanowVenue("aq", "key", "secret")


def satori() -> SatoriVenue:
    return SatoriVenue("sat", API_KEY, PRIVATE_KEY, coins=("USD",), pairs=("ETH-USD",))


def frame(data: str | bytes) -> Frame:
    return Frame(data, received_at=1_700_000_000_000_000, received_mono=1.0)


def only(records: list[Record]) -> Record:
    assert len(records) == 1, records
    return records[0]


def dead(venue: AquanowVenue | SatoriVenue, data: str | bytes) -> DeadLetter:
    record = only(venue.parse(frame(data)).records)
    assert isinstance(record, DeadLetter), record
    assert record.raw == (
        data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")
    )
    return record


def balance_aq(**payload: str) -> str:
    fields = {"symbol": '"BTC"', "availableBalance": "1.5", "updatedAt": "1700000000000"}
    fields.update(payload)
    body = ",".join(f'"{k}":{v}' for k, v in fields.items())
    return '{"type":"balance","payload":{' + body + "}}"


def balance_sat(**data: str) -> str:
    fields = {"symbol": '"USD"', "availableAmount": '"10"', "frozenAmount": '"0"', "logId": "7"}
    fields.update(data)
    body = ",".join(f'"{k}":{v}' for k, v in fields.items())
    return '{"event":"api_account","data":{' + body + '},"success":true}'


# -- row 1: deep nesting ---------------------------------------------------------------------
DEEP = "[" * 20_000 + "]" * 20_000


@pytest.mark.parametrize("venue", [aquanow, satori])
def test_deep_nesting_is_refused_before_decoding(venue: type) -> None:
    for text in (DEEP, '{"a":' * 20_000 + "1" + "}" * 20_000):
        record = dead(venue(), text)
        assert record.reason == "invalid_json"
        assert f"nested deeper than {MAX_DEPTH} levels" in record.detail


def test_no_frame_depends_on_the_interpreters_recursion_limit() -> None:
    """With the limit a dependency may set (py_ecc: 100,000) the C decoder overflowed the C
    stack on a 40 KB frame: SIGSEGV, no log line. The depth bound comes first, whatever the
    limit."""
    code = textwrap.dedent(
        """
        import sys
        sys.setrecursionlimit(100_000)
        from bridge.venues.aquanow import AquanowVenue
        from bridge.venues.base import Frame
        deep = "[" * 99_000 + "]" * 99_000  # overflowed an 8 MiB C stack before
        record, = AquanowVenue("aq", "k", "s").parse(Frame(deep, 0, 0.0)).records
        print(record.reason)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "invalid_json"), done.stderr[-2000:]


def test_nesting_at_the_limit_still_decodes_and_brackets_in_strings_do_not_count() -> None:
    assert loads_exact("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    assert loads_exact('{"note":"' + "[{" * 5000 + '"}') == {"note": "[{" * 5000}


# -- row 2: a number beyond Decimal's exponent range ---------------------------------------
HUGE = "1e9999999999999999999"


@pytest.mark.parametrize(
    ("venue", "text", "field"),
    [
        (aquanow, balance_aq(availableBalance=HUGE), "frame.payload.availableBalance"),
        (satori, balance_sat(logId=HUGE), "frame.data.logId"),
    ],
)
def test_a_huge_number_in_a_documented_field_is_a_dead_letter_naming_it(
    venue: type, text: str, field: str
) -> None:
    record = dead(venue(), text)
    assert record.reason == "invalid_field"
    assert f"{field}: a number out of range ({HUGE})" in record.detail


def test_a_huge_number_elsewhere_leaves_the_record_alone_and_raw_exact() -> None:
    text = balance_aq(note=HUGE)
    record = only(aquanow().parse(frame(text)).records)
    assert isinstance(record, Balance)
    assert record.raw == text
    sat = only(satori().parse(frame(balance_sat(note=HUGE))).records)
    assert isinstance(sat, Balance)
    assert f'"note":{HUGE}' in sat.raw, "re-serialized items keep the number's text"


# -- row 3: lone surrogates ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("venue", "text"),
    [
        (satori, balance_sat(symbol='"US\\ud800D"')),
        (satori, '{"event":"api_trade","data":[{"pair":"\\udfff"}],"success":true}'),
        (aquanow, balance_aq(symbol='"\\uDBFF"')),
        (aquanow, balance_aq(**{"\\ud800": "1"})),  # in a key
    ],
)
def test_a_lone_surrogate_is_a_dead_letter_with_the_exact_bytes(venue: type, text: str) -> None:
    record = dead(venue(), text)
    assert record.reason == "invalid_json"
    assert "lone surrogate" in record.detail


def test_a_surrogate_pair_is_one_character_and_fine() -> None:
    record = only(satori().parse(frame(balance_sat(symbol='"\\ud83d\\ude00"'))).records)
    assert isinstance(record, Balance)
    assert record.asset == "\U0001f600"


@pytest.mark.parametrize(
    "data",
    [
        b'{"type":"balance","payload":{"symbol":"\xed\xa0\x80"}}',  # an encoded surrogate
        b'{"type":"balance","payload":{"symbol":"\xff"}}',
        "{\ud800}",  # a text frame cannot hold one (websockets decodes strictly); still refused
    ],
)
def test_invalid_utf8_and_raw_surrogates_are_dead_letters_with_the_exact_bytes(
    data: str | bytes,
) -> None:
    for venue in (aquanow(), satori()):
        assert dead(venue, data).reason == "invalid_json"


def test_dead_letters_carry_the_frame_exactly() -> None:
    assert frame_bytes(frame(b"\xff\x00abc")) == b"\xff\x00abc"
    assert frame_bytes(frame("\ud800x")) == b"\xed\xa0\x80x"


# -- row 4: a huge exponent in an integer field (int(Decimal) is quadratic) -----------------
@pytest.mark.parametrize(
    ("venue", "text", "detail"),
    [
        (
            aquanow,
            balance_aq(updatedAt="1e1000000"),
            "updatedAt: a number out of range (1e1000000)",
        ),
        (satori, balance_sat(logId="1e1000000"), "logId: a number out of range (1e1000000)"),
        (
            aquanow,
            balance_aq(updatedAt="1" + "0" * 5000),
            "updatedAt: a number out of range (10000",
        ),
        (satori, balance_sat(logId='"' + "9" * 5000 + '"'), "logId: expected a 64-bit integer"),
        (satori, balance_sat(logId='"\u0661"'), "logId: expected a 64-bit integer"),
    ],
)
def test_a_huge_integer_is_refused_before_any_conversion(
    venue: type, text: str, detail: str
) -> None:
    """The detail says the value never reached a conversion: before, `1e1000000` went
    through `int(Decimal(…))` (quadratic: 47 s on the event loop) and a 5000-digit string
    made `int()` raise ValueError out of the parser."""
    record = dead(venue(), text)
    assert record.reason == "invalid_field"
    assert detail in record.detail


@pytest.mark.parametrize(
    "amount",
    [
        '"9' + "9" * 100 + '.0000000000000000000001"',
        '"1e-1000000"',
        '"1_000"',
        '"\u0661"',
        '"0x10"',
    ],
)
def test_decimal_strings_are_bounded_and_plain(amount: str) -> None:
    record = dead(satori(), balance_sat(availableAmount=amount))
    assert record.reason == "invalid_field"
    assert "frame.data.availableAmount" in record.detail


# -- row 8: duplicate keys, wrong JSON types ------------------------------------------------
@pytest.mark.parametrize(
    ("venue", "text"),
    [
        (aquanow, '{"type":"balance","payload":{"symbol":"BTC","symbol":"ETH"}}'),
        (satori, '{"event":"api_account","event":"api_trade","data":{}}'),
        (satori, '{"event":"api_trade","data":[{"pair":"ETH-USD","price":1,"price":2}]}'),
    ],
)
def test_duplicate_keys_are_dead_letters_naming_the_key(venue: type, text: str) -> None:
    record = dead(venue(), text)
    assert record.reason == "invalid_json"
    assert "duplicate key" in record.detail


@pytest.mark.parametrize(
    ("venue", "text", "field"),
    [
        (aquanow, balance_aq(symbol="1e400"), "frame.payload.symbol"),
        (aquanow, balance_aq(symbol="12"), "frame.payload.symbol"),
        (satori, balance_sat(symbol="1e400"), "frame.data.symbol"),
        (
            aquanow,
            '{"type":"order","payload":{"orderId":1.5,"symbol":"A-B","tradeStatus":"CREATE"}}',
            "frame.payload.orderId",
        ),
        (satori, '{"event":1,"data":{}}', "frame.event"),
    ],
)
def test_a_number_where_a_string_is_documented_is_a_dead_letter_naming_the_field(
    venue: type, text: str, field: str
) -> None:
    record = dead(venue(), text)
    assert record.reason == "invalid_field"
    assert f"{field}: expected a string" in record.detail


def test_ids_the_venue_sends_as_integers_are_still_read() -> None:
    """Satori's REST fills carry `entrustId` as a number (venues.md §2.7)."""
    text = (
        '{"event":"api_entrust","data":{"changeType":"NEW","clientOrderId":1725870680532,'
        '"currentEntrustId":180632923,"symbol":"ETH-USD","quantity":"1"},"success":true}'
    )
    record = only(satori().parse(frame(text)).records)
    assert isinstance(record, Order)
    assert (record.order_id, record.client_order_id) == ("180632923", "1725870680532")


def test_a_trade_push_with_too_many_items_is_one_dead_letter() -> None:
    """A hostile array of a million empty items must not become a million dead letters."""
    text = '{"event":"api_trade","data":[' + ",".join(["{}"] * 100_000) + "]}"
    record = dead(satori(), text)
    assert record.reason == "invalid_field"
    assert "frame.data: 100000 items, more than 1000" in record.detail


def test_ordinary_frames_are_unchanged() -> None:
    record = only(aquanow().parse(frame(balance_aq())).records)
    assert isinstance(record, Balance)
    assert record.available == Decimal("1.5")
    text = '{"event":"api_trade","data":[{"pair":"ETH-USD","contractMatchPairId":1,"price":2318.83,"quantity":"0.5"}]}'
    trade = only(satori().parse(frame(text)).records)
    assert isinstance(trade, Trade)
    assert trade.price == Decimal("2318.83")
