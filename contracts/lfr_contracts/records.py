"""Typed JSON records: a frozen dataclass to a JSON object and back, every field checked against its type.

The audit events and the telemetry message are declared as dataclasses, and both sides (the unit that
writes them, the report, demo and benchmarks that read them) go through `encode` and `decode` here, so a
field renamed or retyped on one side fails on the other with the field's name instead of reading None.

Field types understood: str, int, bool, float (finite; an int is accepted), an Enum (a str enum as its
value, any other enum as its lower-case name), another record, `X | None`, `tuple[X, ...]` and
`dict[str, X]`. A field whose default is None is left out of the object while it is None; every other
field is always written. Decoding refuses a missing field, an unknown field and a mistyped value.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import math
import types
import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from lfr_contracts.untrusted import JsonRefused, excerpt, loads_json

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

R = TypeVar("R", bound="DataclassInstance")


class RecordError(ValueError):
    """A JSON object does not fit its record type; the message names the field and what was wrong."""


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _omitted_when_none(field: dataclasses.Field[Any]) -> bool:
    return field.default is None


def encode(record: object) -> dict[str, Any]:
    """The record's fields as a JSON-ready object (enums to strings, tuples to lists, records to objects).

    Values are not type-checked here, so whoever writes the object (the audit log) can first look at
    what it was really given; `decode(type(record), encode(record))` checks the types."""
    if not dataclasses.is_dataclass(record) or isinstance(record, type):
        raise TypeError(f"{record!r} is not a record (a dataclass instance)")
    out: dict[str, Any] = {}
    for field in dataclasses.fields(record):
        value = getattr(record, field.name)
        if value is None and _omitted_when_none(field):
            continue
        out[field.name] = _encode_value(value)
    return out


def _encode_value(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value if isinstance(value, str) else value.name.lower()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return encode(value)
    if isinstance(value, tuple | list):
        return [_encode_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode_value(v) for k, v in value.items()}
    return value


def to_json(record: object) -> bytes:
    """The record as compact UTF-8 JSON (what goes on the wire)."""
    return json.dumps(encode(record), separators=(",", ":"), allow_nan=False).encode()


def from_json(cls: type[R], payload: bytes, max_bytes: int, where: str) -> R:
    """`decode` of JSON bytes from outside: size, depth and numbers are bounded before parsing."""
    try:
        data = loads_json(payload, max_bytes=max_bytes)
    except JsonRefused as exc:
        raise RecordError(f"{where}: not valid JSON: {exc}") from None
    return decode(cls, data, where)


def decode(cls: type[R], data: object, where: str = "") -> R:
    """A `cls` from a JSON object; RecordError naming the field when it does not fit."""
    prefix = f"{where}." if where else ""
    if not isinstance(data, Mapping):
        raise RecordError(f"{where or cls.__name__}: expected a JSON object, got {type(data).__name__}")
    types_by_name = _field_types(cls)
    unknown = sorted(set(data) - set(types_by_name))
    if unknown:
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        named = ", ".join(excerpt(name) for name in unknown[:5]) + more
        raise RecordError(f"{where or cls.__name__}: unknown field(s) {named}")
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        name = f"{prefix}{field.name}"
        if field.name not in data:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise RecordError(f"{name}: missing")
            continue
        values[field.name] = _decode_value(types_by_name[field.name], data[field.name], name)
    return cls(**values)


def _decode_value(kind: Any, value: Any, name: str) -> Any:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise RecordError(f"{name}: unions other than `X | None` are not supported")
        if value is None:
            raise RecordError(f"{name}: must not be null")
        return _decode_value(inner[0], value, name)
    if origin is typing.Literal:
        if value in args and type(value) in (str, int, bool):
            return value
        raise RecordError(f"{name}: {excerpt(value)} is not one of {', '.join(map(repr, args))}")
    if origin is tuple:
        if not isinstance(value, list):
            raise RecordError(f"{name}: expected a list, got {_describe(value)}")
        return tuple(_decode_value(args[0], v, f"{name}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise RecordError(f"{name}: expected an object with string keys, got {_describe(value)}")
        return {k: _decode_value(args[1], v, f"{name}.{_key(k)}") for k, v in value.items()}
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return _decode_enum(kind, value, name)
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        return decode(kind, value, name)
    return _decode_scalar(kind, value, name)


def _decode_enum(kind: type[enum.Enum], value: Any, name: str) -> enum.Enum:
    allowed = [m.value if isinstance(m, str) else m.name.lower() for m in kind]
    if isinstance(value, str) and value in allowed:
        return kind(value) if issubclass(kind, str) else kind[value.upper()]
    raise RecordError(f"{name}: {excerpt(value)} is not one of {', '.join(allowed)}")


def _decode_scalar(kind: Any, value: Any, name: str) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise RecordError(f"{name}: expected true or false, got {_describe(value)}")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise RecordError(f"{name}: expected an integer, got {_describe(value)}")
    if kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool) and _finite(value):
            return float(value)
        raise RecordError(f"{name}: expected a finite number, got {_describe(value)}")
    if kind is str:
        if isinstance(value, str):
            return value
        raise RecordError(f"{name}: expected a string, got {_describe(value)}")
    raise RecordError(f"{name}: fields of type {kind!r} cannot be read from JSON")


def _key(key: str) -> str:
    """A map key in a field's path: as it is when short, else quoted in part (it comes from the sender)."""
    return key if len(key) <= 40 and key.isprintable() else excerpt(key)


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _finite(value: float) -> bool:
    """A finite number that fits a float: an integer too large for one (JSON allows it) is refused, not raised."""
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False
