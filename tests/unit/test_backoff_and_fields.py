"""Pure helpers: the reconnect policy and exact JSON reading."""

from __future__ import annotations

import random
from collections.abc import Callable
from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from bridge.backoff import Backoff
from bridge.errors import ParseError
from bridge.records import make_event_id
from bridge.settings import ReconnectSettings
from bridge.venues.fields import Fields, dumps_exact, loads_exact, to_amount

pytestmark = pytest.mark.unit

SETTINGS = ReconnectSettings(
    initial_delay=1,
    max_delay=8,
    multiplier=2,
    jitter=0.5,
    healthy_after=30,
    auth_initial_delay=10,
    auth_max_delay=40,
)


def test_delays_grow_exponentially_and_are_capped_with_bounded_jitter() -> None:
    backoff = Backoff(SETTINGS, random.Random(1))
    delays = [backoff.next_delay(now=0) for _ in range(8)]
    for n, delay in enumerate(delays):
        base = min(8, 2**n)
        assert base * 0.5 <= delay <= base
    assert max(delays) <= 8


def test_no_jitter_is_exact() -> None:
    backoff = Backoff(SETTINGS.model_copy(update={"jitter": 0}), random.Random(1))
    assert [backoff.next_delay(now=0) for _ in range(5)] == [1, 2, 4, 8, 8]


def test_backoff_resets_only_after_a_healthy_connection() -> None:
    backoff = Backoff(SETTINGS.model_copy(update={"jitter": 0}), random.Random(1))
    assert [backoff.next_delay(now=0) for _ in range(3)] == [1, 2, 4]
    backoff.connected(now=100)
    assert backoff.next_delay(now=101) == 8, "a connection that dropped after 1 s is not healthy"
    backoff.connected(now=200)
    assert backoff.next_delay(now=230) == 1, "30 s up: the series starts over"


def test_auth_rejections_back_off_on_their_own_slower_series() -> None:
    backoff = Backoff(SETTINGS.model_copy(update={"jitter": 0}), random.Random(1))
    assert [backoff.next_delay(now=0, auth=True) for _ in range(4)] == [10, 20, 40, 40]
    assert backoff.next_delay(now=0) == 1


def test_a_month_of_failures_does_not_overflow() -> None:
    backoff = Backoff(SETTINGS, random.Random(1))
    backoff.attempts = 10_000
    assert backoff.next_delay(now=0) <= 8


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1.000000000000000000000", "1.000000000000000000"),
        ("0.000000000000000001", "1E-18"),
        ("99999999999999999999.999999999999999999", None),
        ("-0.339384", "-0.339384"),
        ("1E+5", "1E+5"),
    ],
)
def test_to_amount_keeps_exact_values(value: str, expected: str | None) -> None:
    result = to_amount(Decimal(value), "x")
    assert result == Decimal(value)
    if expected is not None:
        assert str(result) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0.0000000000000000001", "more than 18 decimal places"),
        ("100000000000000000000", "more than 20 integer digits"),
        ("Infinity", "not a finite number"),
    ],
)
def test_to_amount_refuses_what_decimal_38_18_cannot_hold(value: str, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        to_amount(Decimal(value), "x")


@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.text(max_size=5)
        | st.decimals(allow_nan=False, allow_infinity=False, places=8),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
        max_leaves=10,
    )
)
def test_dumps_exact_round_trips_through_loads_exact(value: object) -> None:
    assert loads_exact(dumps_exact(value)) == value


def test_loads_exact_refuses_non_json_constants() -> None:
    for text in ("NaN", "[Infinity]", "-Infinity"):
        with pytest.raises(ParseError, match="invalid_json"):
            loads_exact(text)


def amount_outcome(read: Callable[[], Decimal | None]) -> object:
    try:
        value = read()
    except ParseError as exc:
        return ("refused", exc.reason, exc.detail)
    return None if value is None else (str(value), value.as_tuple())


@given(
    st.decimals(allow_nan=True, allow_infinity=True)
    | st.from_regex(r"\A-?[0-9]{1,24}(\.[0-9]{0,22})?([eE][+-]?[0-9]{1,2})?\Z").map(Decimal)
)
@example(Decimal("0.0000000000000000001"))
@example(Decimal("1.1000000000000000000"))
@example(Decimal("0.123456789012345678"))
@example(Decimal("12345678901234567890"))
@example(Decimal("123456789012345678901"))
@example(Decimal("-99999999999999999999.999999999999999999"))
@example(Decimal("1E+19"))
@example(Decimal("1E+20"))
@example(Decimal("1E-19"))
@example(Decimal("0E-19"))
@example(Decimal("0E+3"))
def test_reading_a_decimal_field_gives_what_to_amount_gives(value: Decimal) -> None:
    """`opt_decimal` answers the usual decimal without `to_amount`: the same value (digits and
    exponent) or the same refusal, whatever the places, integer digits or notation."""
    got = amount_outcome(lambda: Fields({"a": value}, "p").opt_decimal("a"))
    assert got == amount_outcome(lambda: to_amount(value, "p.a"))


def test_event_ids_are_deterministic_and_decimal_normalized() -> None:
    assert make_event_id("a", Decimal("2.50"), None) == make_event_id("a", Decimal("2.5"), None)
    assert make_event_id("a", Decimal("2.5")) != make_event_id("a", Decimal("2.51"))
    assert make_event_id("a", "b") != make_event_id("a|b")
    assert make_event_id("a", None) != make_event_id("a", "")
