"""Config fields that carry their own range and description, and the checks that read them.

A config section is a frozen dataclass whose fields are declared with `setting(...)`: the default, a
one-line description, and, for numbers, the range (`ge`/`gt`/`le`/`lt`); for text, what it may hold
(`Text.IDENTIFIER`, `Text.TOPIC`, ...). The loader (`lfr_edge.config`) checks every value against its
field's declaration, and `docs/config.md` is generated from the same declarations, so the documented
range is the one enforced. Every number must be finite: NaN and the infinities are never a valid value.
"""

from __future__ import annotations

import dataclasses
import math
import unicodedata
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from lfr_contracts.errors import ConfigError
from lfr_contracts.untrusted import IDENTIFIER_RULE, excerpt, is_identifier

METADATA_KEY = "lfr-setting"


class Text(Enum):
    """What a text field may hold, beyond "no control characters" (which holds for every text field)."""

    ANY = "text"  # no control characters or NUL bytes
    NONEMPTY = "non-empty text"
    IDENTIFIER = IDENTIFIER_RULE  # unit and camera names: they end up in MQTT topics
    TOPIC = "MQTT topic levels: no '+', '#', empty level or leading '$'"


@dataclass(frozen=True)
class Range:
    """A closed, open or half-open interval; None on a side means unbounded there."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, value: float) -> bool:
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return not (self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi))

    def describe(self) -> str:
        """ "> 0", ">= 2", "<= 90", "0 to 1", "(0, 90]": how docs/config.md and error messages say it."""
        lo, hi = _number(self.lo), _number(self.hi)
        if self.lo is None and self.hi is None:
            return "any finite number"
        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {lo}"
        if self.lo is None:
            return f"{'<' if self.hi_open else '<='} {hi}"
        if not self.lo_open and not self.hi_open:
            return f"{lo} to {hi}"
        return f"{'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"


def _number(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:,}".replace(",", "_") if isinstance(value, int) and abs(value) >= 100_000 else f"{value:g}"


@dataclass(frozen=True)
class Setting:
    """What `setting()` stores in a field's metadata."""

    help: str
    range: Range | None = None
    text: Text = Text.ANY


def bounds(
    *, ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None
) -> Range | None:
    """The range that `ge`/`gt` (lower) and `le`/`lt` (upper) describe, or None when none is given."""
    if all(b is None for b in (ge, gt, le, lt)):
        return None
    return Range(gt if gt is not None else ge, lt if lt is not None else le, gt is not None, lt is not None)


def setting(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    text: Text = Text.ANY,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field with its description and range beside it (see the module docstring)."""
    if not help:
        raise TypeError("every setting needs a one-line description")
    meta = {METADATA_KEY: Setting(help, bounds(ge=ge, gt=gt, le=le, lt=lt), text)}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def setting_of(field: dataclasses.Field[Any]) -> Setting:
    """The declaration of a field; a field declared without `setting()` is a programming error."""
    found = field.metadata.get(METADATA_KEY)
    if not isinstance(found, Setting):
        raise TypeError(f"config field {field.name!r} is not declared with setting()")
    return found


def check_number(key: str, value: float, declared: Setting) -> None:
    """Refuse NaN, the infinities and a value outside the field's range, naming the key."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: {value} is not a finite number")
    if declared.range is not None and value not in declared.range:
        raise ConfigError(f"{key}: must be {declared.range.describe()}, got {excerpt(value, 40)}")


def control_character(text: str) -> str | None:
    """The first control character (NUL, newline, escape, ...) in `text`, as it would be written, or None."""
    for char in text:
        if unicodedata.category(char) == "Cc":
            return repr(char)
    return None


def check_text(key: str, value: str, kind: Text) -> None:
    """Refuse control characters in any text, and what the field's kind forbids, naming the key."""
    bad = control_character(value)
    if bad is not None:
        raise ConfigError(f"{key}: holds the control character {bad}; remove it")
    if kind is Text.NONEMPTY and not value.strip():
        raise ConfigError(f"{key}: must not be empty")
    if kind is Text.IDENTIFIER and not is_identifier(value):
        raise ConfigError(f"{key}: {excerpt(value, 80)} must be {kind.value}")
    if kind is Text.TOPIC:
        check_topic(key, value)


MAX_PATH_BYTES = 4095  # Linux's PATH_MAX, less the NUL
MAX_NAME_BYTES = 255  # NAME_MAX: one file or folder name


def expand_path(key: str, text: str) -> Path:
    """`text` as a path with `~` expanded; a ConfigError naming `key` for a home this machine lacks, or a
    path no file system can hold (any use of it would raise OSError: "File name too long")."""
    try:
        path = Path(text).expanduser()
    except RuntimeError:  # "~someone" for a user this machine does not have
        raise ConfigError(f"{key}: {excerpt(text, 80)} names a home directory this machine does not have") from None
    if len(str(path).encode(errors="surrogateescape")) > MAX_PATH_BYTES:
        raise ConfigError(f"{key}: the path is longer than {MAX_PATH_BYTES} bytes")
    if any(len(part.encode(errors="surrogateescape")) > MAX_NAME_BYTES for part in path.parts):
        raise ConfigError(f"{key}: {excerpt(text, 80)} has a file or folder name over {MAX_NAME_BYTES} bytes")
    return path


def check_topic(key: str, value: str) -> None:
    """An MQTT topic prefix the unit appends its own levels to: no wildcards, no empty or system level."""
    if not value:
        raise ConfigError(f"{key}: must not be empty")
    if "+" in value or "#" in value:
        raise ConfigError(f"{key}: {excerpt(value, 80)} holds an MQTT wildcard ('+' or '#'); a prefix names topics")
    if value.startswith("$"):
        raise ConfigError(f"{key}: {excerpt(value, 80)} starts with '$', which brokers reserve for their own topics")
    if "" in value.split("/"):
        raise ConfigError(f"{key}: {excerpt(value, 80)} has an empty level (a leading, trailing or doubled '/')")
    if len(value.encode()) > 1024:
        raise ConfigError(f"{key}: {len(value.encode())} bytes is too long for a topic prefix")
