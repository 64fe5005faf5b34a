"""What the exact-JSON reader's limits cost per frame (issue 12), against a baseline in the
same run: `.venv/bin/python -m tests.bench.json_limits`. Never part of the test run.

Each row times one way of decoding the venues' documented frames (best of 7 repeats, µs per
frame): the reader the bridge had (`json.loads` with exact decimals, a decoder built per call),
the baseline (one prebuilt decoder, exact decimals), each protection added to the baseline
alone (the number hooks, the duplicate-key hook, the depth check, the surrogate check), and
`loads_exact` with all of them; then the whole `Venue.parse`. The differences are against the
baseline.
"""

from __future__ import annotations

import json
import timeit
from collections.abc import Callable
from decimal import Decimal
from functools import partial
from typing import Any

from bridge.venues import fields
from bridge.venues.aquanow import AquanowVenue
from bridge.venues.base import Frame, Venue
from bridge.venues.satori.venue import SatoriVenue
from tests.data.aquanow import DOC_BALANCE, DOC_LEGACY_ORDER
from tests.data.satori import API_KEY, DOC_ENTRUST, DOC_TRADES, PRIVATE_KEY

TRADES_50 = DOC_TRADES.replace(
    DOC_TRADES[DOC_TRADES.index("[") + 1 : DOC_TRADES.index("]")],
    ",".join([DOC_TRADES[DOC_TRADES.index("[") + 1 : DOC_TRADES.index("}") + 1]] * 50),
)
FRAMES = {
    "aquanow order (722 B)": DOC_LEGACY_ORDER,
    "aquanow balance": DOC_BALANCE,
    "satori entrust": DOC_ENTRUST,
    "satori trades x50": TRADES_50,
}


def _before(text: str) -> Any:
    """The reader before issue 12: `json.loads` (a decoder built per call), exact decimals."""
    return json.loads(text, parse_float=Decimal, parse_constant=fields._reject_constant)


_baseline = json.JSONDecoder(parse_float=Decimal).decode
_NUMBERS = json.JSONDecoder(parse_float=fields._parse_float, parse_int=fields._parse_int)
_PAIRS = json.JSONDecoder(parse_float=Decimal, object_pairs_hook=fields._object)

WAYS: dict[str, Callable[[str], Any]] = {
    "before: json.loads per call": _before,
    "baseline: one decoder, exact decimals": _baseline,
    "+ number hooks (digits, exponent)": _NUMBERS.decode,
    "+ duplicate-key hook": _PAIRS.decode,
    "+ depth check": lambda t: (fields._too_deep(t), _baseline(t)),
    "+ surrogate check": lambda t: (fields._text(t), "\\u" in t, _baseline(t)),
    "loads_exact (all of them)": fields.loads_exact,
}


def micros(work: Callable[[], object], number: int = 2000) -> float:
    return min(timeit.repeat(work, number=number, repeat=7)) / number * 1e6


def main() -> None:
    venues: dict[str, Venue] = {
        "aquanow": AquanowVenue("bench", "k", "s"),
        "satori": SatoriVenue("bench", API_KEY, PRIVATE_KEY, coins=("USD",), pairs=("ETH-USD",)),
    }
    for name, text in FRAMES.items():
        print(f"\n{name}: {len(text)} bytes")
        base = micros(partial(_baseline, text))
        for way, decode in WAYS.items():
            took = micros(partial(decode, text))
            print(f"  {way:<40} {took:8.2f} µs  ({took - base:+.2f})")
        parse, frame = venues[name.split()[0]].parse, Frame(text, 0, 0.0)
        took = micros(partial(parse, frame))
        print(f"  {'Venue.parse (the whole frame)':<40} {took:8.2f} µs")


if __name__ == "__main__":
    main()
