"""Fuzzing what the unit reports as its readers read it: the retained status as the handset reads it
(`lfr-handset listen` prints it), and the unit's answer on watchlist/ack as `lfr-watchlist` reads it.

The handset must show a status or ignore the message with `StatusError`, whatever the bytes, and the line it
prints must be made for any status that decodes. `lfr-watchlist` must read an answer or ignore it (None),
never raise on the MQTT thread.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzz_helpers import dumps, fuzz, holds, hostile_json_text, json_values, mutated
from lfr_contracts.status import StatusError, UnitStatus, WatchlistStatus
from lfr_tools.handset.unit_state import read_status, status_line

UNIT = "van-07"
ACTIVE = UnitStatus(
    "online", UNIT, "2026-12-07T04:00:00.000Z", 3,
    WatchlistStatus("active", "op-1", 4, 12, 1_800_000_000.0), "mobilefacenet-int8",
).encode()  # fmt: skip
REFUSED = UnitStatus(
    "online", UNIT, "2026-12-07T04:00:00.000Z", 3,
    WatchlistStatus("refused", None, 9, reason="wrong_unit", detail="for van-99"),
).encode()  # fmt: skip


def shown(payload: bytes) -> str | None:
    status = read_status(payload, UNIT)
    return None if status is None else status_line(status)


def replaced(message: bytes, path: tuple[str, ...], value: Any) -> bytes:
    data = json.loads(message)
    inner = data
    for key in path[:-1]:
        inner = inner[key]
    inner[path[-1]] = value
    return dumps(data)


def test_the_real_statuses_are_shown() -> None:
    assert shown(ACTIVE) == (
        "UNIT van-07 online since 2026-12-07T04:00:00.000Z: watchlist active: op-1 v4, 12 subjects, "
        "valid until 2027-01-15T08:00:00Z"
    )
    line = shown(REFUSED)
    assert line is not None and "refused: wrong_unit (for van-99)" in line and "no alert can come" in line
    assert shown(b"") is None  # a cleared retained status


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        pytest.param(replaced(ACTIVE, ("watchlist", "valid_until"), 1e300), "valid_until", id="year-beyond-9999"),
        pytest.param(replaced(ACTIVE, ("watchlist", "valid_until"), -1e18), "valid_until", id="before-year-1"),
        pytest.param(replaced(ACTIVE, ("unit",), "van-08"), "not 'van-07'", id="another-unit"),
        pytest.param(replaced(ACTIVE, ("unit",), "9" * 400), "not 'van-07'", id="long-unit-id-not-echoed"),
    ],
)
def test_statuses_found_by_the_fuzzer_are_ignored_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(StatusError, match=reason):
        shown(payload)


def test_control_characters_in_a_status_cannot_drive_the_terminal() -> None:
    line = shown(replaced(REFUSED, ("watchlist", "detail"), "\x1b[2J\x1b]0;owned\x07"))
    assert line is not None and "\x1b" not in line and "\x07" not in line and "?[2J" in line


@fuzz(250)
@given(st.one_of(mutated(ACTIVE), mutated(REFUSED)))
def test_mutated_statuses_are_shown_or_ignored(payload: bytes) -> None:
    if holds(StatusError, lambda: shown(payload)):
        line = shown(payload)
        assert line is None or line.isprintable()


@fuzz(150)
@given(
    st.sampled_from(
        [("state",), ("unit",), ("time",), ("seq",), ("model",), ("watchlist",)]
        + [("watchlist", key) for key in ("state", "deployment", "version", "subjects", "valid_until", "reason")]
    ),
    json_values,
)
def test_a_status_with_any_field_value_is_shown_or_ignored(path: tuple[str, ...], value: Any) -> None:
    payload = replaced(ACTIVE, path, value)
    holds(StatusError, lambda: shown(payload))


@fuzz(100)
@given(st.one_of(hostile_json_text(), st.builds(dumps, json_values), st.binary(max_size=5000)))
def test_arbitrary_statuses_are_ignored(payload: bytes) -> None:
    holds(StatusError, lambda: shown(payload))
