"""Avro binary encoders generated once per schema: straight-line Python for one record type.

fastavro stays the reference (schema parsing, decoding, `serialization.encoder: fastavro`):
`fastavro.schemaless_writer` walks the parsed schema for every record and, for each nullable
field, tries the union's branches until one validates. A record type's schema never changes
while the bridge runs, so this module writes that walk out once as a function of the record's
attributes, with each union branch decided by `is None` (tests/bench: about a third of
fastavro's time). tests/unit/test_avro_encoder.py holds the bytes equal to fastavro's over
every schema version, property-generated records and the simulators' frames.

Supported: the primitives, `decimal` on `bytes`, the timestamp logical types given as integers,
maps of primitives, and unions of `null` with one of those. Any other schema gets `None` from
`compile_writer` and the codec uses fastavro for it.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any, Final

_LONG_MIN: Final = -(2**63)
_LONG_MAX: Final = 2**63 - 1
_INT_MIN: Final = -(2**31)
_INT_MAX: Final = 2**31 - 1
# The zigzag varint of every value in [-64, 63]: one byte each.
_SMALL: Final = {n: bytes([(n << 1) ^ (n >> 63)]) for n in range(-64, 64)}
_SHORT: Final = 4096  # byte strings shorter than this take their length prefix from a table

Body = Callable[[Any], bytes]


def write_long(n: int) -> bytes:
    """Avro `long`: zigzag, then a little-endian base-128 varint (spec, "Primitive Types")."""
    small = _SMALL.get(n)
    if small is not None:
        return small
    if not _LONG_MIN <= n <= _LONG_MAX:
        raise ValueError(f"{n} does not fit an Avro long")
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def write_int(n: int) -> bytes:
    if not _INT_MIN <= n <= _INT_MAX:
        raise ValueError(f"{n} does not fit an Avro int")
    return write_long(n)


def write_bytes(data: bytes) -> bytes:
    n = len(data)
    return (_LENGTHS[n] if n < _SHORT else write_long(n)) + data


def write_string(text: str) -> bytes:
    data = text.encode()
    n = len(data)
    return (_LENGTHS[n] if n < _SHORT else write_long(n)) + data


_LENGTHS: Final = tuple(write_long(n) for n in range(_SHORT))


def write_boolean(value: bool) -> bytes:
    return b"\x01" if value else b"\x00"


def decimal_bytes(value: Decimal, scale: int) -> bytes:
    """An Avro `decimal` body: the unscaled value, big-endian two's complement.

    fastavro would do this too, digit by digit in a loop; the value's exact integer ratio
    (C-level) gives it in a few operations. A value with more fraction digits than the scale is
    refused, never rounded.
    """
    numerator, denominator = value.as_integer_ratio()
    power: int = 10**scale
    factor, rest = divmod(power, denominator)
    if rest:
        raise ValueError(f"{value} has more than {scale} decimal places")
    unscaled = numerator * factor
    return unscaled.to_bytes((unscaled.bit_length() + 8) // 8, "big", signed=True)


def write_decimal(value: Decimal, scale: int) -> bytes:
    return write_bytes(decimal_bytes(value, scale))


def write_map(items: dict[str, Any], write_value: Callable[[Any], bytes]) -> bytes:
    """Avro `map`: as fastavro writes it, one block (count, then key/value pairs) and the
    empty block that ends it; an empty map is just the end."""
    if not items:
        return b"\x00"
    parts = [write_long(len(items))]
    for key, value in items.items():
        parts.append(write_string(key))
        parts.append(write_value(value))
    parts.append(b"\x00")
    return b"".join(parts)


_WRITERS: Final[dict[str, Callable[[Any], bytes]]] = {
    "boolean": write_boolean,
    "int": write_int,
    "long": write_long,
    "string": write_string,
    "bytes": write_bytes,
}
_PRIMITIVES: Final = {
    "boolean": "_boolean({v})",
    "int": "_int({v})",
    "long": "_long({v})",
    "string": "_string({v})",
    "bytes": "_bytes({v})",
}
_TIMESTAMPS: Final = frozenset({"timestamp-millis", "timestamp-micros"})


def _expression(avro_type: Any, v: str) -> str | None:
    """Python source that encodes the value in variable `v` as `avro_type`; None when this
    generator does not know the type (the codec then uses fastavro)."""
    if isinstance(avro_type, str):
        template = _PRIMITIVES.get(avro_type)
        return template.format(v=v) if template else None
    if not isinstance(avro_type, dict):
        return None
    base, logical = avro_type.get("type"), avro_type.get("logicalType")
    if base == "map" and isinstance(avro_type.get("values"), str):
        values = avro_type["values"]
        return f"_map({v}, _writers[{values!r}])" if values in _WRITERS else None
    if logical is None:
        return _expression(base, v)
    if logical == "decimal" and base == "bytes":
        return f"_decimal({v}, {int(avro_type.get('scale', 0))})"
    if logical in _TIMESTAMPS and base == "long":
        return f"_long({v})"  # records carry epoch integers, never datetimes
    return None


def _field_expression(avro_type: Any, attribute: str) -> str | None:
    """An expression of `r` giving the field's encoding (a union branch chosen by `is None`)."""
    v = f"r.{attribute}"
    if isinstance(avro_type, list):
        if len(avro_type) != 2 or "null" not in avro_type:
            return None
        null_index = avro_type.index("null")
        other = _expression(avro_type[1 - null_index], "x")
        if other is None:
            return None
        null_branch = bytes([null_index << 1])
        value_branch = bytes([(1 - null_index) << 1])
        return f"{null_branch!r} if (x := {v}) is None else {value_branch!r} + {other}"
    return _expression(avro_type, v)


def compile_writer(schema: dict[str, Any]) -> Body | None:
    """The encoder of one record schema: a function of an object whose attributes are the
    schema's fields, returning the Avro binary body. None if a field's type is unsupported."""
    if schema.get("type") != "record":
        return None
    parts = []
    for field in schema["fields"]:
        name = field["name"]
        if not name.isidentifier():
            return None
        expression = _field_expression(field["type"], name)
        if expression is None:
            return None
        parts.append(f"        {expression},\n")
    lines = ["def encode(r):\n", "    return b''.join((\n", *parts, "    ))\n"]
    namespace: dict[str, Any] = {
        "_boolean": write_boolean,
        "_int": write_int,
        "_long": write_long,
        "_string": write_string,
        "_bytes": write_bytes,
        "_decimal": write_decimal,
        "_map": write_map,
        "_writers": _WRITERS,
    }
    exec(compile("".join(lines), f"<avro {schema.get('name')}>", "exec"), namespace)  # noqa: S102
    encode: Body = namespace["encode"]
    return encode
