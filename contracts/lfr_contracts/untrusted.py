"""Reading bytes from outside: JSON with its size and depth bounded before parsing, and short quotations.

Python's json module recurses once per nesting level (a few thousand `[` raise RecursionError), reads
`NaN`, `Infinity` and `1e999` as floats that are not finite, turns a 5,000-digit integer into a
ValueError (or spends quadratic time on it), and accepts lone UTF-16 surrogates that later fail to encode.
`loads_json` refuses all of these with one error, `JsonRefused`, which each parser turns into its own
(BundleError, ProtocolError, PairingError), so a caller only ever sees the module's error.

`excerpt` quotes an untrusted value in an error message: never more than a short prefix of it, so a
refusal stays small and never echoes an attacker's bytes at length (the audit log refuses long
base64-like runs, and must not fail while recording a refusal).
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

MAX_DEPTH = 16  # the deepest message of ours nests 3 levels
MAX_INT_DIGITS = 20  # 2**64 has 20 digits; no field of ours needs more
# A string literal, or an unterminated one running to the end: always matches, so the scan stays linear.
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"?', re.DOTALL)
_BRACKETS = bytes(range(256)).translate(None, b"[]{}")  # every byte but the brackets
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}
_SURROGATE = re.compile("[\ud800-\udfff]")
# Unit, camera, handset and alert ids: they become MQTT topic levels, file names and audit fields.
IDENTIFIER = re.compile(r"[A-Za-z0-9_-]{1,64}")
IDENTIFIER_RULE = "1-64 letters, digits, '-' or '_'"


def is_identifier(value: object) -> bool:
    return isinstance(value, str) and IDENTIFIER.fullmatch(value) is not None


class JsonRefused(ValueError):
    """The bytes are not a bounded JSON document; the message says which limit or rule they broke."""


def nesting_depth(data: bytes) -> int:
    """The deepest bracket nesting outside string literals (an upper bound for malformed input)."""
    brackets = _STRING.sub(b"", data).translate(None, _BRACKETS)
    return max(itertools.accumulate(_STEP[b] for b in brackets), default=0)


def _refuse_constant(name: str) -> Any:
    raise JsonRefused(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise JsonRefused(f"the number {excerpt(text)} is out of range")
    return value


def _bounded_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise JsonRefused(f"an integer of {digits} digits is out of range (at most {MAX_INT_DIGITS})")
    return int(text)


def _check_strings(value: Any) -> None:
    """No lone surrogate anywhere (they cannot be encoded again); depth is already bounded."""
    if isinstance(value, str):
        if _SURROGATE.search(value):
            raise JsonRefused("a string holds a lone UTF-16 surrogate")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_strings(key)
            _check_strings(item)
    elif isinstance(value, list):
        for item in value:
            _check_strings(item)


def loads_json(data: bytes | bytearray | memoryview, *, max_bytes: int, max_depth: int = MAX_DEPTH) -> Any:
    """Parse strict UTF-8 JSON of at most `max_bytes` and `max_depth`; every number finite and bounded."""
    if len(data) > max_bytes:
        raise JsonRefused(f"{len(data)} bytes is over the {max_bytes}-byte limit")
    raw = bytes(data)
    depth = nesting_depth(raw)
    if depth > max_depth:
        raise JsonRefused(f"nested {depth} levels deep, at most {max_depth}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonRefused(f"not UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_bounded_int)
    except json.JSONDecodeError as exc:
        raise JsonRefused(f"not JSON ({exc.msg} at byte {exc.pos})") from None
    except RecursionError:  # only if max_depth was set above what the interpreter allows
        raise JsonRefused("nested too deeply") from None
    _check_strings(value)
    return value


def excerpt(value: object, limit: int = 24) -> str:
    """A short, printable quotation of an untrusted value: at most `limit` characters of it."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        return repr(value) if value.bit_length() <= 64 else f"an integer of {value.bit_length()} bits"
    if not isinstance(value, str | bytes | bytearray | float):
        return f"a {type(value).__name__}"
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return repr(text) if isinstance(value, str) else text
    return f"{text[:limit]!r}... ({len(text)} characters)"
