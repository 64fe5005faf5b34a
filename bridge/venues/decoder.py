"""Reading a frame's JSON fast, with exactly the careful reader's result.

`loads_exact` (fields.py) is the reference: the standard library's decoder with hooks that
hold every limit of issue 12. It costs ~12 µs for a 600-byte frame, most of it the hooks
called from Python for each number and each object. `read_json` gives the same value, or the
same `ParseError`, in a third of that: msgspec decodes the frame (numbers through the very
same `parse_float` hook, so a `Decimal` or an `OutOfRange` is what the reference would make),
and a frame msgspec cannot vouch for is read again by `loads_exact`. msgspec reads only
*plain* frames:

- text, or bytes that are UTF-8 (msgspec refuses invalid UTF-8; UTF-16/32 frames are never
  valid for it and go to the reference, which detects their encoding);
- no `\\u` escape anywhere: a lone surrogate (refused by the reference) can hide in one, and an
  escaped colon would break the count below;
- no deeper than `MAX_DEPTH`, by the reference's own bracket count, before msgspec runs: its
  decoder recurses on the C stack, as deep as the interpreter's recursion limit allows (a
  dependency raises it to 100,000: tests/unit/test_hostile_frames.py);
- no duplicate key in any object. msgspec keeps the last value of a repeated key (its issue
  #648), so the keys are counted: in JSON text every colon outside a string separates a key
  from its value, so the frame's colons are its key tokens plus the colons inside strings.
  The decoded objects hold one entry per distinct key: the counts agree only when no object
  repeats a key;
- every integer as the reference makes it: no more than `MAX_NUMBER_CHARS` characters (the
  reference keeps a longer one as `OutOfRange`; msgspec refuses beyond ~4,300 digits).

tests/unit/test_decoder.py holds `read_json` equal to `loads_exact` (same values, same types,
same digits) over the fuzz tests' hostile frames and the simulators' frames, and the venues'
records equal whichever reader made them (`serialization.decoder: stdlib` selects the
reference for a whole process).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from bridge.sections import Decoder
from bridge.venues.fields import (
    MAX_NUMBER_CHARS,
    _parse_float,
    _too_deep,
    dumps_exact,
    loads_exact,
)

JsonReader = Callable[[str | bytes], Any]

_MSGSPEC: Final = msgspec.json.Decoder(float_hook=_parse_float)
_WRITER: Final = msgspec.json.Encoder(decimal_format="number")
# Integers whose text is longer than MAX_NUMBER_CHARS (the reference's `OutOfRange`).
_INT_HIGH: Final = 10**MAX_NUMBER_CHARS
_INT_LOW: Final = -(10 ** (MAX_NUMBER_CHARS - 1))
_NOT_PLAIN: Final = -1
# What msgspec raises for input it cannot read (the reference then says why).
_UNREADABLE: Final = (msgspec.DecodeError, ValueError, RecursionError, ArithmeticError)


def read_json(data: str | bytes) -> Any:
    """What `loads_exact(data)` returns or raises, faster for plain frames (module doc)."""
    value = _read_plain(data)
    return loads_exact(data) if value is _REFERENCE else value


def write_json(value: Any) -> str:
    """`dumps_exact(value)` for a value `read_json` returned (a venue item, for a record's
    `raw`), written by msgspec when it can be the same text: decimals as their digits, strings
    with the same escapes; keys escaped to ASCII (as `dumps_exact` writes them) and the
    `OutOfRange` numbers msgspec does not know are left to `dumps_exact`."""
    try:
        text = _WRITER.encode(value)
    except TypeError:
        return dumps_exact(value)
    return text.decode() if text.isascii() else dumps_exact(value)


@dataclass(frozen=True, slots=True)
class Json:
    """How a venue module reads frames and writes items back (a record's `raw`)."""

    loads: JsonReader
    dumps: Callable[[Any], str]


FAST: Final = Json(read_json, write_json)
REFERENCE: Final = Json(loads_exact, dumps_exact)


def json_for(decoder: Decoder) -> Json:
    """What `serialization.decoder` names: msgspec where it gives the same results (FAST), or
    the standard library's careful reader and writer (REFERENCE)."""
    return FAST if decoder == "msgspec" else REFERENCE


class _Reference:
    """Marks a frame the reference reader must read."""


_REFERENCE: Final = _Reference()


def _read_plain(data: str | bytes) -> Any:
    if isinstance(data, str):
        text = data
    else:
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            return _REFERENCE
    if "\\u" in text or _too_deep(text):  # depth first: msgspec recurses on the C stack
        return _REFERENCE
    try:
        value = _MSGSPEC.decode(text)
    except _UNREADABLE:  # UnicodeEncodeError (a lone surrogate in a str) is a ValueError
        return _REFERENCE
    colons = text.count(":")
    if _keys(value) == colons or _keys_and_colons(value) == colons:
        return value
    return _REFERENCE


def _keys(value: Any) -> int:
    """The keys of every object in `value`, or -1 if it holds an integer beyond the
    reference's limit. Equal to the frame's colons when no key repeats and no string holds a
    colon."""
    items: Any
    if type(value) is dict:
        count, items = len(value), value.values()
    elif type(value) is list:
        count, items = 0, value
    else:
        return _scalar(value)
    for item in items:
        kind = type(item)
        if kind is str:
            continue
        if kind is dict or kind is list:
            inner = _keys(item)
            if inner < 0:
                return _NOT_PLAIN
            count += inner
        elif kind is int and not _INT_LOW < item < _INT_HIGH:
            return _NOT_PLAIN
    return count


def _keys_and_colons(value: Any) -> int:
    """`_keys` plus the colons inside strings, keys included: for frames whose strings hold
    colons (times such as "15:59:56")."""
    kind = type(value)
    if kind is str:
        return str.count(value, ":")
    if kind is not dict and kind is not list:
        return _scalar(value)
    pairs: Any = value.items() if kind is dict else enumerate(value)
    count = 0
    for key, item in pairs:
        inner = _keys_and_colons(item)
        if inner < 0:
            return _NOT_PLAIN
        count += inner if kind is list else 1 + key.count(":") + inner
    return count


def _scalar(value: Any) -> int:
    if type(value) is int and not _INT_LOW < value < _INT_HIGH:
        return _NOT_PLAIN
    return 0
