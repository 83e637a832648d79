"""What the fuzz tests (tests/test_fuzz_*.py) share: how many cases, the property, and the inputs.

The property every parser of outside input must hold: it returns a value or raises its own module's error,
nothing else, and it does so within a bounded time and memory. The inputs are of two kinds: real encoder
output mutated (bytes flipped, inserted, cut, spliced; one field replaced by something hostile), and
arbitrary documents built from scratch.

Each test runs a fixed, derandomised set of cases (the whole fuzz set takes well under a minute);
`LFR_FUZZ_EXAMPLES=N` runs N random cases per test instead, e.g. `LFR_FUZZ_EXAMPLES=20000` overnight.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

LONG_RUN = os.environ.get("LFR_FUZZ_EXAMPLES", "")
# Generous bounds: they catch a parser that hangs or balloons, not one that is merely slow on a loaded machine.
MAX_SECONDS = 10.0
MAX_ALLOCATED = 64 * 1024 * 1024
# What the audit log refuses as "looks like encoded binary data": a refusal text must never hold one.
LONG_RUN_OF_BASE64 = re.compile(r"[A-Za-z0-9+/_\-]{96,}")


def fuzz(examples: int) -> settings:
    """Hypothesis settings for one fuzz test: `examples` fixed cases, or $LFR_FUZZ_EXAMPLES random ones."""
    return settings(
        max_examples=int(LONG_RUN) if LONG_RUN else examples,
        derandomize=not LONG_RUN,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


def peak_rss() -> int:
    """The process's resident-set high-water mark, bytes (Python, numpy and native allocations alike)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@contextmanager
def bounded(max_seconds: float = MAX_SECONDS, max_bytes: int = MAX_ALLOCATED) -> Iterator[None]:
    """Fail when the block takes longer than `max_seconds` or raises the process's memory high-water mark
    by more than `max_bytes` (a parser that balloons on a small input shows here; one that stays within
    memory the process already had does not need to)."""
    before = peak_rss()
    began = time.monotonic()
    yield
    took = time.monotonic() - began
    grew = peak_rss() - before
    assert took < max_seconds, f"the parser took {took:.1f} s"
    assert grew < max_bytes, f"the parser raised the memory high-water mark by {grew >> 20} MiB"


def holds(error: type[BaseException] | tuple[type[BaseException], ...], parse: Callable[[], object]) -> bool:
    """The property: `parse()` returns or raises `error`, within bounds; True when it returned a value."""
    with bounded():
        try:
            parse()
        except error as refused:
            assert str(refused), "a refusal without a message"
            text = str(refused)
            assert len(text) < 1000, f"a refusal of {len(text)} characters"
            assert not LONG_RUN_OF_BASE64.search(text), f"the refusal echoes a long base64-like run: {text[:200]}"
            return False
    return True


# Mutations of real encoder output ------------------------------------------------------------------------

INTERESTING = [b"\x00", b"\xff", b"[", b"{", b'"', b"\\", b"9" * 400, b"[" * 3000, b"-", b"1e999", b"NaN", b"\xc3"]


def mutate(original: bytes, seed: int, count: int) -> bytes:
    """`original` with `count` byte-level changes (flips, inserts, cuts, repeats, truncation), chosen by `seed`."""
    rng = random.Random(seed)
    data = bytearray(original)
    for _ in range(count):
        at = rng.randint(0, len(data))
        kind = rng.choice(["flip", "set", "insert", "interesting", "cut", "repeat", "truncate"])
        if kind == "flip" and at < len(data):
            data[at] ^= 1 << rng.randint(0, 7)
        elif kind == "set" and at < len(data):
            data[at] = rng.randint(0, 255)
        elif kind == "insert":
            data[at:at] = rng.randbytes(rng.randint(1, 16))
        elif kind == "interesting":
            data[at:at] = rng.choice(INTERESTING)
        elif kind == "cut":
            del data[at : at + rng.randint(1, 64)]
        elif kind == "repeat":
            data[at:at] = data[at : at + rng.randint(1, 64)] * rng.randint(1, 8)
        elif kind == "truncate" and rng.random() < 0.3:
            del data[at:]
    return bytes(data)


def mutated(original: bytes, max_mutations: int = 6) -> st.SearchStrategy[bytes]:
    """Real encoder output with 1 to `max_mutations` byte-level changes. The strategy draws a seed and a
    count (cheap to generate, so the fixed budget buys many cases); the failing bytes are reported."""
    return st.builds(mutate, st.just(original), st.integers(0, 2**64 - 1), st.integers(1, max_mutations))


# Hostile JSON values -------------------------------------------------------------------------------------

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.sampled_from(["nan", "inf", "-inf", "1e400", "9" * 400, "", "+", "#", "\x00", "A" * 200, "lfr/+"])
)

# A field's value: a hostile scalar, or a small list or object of them (deep nesting: hostile_json_text).
json_values: st.SearchStrategy[Any] = st.one_of(
    _SCALARS,
    st.lists(_SCALARS, max_size=3),
    st.dictionaries(st.text(max_size=8), _SCALARS, max_size=3),
)


def dumps(value: Any) -> bytes:
    """JSON as a careless or hostile sender writes it: NaN and Infinity as Python writes them."""
    return json.dumps(value, allow_nan=True).encode()


def nested(depth: int, kind: str = "list") -> Any:
    """A value nested `depth` levels deep (built without recursion)."""
    value: Any = 0
    for _ in range(depth):
        value = [value] if kind == "list" else {"a": value}
    return value


@st.composite
def hostile_json_text(draw: st.DrawFn) -> bytes:
    """JSON-looking text no encoder writes: deep nesting, huge numbers, stray constants."""
    depth = draw(st.integers(1, 5000))
    opener = draw(st.sampled_from([b"[", b'{"a":']))
    core = draw(st.sampled_from([b"1", b"9" * 5000, b"1e999", b"NaN", b"-Infinity", b'"\\ud800"', b""]))
    closer = b"]" if opener == b"[" else b"}"
    return opener * depth + core + closer * draw(st.integers(0, depth))


def finite(value: float) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
