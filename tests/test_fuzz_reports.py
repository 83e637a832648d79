"""Fuzzing what a unit reports: its telemetry (lfr_contracts.telemetry), its retained status
(lfr_contracts.status) and its answer to each watchlist message (lfr_contracts.acks, read by the command
centre's `lfr-watchlist publish|close --wait-ack`).

The command centre, the demo and the benchmarks read these from the broker; whatever the bytes, each reader
must return a value or raise its module's error (TelemetryError, StatusError, AckError; the command centre's
CliError), within bounded time and memory, with a short refusal that never echoes the sender at length.
The seeds are the real encoders' output: the ack of each kind as the unit's watchlist sync writes it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from fuzz_helpers import dumps, fuzz, holds, hostile_json_text, json_values, mutated
from lfr_contracts.acks import MAX_ACK_BYTES, AckError, WatchlistAck, decode_ack
from lfr_contracts.status import StatusError, UnitStatus, WatchlistStatus, now_iso
from lfr_contracts.telemetry import (
    TelemetryError,
    decode_telemetry,
    encode_telemetry,
)
from lfr_edge.audit.log import AuditLog
from lfr_edge.watchlist.lifecycle import LifecycleFile
from lfr_edge.watchlist.sync import WatchlistSync
from lfr_tools.command_centre.cli import CliError, read_ack
from test_telemetry import message as telemetry_message
from watchlist_helpers import MODEL, NOW, Keys, make_bundle

UNIT = "unit-a"

TELEMETRY = encode_telemetry(
    dataclasses.replace(
        telemetry_message(),  # every optional part filled in, as a real unit's can be
        cpu_temp_c=51.5,
        stage_ms={"detect": 11.2, "embed": 4.1},
        messages_dropped={"lfr/v1/units/van-01/decisions": 4},
    )
)
TELEMETRY_FIELDS: dict[str, Any] = json.loads(TELEMETRY)
STATUS = UnitStatus(
    "online", UNIT, now_iso(), 3, WatchlistStatus("refused", reason="wrong_unit", detail="for unit-b"), MODEL
).encode()
STATUS_FIELDS: dict[str, Any] = json.loads(STATUS)


def real_acks(tmp_path: Path) -> list[bytes]:
    """Acks as the unit's watchlist sync publishes them: applied, refused (an older version; garbage)."""
    keys, sent = Keys(), list[bytes]()

    def publish(topic: str, payload: bytes) -> bool:
        sent.append(payload)
        return True

    with AuditLog.open(tmp_path / "audit.jsonl", UNIT) as audit:
        sync = WatchlistSync(
            unit_id=UNIT, model_id=MODEL, command_centre_key=keys.centre.public_key(), unit_key=keys.unit,
            max_bundle_bytes=1 << 20, ack_topic="ack", publish=publish,
            audit=audit, record=LifecycleFile(tmp_path / "lifecycle.json", UNIT, Ed25519PrivateKey.generate()),
            clock=lambda: NOW,
        )  # fmt: skip
        sync.handle_message("t", make_bundle(keys, version=4))
        sync.handle_message("t", make_bundle(keys, version=3))  # older than the held one: refused
        sync.handle_message("t", b"LFRWL not a bundle")
        sync.shutdown()
    return sent


@pytest.fixture(scope="module")
def acks(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    return real_acks(tmp_path_factory.mktemp("acks"))


def test_the_real_acks_read_back(acks: list[bytes]) -> None:
    read = [decode_ack(a) for a in acks]
    assert [a.status for a in read] == ["applied", "refused", "refused"]
    assert read[0].version == 4 and read[0].subjects is not None and read[0].done
    assert read[1].reason == "rollback" and read[1].version == 3 and not read[1].done
    assert read_ack(acks[0], UNIT) == read[0]
    assert all(len(a) <= MAX_ACK_BYTES for a in acks)  # what the unit writes, the command centre reads


# Found by these tests, each reproduced first --------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"[" * 3000 + b"]" * 3000, id="nested-3000-deep"),
        pytest.param(TELEMETRY.replace(b'"frames":300', b'"frames":' + b"9" * 5000), id="5000-digit-count"),
        pytest.param(TELEMETRY.replace(b'"fps":24.9', b'"fps":1e999'), id="fps-1e999"),
        pytest.param(TELEMETRY.replace(b'"fps":24.9', b'"fps":NaN'), id="fps-NaN"),
        pytest.param(TELEMETRY.replace(b'"unit":"van-01"', b'"unit":"\\ud800"'), id="lone-surrogate"),
    ],
)
def test_hostile_telemetry_is_refused_with_a_telemetry_error(payload: bytes) -> None:
    """json.loads raised RecursionError on deep nesting and ValueError on a 5,000-digit number."""
    with pytest.raises(TelemetryError):
        decode_telemetry(payload)


HUGE_TIME = dumps({**STATUS_FIELDS, "watchlist": {"state": "active", "valid_until": 0}}).replace(
    b'"valid_until": 0', b'"valid_until": 1' + b"0" * 400
)


@pytest.mark.parametrize(
    "payload",
    [pytest.param(HUGE_TIME, id="400-digit-time"), pytest.param(b"[" * 2000 + b"]" * 2000, id="nested-2000-deep")],
)
def test_hostile_status_is_refused_with_a_status_error(payload: bytes) -> None:
    """math.isfinite raised OverflowError on a 400-digit valid_until."""
    with pytest.raises(StatusError):
        UnitStatus.decode(payload)


def test_a_refusal_never_echoes_a_long_field_name() -> None:
    """Unknown field names were quoted whole: a refusal as long as the sender liked."""
    name = "QUJD" * 400
    with pytest.raises(TelemetryError) as telemetry:
        decode_telemetry(dumps({**TELEMETRY_FIELDS, name: 1}))
    with pytest.raises(TelemetryError) as key:
        decode_telemetry(dumps({**TELEMETRY_FIELDS, "stage_ms": {name: "slow"}}))
    with pytest.raises(AckError) as ack:
        decode_ack(dumps({"status": "refused", name: 1}))
    with pytest.raises(StatusError) as status:
        UnitStatus.decode(dumps({**STATUS_FIELDS, "watchlist": {"state": "none", name[:3000]: 1}}))
    for refused in (telemetry, key, ack, status):
        assert "QUJD" * 10 not in str(refused.value) and len(str(refused.value)) < 300


def test_the_command_centre_names_an_unreadable_ack() -> None:
    """It ran json.loads in paho's network thread: garbage killed the loop and the wait ended in a timeout."""
    with pytest.raises(CliError, match="unit unit-a answered with a message that is not a watchlist ack"):
        read_ack(b"{not json", UNIT)
    with pytest.raises(CliError, match="'maybe' is not one of"):
        read_ack(b'{"status": "maybe"}', UNIT)
    with pytest.raises(CliError, match="over the"):
        read_ack(b" " * (MAX_ACK_BYTES + 1), UNIT)


# Property-based --------------------------------------------------------------------------------------


@fuzz(150)
@given(mutated(TELEMETRY))
def test_mutated_telemetry_is_read_or_refused(payload: bytes) -> None:
    if holds(TelemetryError, lambda: decode_telemetry(payload)):
        read = decode_telemetry(payload)
        assert all(math.isfinite(v) for v in (read.time, read.uptime_s, read.fps, *read.stage_ms.values()))


@fuzz(150)
@given(st.sampled_from(sorted(TELEMETRY_FIELDS)), json_values)
def test_telemetry_with_any_field_value_is_read_or_refused(field: str, value: Any) -> None:
    payload = dumps({**TELEMETRY_FIELDS, field: value})
    holds(TelemetryError, lambda: decode_telemetry(payload))


@fuzz(100)
@given(
    st.sampled_from(["watchlist", "beacon", "threads", "audit"]),
    st.sampled_from(["state", "pattern", "down", "lost", "failures", "x"]),
    json_values,
)
def test_telemetry_with_any_nested_value_is_read_or_refused(section: str, field: str, value: Any) -> None:
    payload = dumps({**TELEMETRY_FIELDS, section: {**(TELEMETRY_FIELDS[section] or {}), field: value}})
    holds(TelemetryError, lambda: decode_telemetry(payload))


@fuzz(100)
@given(st.one_of(hostile_json_text(), st.builds(dumps, json_values), st.binary(max_size=5000)))
def test_arbitrary_telemetry_payloads_are_refused(payload: bytes) -> None:
    assert not holds(TelemetryError, lambda: decode_telemetry(payload))


@fuzz(150)
@given(mutated(STATUS))
def test_mutated_status_is_read_or_refused(payload: bytes) -> None:
    holds(StatusError, lambda: UnitStatus.decode(payload))


@fuzz(150)
@given(
    st.sampled_from([*sorted(STATUS_FIELDS), *(f"watchlist.{k}" for k in WatchlistStatus.__dataclass_fields__)]),
    json_values,
)
def test_status_with_any_field_value_is_read_or_refused(field: str, value: Any) -> None:
    fields = json.loads(STATUS)
    if field.startswith("watchlist."):
        fields["watchlist"][field.removeprefix("watchlist.")] = value
    else:
        fields[field] = value
    payload = dumps(fields)
    holds(StatusError, lambda: UnitStatus.decode(payload))


@fuzz(100)
@given(st.one_of(hostile_json_text(), st.builds(dumps, json_values), st.binary(max_size=5000)))
def test_arbitrary_status_payloads_are_refused(payload: bytes) -> None:
    assert not holds(StatusError, lambda: UnitStatus.decode(payload))


@fuzz(150)
@given(st.data())
def test_mutated_acks_are_read_or_refused_by_the_command_centre(acks: list[bytes], data: st.DataObject) -> None:
    payload = data.draw(mutated(data.draw(st.sampled_from(acks))))
    holds(AckError, lambda: decode_ack(payload))
    holds(CliError, lambda: read_ack(payload, UNIT))


@fuzz(150)
@given(st.sampled_from(sorted(WatchlistAck.__dataclass_fields__)), json_values)
def test_an_ack_with_any_field_value_is_read_or_refused(field: str, value: Any) -> None:
    payload = dumps({"status": "applied", "version": 4, "deployment": "op-1", "subjects": 5, field: value})
    holds(CliError, lambda: read_ack(payload, UNIT))


@fuzz(100)
@given(st.one_of(hostile_json_text(), st.builds(dumps, json_values), st.binary(max_size=5000)))
def test_arbitrary_ack_payloads_are_read_or_refused(payload: bytes) -> None:
    holds(CliError, lambda: read_ack(payload, UNIT))
