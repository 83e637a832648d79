"""The telemetry message's encoding: what a reader is told when a message does not fit.

The real daemon's telemetry is decoded with `decode_telemetry` by test_daemon_e2e.py, test_faults.py and
test_deployment_report.py; here a message is encoded once and then damaged field by field.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzz_helpers import dumps, fuzz, holds, hostile_json_text, json_values, mutated
from lfr_contracts.beacon import Pattern
from lfr_contracts.status import WatchlistStatus
from lfr_contracts.telemetry import (
    MAX_TELEMETRY_BYTES,
    AuditHealth,
    BeaconLink,
    CameraState,
    Telemetry,
    TelemetryError,
    ThreadHealth,
    decode_telemetry,
    encode_telemetry,
)
from lfr_contracts.untrusted import MAX_INT_DIGITS


def message() -> Telemetry:
    return Telemetry(
        unit="van-01", time=1_800_000_000.5, uptime_s=12.5, fps=24.9, frames=300, faces_seen=40, faces_embedded=12,
        faces_rejected={"small": 3}, tracks_started=5, tracks_ended_unmatched=4, alerts=1,
        stage_ms={"detect": 11.2}, frames_skipped={"cam0": 2}, camera_fps={"cam0": 12.5}, cpu_temp_c=None,
        watchlist=WatchlistStatus("active", "op-1", 7, 120, 1_800_003_600.0), cameras={"cam0": CameraState.STALLED},
        camera_dropped={"cam0": 1}, beacon=BeaconLink(True, False, Pattern.ALERT), alerts_outbox={"sent": 1},
        threads=ThreadHealth({"watchlist-expiry": 2}, ("beacon",)), audit=AuditHealth(False, 3, 1_800_000_000.0),
    )  # fmt: skip


def body() -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(encode_telemetry(message()))
    return decoded


def test_a_message_decodes_to_what_was_encoded() -> None:
    assert decode_telemetry(encode_telemetry(message())) == message()
    assert body()["beacon"] == {"connected": True, "responsive": False, "pattern": "alert"}
    assert body()["cameras"] == {"cam0": "stalled"} and message().dropped_total == 3
    assert body()["threads"] == {"failures": {"watchlist-expiry": 2}, "down": ["beacon"]}
    assert body()["audit"] == {"writable": False, "lost": 3, "failing_since": 1_800_000_000.0}


@pytest.mark.parametrize(
    ("damage", "complaint"),
    [
        (lambda b: b.pop("frames"), "telemetry.frames: missing"),
        (lambda b: b.update(fps="fast"), "telemetry.fps: expected a finite number, got str"),
        (lambda b: b.update(bogus=1), "telemetry: unknown field(s) 'bogus'"),
        (lambda b: b["cameras"].update(cam0="melted"), "telemetry.cameras.cam0: 'melted' is not one of starting"),
        (lambda b: b["watchlist"].update(state="melted"), "telemetry.watchlist.state: 'melted' is not one of"),
        (lambda b: b["watchlist"].pop("state"), "telemetry.watchlist.state: missing"),
        (lambda b: b["beacon"].update(pattern="disco"), "telemetry.beacon.pattern: 'disco' is not one of off"),
        (lambda b: b.update(stage_ms=[1, 2]), "telemetry.stage_ms: expected an object with string keys"),
        (lambda b: b["threads"].update(down="beacon"), "telemetry.threads.down: expected a list, got str"),
        (lambda b: b["audit"].pop("lost"), "telemetry.audit.lost: missing"),
        (lambda b: b["audit"].update(writable=1), "telemetry.audit.writable: expected true or false, got int"),
        (
            lambda b: b.update(watchlist={"state": "refused", "reason": "wrong_unit"}, beacon=None, cpu_temp_c=51.5),
            None,
        ),
    ],
)
def test_a_damaged_message_is_refused_naming_the_field(damage: Any, complaint: str | None) -> None:
    damaged = body()
    damage(damaged)
    payload = json.dumps(damaged).encode()
    if complaint is None:
        assert decode_telemetry(payload).watchlist == WatchlistStatus("refused", reason="wrong_unit")
        return
    with pytest.raises(TelemetryError, match=complaint.replace("(", r"\(").replace(")", r"\)")):
        decode_telemetry(payload)


def test_garbage_and_oversized_messages_are_refused() -> None:
    with pytest.raises(TelemetryError, match="not valid JSON"):
        decode_telemetry(b"{frames: 3")
    with pytest.raises(TelemetryError, match="expected a JSON object, got list"):
        decode_telemetry(b"[1, 2]")
    with pytest.raises(TelemetryError, match="over the"):
        decode_telemetry(b" " * (MAX_TELEMETRY_BYTES + 1))


def bounded_int(value: Any) -> bool:
    """An integer the JSON reader takes (longer ones are refused before parsing, by name)."""
    return type(value) is int and len(str(abs(value))) <= MAX_INT_DIGITS


@fuzz(300)
@given(
    payload=st.one_of(mutated(encode_telemetry(message())), hostile_json_text()),
    skipped=st.dictionaries(st.text(max_size=8), json_values, max_size=3),
    fps=st.dictionaries(st.text(max_size=8), json_values, max_size=3),
)
def test_fuzzed_telemetry_decodes_or_is_refused_by_name(payload: bytes, skipped: Any, fps: Any) -> None:
    """Whatever arrives (damaged bytes, hostile JSON, any per-camera counters): a message or TelemetryError."""
    holds(TelemetryError, lambda: decode_telemetry(payload))
    fields = body() | {"frames_skipped": skipped, "camera_fps": fps}
    counts = all(bounded_int(v) for v in skipped.values())
    rates = all((type(v) is float and math.isfinite(v)) or bounded_int(v) for v in fps.values())
    assert holds(TelemetryError, lambda: decode_telemetry(dumps(fields))) == (counts and rates)
