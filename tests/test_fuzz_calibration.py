"""Fuzzing the calibration file's decoder (lfr_contracts.calibration): `lfr-watchlist build` reads the file
beside the models, and the handset will read the same table for its score bands. Whatever the bytes, the
decoder returns tables or raises `CalibrationError`; a decoded table answers every question without error."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from fuzz_helpers import dumps, fuzz, holds, hostile_json_text, json_values, mutated
from lfr_contracts import calibration
from lfr_contracts.calibration import CalibrationError
from test_calibration import TABLE

REAL = calibration.encode([TABLE])  # the writer's own output (models/calibrate.py's table)
FIELDS = sorted(json.loads(REAL)["tables"][0])


def use(data: bytes) -> None:
    """Decode, then ask each table everything a caller asks."""
    for table in calibration.decode(data).values():
        for score in (-1.0, 0.0, 0.5, 1.0, table.impostor_max):
            table.far(score)
            table.genuine_accept_rate(score)
            table.band(score)
        for far in (0.5, 1e-3, 1e-9):
            table.threshold_for(far)


def replaced(field: str, value: Any) -> bytes:
    doc = json.loads(REAL)
    doc["tables"][0][field] = value
    return dumps(doc)


def test_the_real_file_decodes() -> None:
    assert holds(CalibrationError, lambda: use(REAL))


@fuzz(300)
@given(mutated(REAL))
def test_mutated_files_decode_or_are_refused(data: bytes) -> None:
    holds(CalibrationError, lambda: use(data))


@fuzz(150)
@given(st.sampled_from(FIELDS), json_values)
def test_any_field_value_decodes_or_is_refused(field: str, value: Any) -> None:
    holds(CalibrationError, lambda: use(replaced(field, value)))


@fuzz(100)
@given(st.one_of(hostile_json_text(), st.builds(dumps, json_values), st.binary(max_size=5000)))
def test_arbitrary_bytes_are_refused(data: bytes) -> None:
    assert not holds(CalibrationError, lambda: use(data))


@fuzz(100)
@given(st.text(max_size=40))
def test_any_rate_text_parses_or_is_refused(text: str) -> None:
    holds(CalibrationError, lambda: calibration.parse_rate(text))
